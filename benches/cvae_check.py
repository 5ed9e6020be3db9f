#!/usr/bin/env python3
r"""Are a conditional VAE's samples of class K recognisable as K? Trains a small
PyTorch classifier on the Fashion-MNIST training split (prints its test
accuracy), then for a gpu-vae conditional run draws --n samples of every class
with `gpu-vae sample --run RUN --class K --format idx --n N --seed SEED+K` (or
reads files made so beforehand, --samples-dir DIR/class_K.idx) and reports, per
class, the share the classifier labels K; beside it the same for the PyTorch
reference's samples (torch_vae.py --model cvae --samples-out F.npy: float32
[10*n, 784], the sigmoid of the decoder's logits for z ~ N(0, I), rows class by
class, n per class).

  VENV/bin/python benches/cvae_check.py RUN_DIR REF_SAMPLES.npy \
      [--gpu-vae target/release/gpu-vae] [--data DIR] [--n 100] [--seed 1] \
      [--classifier FILE.pt]   # reuse the trained classifier across calls

Both sides are the decoded means of prior draws. gpu-vae's IDX file holds them
as u8 (round(255 p)); the reference's probabilities are put through the same
rounding so the classifier sees the two alike. The classifier (two 3x3 convs,
32 and 64 channels, each with 2x2 max-pooling, then 128 ReLU and 10 logits;
Adam 1e-3, batch 128, --clf-epochs 3, seeded by --clf-seed) is the same for
both sides. The last column of the table, "real", is its per-class recall on
the real test images: about the most a sample can score.

Needs torch and numpy. Exit status 1 when gpu-vae's mean rate over the classes
is below the reference's, by any amount: with 100 samples per class the mean of
each side has a binomial standard error of about 1 point (printed), so two
equally good models fail about half of the time on the sample noise alone;
read the margin against that error, not the exit status alone. For a
tighter comparison draw 1000 per class on both sides (--n 1000 here and
torch_vae.py --samples-per-class 1000: about 0.5 points).
"""
import argparse, gzip, math, os, struct, subprocess, sys, tempfile, time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def read_idx(path):
    """A u8 IDX file (raw or .gz) as a numpy array of its dimensions."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, kind, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or kind != 0x08:
        raise ValueError(f"{path}: not a u8 IDX file")
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != math.prod(dims):
        raise ValueError(f"{path}: {arr.size} bytes for dimensions {dims}")
    return arr.reshape(dims)


def load_split(root, split):
    stem = {"train": "train", "test": "t10k"}[split]
    def pick(name):
        for p in (os.path.join(root, name + ".gz"), os.path.join(root, name)):
            if os.path.exists(p):
                return p
        raise FileNotFoundError(os.path.join(root, name + ".gz"))
    x = read_idx(pick(f"{stem}-images-idx3-ubyte")).reshape(-1, 784)
    y = read_idx(pick(f"{stem}-labels-idx1-ubyte"))
    return torch.from_numpy(x.astype(np.float32) / 255.0), torch.from_numpy(y.astype(np.int64))


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 32, 3, padding=1)
        self.c2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc = nn.Linear(64 * 7 * 7, 128)
        self.out = nn.Linear(128, 10)

    def forward(self, x):
        h = F.max_pool2d(F.relu(self.c1(x.view(-1, 1, 28, 28))), 2)
        h = F.max_pool2d(F.relu(self.c2(h)), 2)
        return self.out(F.relu(self.fc(h.flatten(1))))


def predict(model, x):
    with torch.no_grad():
        return torch.cat([model(x[i:i + 1000]).argmax(1) for i in range(0, x.shape[0], 1000)])


def train_classifier(xtr, ytr, epochs, seed):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = Classifier()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(xtr.shape[0], generator=gen)
        for i in range(0, xtr.shape[0], 128):
            idx = perm[i:i + 128]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xtr[idx]), ytr[idx]).backward()
            opt.step()
    model.eval()
    return model


def gpu_vae_samples(args, classes):
    """[classes, n, 784] u8 of the run's draws, one `gpu-vae sample` per class."""
    out = []
    tmp = None if args.samples_dir else tempfile.TemporaryDirectory()
    folder = args.samples_dir or tmp.name
    for k in range(classes):
        path = os.path.join(folder, f"class_{k}.idx")
        if not args.samples_dir:
            cmd = [args.gpu_vae, "sample", "--run", args.run, "--class", str(k), "--format", "idx",
                   "--n", str(args.n), "--seed", str(args.seed + k), "--device", args.device, "--out", path]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        x = read_idx(path)
        if x.shape[1:] != (28, 28):
            sys.exit(f"{path}: images of {x.shape[1:]}, not 28x28")
        out.append(x.reshape(x.shape[0], 784))
    if tmp:
        tmp.cleanup()
    n = {a.shape[0] for a in out}
    if len(n) != 1:
        sys.exit(f"gpu-vae sample files hold different counts per class: {sorted(n)}")
    return np.stack(out)


