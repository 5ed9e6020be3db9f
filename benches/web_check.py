#!/usr/bin/env python3
"""Checks `gpu-vae export --format web` in a real browser: headless Chromium
with WebGPU (SwiftShader, a CPU implementation of Vulkan inside Chromium)
imports the exported gpu-vae.js, decodes fixed codes and encodes test
images, and compares them with the CPU path's values, which the exporter
computed with the library's CPU engine (`explorer.json`'s `check`). Then it
opens each export's index.html, waits until the explorer has drawn, checks
that its pictures are not blank, that moving a slider, picking a walk's end,
a new draw and a class redraw theirs, and saves a screenshot; opens the first
through `gpu-vae view` too, and a browser without WebGPU gets one line.

  apt-get install -y chromium
  python3 -m venv /tmp/pwvenv && /tmp/pwvenv/bin/pip install playwright
  /tmp/pwvenv/bin/python benches/web_check.py [--bin target/release/gpu-vae] [--shots DIR] [--quick]

It trains its own small runs (CPU, one epoch; a few seconds each): a dense
VAE on the embedded grey images, a convolutional VAE on them, a
convolutional VAE and a dense AE on colour images in the CIFAR-10 format
that it writes, and a conditional dense VAE. `--quick` does the first two.

Bound (exit status 1 when exceeded): |browser - cpu| <= ATOL + RTOL * |cpu|
for every pixel and every latent mean. Both sides compute in f32 the same
products and sums in another order (tiles of 32 and four K groups on the
GPU, a blocked GEMM on the CPU) and sigmoid/ELU/exp through another
implementation (SwiftShader's exp against Rust's), so they agree to a few
f32 rounding steps of the sums, not bit for bit.
"""
import argparse, http.server, json, os, shutil, socketserver, subprocess, sys, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ATOL = 1e-4
RTOL = 1e-4
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--enable-unsafe-webgpu"]


def run(cmd):
    print("$ " + " ".join(cmd), flush=True)
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
    return out.stdout


