#!/usr/bin/env python3
"""Side-by-side training throughput: gpu-vae against the reference scripts, in
one run, alternating rounds so that both see the same machine load. Prints
each measurement and the ratio gpu-vae / reference (above 1: gpu-vae faster).

  CPU:  python3 benches/compare.py cpu  [--python VENV/bin/python] [--data DIR]
                 [--models vae,ae,convvae] [--jax-python JAXVENV/bin/python]
        (reference: ../shared/reference/torch_vae.py, PyTorch on 2 threads;
        with --jax-python also gpu_anchor.py --which jax-scan --device cpu for the VAE)
  GPU:  python3 benches/compare.py gpu  [--batch 128,1024]
        (reference: ../shared/reference/gpu_anchor.py, PyTorch eager/graph, JAX)
"""
import argparse, json, os, statistics, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def run(cmd, env=None):
    print("$ " + " ".join(cmd), flush=True)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(f"failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
    return out.stdout


# Each model as gpu-vae's bench and torch_vae.py name it.
MODELS = {
    "vae": (["--model", "vae"], ["--model", "vae"]),
    "ae": (["--model", "ae"], ["--model", "ae"]),
    "convvae": (["--model", "vae", "--arch", "conv"], ["--model", "convvae", "--latent", "16"]),
}


def ours(binary, data, model, device, epochs, batch=None):
    cmd = [binary, "bench", "--data", data, *MODELS[model][0], "--device", device, "--epochs", str(epochs)]
    if batch:
        cmd += ["--batch-size", str(batch)]
    lines = [json.loads(l) for l in run(cmd).splitlines() if l.startswith("{")]
    return lines[-1]


def cpu(args):
    ratios = {}
    for model in args.models.split(","):
        mine, theirs, jax = [], [], []
        for _ in range(args.rounds):
            r = ours(args.binary, args.data, model, "cpu", args.epochs)
            mine.append(r["samples_per_s"])
            print(f"  gpu-vae {model}: {r['samples_per_s']:.0f} samples/s ({r['device']})", flush=True)
            out = run([args.python, os.path.join(args.ref, "torch_vae.py"), args.data, *MODELS[model][1],
                       "--epochs", str(args.epochs + 1), "--threads", str(args.threads)])
            s = json.loads(out.split("SUMMARY ", 1)[1])
            # The first epoch warms up, as gpu-vae's uncounted epoch does.
            eps = [float(l.split("samples/s")[1].split()[0]) for l in out.splitlines() if l.startswith("epoch")][1:]
            theirs.append(statistics.median(eps))
            print(f"  pytorch {s['torch']} {model}: {theirs[-1]:.0f} samples/s (threads {s['threads']}, "
                  f"max foreign cpu {100 * s['max_foreign_cpu']:.0f}%)", flush=True)
            if args.jax_python and model == "vae":
                # gpu_anchor.py's own steady-state epochs (after its compile epoch).
                out = run([args.jax_python, os.path.join(args.ref, "gpu_anchor.py"), args.data, "--which", "jax-scan",
                           "--device", "cpu", "--epochs", str(args.epochs + 1)])
                ref = json.loads(next(l for l in out.splitlines() if l.startswith("RESULT "))[7:])
                jax.append(ref["samples_per_s"])
                print(f"  jax jit+scan (cpu) {model}: {jax[-1]:.0f} samples/s", flush=True)
        m, t = statistics.median(mine), statistics.median(theirs)
        ratios[model] = m / t
        print(f"{model}: gpu-vae {m:.0f} samples/s, pytorch {t:.0f} samples/s, ratio {m / t:.2f}", flush=True)
        if jax:
            j = statistics.median(jax)
            ratios[model + "_vs_jax"] = m / j
            print(f"{model}: gpu-vae {m:.0f} samples/s, jax {j:.0f} samples/s, ratio {m / j:.2f}", flush=True)
    print("RATIOS " + json.dumps(ratios))


def gpu(args):
    for batch in args.batch.split(","):
        r = ours(args.binary, args.data, "vae", "gpu", args.epochs, int(batch))
        print(f"gpu-vae batch {batch}: {1000 * r['median_epoch_s']:.1f} ms/epoch, {r['samples_per_s']:.0f} samples/s, "
              f"{r['dispatches_per_step']} dispatches/step, {r['submits_per_epoch']} submits/epoch ({r['device']})",
              flush=True)
        print(f"  host per step: {r.get('host_us_per_step')}", flush=True)
        # Every peer variant: PyTorch eager / CUDA graph (fp32 and TF32), JAX default precision and full fp32.
        out = run([args.python, os.path.join(args.ref, "gpu_anchor.py"), args.data, "--epochs", str(args.epochs + 1),
                   "--batch", batch, "--which", "torch-eager,torch-graph,torch-graph-tf32,jax-scan,jax-scan-fp32"])
        for line in out.splitlines():
            if line.startswith("RESULT "):
                ref = json.loads(line[7:])
                print(f"  {ref['which']} batch {batch}: {1000 * ref['median_epoch_s']:.1f} ms/epoch; "
                      f"gpu-vae / {ref['which']} speed ratio {ref['median_epoch_s'] / r['median_epoch_s']:.2f}",
                      flush=True)
            elif "FAILED" in line:
                print("  " + line, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("which", choices=["cpu", "gpu"])
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "gpu-vae"))
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--ref", default=os.path.join(ROOT, "..", "shared", "reference"),
                    help="folder of the reference scripts")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs (one more warms up)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default="vae,ae", help="cpu: any of " + ",".join(MODELS))
    ap.add_argument("--jax-python", default="", help="cpu: a Python with jax and optax, to time JAX on the CPU too")
    ap.add_argument("--batch", default="128,1024")
    args = ap.parse_args()
    cpu(args) if args.which == "cpu" else gpu(args)


if __name__ == "__main__":
    main()