def reference_samples(path, classes):
    """[classes, n, 784] u8 of torch_vae.py --samples-out: probabilities rounded as gpu-vae rounds them."""
    p = np.load(path)
    if p.ndim != 2 or p.shape[1] != 784 or p.shape[0] % classes:
        sys.exit(f"{path}: shape {p.shape}, expected [{classes}*n, 784] (rows class by class)")
    if p.dtype.kind != "f" or p.min() < 0 or p.max() > 1:
        sys.exit(f"{path}: expected probabilities in [0, 1] (float), got {p.dtype} in [{p.min()}, {p.max()}]")
    u8 = np.round(np.clip(p, 0.0, 1.0) * 255.0).astype(np.uint8)
    return u8.reshape(classes, p.shape[0] // classes, 784)


def rates(model, samples):
    """Per class k, the share of samples[k] the classifier labels k."""
    return [float((predict(model, torch.from_numpy(s.astype(np.float32) / 255.0)) == k).float().mean())
            for k, s in enumerate(samples)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a gpu-vae run directory trained with --conditional")
    ap.add_argument("reference", help="torch_vae.py --model cvae --samples-out file (.npy)")
    ap.add_argument("--gpu-vae", default="target/release/gpu-vae", help="the gpu-vae binary")
    ap.add_argument("--samples-dir", default="",
                    help="read DIR/class_K.idx (made by gpu-vae sample --format idx) instead of running gpu-vae")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist", help="Fashion-MNIST IDX files")
    ap.add_argument("--n", type=int, default=100, help="gpu-vae samples per class")
    ap.add_argument("--seed", type=int, default=1, help="gpu-vae sample's --seed for class 0; class K gets SEED+K")
    ap.add_argument("--device", default="cpu", help="gpu-vae sample's --device")
    ap.add_argument("--clf-epochs", type=int, default=3)
    ap.add_argument("--clf-seed", type=int, default=0)
    ap.add_argument("--classifier", default="",
                    help="a file for the classifier's weights: loaded when it exists, else written after training")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    classes = len(NAMES)

    xtr, ytr = load_split(args.data, "train")
    xte, yte = load_split(args.data, "test")
    t0 = time.perf_counter()
    if args.classifier and os.path.exists(args.classifier):
        clf = Classifier()
        clf.load_state_dict(torch.load(args.classifier))
        clf.eval()
        how = f"loaded from {args.classifier}"
    else:
        clf = train_classifier(xtr, ytr, args.clf_epochs, args.clf_seed)
        how = f"{args.clf_epochs} epochs, seed {args.clf_seed}, on {xtr.shape[0]} training images"
        if args.classifier:
            torch.save(clf.state_dict(), args.classifier)
            how += f", saved to {args.classifier}"
    pred = predict(clf, xte)
    acc = float((pred == yte).float().mean())
    real = [float((pred[yte == k] == k).float().mean()) for k in range(classes)]
    print(f"classifier: small CNN, {how} ({time.perf_counter() - t0:.0f} s); "
          f"test accuracy {100 * acc:.2f}% on {xte.shape[0]} images")

    ours = gpu_vae_samples(args, classes)
    theirs = reference_samples(args.reference, classes)
    r_ours, r_theirs = rates(clf, ours), rates(clf, theirs)
    print(f"samples: gpu-vae {ours.shape[1]} per class ({args.run}), "
          f"reference {theirs.shape[1]} per class ({args.reference})")
    print(f"{'class':>5}  {'name':<12} {'gpu-vae':>8} {'reference':>10} {'real':>7}")
    for k in range(classes):
        print(f"{k:>5}  {NAMES[k]:<12} {100 * r_ours[k]:7.1f}% {100 * r_theirs[k]:9.1f}% {100 * real[k]:6.1f}%")
    m_ours, m_theirs = float(np.mean(r_ours)), float(np.mean(r_theirs))
    se = lambda m, n: math.sqrt(m * (1 - m) / (n * classes))
    print(f"{'mean':>5}  {'':<12} {100 * m_ours:7.1f}% {100 * m_theirs:9.1f}% {100 * float(np.mean(real)):6.1f}%")
    print(f"standard error of the means (binomial): gpu-vae {100 * se(m_ours, ours.shape[1]):.1f}, "
          f"reference {100 * se(m_theirs, theirs.shape[1]):.1f} points")
    if m_ours < m_theirs:
        print(f"FAIL: gpu-vae's mean rate {100 * m_ours:.1f}% is below the reference's {100 * m_theirs:.1f}%")
        sys.exit(1)
    print(f"ok: gpu-vae's mean rate {100 * m_ours:.1f}% >= the reference's {100 * m_theirs:.1f}%")


if __name__ == "__main__":
    main()
