#!/usr/bin/env bash
# Prepares, here, what `benches/device.sh` carries to the device machine, so a
# device session is one command:  bash benches/device_bundle.sh
#   .gl/    the Vulkan loader packages (../shared/device/prepare.sh)
#   .bin/   bins.tar.xz: stripped release builds of gpu-vae and of the GPU test
#           binaries (gpu_*, devices; under deps/, beside ../gpu-vae for
#           assert_cmd; the others run in CI), and gpu_anchor.py
#   .data/fashion-mnist/  the four IDX .gz files
# Then:  run(command="bash benches/device.sh --anchor", carry=[".gl", ".bin", ".data"])
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
[ -d .gl ] || bash ../shared/device/prepare.sh
cargo build --release
tests=$(cargo test --release --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") and m.get("executable"):
        print(m["executable"])')
stage=$(mktemp -d)
mkdir -p "$stage/deps"
cp target/release/gpu-vae "$stage/"
# The carry limit is 64 MiB in all: only the tests that need a GPU.
for t in $tests; do
  case $(basename "$t") in gpu_*|devices-*) cp "$t" "$stage/deps/" ;; esac
done
strip "$stage/gpu-vae" "$stage"/deps/*
mkdir -p .bin .data/fashion-mnist
XZ_OPT=-9 tar cJf .bin/bins.tar.xz -C "$stage" .
rm -rf "$stage"
cp ../shared/reference/gpu_anchor.py .bin/
cp /usr/share/datasets/fashion-mnist/*.gz .data/fashion-mnist/
du -sh .gl .bin .data
