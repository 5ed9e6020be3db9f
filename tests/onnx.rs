//! `gpu-vae export --format onnx`: the exported encoder and decoder, run by
//! tract (a pure-Rust ONNX runtime), against the CPU path's `encode` and
//! `decode` on the same inputs, for dense and convolutional models, grey and
//! colour, AE and VAE, and every activation.
//!
//! Tolerance: 1e-4 absolute, on outputs of order 1 (pixel probabilities,
//! trained codes) up to a few tens (codes of the doubled random weights).
//! Both sides compute in f32 but sum in different orders (tract's kernels
//! against the CPU path's blocked products and im2col) and use different exp,
//! erf and tanh approximations: a few ulps (1.2e-7 relative) over sums of up
//! to a few hundred terms, measured at most 2.4e-6.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::LazyLock;

use assert_cmd::Command;
use gpu_vae::advanced::apps::{self, Inference};
use gpu_vae::advanced::cpu::CpuModel;
use gpu_vae::advanced::export::onnx;
use gpu_vae::advanced::export::proto::ModelProto;
use gpu_vae::advanced::model::{
    Activation, Arch, Architecture, Graph, InitScheme, ModelConfig, ModelKind, ReconLoss, init_params,
};
use gpu_vae::advanced::train::run_dir::RunDir;
use prost::Message;
use tract_onnx::prelude::*;

const TOLERANCE: f32 = 1e-4;

/// A loaded ONNX model, ready to run.
type Plan = Arc<TypedRunnableModel>;

fn load(bytes: &[u8]) -> Plan {
    tract_onnx::onnx().model_for_read(&mut &*bytes).unwrap().into_optimized().unwrap().into_runnable().unwrap()
}

