#!/usr/bin/env python3
"""Checks `gpu-vae export --format onnx` against the gpu-vae binary itself:
onnx.checker (full_check) on encoder.onnx and decoder.onnx, then both run in
onnxruntime against `gpu-vae encode` and `gpu-vae decode` on the CPU path.

  python3 -m venv /tmp/onnxvenv && /tmp/onnxvenv/bin/pip install onnxruntime onnx numpy pillow
  /tmp/onnxvenv/bin/python benches/onnx_check.py RUN_DIR [--bin target/release/gpu-vae] [--n 256]

What is compared, and the bounds (exit status 1 when one is exceeded):
  encoder: `mu` (VAE) or `code` (AE) of the first N test images against the
    codes file of `encode --bits 16`, which holds them as f16: each may be off
    by 2^-11 of itself (2^-25 below 2^-14) from f16 rounding, plus 1e-4 for
    f32 arithmetic in another order. Needs the test images in Python: runs on
    the embedded data, an IDX folder or a CIFAR-10 folder; for a folder of
    pictures (split and resized by gpu-vae) this comparison is skipped, said so.
  decoder: `images` for those codes against `decode --format png`, which
    rounds each pixel to 1/255: off by at most 0.5/255 plus 1e-4.
`logvar` has no CLI output to compare with; tests/onnx.rs checks it against the library.
"""
import argparse, gzip, json, os, struct, subprocess, sys, tempfile

import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
F32_TOL = 1e-4


def run(cmd):
    print("$ " + " ".join(cmd), flush=True)
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
    return out.stdout


def read_codes(path):
    """The codes file of src/apps/codes.rs, version 1 or 2, f16 only."""
    b = open(path, "rb").read()
    assert b[:8] == b"GVAECODE", "not a codes file"
    bits = b[10]
    count, latent = struct.unpack_from("<II", b, 12)
    if bits != 16:
        sys.exit(f"{path}: {bits}-bit codes; this check writes 16-bit ones")
    return np.frombuffer(b, dtype="<f2", offset=28, count=count * latent).astype(np.float32).reshape(count, latent)


def idx_images(path):
    raw = open(path, "rb").read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    ndim = raw[3]
    dims = struct.unpack_from(">" + "I" * ndim, raw, 4)
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims[0], 1, *dims[1:])


