//! The element-wise ops: every Rust definition (`src/ops.rs`) against its
//! WGSL twin (`shaders/ops.wgsl`) on the same inputs, in both shader modes,
//! and each op's formula written once in Rust and once in WGSL across the
//! sources.

#[path = "common/gpu.rs"]
mod gpu_common;

use std::fmt::Write;

use gpu_common::{assert_close, gpu, random};
use gpu_vae::advanced::gpu::ops::{Host, run_wgsl};
use gpu_vae::advanced::gpu::program::Step;
use gpu_vae::advanced::gpu::shaders::prelude;
use gpu_vae::advanced::model::Activation;
use gpu_vae::advanced::ops::{self, AdamStep};

/// Every activation, the identity included.
const ACTIVATIONS: &[Activation] = &Activation::ALL;

/// The ops' results for inputs (a, b, c, d), one row of `WIDTH` values per
/// input: what the WGSL kernel below writes, computed with `crate::ops`.
fn cpu_row(a: f32, b: f32, c: f32, d: f32, adam: &AdamStep, scale: f32) -> Vec<f32> {
    let t = c.abs().fract(); // a target in [0, 1)
    let mut row = vec![ops::sigmoid(a), ops::d_sigmoid(b, ops::sigmoid(c))];
    for &act in ACTIVATIONS {
        row.push(ops::activate(a, act));
        row.push(ops::d_activate(b, c, ops::activate(c, act), act));
    }
    let (kl_mu, kl_lv) = ops::d_kl(a, b, scale);
    let (rp_mu, rp_lv) = ops::d_reparameterize(a, b, c);
    let (p, m, v) = ops::adam(a, b, c * c, d, adam);
    row.extend([
        ops::bce_with_logits(a, t),
        ops::d_bce_with_logits(a, t, scale),
        ops::mse(a, t),
        ops::d_mse(a, t, scale),
        ops::kl(a, b),
        kl_mu,
        kl_lv,
        ops::reparameterize(a, b, c),
        rp_mu,
        rp_lv,
        ops::input_noise(t, scale, d),
        p,
        m,
        v,
    ]);
    row
}

/// The same rows from the WGSL ops; the step row carries `scale` (as
/// recon_scale) and Adam's settings.
fn kernel_source(n: usize) -> String {
    let mut body =
        String::from("    out[o] = sigmoid(a);\n    out[o + 1u] = d_sigmoid(b, sigmoid(c));\n    var k = 2u;\n");
    for &act in ACTIVATIONS {
        let code = act.code();
        writeln!(
            body,
            "    out[o + k] = activate(a, {code}u);\n    out[o + k + 1u] = d_activate(b, c, activate(c, {code}u), {code}u);\n    k += 2u;"
        )
        .unwrap();
    }
    body.push_str(
        "    let s = st.recon_scale;
    let kg = d_kl(a, b, s);
    let rg = d_reparameterize(a, b, c);
    let u = adam(a, b, c * c, d);
    let rest = array<f32, 14>(
        bce_with_logits(a, t), d_bce_with_logits(a, t, s), mse(a, t), d_mse(a, t, s),
        kl(a, b), kg.x, kg.y, reparameterize(a, b, c), rg.x, rg.y, input_noise(t, s, d), u.x, u.y, u.z);
    for (var j = 0u; j < 14u; j++) { out[o + k + j] = rest[j]; }
",
    );
    format!(
        "{}@group(0) @binding(0) var<storage, read_write> inputs: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {{
    let i = gid.x;
    if (i >= {n}u) {{ return; }}
    let a = inputs[4u * i];
    let b = inputs[4u * i + 1u];
    let c = inputs[4u * i + 2u];
    let d = inputs[4u * i + 3u];
    let t = fract(abs(c));
    let o = i * {width}u;
{body}}}
",
        prelude(None),
        width = 2 + 2 * ACTIVATIONS.len() + 14,
    )
}

