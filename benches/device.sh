#!/usr/bin/env bash
# The GPU checks of one device session, in one go, from the repository root of
# a machine with an NVIDIA GPU and no Vulkan loader. Carried in ignored folders:
#   .gl/    the Vulkan loader packages (../shared/device/prepare.sh)
#   .bin/   bins.tar.xz (gpu-vae, gpu_kernels, gpu_steps: release builds, stripped)
#           and gpu_anchor.py (../shared/reference)
#   .data/fashion-mnist/  the four IDX .gz files
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

echo "== GPU vs CPU tests (both shader modes)"
.bin/gpu_kernels 2>&1 | grep -E "^test |test result"
.bin/gpu_steps --include-ignored 2>&1 | grep -E "^test |test result|epoch"

echo "== split-K off, for the A/B"
for b in 128 1024; do GPU_VAE_SPLIT_K=0 $bin bench --data $data --model vae --device gpu --epochs 3 --batch-size $b; done

echo "== gpu-vae vs PyTorch and JAX on this GPU"
python3 benches/compare.py gpu --binary $bin --data $data --ref .bin --epochs 3 --batch 128,1024

echo "== training quality on the GPU: default VAE, 10 epochs"
$bin train --data $data --device gpu --epochs 10 --out "$out/vae-gpu" --quiet
cp "$out/vae-gpu/metrics.csv" "$out/vae-gpu-metrics.csv"
rm -rf "$out/vae-gpu"