def test_images(config):
    """The test split as gpu-vae reads it (N, C, H, W) u8, or None with why."""
    data = config.get("data") or "embedded"
    if data == "embedded":
        return idx_images(os.path.join(ROOT, "assets/fashion-mnist-subset/t10k-images-idx3-ubyte.gz")), data
    if data == "fashion-mnist":
        data = "/usr/share/datasets/fashion-mnist"
    for name in ["t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz"]:
        if os.path.isfile(os.path.join(data, name)):
            return idx_images(os.path.join(data, name)), data
    cifar = os.path.join(data, "test_batch.bin")
    if os.path.isfile(cifar):
        raw = np.frombuffer(open(cifar, "rb").read(), dtype=np.uint8).reshape(-1, 3073)
        return raw[:, 1:].reshape(-1, 3, 32, 32), data
    return None, f"{data} (a folder of pictures, split and resized by gpu-vae)"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("--bin", default=os.path.join(ROOT, "target/release/gpu-vae"))
    p.add_argument("--n", type=int, default=256)
    a = p.parse_args()
    config = json.load(open(os.path.join(a.run, "config.json")))
    model = config["model"]
    kind, latent = model["kind"], model["latent"]
    channels, rows, cols = model.get("channels", 1), model["image_rows"], model["image_cols"]
    conv = model.get("arch", "mlp") == "conv"
    print(f"run {a.run}: {kind} {model.get('arch', 'mlp')} {channels}x{rows}x{cols}, latent {latent}, "
          f"{model.get('activation', 'relu')}")

    tmp = tempfile.mkdtemp(prefix="onnx-check-")
    out = os.path.join(tmp, "onnx")
    run([a.bin, "export", "--run", a.run, "--format", "onnx", "--out", out])
    codes_path = os.path.join(tmp, "test.codes")
    run([a.bin, "encode", "--run", a.run, "--bits", "16", "--n", str(a.n), "--device", "cpu", "--out", codes_path])
    pngs = os.path.join(tmp, "decoded")
    run([a.bin, "decode", "--run", a.run, "--codes", codes_path, "--format", "png", "--device", "cpu", "--out", pngs])

    for name in ["encoder.onnx", "decoder.onnx"]:
        onnx.checker.check_model(os.path.join(out, name), full_check=True)
        m = onnx.load(os.path.join(out, name))
        io = lambda vs: ", ".join(
            f"{v.name} [{', '.join(d.dim_param or str(d.dim_value) for d in v.type.tensor_type.shape.dim)}]" for v in vs)
        print(f"{name}: onnx.checker full_check passed; opset {m.opset_import[0].version}; "
              f"{io(m.graph.input)} -> {io(m.graph.output)}; {len(m.graph.node)} nodes")

    codes = read_codes(codes_path)
    n = codes.shape[0]
    failed = False
    options = ort.SessionOptions()
    options.log_severity_level = 3

    images, source = test_images(config)
    if images is None:
        print(f"encoder: skipped, the test images of {source} cannot be read here")
    else:
        x = images[:n].astype(np.float32) / 255.0
        x = x.reshape(n, channels, rows, cols) if conv else x.reshape(n, -1)
        enc = ort.InferenceSession(os.path.join(out, "encoder.onnx"), options, providers=["CPUExecutionProvider"])
        got = enc.run(None, {"images": x})
        names = [o.name for o in enc.get_outputs()]
        mean = got[0]
        err = np.abs(mean - codes)
        bound = np.maximum(np.abs(codes) * 2.0 ** -11, 2.0 ** -25) + F32_TOL
        worst = float((err - bound).max())
        # As f16, as encode stores them: equal unless an f32 difference straddles a rounding boundary.
        ours, theirs = mean.astype(np.float16), codes.astype(np.float16)
        same = int((ours == theirs).sum())
        # f16 steps apart (same-sign values: their bit patterns' distance).
        steps = int(np.abs(ours.view(np.int16).astype(np.int32) - theirs.view(np.int16).astype(np.int32)).max())
        print(f"encoder ({', '.join(names)}) on {n} test images of {source}: max |{names[0]} - encode's f16 codes| "
              f"{err.max():.3e}, within its bound by at least {-worst:.3e}; rounded to f16, {same} of {codes.size} equal"
              + (f", the rest at most {steps} f16 step(s) apart" if same < codes.size else ""))
        if kind == "vae":
            print(f"  logvar in [{got[1].min():.3f}, {got[1].max():.3f}] (no CLI output to compare with)")
        failed |= worst > 0

    dec = ort.InferenceSession(os.path.join(out, "decoder.onnx"), options, providers=["CPUExecutionProvider"])
    probs = dec.run(None, {"z": codes})[0]
    shape = (n, channels, rows, cols)
    probs = probs.reshape(shape)
    decoded = []
    for i in range(n):
        pic = np.asarray(Image.open(os.path.join(pngs, f"{i:05}.png")), dtype=np.float32)
        decoded.append(pic.transpose(2, 0, 1) if pic.ndim == 3 else pic[None])
    decoded = np.stack(decoded) / 255.0
    err = float(np.abs(probs - decoded).max())
    bound = 0.5 / 255 + F32_TOL
    levels = np.abs(np.round(probs * 255) - np.round(decoded * 255))
    print(f"decoder on those {n} codes: max |images - decode's PNG pixels| {err:.3e} (bound {bound:.3e}); "
          f"rounded to 1/255, {int((levels == 0).sum())} of {levels.size} equal"
          + (f", the rest off by {int(levels.max())}" if levels.max() > 0 else ""))
    failed |= err > bound
    print("FAILED" if failed else "ok")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
