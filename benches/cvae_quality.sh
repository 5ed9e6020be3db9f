#!/usr/bin/env bash
# Conditional VAE quality against the PyTorch reference, on the CPU, one run at
# a time: for each seed, `gpu-vae train --conditional` and
# `torch_vae.py --model cvae` (full Fashion-MNIST, 10 epochs), then the final
# test losses per seed, their medians and ratio; benches/torch_load.py on the
# first seed's gpu-vae run; benches/cvae_check.py on the first seed's gpu-vae run
# against the first seed's reference samples.
#
#   PY=VENV/bin/python GPU_VAE=target/release/gpu-vae bash benches/cvae_quality.sh [OUT_DIR]
#
# Environment (defaults): PY (python3, needs torch, numpy, safetensors),
# GPU_VAE (target/release/gpu-vae), REF (../shared/reference), DATA
# (/usr/share/datasets/fashion-mnist), SEEDS ("1 2 3"), EPOCHS (10),
# TOLERANCE (0.01: the gpu-vae median may be at most 1% above the reference's).
# OUT_DIR (default /tmp/cvae_quality) gets the runs, logs and summary.md.
# Wall time per training is the whole command (data loading and the per-epoch
# test pass included); "foreign" is the share of the machine's CPUs busy with
# other processes meanwhile (from /proc/stat), since timings on a shared machine
# mean little without it. Exit status 1 when the median target is missed or a
# check fails; everything still runs.
set -u
here=$(cd "$(dirname "$0")" && pwd)
PY=${PY:-python3}
GPU_VAE=${GPU_VAE:-target/release/gpu-vae}
REF=${REF:-$here/../../shared/reference}
DATA=${DATA:-/usr/share/datasets/fashion-mnist}
SEEDS=${SEEDS:-1 2 3}
EPOCHS=${EPOCHS:-10}
TOLERANCE=${TOLERANCE:-0.01}
out=${1:-/tmp/cvae_quality}
mkdir -p "$out"
status=0

busy() { awk '/^cpu /{print ($2+$3+$4+$7+$8+$9)}' /proc/stat; }
# timed NAME CMD...: runs CMD with its output in $out/NAME.log; appends
# "NAME wall_s foreign" to $out/times.txt.
timed() {
  local name=$1; shift
  local hz ncpu b0 b1 t0 t1 c0 c1
  hz=$(getconf CLK_TCK); ncpu=$(nproc)
  c0=$(awk '{print $14+$15+$16+$17}' /proc/$$/stat)
  b0=$(busy); t0=$(date +%s.%N)
  "$@" > "$out/$name.log" 2>&1
  local rc=$?
  t1=$(date +%s.%N); b1=$(busy)
  c1=$(awk '{print $14+$15+$16+$17}' /proc/$$/stat)
  # children's CPU (cutime+cstime of this shell) is this command's own share
  awk -v n="$name" -v t0="$t0" -v t1="$t1" -v b0="$b0" -v b1="$b1" -v c0="$c0" -v c1="$c1" \
      -v hz="$hz" -v ncpu="$ncpu" 'BEGIN { w = t1 - t0; f = ((b1 - b0) - (c1 - c0)) / hz / (w * ncpu);
        if (f < 0) f = 0; printf "%s %.1f %.2f\n", n, w, f }' >> "$out/times.txt"
  tail -1 "$out/times.txt"
  [ $rc -eq 0 ] || { echo "$name failed (exit $rc), see $out/$name.log"; status=1; }
  return $rc
}

: > "$out/times.txt"
"$GPU_VAE" --version
$PY -c 'import torch; print("torch", torch.__version__, "threads 2")'
for s in $SEEDS; do
  timed "gpu-vae-s$s" "$GPU_VAE" train --conditional --data "$DATA" --epochs "$EPOCHS" --seed "$s" \
      --device cpu --quiet --force --no-tensorboard --out "$out/gpu-vae-s$s"
  timed "torch-s$s" $PY "$REF/torch_vae.py" "$DATA" --model cvae --epochs "$EPOCHS" --seed "$s" \
      --threads 2 --json "$out/torch-s$s.json" --samples-out "$out/torch-s$s.npy"
done

OUT="$out" SEEDS="$SEEDS" TOLERANCE="$TOLERANCE" $PY - <<'PY' | tee "$out/summary.md"
import csv, json, os, statistics, sys
out, seeds, tol = os.environ["OUT"], os.environ["SEEDS"].split(), float(os.environ["TOLERANCE"])
times = {}
for line in open(os.path.join(out, "times.txt")):
    name, wall, foreign = line.split()
    times[name] = (float(wall), float(foreign))
ours, theirs = [], []
print("| seed | gpu-vae test loss | PyTorch test loss | gpu-vae / PyTorch | gpu-vae wall s (foreign) | PyTorch wall s (foreign) |")
print("|---:|---:|---:|---:|---:|---:|")
for s in seeds:
    rows = list(csv.DictReader(open(os.path.join(out, f"gpu-vae-s{s}", "metrics.csv"))))
    o = float(rows[-1]["test_loss"])
    t = json.load(open(os.path.join(out, f"torch-s{s}.json")))["summary"]["final_test_loss"]
    ours.append(o); theirs.append(t)
    g, p = times[f"gpu-vae-s{s}"], times[f"torch-s{s}"]
    print(f"| {s} | {o:.3f} | {t:.3f} | {o / t:.4f} | {g[0]:.0f} ({100 * g[1]:.0f}%) | {p[0]:.0f} ({100 * p[1]:.0f}%) |")
mo, mt = statistics.median(ours), statistics.median(theirs)
print(f"| median | {mo:.3f} | {mt:.3f} | {mo / mt:.4f} | | |")
ok = mo <= mt * (1 + tol)
print(f"\ntarget: gpu-vae's median test loss within {100 * tol:.0f}% of the reference's: "
      f"{'met' if ok else 'MISSED'} (gpu-vae {100 * (mo / mt - 1):+.2f}%)")
sys.exit(0 if ok else 1)
PY
[ ${PIPESTATUS[0]} -eq 0 ] || status=1

s1=${SEEDS%% *}
echo "== benches/torch_load.py $out/gpu-vae-s$s1"
$PY "$here/torch_load.py" "$out/gpu-vae-s$s1" --data "$DATA" --ref "$REF" | tee "$out/torch_load.log"
[ ${PIPESTATUS[0]} -eq 0 ] || status=1
echo "== benches/cvae_check.py $out/gpu-vae-s$s1 $out/torch-s$s1.npy"
$PY "$here/cvae_check.py" "$out/gpu-vae-s$s1" "$out/torch-s$s1.npy" --gpu-vae "$GPU_VAE" --data "$DATA" \
    --classifier "$out/classifier.pt" | tee "$out/cvae_check.log"
[ ${PIPESTATUS[0]} -eq 0 ] || status=1
exit $status
