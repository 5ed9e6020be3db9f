//! `GpuInference` against the CPU model through `apps::Inference`: encoder
//! outputs and decoder logits for AEs and VAEs of awkward sizes (13x20 images,
//! so that the first layer's K = 260 splits along K), at row counts that hit
//! different row buckets and, past `MAX_ROWS`, the chunking; then the CLI uses
//! end to end, `--device gpu` against `--device cpu` on a trained run.

#[path = "common/gpu.rs"]
mod gpu_common;

use std::path::Path;
use std::process::Output;

use assert_cmd::Command;
use gpu_common::{assert_close, gpu, random};
use gpu_vae::advanced::engine::Inference;
use gpu_vae::advanced::gpu::GpuInference;
use gpu_vae::advanced::model::{Activation, Architecture, ModelConfig, ModelKind, ReconLoss};

const ROWS: usize = 13;
const COLS: usize = 20;
const LATENT: usize = 5;
/// Not a power of two, so the largest bucket is a clamped one; 65 and 130
/// rows run as 40 + 25 and 40 + 40 + 40 + 10.
const MAX_ROWS: usize = 40;
const CALL_ROWS: [usize; 6] = [1, 7, 33, 40, 65, 130];

/// Each output is a dot product of up to K = 260 f32 terms plus a bias,
/// summed in another order on the GPU (BK-deep tiles, K slices, FMA chains)
/// than on the CPU. With inputs in (0, 1] or (-2, 2] and weights in
/// (-0.2, 0.2], Σ|a·b| of a first-layer output is at most about 50, so its
/// rounding error is at most K·u·50 ≈ 8e-4 and, the order being arbitrary
/// rather than adversarial, typically √K times smaller (≈ 5e-5); the later
/// layers (K ≤ 33, weights ≤ 0.2) carry it over without growth. Measured:
/// under 1e-5. atol 1e-4 leaves room for another driver's FMA contraction;
/// rtol 1e-5 covers large outputs.
const ATOL: f32 = 1e-4;
const RTOL: f32 = 1e-5;

fn arch(kind: ModelKind, hidden: &[usize]) -> Architecture {
    let config = ModelConfig {
        kind,
        image_rows: ROWS,
        image_cols: COLS,
        channels: 1,
        hidden: hidden.to_vec(),
        latent: LATENT,
        loss: ReconLoss::Bce,
        activation: Activation::Relu,
        arch: gpu_vae::advanced::model::Arch::Mlp,
        conv: vec![],
        classes: 0,
    };
    Architecture::new(&config).unwrap()
}

/// Encoder outputs and decoder logits on the GPU (both shader modes) against
/// the CPU, on random parameters, inputs in (0, 1] and codes in (-2, 2].
fn compare(name: &str, kind: ModelKind, hidden: &[usize]) {
    compare_arch(name, arch(kind, hidden));
}

fn compare_arch(name: &str, arch: Architecture) {
    let Some(gpu) = gpu(name) else { return };
    let latent = arch.config.latent;
    let params = random(arch.param_count, 11, -0.2, 0.2);
    let mut cpu = gpu_vae::advanced::cpu::CpuModel::for_inference(arch.clone(), params.clone());
    let (dim, code, classes) = (arch.config.input_dim(), arch.code_width(), arch.config.classes);
    for mode in &gpu.modes {
        let mut g = GpuInference::new(mode.ctx.clone(), arch.clone(), &params, MAX_ROWS).unwrap();
        assert!(g.device().starts_with("gpu: "), "{}", g.device());
        for (i, rows) in CALL_ROWS.into_iter().enumerate() {
            let what = |op: &str| format!("{name} {op} rows={rows} ({})", mode.name());
            let x = random(rows * dim, 100 + i as u32, 0.0, 1.0);
            // A conditional model's classes, different in every row and chunk.
            let labels: Option<Vec<u8>> =
                (classes > 0).then(|| (0..rows).map(|r| ((r * 5 + i) % classes) as u8).collect());
            let labels = labels.as_deref();
            let got = g.encode(&x, labels, rows).unwrap();
            assert_eq!(got.len(), rows * code, "{}", what("encode"));
            let want = Inference::encode(&mut cpu, &x, labels, rows).unwrap();
            assert_close(&what("encode"), &got, &want, ATOL, RTOL);
            let z = random(rows * latent, 200 + i as u32, -2.0, 2.0);
            let got = g.decode_logits(&z, labels, rows).unwrap();
            let want = Inference::decode_logits(&mut cpu, &z, labels, rows).unwrap();
            assert_close(&what("decode_logits"), &got, &want, ATOL, RTOL);
        }
    }
}

