#!/usr/bin/env python3
"""Load a gpu-vae convolutional VAE checkpoint into the PyTorch reference model
(../shared/reference/torch_vae.py's ConvVAE) by name and shape, evaluate it on
the test set as the reference does, and compare with the test loss the run
reported (the last line of its metrics.csv).

  VENV/bin/python benches/torch_load.py RUN_DIR [--data DIR] [--ref DIR]

Needs torch, numpy and safetensors. Exit status 1 when a name or shape does not
match or when the two test losses differ by more than --tolerance (1%).
"""
import argparse, csv, json, os, sys

import torch
from safetensors import safe_open

HERE = os.path.dirname(os.path.abspath(__file__))

# gpu-vae's checkpoint names -> the reference ConvVAE's attributes, in layer order.
NAMES = {
    "encoder.0": "c1",
    "encoder.1": "c2",
    "encoder.2": "fc",  # only with --hidden D (the reference's --dense D)
    "mu": "mu",
    "logvar": "logvar",
    "decoder.0": "dfc",
    "decoder.1": "d1",
    "decoder.2": "d2",
    "decoder.3": "d3",
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a gpu-vae run directory (model.safetensors, metrics.csv)")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist", help="the IDX files the run trained on")
    ap.add_argument("--ref", default=os.path.join(HERE, "..", "..", "shared", "reference"),
                    help="folder of torch_vae.py")
    ap.add_argument("--seed", type=int, default=1, help="seed of the evaluation's reparameterization noise")
    ap.add_argument("--tolerance", type=float, default=0.01)
    args = ap.parse_args()

    sys.path.insert(0, os.path.abspath(args.ref))
    import torch_vae  # the reference's model, loss and data loader, unchanged

    with safe_open(os.path.join(args.run, "model.safetensors"), "pt") as f:
        config = json.loads(f.metadata()["gpu_vae.model"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    shape = (config.get("arch"), config.get("kind"), config.get("conv"), config.get("channels", 1),
             config["image_rows"], config["image_cols"])
    if shape != ("conv", "vae", [32, 64], 1, 28, 28) or len(config["hidden"]) > 1:
        sys.exit(f"{args.run}: the reference ConvVAE is a 1-channel 28x28 conv 32,64 VAE with at most one dense "
                 f"layer; this run is arch/kind/conv/channels/rows/cols {shape}, hidden {config['hidden']}")

    dense = config["hidden"][0] if config["hidden"] else 0
    model = torch_vae.ConvVAE(config["latent"], dense)
    state = {}
    for name, tensor in tensors.items():
        layer, part = name.rsplit(".", 1)
        state[f"{NAMES[layer]}.{part}"] = tensor
    # strict: every parameter of the reference must come from the checkpoint,
    # with its PyTorch shape, and nothing else may be left over.
    model.load_state_dict(state, strict=True)
    print(f"loaded {len(tensors)} tensors into torch_vae.ConvVAE(latent={config['latent']}, dense={dense}) "
          f"by name: " + ", ".join(f"{k} -> {NAMES[k]}" for k in NAMES if f"{k}.weight" in tensors))

    _, xte = torch_vae.load_fashion_mnist(args.data)
    torch.manual_seed(args.seed)
    model.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, xte.shape[0], 128):
            xb = xte[i:i + 128]
            logits, mu, logvar = model(xb)
            total += torch_vae.conv_vae_loss(logits, xb, mu, logvar).item()
    theirs = total / xte.shape[0]

    with open(os.path.join(args.run, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    ours = float(rows[-1]["test_loss"])
    diff = abs(theirs - ours) / ours
    print(f"test loss: gpu-vae reported {ours:.3f} after epoch {rows[-1]['epoch']}; "
          f"PyTorch reference model with these weights {theirs:.3f} on {xte.shape[0]} test images; "
          f"difference {100 * diff:.3f}% (tolerance {100 * args.tolerance:.1f}%)")
    sys.exit(0 if diff <= args.tolerance else 1)


if __name__ == "__main__":
    main()
