#!/usr/bin/env bash
# The README's tables for the trained-model uses, on full Fashion-MNIST
# (apt-get install dataset-fashion-mnist), CPU path:
#   bash benches/apps.sh [BINARY] [OUT_DIR]
# one-class ROC-AUC per class (AE and VAE), compression, denoising, ELBO/IWAE.
set -euo pipefail
bin=${1:-target/release/gpu-vae}
out=${2:-runs/apps-bench}
data=fashion-mnist
mkdir -p "$out"
run() { echo "\$ gpu-vae ${*}" >&2; "$bin" "$@"; }

echo "== one-class anomaly detection: train on class K (10 epochs), score the whole test set"
echo "| class | AE (reconstruction MSE) | VAE (negative ELBO) | VAE (reconstruction MSE) |"
echo "|---|---|---|---|"
for k in 0 1 2 3 4 5 6 7 8 9; do
  auc=()
  for model in ae vae; do
    run train --data $data --model $model --normal-class $k --device cpu --quiet --out "$out/oc-$model-$k" >/dev/null
  done
  for score in "ae recon" "vae elbo" "vae recon"; do
    set -- $score
    auc+=("$(run anomaly --run "$out/oc-$1-$k" --score $2 --device cpu | sed -n 's/.*ROC-AUC \([0-9.]*\).*/\1/p')")
  done
  echo "| $k | ${auc[0]} | ${auc[1]} | ${auc[2]} |"
done

echo "== the default VAE and AE, plain and denoising (noise std 0.5), 10 epochs"
run train --data $data --device cpu --quiet --out "$out/vae" >/dev/null
run train --data $data --model ae --device cpu --quiet --out "$out/ae" >/dev/null
run train --data $data --model ae --noise 0.5 --device cpu --quiet --out "$out/dae" >/dev/null

echo "== compression of the 10,000 test images"
for bits in 8 16; do
  run encode --run "$out/vae" --bits $bits --device cpu --out "$out/test-$bits.codes"
done

echo "== denoising: Gaussian noise of std 0.5 on the 10,000 test images"
for model in ae dae; do
  run denoise --run "$out/$model" --std 0.5 --n 10000 --device cpu --out "$out/denoise-$model.png"
done

echo "== ELBO and the IWAE bound (k = 5000) on the 10,000 test images"
run eval --run "$out/vae" --k 5000 --device cpu
