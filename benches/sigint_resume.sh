#!/usr/bin/env bash
# Full Fashion-MNIST, default VAE, CPU, 10 epochs: straight, and interrupted by
# SIGINT during epoch 4 and resumed; the losses and the checkpoint must match.
# Run from the repository root after `cargo build --release`:
#   bash benches/sigint_resume.sh
set -u
B=${GPU_VAE:-target/release/gpu-vae}
OUT=${OUT:-/tmp}
rm -rf $OUT/fullA $OUT/fullB
time $B train --data fashion-mnist --device cpu --epochs 10 --seed 1 --out $OUT/fullA --quiet > $OUT/fullA.log 2>&1
$B train --data fashion-mnist --device cpu --epochs 10 --seed 1 --out $OUT/fullB --quiet > $OUT/fullB.log 2>&1 &
pid=$!
until [ -f $OUT/fullB/metrics.csv ] && [ "$(wc -l < $OUT/fullB/metrics.csv)" -ge 4 ]; do sleep 0.2; done
sleep 1.5
kill -INT $pid
wait $pid; echo "interrupted run exit: $?"
tail -2 $OUT/fullB.log
$B train --resume $OUT/fullB --quiet >> $OUT/fullB.log 2>&1; echo "resumed exit: $?"
echo "metrics (loss columns):"
diff <(cut -d, -f1-7 $OUT/fullA/metrics.csv) <(cut -d, -f1-7 $OUT/fullB/metrics.csv) && echo "identical metrics"
cmp $OUT/fullA/model.safetensors $OUT/fullB/model.safetensors && echo "identical model.safetensors"
cut -d, -f1-7 $OUT/fullA/metrics.csv