/// Each op on random inputs in [-8, 8], and on the edges: logits of ±80
/// (where a naive BCE or sigmoid overflows), zero, and inputs on the kinks.
///
/// Tolerance: |g − c| ≤ 4e-6 + 2e-5·|c|. Vulkan lets exp be off by 3 + 2|x|
/// ulps (19 at |x| = 8), log by 3 ulps, tanh by what its exp definition
/// gives; Rust's CPU path uses its own exp and ln (`fastmath`, a few ulps).
/// A result goes through at most three of these, so 2e-5 relative is about
/// 10x the worst case; 4e-6 absolute covers results that cancel towards 0
/// (d_sigmoid near saturation, bce near 0).
#[test]
fn every_op_matches_its_wgsl_twin() {
    let Some(gpu) = gpu("every_op_matches_its_wgsl_twin") else { return };
    let mut inputs = random(4 * 131, 7, -8.0, 8.0);
    let edges = [80.0, -80.0, 0.0, -0.0, 1e-30, -1e-30, 8.0, -8.0];
    for (i, &e) in edges.iter().enumerate() {
        inputs[4 * i] = e;
        inputs[4 * i + 2] = -e;
    }
    let n = inputs.len() / 4;
    let adam = AdamStep { lr: 0.003, beta1: 0.85, beta2: 0.995, eps: 1e-6, c1: 1.7, c2: 1.3 };
    let scale = 0.37;
    let want: Vec<f32> = inputs.chunks(4).flat_map(|x| cpu_row(x[0], x[1], x[2], x[3], &adam, scale)).collect();
    let width = want.len() / n;
    let step = Step { recon_scale: scale, ..Default::default() }.with_adam(&adam);
    let source = kernel_source(n);
    for mode in &gpu.modes {
        let zeros = vec![0.0; want.len()];
        let out = run_wgsl(
            &mode.ctx,
            &mode.kernels,
            &source,
            (n as u32).div_ceil(64),
            step,
            &[Host::F32(&inputs), Host::F32(&zeros)],
        )
        .unwrap_or_else(|e| panic!("the ops kernel ({}): {e}", mode.name()));
        // One column per op, so that a failure names the op.
        for col in 0..width {
            let got: Vec<f32> = out[1].chunks(width).map(|r| r[col]).collect();
            let cpu: Vec<f32> = want.chunks(width).map(|r| r[col]).collect();
            assert_close(&format!("op column {col} ({})", mode.name()), &got, &cpu, 4e-6, 2e-5);
        }
    }
}

/// Each op is defined once in WGSL across `shaders/` and the generated text
/// in `src/gpu`, and its formula appears nowhere else; the same for the
/// workgroup sum. (The before-stop hook greps for three of these; this
/// test holds every op to it.)
#[test]
fn each_formula_is_written_once() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // Every file under a folder, its subfolders too.
    fn read_all(dir: &std::path::Path, into: &mut String) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                read_all(&path, into);
            } else {
                into.push_str(&std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut wgsl = String::new();
    for dir in ["shaders", "src/gpu"] {
        read_all(&root.join(dir), &mut wgsl);
    }
    let functions = [
        "sigmoid",
        "d_sigmoid",
        "ln_1p_exp_neg_abs",
        "erfc",
        "normal_cdf",
        "activate",
        "d_activate",
        "bce_with_logits",
        "d_bce_with_logits",
        "mse",
        "d_mse",
        "kl",
        "d_kl",
        "reparameterize",
        "d_reparameterize",
        "input_noise",
        "adam",
        "tree_sum",
    ];
    for f in functions {
        let defined = wgsl.matches(&format!("fn {f}(")).count();
        assert_eq!(defined, 1, "WGSL `fn {f}(` is defined {defined} times across shaders/ and src/gpu");
    }
    // The formulas themselves, as the kernels wrote them before they called the ops.
    let formulas =
        ["log(1.0 + exp(-abs(", "y * (1.0 - y)", "mu + exp(0.5 * lv)", "1.0 + lv - mu * mu", "(1.0 - st.beta1)"];
    for formula in formulas {
        let copies = wgsl.matches(formula).count();
        assert!(copies <= 1, "`{formula}` is written {copies} times across shaders/ and src/gpu");
    }
    let rust = std::fs::read_to_string(root.join("src/ops.rs")).unwrap();
    for f in functions.iter().filter(|&&f| f != "tree_sum") {
        // The Rust definitions, each once too.
        let defined = rust.matches(&format!("pub fn {f}(")).count();
        assert_eq!(defined, 1, "src/ops.rs defines `{f}` {defined} times");
    }
}
