#!/usr/bin/env python3
"""Rebuilds the embedded Fashion-MNIST subset from Debian's dataset-fashion-mnist.

The first 10,000 training and first 2,000 test images (and labels) of
Fashion-MNIST, written back as IDX .gz files. Deterministic: same input, same bytes.
"""
import gzip, struct, sys, os

SRC = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist"
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fashion-mnist-subset")


def subset(name, n):
    with gzip.open(os.path.join(SRC, name + ".gz"), "rb") as f:
        d = f.read()
    magic, count = struct.unpack(">II", d[:8])
    ndim = magic & 0xFF
    dims = list(struct.unpack(">" + "I" * ndim, d[4:4 + 4 * ndim]))
    item = 1
    for x in dims[1:]:
        item *= x
    head = 4 + 4 * ndim
    body = d[head:head + n * item]
    dims[0] = n
    out = struct.pack(">I", magic) + struct.pack(">" + "I" * ndim, *dims) + body
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, name + ".gz"), "wb") as f:
        f.write(gzip.compress(out, compresslevel=9, mtime=0))


subset("train-images-idx3-ubyte", 10000)
subset("train-labels-idx1-ubyte", 10000)
subset("t10k-images-idx3-ubyte", 2000)
subset("t10k-labels-idx1-ubyte", 2000)
