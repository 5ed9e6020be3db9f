#!/usr/bin/env python3
"""Reads a run's TensorBoard event files with TensorBoard's own reader and
checks them against the run: every epoch's scalars equal metrics.csv's
columns (as float32), every epoch has its sample and reconstruction images
(PNGs of the size of epochs/*.png), and the configuration text is
config.json's. Prints what it checked; exits 1 on a mismatch.

    python3 -m venv /tmp/tbvenv && /tmp/tbvenv/bin/pip install tensorboard
    /tmp/tbvenv/bin/python benches/tb_check.py runs/vae-1234567890
"""

import csv
import glob
import json
import os
import struct
import sys

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def tag_of(column):
    """The scalar tag of a metrics.csv column (as src/train/mod.rs names them)."""
    head, _, rest = column.partition("_")
    return f"{head}/{rest}" if head in ("train", "test") and rest else column


def png_size(data):
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return struct.unpack(">II", data[16:24])


def main(run):
    failures = []

    def check(ok, what):
        if not ok:
            failures.append(what)
            print("MISMATCH:", what)

    files = sorted(glob.glob(os.path.join(run, "events.out.tfevents.*")))
    print(f"{len(files)} event file(s): {', '.join(os.path.basename(f) for f in files)}")
    check(files, "no event files")
    acc = EventAccumulator(run, size_guidance={k: 0 for k in
                                               ("compressedHistograms", "images", "audio", "scalars",
                                                "histograms", "tensors")})
    acc.Reload()
    tags = acc.Tags()
    print("scalar tags:", ", ".join(sorted(tags["scalars"])))
    print("image tags:", ", ".join(sorted(tags["images"])))
    print("tensor tags:", ", ".join(sorted(tags["tensors"])))

    with open(os.path.join(run, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    epoch_steps = {int(e.value): e.step for e in acc.Scalars("epoch")}
    check(sorted(epoch_steps) == [int(r["epoch"]) for r in rows],
          f"epochs in TensorBoard {sorted(epoch_steps)}, in metrics.csv {len(rows)}")
    checked = 0
    for column in rows[0].keys() if rows else []:
        by_step = {e.step: e.value for e in acc.Scalars(tag_of(column))}
        for r in rows:
            step = epoch_steps.get(int(r["epoch"]))
            want = np.float32(float(r[column]))
            got = by_step.get(step)
            check(got is not None and np.float32(got) == want,
                  f"{tag_of(column)} at epoch {r['epoch']} (step {step}): {got} != metrics.csv {want}")
            checked += 1
    print(f"checked {checked} per-epoch scalars ({len(rows)} epochs x {len(rows[0]) if rows else 0} columns) "
          f"against metrics.csv; epoch steps {sorted(epoch_steps.values())}")

    running = acc.Scalars("train/running_loss")
    steps = [e.step for e in running]
    check(steps == sorted(set(steps)), "running-loss steps do not increase")
    print(f"{len(running)} running-loss points, steps {steps[0] if steps else '-'}..{steps[-1] if steps else '-'}")

    for tag, stem in (("samples", "samples"), ("reconstructions", "reconstructions")):
        images = {e.step: e for e in acc.Images(tag)}
        for r in rows:
            epoch, step = int(r["epoch"]), epoch_steps.get(int(r["epoch"]))
            image = images.get(step)
            check(image is not None, f"no {tag} image at epoch {epoch}")
            if image is None:
                continue
            size = png_size(image.encoded_image_string)
            check(size == (image.width, image.height), f"{tag} at epoch {epoch}: not a PNG of its size")
            path = os.path.join(run, "epochs", f"{stem}-{epoch:03}.png")
            if os.path.exists(path):
                with open(path, "rb") as f:
                    check(f.read() == image.encoded_image_string, f"{tag} at epoch {epoch} differs from {path}")
        sizes = sorted({(i.width, i.height) for i in images.values()})
        print(f"{len(images)} {tag} images, PNGs of {' '.join(f'{w}x{h}' for w, h in sizes)}, checked against epochs/")

    configs = acc.Tensors("config")
    with open(os.path.join(run, "config.json")) as f:
        config = json.load(f)
    last = configs[-1].tensor_proto.string_val[0].decode() if configs else ""
    text = "\n".join(line[4:] for line in last.splitlines())
    check(configs and json.loads(text) == config, "the last config text is not config.json")
    print(f"{len(configs)} config text(s) at steps {[e.step for e in configs]}; checked the last against config.json")

    if failures:
        print(f"FAILED: {len(failures)} mismatch(es)")
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
