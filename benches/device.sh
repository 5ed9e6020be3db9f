#!/usr/bin/env bash
# The GPU checks of one device session, in one go, from the repository root of
# a machine with an NVIDIA GPU and no Vulkan loader:  bash benches/device.sh [--anchor]
# Carried in ignored folders, which `bash benches/device_bundle.sh` prepares:
#   .gl/    the Vulkan loader packages (../shared/device/prepare.sh)
#   .bin/   bins.tar.xz (release builds, stripped: gpu-vae, and test binaries
#           under deps/ so that assert_cmd finds ../gpu-vae) and gpu_anchor.py
#   .data/fashion-mnist/  the four IDX .gz files
# --anchor also runs ../shared/reference/gpu_anchor.py (PyTorch, JAX) side by side.
# Writes its log and the GPU training run's metrics under $OUT.
set -u
out=${OUT:-/tmp/out}
mkdir -p "$out"
exec > >(tee "$out/log") 2>&1
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json WGPU_BACKEND=vulkan PYTHONUNBUFFERED=1
tar xJf .bin/bins.tar.xz -C .bin
bin=.bin/gpu-vae
data=.data/fashion-mnist
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
$bin devices

echo "== tests on this GPU"
for t in .bin/deps/*; do
  echo "-- $(basename "$t")"
  "$t" --include-ignored 2>&1 | grep -E "^test |test result|skipped"
done

echo "== training throughput, default VAE"
for b in 128 1024; do $bin bench --data $data --model vae --device gpu --epochs 3 --batch-size $b --profile; done
echo "== the same with the family kernels (GPU_VAE_FUSE=tiles: 36 dispatches a step instead of 7), A/B"
for b in 128 1024; do
  for fuse in tiles all tiles all; do
    echo "-- GPU_VAE_FUSE=$fuse batch $b"
    GPU_VAE_FUSE=$fuse $bin bench --data $data --model vae --device gpu --epochs 2 --batch-size $b | grep -E "samples/s|dispatches"
  done
done
if [ "${1:-}" = "--anchor" ]; then
  echo "== gpu-vae vs PyTorch and JAX on this GPU"
  python3 benches/compare.py gpu --binary $bin --data $data --ref .bin --epochs 3 --batch 128,1024
fi

echo "== conv VAE (train --arch conv): throughput, and the references' eager and CUDA-graph PyTorch and JAX"
$bin bench --data $data --model vae --arch conv --device gpu --epochs 3 --profile
echo "== conv VAE: direct convolution kernels (GPU_VAE_CONV=direct), each convolution a product (=products, 13 dispatches) and layers per image in row chains (=rows, the default: 8), A/B"
for conv in direct products rows direct products rows; do
  echo "-- GPU_VAE_CONV=$conv"
  GPU_VAE_CONV=$conv $bin bench --data $data --model vae --arch conv --device gpu --epochs 2 | grep -E "samples/s|dispatches"
done
if [ "${1:-}" = "--anchor" ]; then
  python3 .bin/gpu_anchor.py $data --model convvae --latent 16 --which torch-eager,torch-graph,jax-scan --epochs 4
fi

echo "== training quality on the GPU: conv VAE, 10 epochs (the README gives the CPU's)"
$bin train --arch conv --data $data --device gpu --epochs 10 --out "$out/conv-gpu" --quiet
cp "$out/conv-gpu/metrics.csv" "$out/conv-gpu-metrics.csv"
rm -rf "$out/conv-gpu"

echo "== training quality on the GPU: default VAE, 10 epochs"
$bin train --data $data --device gpu --epochs 10 --out "$out/vae-gpu" --quiet
cp "$out/vae-gpu/metrics.csv" "$out/vae-gpu-metrics.csv"

echo "== the trained model's uses, GPU then CPU"
for d in gpu cpu; do
  $bin eval --run "$out/vae-gpu" --n 1000 --k 100 --device $d
  $bin encode --run "$out/vae-gpu" --bits 8 --device $d --out "$out/codes-$d"
done
cmp "$out/codes-gpu" "$out/codes-cpu" && echo "codes identical on both devices"
rm -rf "$out/vae-gpu" "$out"/codes-*