/// Runs `plan` on x (rows, then `dims`) and, for a conditional model, the
/// one-hot labels (rows, classes); returns its outputs, flat.
fn infer(plan: &Plan, x: &[f32], rows: usize, dims: &[usize], labels: Option<&[f32]>) -> Vec<Vec<f32>> {
    let shape: Vec<usize> = std::iter::once(rows).chain(dims.iter().copied()).collect();
    let mut inputs = tvec!(Tensor::from_shape(&shape, x).unwrap().into_tvalue());
    if let Some(labels) = labels {
        inputs.push(Tensor::from_shape(&[rows, labels.len() / rows], labels).unwrap().into_tvalue());
    }
    let out = plan.run(inputs).unwrap();
    out.iter().map(|t| t.to_plain_array_view::<f32>().unwrap().iter().copied().collect()).collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Deterministic values in [lo, hi).
fn uniform(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            lo + (hi - lo) * ((s >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect()
}

/// The encoder's input dims after the batch: planes for conv models, rows for dense ones.
fn image_dims(arch: &Architecture) -> Vec<usize> {
    let c = &arch.config;
    match c.arch {
        Arch::Conv => vec![c.channels, c.image_rows, c.image_cols],
        Arch::Mlp => vec![c.input_dim()],
    }
}

/// The largest differences (encoder, decoder) between the exported models and
/// the CPU path on `x` (rows images) and on random codes; asserts the
/// outputs' names and that both are within [`TOLERANCE`].
fn compare(arch: &Architecture, params: &[f32], x: &[f32], rows: usize, what: &str) -> (f32, f32) {
    let mut cpu = CpuModel::for_inference(arch.clone(), params.to_vec());
    let latent = arch.config.latent;
    let encoder = onnx::encoder(arch, params).unwrap();
    let outputs: Vec<&str> = encoder.graph.as_ref().unwrap().output.iter().map(|o| o.name.as_str()).collect();
    // A conditional model's rows take the classes in turn.
    let classes = arch.config.classes;
    let labels: Option<Vec<u8>> = (classes > 0).then(|| (0..rows).map(|r| (r % classes) as u8).collect());
    let onehot = gpu_vae::advanced::engine::one_hot_labels(arch, labels.as_deref(), rows).unwrap();
    let code = cpu.encode(x, labels.as_deref(), rows).unwrap();
    let got = infer(&load(&onnx::to_bytes(&encoder)), x, rows, &image_dims(arch), onehot.as_deref());
    let enc = match arch.config.kind {
        ModelKind::Vae => {
            assert_eq!(outputs, ["mu", "logvar"], "{what}");
            let part = |i: usize| -> Vec<f32> {
                code.chunks_exact(2 * latent).flat_map(|r| r[i * latent..(i + 1) * latent].to_vec()).collect()
            };
            max_diff(&got[0], &part(0)).max(max_diff(&got[1], &part(1)))
        }
        ModelKind::Ae => {
            assert_eq!(outputs, ["code"], "{what}");
            max_diff(&got[0], &code)
        }
    };
    let z = uniform(rows * latent, rows as u64 + 7, -2.5, 2.5);
    let decoder = onnx::to_bytes(&onnx::decoder(arch, params).unwrap());
    let images = cpu.decode(&z, labels.as_deref(), rows).unwrap();
    let got = infer(&load(&decoder), &z, rows, &[latent], onehot.as_deref());
    let dec = max_diff(&got[0], &images);
    // Outputs that barely vary would make any match vacuous.
    let spread = |v: &[f32]| v.iter().fold(f32::MIN, |a, &b| a.max(b)) - v.iter().fold(f32::MAX, |a, &b| a.min(b));
    let spreads = (spread(&code), spread(&images));
    assert!(spreads.0 > 0.05 && spreads.1 > 0.05, "{what}: outputs spread only {spreads:?}");
    eprintln!(
        "{what}: encoder max |diff| {enc:.2e}, decoder {dec:.2e} (outputs spread {:.2}, {:.2})",
        spreads.0, spreads.1
    );
    assert!(enc <= TOLERANCE && dec <= TOLERANCE, "{what}: encoder {enc:e}, decoder {dec:e} over {TOLERANCE:e}");
    (enc, dec)
}

fn config(kind: ModelKind, arch: Arch, channels: usize, activation: Activation) -> ModelConfig {
    let (conv, hidden) = match arch {
        Arch::Conv => (vec![4, 8], vec![12]),
        Arch::Mlp => (vec![], vec![24, 12]),
    };
    ModelConfig {
        kind,
        image_rows: 8,
        image_cols: 8,
        channels,
        hidden,
        latent: 3,
        loss: ReconLoss::Bce,
        activation,
        arch,
        conv,
        classes: 0,
    }
}

/// Freshly initialised models of every kind, layout and colour, and a dense
/// VAE with each hidden activation, at a batch of 5 (the batch is dynamic).
#[test]
fn exported_models_match_the_cpu_path_for_every_configuration() {
    let hidden: Vec<Activation> = Activation::ALL.into_iter().filter(|&a| a != Activation::Identity).collect();
    let mut cases = Vec::new();
    for (i, (kind, arch, channels)) in [ModelKind::Ae, ModelKind::Vae]
        .into_iter()
        .flat_map(|k| [Arch::Mlp, Arch::Conv].into_iter().flat_map(move |a| [(k, a, 1), (k, a, 3)]))
        .enumerate()
    {
        cases.push(config(kind, arch, channels, hidden[i % hidden.len()]));
    }
    cases.extend(hidden.iter().map(|&a| config(ModelKind::Vae, Arch::Mlp, 1, a)));
    // Conditional models: a second input `labels`, joined by Concat.
    for (kind, arch) in [(ModelKind::Vae, Arch::Mlp), (ModelKind::Vae, Arch::Conv), (ModelKind::Ae, Arch::Conv)] {
        cases.push(ModelConfig { classes: 4, ..config(kind, arch, 1, Activation::Relu) });
    }
    let (mut worst_enc, mut worst_dec) = (0.0f32, 0.0f32);
    for (i, c) in cases.iter().enumerate() {
        let arch = Architecture::new(c).unwrap();
        let init = if i % 2 == 0 { InitScheme::Torch } else { InitScheme::Glorot };
        // Doubled, so that pre-activations reach the activations' curved parts (±2..3).
        let params: Vec<f32> = init_params(&arch, init, i as u32 + 1).iter().map(|p| 2.0 * p).collect();
        let rows = 5;
        let x = uniform(rows * c.input_dim(), i as u64, 0.0, 1.0);
        let what = format!("{:?} {:?} {}ch {:?}", c.kind, c.arch, c.channels, c.activation);
        let (enc, dec) = compare(&arch, &params, &x, rows, &what);
        (worst_enc, worst_dec) = (worst_enc.max(enc), worst_dec.max(dec));
    }
    eprintln!("worst over {} models: encoder {worst_enc:.2e}, decoder {worst_dec:.2e}", cases.len());
}

/// The inputs and outputs as the README documents them: names, a symbolic
/// batch `N`, the image layout of the model, opset 17.
#[test]
fn inputs_and_outputs_have_the_documented_names_and_shapes() {
    let shape = |m: &ModelProto, input: bool| -> Vec<(String, Vec<String>)> {
        let g = m.graph.as_ref().unwrap();
        let values = if input { &g.input } else { &g.output };
        let dims = |v: &gpu_vae::advanced::export::proto::ValueInfoProto| -> Vec<String> {
            let t = v.r#type.as_ref().unwrap().tensor_type.as_ref().unwrap();
            let shape = t.shape.as_ref().unwrap();
            shape.dim.iter().map(|d| d.dim_param.clone().unwrap_or_else(|| d.dim_value.unwrap().to_string())).collect()
        };
        values.iter().map(|v| (v.name.clone(), dims(v))).collect()
    };
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let conv = Architecture::new(&config(ModelKind::Vae, Arch::Conv, 3, Activation::Relu)).unwrap();
    let params = init_params(&conv, InitScheme::Torch, 1);
    // Through the bytes, as a reader sees them.
    let enc = ModelProto::decode(&*onnx::to_bytes(&onnx::encoder(&conv, &params).unwrap())).unwrap();
    let dec = ModelProto::decode(&*onnx::to_bytes(&onnx::decoder(&conv, &params).unwrap())).unwrap();
    assert_eq!(enc.opset_import[0].version, 17);
    assert_eq!(enc.ir_version, 8);
    assert_eq!(shape(&enc, true), [("images".to_string(), s(&["N", "3", "8", "8"]))]);
    assert_eq!(shape(&enc, false), [("mu".into(), s(&["N", "3"])), ("logvar".into(), s(&["N", "3"]))]);
    assert_eq!(shape(&dec, true), [("z".to_string(), s(&["N", "3"]))]);
    assert_eq!(shape(&dec, false), [("images".to_string(), s(&["N", "3", "8", "8"]))]);
    let mlp = Architecture::new(&config(ModelKind::Ae, Arch::Mlp, 1, Activation::Relu)).unwrap();
    let params = init_params(&mlp, InitScheme::Glorot, 1);
    let enc = onnx::encoder(&mlp, &params).unwrap();
    let dec = onnx::decoder(&mlp, &params).unwrap();
    assert_eq!(shape(&enc, true), [("images".to_string(), s(&["N", "64"]))]);
    assert_eq!(shape(&enc, false), [("code".to_string(), s(&["N", "3"]))]);
    assert_eq!(shape(&dec, false), [("images".to_string(), s(&["N", "64"]))]);
    // The weights are the checkpoint's tensors, raw little-endian f32.
    let g = enc.graph.unwrap();
    let w = g.initializer.iter().find(|t| t.name == "encoder.0.weight").unwrap();
    assert_eq!(w.dims, [24, 64]);
    let stored = &params[mlp.tensors.iter().find(|t| t.name == "encoder.0.weight").unwrap().offset..][..24 * 64];
    assert_eq!(w.raw_data, stored.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>());
}

/// Every encoder and decoder is expressible; what is not (here the VAE's
/// random draw, in the slice from images to z) is refused naming the op.
#[test]
fn a_slice_with_an_op_onnx_cannot_express_is_refused_by_name() {
    let arch = Architecture::new(&config(ModelKind::Vae, Arch::Mlp, 1, Activation::Relu)).unwrap();
    let params = init_params(&arch, InitScheme::Torch, 1);
    let g = Graph::forward(&arch, false);
    let err = onnx::slice(&arch, &params, g.input, g.latent).unwrap_err().to_string();
    assert_eq!(err, "cannot export as ONNX: op Reparameterize (computing z) has no ONNX form");
    // The encoder's slice through the same function exports.
    onnx::slice(&arch, &params, g.input, g.code).unwrap();
}

/// Runs trained once: a grey dense VAE on the embedded data and a colour
/// conv AE on a small folder of RGB pictures.
struct Runs {
    _dir: tempfile::TempDir,
    vae: PathBuf,
    conv: PathBuf,
    out: PathBuf,
}

static RUNS: LazyLock<Runs> = LazyLock::new(|| {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let pictures = root.join("pictures");
    std::fs::create_dir(&pictures).unwrap();
    for i in 0..12u32 {
        let picture = image::RgbImage::from_fn(8, 8, |x, y| {
            let v = (x * 30 + y * 7 + i * 11) as u8;
            if i % 2 == 0 { image::Rgb([v, 40, 255 - v]) } else { image::Rgb([200, v, 30]) }
        });
        picture.save(pictures.join(format!("{i:02}.png"))).unwrap();
    }
    let train = |name: &str, extra: &[&str]| {
        let out = root.join(name);
        let mut args = vec!["train", "--quiet", "--epochs", "1", "--out", s(&out)];
        args.extend_from_slice(extra);
        ok(&args);
        out
    };
    let out = root.join("out");
    Runs {
        vae: train("vae", &["--hidden", "64", "--latent", "6", "--activation", "gelu"]),
        conv: train(
            "conv",
            &["--model", "ae", "--arch", "conv", "--conv", "4,8", "--latent", "5", "--activation", "elu"]
                .into_iter()
                .chain(["--image-size", "8", "--batch-size", "4", "--data", s(&pictures)])
                .collect::<Vec<_>>(),
        ),
        out,
        _dir: dir,
    }
});

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs the binary on the CPU.
fn gpu_vae(args: &[&str]) -> Output {
    Command::cargo_bin("gpu-vae").unwrap().args(args).output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let mut args = args.to_vec();
    if args[0] == "train" {
        args.extend(["--device", "cpu"]);
    }
    let out = gpu_vae(&args);
    assert!(out.status.success(), "{args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `gpu-vae export` on trained runs writes two files that compute, on the
/// run's test images, what the CPU path's encode and decode compute.
#[test]
fn export_subcommand_writes_models_of_trained_runs() {
    for (name, run) in [("grey mlp vae", &RUNS.vae), ("colour conv ae", &RUNS.conv)] {
        let out = RUNS.out.join(name.replace(' ', "-"));
        let text = ok(&["export", "--run", s(run), "--format", "onnx", "--out", s(&out)]);
        for file in ["encoder.onnx", "decoder.onnx"] {
            assert!(text.contains(&format!("wrote {}", out.join(file).display())), "{text}");
        }
        let opened = RunDir::open(run).unwrap();
        let arch = opened.arch();
        let data = opened.load_data().unwrap();
        let (x, rows) = apps::first_pixels(&data.test, Some(16));
        let mut cpu = CpuModel::for_inference(arch.clone(), opened.params().to_vec());
        let code = apps::latent_means(&mut cpu, &x, None, rows).unwrap();
        let encoder = load(&std::fs::read(out.join("encoder.onnx")).unwrap());
        let mean = infer(&encoder, &x, rows, &image_dims(arch), None).swap_remove(0);
        let enc = max_diff(&mean, &code);
        let decoder = load(&std::fs::read(out.join("decoder.onnx")).unwrap());
        let images = infer(&decoder, &code, rows, &[arch.config.latent], None).swap_remove(0);
        let dec = max_diff(&images, &apps::decode_all(&mut cpu, &code, None, rows).unwrap());
        eprintln!("{name} (trained, {rows} test images): encoder max |diff| {enc:.2e}, decoder {dec:.2e}");
        assert!(enc <= TOLERANCE && dec <= TOLERANCE, "{name}: encoder {enc:e}, decoder {dec:e}");
    }
}

/// A run folder that is not one, and an --out that is a file, are refused in
/// one line, before anything is written.
#[test]
fn export_of_a_missing_run_or_to_a_file_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let (missing, target) = (dir.path().join("no-such-run"), dir.path().join("x"));
    let out = gpu_vae(&["export", "--run", s(&missing), "--out", s(&target)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().filter(|l| l.starts_with("Error: ")).count(), 1, "{err}");
    assert!(err.contains("not a run directory"), "{err}");
    assert!(!target.exists());
    // A file where the folder should be is named, not overwritten.
    std::fs::write(&target, "keep").unwrap();
    let opened = RunDir::open(&RUNS.vae).unwrap();
    let err = gpu_vae::advanced::export::export(
        opened.arch(),
        opened.params(),
        gpu_vae::advanced::export::Format::Onnx,
        &target,
    )
    .unwrap_err()
    .to_string();
    assert!(err.ends_with("x: is not a folder: --out names the folder the files go into"), "{err}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
}
