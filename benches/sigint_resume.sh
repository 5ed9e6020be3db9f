#!/usr/bin/env bash
# Full Fashion-MNIST, default VAE, CPU, 10 epochs: straight, and stopped three
# ways and resumed; the losses and the checkpoint must match the straight run:
#   B: SIGINT during epoch 4 (kill -INT), then --resume;
#   C: `timeout -s INT` (one SIGINT to the process, one to its group: one
#      request), then --resume;
#   D: SIGINT, then the process ended between the checkpoint's writes (the
#      staged optimizer state on disk, the model perhaps not yet renamed),
#      as a second Ctrl-C does (`_exit`); SIGKILL stands in for it, since a
#      second SIGINT from this shell within 1 s is the same request. Then --resume.
# Run from the repository root after `cargo build --release`:
#   bash benches/sigint_resume.sh          # DATA=... EPOCHS=... for a shorter run
set -u
B=${GPU_VAE:-target/release/gpu-vae}
OUT=${OUT:-/tmp}
DATA=${DATA:-fashion-mnist}
EPOCHS=${EPOCHS:-10}
T="train --data $DATA --device cpu --epochs $EPOCHS --seed 1 --quiet"
rm -rf $OUT/fullA $OUT/fullB $OUT/fullC $OUT/fullD
time $B $T --out $OUT/fullA > $OUT/fullA.log 2>&1

# Waits until run $1 has finished $2 epochs.
epochs_done() {
    until [ -f $1/metrics.csv ] && [ "$(wc -l < $1/metrics.csv)" -gt $2 ]; do sleep 0.2; done
}

$B $T --out $OUT/fullB > $OUT/fullB.log 2>&1 &
pid=$!
epochs_done $OUT/fullB 3
sleep 1.5
kill -INT $pid
wait $pid; echo "B: interrupted run exit: $?"
tail -2 $OUT/fullB.log

# C: timeout signals twice; it fires about a third of the way through (A's time).
secs=$(awk -F, 'NR > 1 { s += $8 } END { printf "%.1f", s / 3 + 2 }' $OUT/fullA/metrics.csv)
timeout --preserve-status -s INT $secs $B $T --out $OUT/fullC > $OUT/fullC.log 2>&1
echo "C: timeout -s INT $secs exit: $?"
tail -2 $OUT/fullC.log
[ -e $OUT/fullC/.lock ] && echo "C: STALE LOCK" || echo "C: no lock left"

$B $T --out $OUT/fullD > $OUT/fullD.log 2>&1 &
pid=$!
epochs_done $OUT/fullD 2
sleep 1.5
rm -f $OUT/fullD/optimizer.safetensors.next
kill -INT $pid
until [ -e $OUT/fullD/optimizer.safetensors.next ] || ! kill -0 $pid 2>/dev/null; do :; done
kill -KILL $pid 2>/dev/null && echo "D: killed with the staged state on disk" || echo "D: the checkpoint finished first"
wait $pid; echo "D: exit: $?"
ls $OUT/fullD

for run in fullB fullC fullD; do
    $B train --resume $OUT/$run --quiet >> $OUT/$run.log 2>&1; echo "$run: resumed exit: $?"
    diff <(cut -d, -f1-7 $OUT/fullA/metrics.csv) <(cut -d, -f1-7 $OUT/$run/metrics.csv) > /dev/null \
        && echo "$run: identical metrics" || echo "$run: METRICS DIFFER"
    cmp -s $OUT/fullA/model.safetensors $OUT/$run/model.safetensors \
        && echo "$run: identical model.safetensors" || echo "$run: MODEL DIFFERS"
done
echo "metrics (loss columns):"
cut -d, -f1-7 $OUT/fullA/metrics.csv