#[test]
fn ae_with_one_hidden_layer_matches_cpu() {
    compare("ae_with_one_hidden_layer_matches_cpu", ModelKind::Ae, &[13]);
}

#[test]
fn ae_with_two_hidden_layers_matches_cpu() {
    compare("ae_with_two_hidden_layers_matches_cpu", ModelKind::Ae, &[33, 7]);
}

#[test]
fn vae_with_one_hidden_layer_matches_cpu() {
    compare("vae_with_one_hidden_layer_matches_cpu", ModelKind::Vae, &[13]);
}

#[test]
fn vae_with_two_hidden_layers_matches_cpu() {
    compare("vae_with_two_hidden_layers_matches_cpu", ModelKind::Vae, &[33, 7]);
}

/// The head reads the pixels directly and the decoder is one layer.
#[test]
fn vae_without_hidden_layers_matches_cpu() {
    compare("vae_without_hidden_layers_matches_cpu", ModelKind::Vae, &[]);
}

/// Labels of 7 classes join the first encoder and decoder layers.
#[test]
fn conditional_vae_matches_cpu() {
    let config = ModelConfig { classes: 7, ..arch(ModelKind::Vae, &[13]).config };
    compare_arch("conditional_vae_matches_cpu", Architecture::new(&config).unwrap());
    // A conditional model without labels is refused, as on the CPU.
    let Some(gpu) = gpu("conditional_vae_matches_cpu") else { return };
    let arch = Architecture::new(&config).unwrap();
    let params = random(arch.param_count, 3, -0.2, 0.2);
    let mut g = GpuInference::new(gpu.modes[0].ctx.clone(), arch, &params, MAX_ROWS).unwrap();
    let err = g.encode(&[0.5; 260], None, 1).unwrap_err().to_string();
    assert!(err.contains("give each image's class"), "{err}");
}

#[test]
fn bad_shapes_are_errors_and_empty_calls_are_empty() {
    let Some(gpu) = gpu("bad_shapes_are_errors_and_empty_calls_are_empty") else { return };
    let arch = arch(ModelKind::Vae, &[13]);
    let params = random(arch.param_count, 3, -0.2, 0.2);
    let ctx = gpu.modes[0].ctx.clone();
    assert!(GpuInference::new(ctx.clone(), arch.clone(), &params[1..], MAX_ROWS).is_err());
    assert!(GpuInference::new(ctx.clone(), arch.clone(), &params, 0).is_err());
    let mut g = GpuInference::new(ctx, arch, &params, MAX_ROWS).unwrap();
    let err = g.encode(&[0.5; 10], None, 1).unwrap_err().to_string();
    assert!(err.contains("not 1 rows of 260"), "{err}");
    assert!(g.decode_logits(&[0.0; LATENT * 2], None, 3).is_err());
    assert!(g.encode(&[], None, 0).unwrap().is_empty());
}

fn gpu_vae(args: &[&str]) -> Output {
    Command::cargo_bin("gpu-vae").unwrap().args(args).output().unwrap()
}