def cifar10(folder, train=48, test=24):
    """A small CIFAR-10 binary folder: colour blobs whose place and hue follow the class."""
    os.makedirs(folder, exist_ok=True)

    def record(k):
        label = k % 10
        cx, cy = 6 + (label % 5) * 5, 8 + (label // 5) * 14
        out = bytearray([label])
        for ch in range(3):
            for y in range(32):
                for x in range(32):
                    d2 = (x - cx) ** 2 + (y - cy) ** 2
                    blob = 220 if d2 < 30 + (k % 7) * 4 else 30
                    out.append(min(255, (blob * ((label + ch * 3) % 7 + 2)) // 8 + (x + y + k) % 16))
        return bytes(out)

    for i in range(1, 6):
        with open(os.path.join(folder, f"data_batch_{i}.bin"), "wb") as f:
            f.write(b"".join(record(k + 100 * i) for k in range(train)))
    with open(os.path.join(folder, "test_batch.bin"), "wb") as f:
        f.write(b"".join(record(k) for k in range(test)))


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/blank.html":
            body = b'<!doctype html><title>check</title><link rel="icon" href="data:,">'
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()


CHECK_JS = """
async (dir) => {
  const { loadModel } = await import(`/${dir}/gpu-vae.js`);
  const model = await loadModel(`/${dir}/`);
  const ex = await (await fetch(`/${dir}/explorer.json`)).json();
  const c = ex.check;
  let t = performance.now();
  const px = await model.decode(Float32Array.from(c.z), c.n, c.labels || undefined);
  const first = performance.now() - t;
  t = performance.now();
  await model.decode(Float32Array.from(c.z), c.n, c.labels || undefined);
  const again = performance.now() - t;
  const mu = await model.encode(Float32Array.from(c.images), c.images_n, c.image_labels || undefined);
  const n64 = 64, z = new Float32Array(n64 * model.latent).map((_, i) => Math.sin(i));
  const labels = model.classes.length ? Array.from({length: n64}, (_, i) => i % model.classes.length) : undefined;
  t = performance.now();
  const big = await model.decode(z, n64, labels);
  const ms64 = performance.now() - t;
  return { px: Array.from(px), mu: Array.from(mu), ref_px: c.pixels, ref_mu: c.means,
           first_ms: first, again_ms: again, ms64, big: big.length, shape: [model.channels, model.height, model.width],
           dispatches: [model.spec.programs.encoder[0].dispatches.length, model.spec.programs.decoder[0].dispatches.length] };
}
"""

STATS_JS = """
() => Array.from(document.querySelectorAll('canvas')).filter((c) => c.id).map((c) => {
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let sum = 0, sq = 0, n = 0;
  for (let i = 0; i < d.length; i += 4) { const v = (d[i] + d[i + 1] + d[i + 2]) / 3; sum += v; sq += v * v; n++; }
  const mean = sum / Math.max(n, 1);
  return { id: c.id, w: c.width, h: c.height, mean, std: Math.sqrt(Math.max(0, sq / Math.max(n, 1) - mean * mean)) };
})
"""


SIGNATURE_JS = """
(id) => { const c = document.getElementById(id); const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let h = 0; for (let i = 0; i < d.length; i += 7) h = (h * 31 + d[i]) >>> 0; return h; }
"""


def interact(page):
    """Moves the first slider, clicks a test image, draws anew and (conditional runs) picks a class:
    whether each picture changed."""
    actions = {
        "slider": ("single", "() => { const s = document.querySelector('#sliders input'); s.value = 2.5; "
                             "s.dispatchEvent(new Event('input')); }"),
        "walk end": ("walk", "() => document.querySelectorAll('#thumbs canvas')[5].click()"),
        "new draw": ("grid", "() => document.getElementById('draw').click()"),
    }
    if page.evaluate("!document.getElementById('class-box').hidden"):
        actions["class"] = ("grid", "() => { const s = document.getElementById('class'); s.value = '3'; "
                                    "s.dispatchEvent(new Event('change')); }")
    moved = {}
    for name, (canvas, action) in actions.items():
        before = page.evaluate(SIGNATURE_JS, canvas)
        page.evaluate(action)
        deadline = time.time() + 30
        while time.time() < deadline and page.evaluate(SIGNATURE_JS, canvas) == before:
            time.sleep(0.2)
        moved[name] = page.evaluate(SIGNATURE_JS, canvas) != before
    return moved


def compare(name, got, want):
    worst, bad = 0.0, []
    for i, (g, c) in enumerate(zip(got, want)):
        d = abs(g - c)
        worst = max(worst, d)
        if not d <= ATOL + RTOL * abs(c):
            bad.append((i, g, c))
    if len(got) != len(want):
        bad.append(("length", len(got), len(want)))
    return worst, bad


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "gpu-vae"))
    ap.add_argument("--shots", default=os.path.join(ROOT, "target", "web-shots"),
                    help="folder for the explorer screenshots (default: target/web-shots)")
    ap.add_argument("--keep", action="store_true", help="keep the runs and exports (printed) instead of removing them")
    ap.add_argument("--quick", action="store_true", help="only the grey dense and conv VAEs")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    work = tempfile.mkdtemp(prefix="web-check-")
    shots = args.shots
    os.makedirs(shots, exist_ok=True)
    colour = os.path.join(work, "cifar")
    cifar10(colour)
    one = ["--device", "cpu", "--seed", "7"]
    models = [
        ("mlp-vae-grey", ["--data", "embedded"]),
        ("conv-vae-grey", ["--data", "embedded", "--arch", "conv", "--conv", "8,16", "--activation", "gelu"]),
        # Tiny data: more epochs, so that its samples are more than the mean picture.
        ("conv-vae-colour", ["--data", colour, "--arch", "conv", "--conv", "8,16", "--batch-size", "16", "--epochs", "30"]),
        ("mlp-ae-colour", ["--data", colour, "--model", "ae", "--latent", "12", "--hidden", "64", "--batch-size", "16",
                           "--epochs", "10"]),
        # Hidden 400: the decoder's first layer is a row chain (the label's
        # columns, then the product) whose 400 outputs take each thread
        # twice round its loop, which SwiftShader once got wrong.
        ("mlp-cvae-grey", ["--data", "embedded", "--conditional", "--latent", "6"]),
    ]
    if args.quick:
        models = models[:2]
    for name, flags in models:
        out = os.path.join(work, "runs", name)
        epochs = [] if "--epochs" in flags else ["--epochs", "1"]
        run([args.bin, "train", *flags, *epochs, *one, "--out", out])
        run([args.bin, "export", "--run", out, "--format", "web", "--out", os.path.join(work, name)])

    handler = lambda *a, **k: Quiet(*a, directory=work, **k)
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    failures = 0
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        errors = []
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        page.on("pageerror", lambda e: errors.append(str(e)))
        adapter = None
        for name, _ in models:
            page.goto(f"{base}/blank.html")
            if adapter is None:
                adapter = page.evaluate("async () => { const a = await navigator.gpu.requestAdapter(); "
                                        "return a ? JSON.stringify(a.info) : null; }")
                print(f"adapter: {adapter}")
            r = page.evaluate(CHECK_JS, name)
            wp, bad_p = compare("pixels", r["px"], r["ref_px"])
            wm, bad_m = compare("means", r["mu"], r["ref_mu"])
            ok = not bad_p and not bad_m
            failures += not ok
            print(f"{name}: {r['shape']} dispatches enc/dec {r['dispatches'][0]}/{r['dispatches'][1]}; "
                  f"pixels {len(r['px'])} max|d| {wp:.2e}, means {len(r['mu'])} max|d| {wm:.2e}; "
                  f"decode of 4: {r['first_ms']:.0f} ms first, {r['again_ms']:.0f} ms again; of 64: {r['ms64']:.0f} ms "
                  f"-> {'ok' if ok else 'FAIL'}", flush=True)
            for what, bad in (("pixel", bad_p), ("mean", bad_m)):
                for b in bad[:5]:
                    print(f"  {what} {b[0]}: browser {b[1]} cpu {b[2]}")
            # The explorer page.
            page.goto(f"{base}/{name}/index.html")
            page.wait_for_function("['ready', 'error', 'no-webgpu'].includes(document.documentElement.dataset.state)",
                                   timeout=120_000)
            state = page.evaluate("document.documentElement.dataset.state")
            shot = os.path.join(shots, f"{name}.png")
            page.screenshot(path=shot, full_page=True)
            stats = page.evaluate(STATS_JS)
            blank = [s["id"] for s in stats if s["std"] < 2.0]
            text = page.evaluate("document.getElementById('check').textContent + ' | ' + "
                                 "document.getElementById('status').textContent")
            good = state == "ready" and not blank and {"grid", "single", "walk"} <= {s["id"] for s in stats}
            if good:
                moved = interact(page)
                good = all(moved.values())
                print(f"  interaction (picture redrawn): {moved}")
            failures += not good
            print(f"  explorer: {state}, canvases " +
                  ", ".join(f"{s['id']} {s['w']}x{s['h']} std {s['std']:.1f}" for s in stats) +
                  f"; blank: {blank or 'none'}; {text}; screenshot {shot} -> {'ok' if good else 'FAIL'}", flush=True)
        # The same page served by `gpu-vae view`.
        view = subprocess.Popen([args.bin, "view", "--port", "0", "--run", os.path.join(work, "runs", models[0][0])],
                                stdout=subprocess.PIPE, text=True)
        try:
            line = view.stdout.readline()
            url = next(w for w in line.split() if w.startswith("http://127.0.0.1:"))
            page.goto(url)
            page.wait_for_function("['ready', 'error', 'no-webgpu'].includes(document.documentElement.dataset.state)",
                                   timeout=120_000)
            state = page.evaluate("document.documentElement.dataset.state")
        finally:
            view.kill()
            view.wait()
        failures += state != "ready"
        print(f"gpu-vae view: {line.strip()}: explorer {state} -> {'ok' if state == 'ready' else 'FAIL'}")
        if errors:
            print("browser errors:\n  " + "\n  ".join(errors[:10]))
            failures += 1
        # Without WebGPU the page says so in one line.
        plain = p.chromium.launch(executable_path=args.chromium, args=["--headless=new", "--no-sandbox",
                                                                         "--disable-features=WebGPU"])
        page = plain.new_page()
        page.goto(f"{base}/{models[0][0]}/index.html")
        page.wait_for_function("document.documentElement.dataset.state", timeout=60_000)
        state, line = page.evaluate("[document.documentElement.dataset.state, "
                                    "document.getElementById('status').textContent]")
        good = state == "no-webgpu" and "WebGPU" in line
        failures += not good
        print(f"without WebGPU: {state}: {line} -> {'ok' if good else 'FAIL'}")
        plain.close()
        browser.close()
    server.shutdown()
    if args.keep:
        print(f"runs and exports kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    total = 2 * len(models) + 2
    print(f"web_check: {total - failures} passed, {failures} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
