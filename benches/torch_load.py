#!/usr/bin/env python3
"""Load a gpu-vae checkpoint into the matching PyTorch reference model
(../shared/reference/torch_vae.py) by name and shape, evaluate it on the test
set as the reference does, and compare with the test loss the run reported (the
last line of its metrics.csv).

  VENV/bin/python benches/torch_load.py RUN_DIR [--data DIR] [--ref DIR]

Two kinds of run have a reference model:
  * a convolutional VAE (`train --arch conv`, conv 32,64, at most one dense
    layer): torch_vae.ConvVAE(latent, dense);
  * a dense conditional VAE (`train --conditional`, one hidden layer):
    torch_vae.CVAE(classes, latent, hidden), the reference's `--model cvae`.
    It is evaluated with each test image's true label, one-hot, as the
    reference's test loss is.
The reference has no conditional convolutional model, so a run trained with
`--arch conv --conditional` is refused (as is any other shape).

Needs torch, numpy and safetensors. Exit status 1 when a name or shape does not
match or when the two test losses differ by more than --tolerance (1%).
"""
import argparse, csv, json, os, sys

import torch
from safetensors import safe_open

HERE = os.path.dirname(os.path.abspath(__file__))

# gpu-vae's checkpoint names -> the reference ConvVAE's attributes, in layer order.
CONV_NAMES = {
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

# gpu-vae's checkpoint names -> the reference CVAE's attributes. encoder.0 takes
# [x (784), onehot(y)] and decoder.0 takes [z, onehot(y)], as fc1 and fc3 do.
CVAE_NAMES = {
    "encoder.0": "fc1",
    "mu": "fc21",
    "logvar": "fc22",
    "decoder.0": "fc3",
    "decoder.1": "fc4",
}


def build(torch_vae, config, run):
    """(reference model, name map, description, conditional) for this run's model config."""
    classes = config.get("classes") or 0
    common = (config.get("kind"), config.get("channels", 1), config["image_rows"], config["image_cols"],
              config.get("loss", "bce"), config.get("activation", "relu"))
    if common != ("vae", 1, 28, 28, "bce", "relu"):
        sys.exit(f"{run}: the reference models are 1-channel 28x28 VAEs with BCE loss and ReLU; this run is "
                 f"kind/channels/rows/cols/loss/activation {common}")
    arch = config.get("arch", "mlp")
    if classes and arch == "conv":
        sys.exit(f"{run}: a conditional convolutional VAE; torch_vae.py has no conditional conv model "
                 f"(only the dense CVAE, --model cvae), so there is nothing to load it into")
    if classes:
        if arch != "mlp" or len(config["hidden"]) != 1:
            sys.exit(f"{run}: the reference CVAE is a dense conditional VAE with one hidden layer; this run is "
                     f"arch {arch}, hidden {config['hidden']}")
        hidden = config["hidden"][0]
        model = torch_vae.CVAE(classes, config["latent"], hidden)
        return model, CVAE_NAMES, f"torch_vae.CVAE(classes={classes}, latent={config['latent']}, hidden={hidden})", True
    if arch != "conv" or config.get("conv") != [32, 64] or len(config["hidden"]) > 1:
        sys.exit(f"{run}: the reference ConvVAE is a conv 32,64 VAE with at most one dense layer, and the "
                 f"reference CVAE needs --conditional; this run is arch {arch}, conv {config.get('conv')}, "
                 f"hidden {config['hidden']}, not conditional")
    dense = config["hidden"][0] if config["hidden"] else 0
    model = torch_vae.ConvVAE(config["latent"], dense)
    return model, CONV_NAMES, f"torch_vae.ConvVAE(latent={config['latent']}, dense={dense})", False


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
    model, names, what, conditional = build(torch_vae, config, args.run)
    state = {}
    for name, tensor in tensors.items():
        layer, part = name.rsplit(".", 1)
        if layer not in names:
            sys.exit(f"{args.run}: checkpoint tensor {name} has no counterpart in {what}")
        state[f"{names[layer]}.{part}"] = tensor
    # strict: every parameter of the reference must come from the checkpoint,
    # with its PyTorch shape, and nothing else may be left over.
    model.load_state_dict(state, strict=True)
    print(f"loaded {len(tensors)} tensors into {what} "
          f"by name: " + ", ".join(f"{k} -> {names[k]}" for k in names if f"{k}.weight" in tensors))

    if conditional:
        _, xte, _, yte = torch_vae.load_fashion_mnist(args.data, labels=True)
        if int(yte.max()) >= model.classes:
            sys.exit(f"{args.data}: test label {int(yte.max())} but the model has {model.classes} classes")
    else:
        _, xte = torch_vae.load_fashion_mnist(args.data)
    torch.manual_seed(args.seed)
    model.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, xte.shape[0], 128):
            xb = xte[i:i + 128]
            # the reference's test loss: a single reparameterized draw per image,
            # summed BCE-with-logits + KL; the CVAE gets the true labels.
            logits, mu, logvar = model(xb, yte[i:i + 128]) if conditional else model(xb)
            total += torch_vae.conv_vae_loss(logits, xb, mu, logvar).item()
    theirs = total / xte.shape[0]

    with open(os.path.join(args.run, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    ours = float(rows[-1]["test_loss"])
    diff = abs(theirs - ours) / ours
    print(f"test loss: gpu-vae reported {ours:.3f} after epoch {rows[-1]['epoch']}; "
          f"PyTorch reference model with these weights {theirs:.3f} on {xte.shape[0]} test images"
          f"{' with their true labels' if conditional else ''}; "
          f"difference {100 * diff:.3f}% (tolerance {100 * args.tolerance:.1f}%)")
    sys.exit(0 if diff <= args.tolerance else 1)


if __name__ == "__main__":
    main()