/// Runs a command that must succeed and returns its standard output.
fn ok(args: &[&str]) -> String {
    let out = gpu_vae(args);
    assert!(out.status.success(), "{args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The number printed right after `marker` in `text`.
fn number_after(text: &str, marker: &str) -> f64 {
    let rest = &text[text.find(marker).unwrap_or_else(|| panic!("{marker:?} not in:\n{text}")) + marker.len()..];
    let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-')).unwrap_or(rest.len());
    rest[..end].parse().unwrap_or_else(|_| panic!("no number after {marker:?} in:\n{text}"))
}

/// The mse column of a `reconstruct --csv` file.
fn csv_mse(path: &Path) -> Vec<f64> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines().skip(1).map(|l| l.split(',').nth(1).unwrap().parse().unwrap()).collect()
}

/// A VAE trained one epoch on the CPU, then `reconstruct` and `eval` on each
/// device. Both draw their noise on the host, so the numbers differ only by
/// the logits' rounding (the kernel tests' tolerance, on K = 784 and 400):
/// a per-image MSE moves by well under 1e-4 of itself; ELBO and IWAE sum
/// 784 per-pixel terms, each off by at most |Δlogit| ≲ 1e-4, and are printed
/// to 1e-3, so they agree to 0.05 nats.
#[test]
fn cli_uses_on_the_gpu_match_the_cpu() {
    let name = "cli_uses_on_the_gpu_match_the_cpu";
    if gpu(name).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let run = p("run");
    ok(&["train", "--device", "cpu", "--quiet", "--epochs", "1", "--out", &run]);

    let mut mse = Vec::new();
    let mut eval = Vec::new();
    for device in ["gpu", "cpu"] {
        let (png, csv) = (p(&format!("{device}.png")), p(&format!("{device}.csv")));
        let text = ok(&["reconstruct", "--run", &run, "--device", device, "--n", "20", "--out", &png, "--csv", &csv]);
        assert!(text.contains(&format!("device: {device}")), "{text}");
        mse.push(csv_mse(Path::new(&csv)));
        let text = ok(&["eval", "--run", &run, "--device", device, "--n", "50", "--k", "20"]);
        assert!(text.contains(&format!("device: {device}")), "{text}");
        eval.push([number_after(&text, "ELBO "), number_after(&text, "NLL <= ")]);
    }
    assert_eq!(mse[0].len(), 20);
    for (i, (g, c)) in mse[0].iter().zip(&mse[1]).enumerate() {
        assert!((g - c).abs() <= 1e-8 + 1e-4 * c, "image {i}: MSE {g} on the GPU, {c} on the CPU");
    }
    for (what, g, c) in [("ELBO", eval[0][0], eval[1][0]), ("IWAE NLL", eval[0][1], eval[1][1])] {
        assert!((g - c).abs() <= 0.05, "{what}: {g} on the GPU, {c} on the CPU");
    }
}

/// A conditional VAE trained on the GPU: its epoch's train and test losses
/// as the CPU's from the same start, and the uses that take labels (sample
/// by class, the conditional ELBO) on both devices.
#[test]
fn conditional_training_and_uses_on_the_gpu_match_the_cpu() {
    let name = "conditional_training_and_uses_on_the_gpu_match_the_cpu";
    if gpu(name).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let mut losses = Vec::new();
    for device in ["gpu", "cpu"] {
        let run = p(&format!("run-{device}"));
        ok(&["train", "--conditional", "--device", device, "--quiet", "--epochs", "1", "--out", &run]);
        let csv = std::fs::read_to_string(Path::new(&run).join("metrics.csv")).unwrap();
        let row: Vec<f64> =
            csv.lines().nth(1).unwrap().split(',').skip(1).take(2).map(|v| v.parse().unwrap()).collect();
        losses.push(row);
    }
    // One epoch of f32 steps summed in other orders: the per-image losses
    // (about 260) agree to far better than 0.1%.
    for (what, g, c) in [("train", losses[0][0], losses[1][0]), ("test", losses[0][1], losses[1][1])] {
        assert!((g - c).abs() <= 1e-3 * c, "{what} loss: {g} on the GPU, {c} on the CPU");
    }
    let run = p("run-cpu");
    let mut eval = Vec::new();
    for device in ["gpu", "cpu"] {
        let png = p(&format!("{device}.png"));
        ok(&["sample", "--run", &run, "--device", device, "--class", "all", "--n", "3", "--out", &png]);
        let text = ok(&["eval", "--run", &run, "--device", device, "--n", "50", "--k", "20"]);
        assert!(text.contains(&format!("device: {device}")), "{text}");
        eval.push(number_after(&text, "ELBO "));
    }
    assert!((eval[0] - eval[1]).abs() <= 0.05, "ELBO: {} on the GPU, {} on the CPU", eval[0], eval[1]);
}

/// Convolutions and transposed convolutions: 16x12 images, 2 and 5 channels.
#[test]
fn conv_vae_matches_cpu() {
    let config = ModelConfig {
        kind: ModelKind::Vae,
        image_rows: 16,
        image_cols: 12,
        channels: 1,
        hidden: vec![6],
        latent: LATENT,
        loss: ReconLoss::Bce,
        activation: Activation::Relu,
        arch: gpu_vae::advanced::model::Arch::Conv,
        conv: vec![2, 5],
        classes: 0,
    };
    compare_arch("conv_vae_matches_cpu", Architecture::new(&config.clone()).unwrap());
    let conditional = ModelConfig { classes: 4, ..config };
    compare_arch("conv_vae_matches_cpu (conditional)", Architecture::new(&conditional).unwrap());
}

/// Colour: 3-plane 8x12 images through a conv VAE (3 channels in and out).
#[test]
fn rgb_conv_vae_matches_cpu() {
    let config = ModelConfig {
        kind: ModelKind::Vae,
        image_rows: 8,
        image_cols: 12,
        channels: 3,
        hidden: vec![],
        latent: LATENT,
        loss: ReconLoss::Bce,
        activation: Activation::Relu,
        arch: gpu_vae::advanced::model::Arch::Conv,
        conv: vec![4, 3],
        classes: 0,
    };
    compare_arch("rgb_conv_vae_matches_cpu", Architecture::new(&config).unwrap());
}
