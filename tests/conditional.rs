//! Conditional models end to end on the embedded data (Fashion-MNIST's ten
//! classes): `train --conditional`, the checkpoint's PyTorch shapes, the
//! saved model's test loss, `sample --class`, and a one-line error for every
//! misuse.

use std::path::Path;
use std::process::Output;

use assert_cmd::Command;
use gpu_vae::advanced::checkpoint;
use gpu_vae::advanced::engine::{Engine, EvalPlan, Inference};
use gpu_vae::advanced::viz::{PAD, grid_size};

fn gpu_vae(args: &[&str]) -> Output {
    Command::cargo_bin("gpu-vae").unwrap().args(args).output().unwrap()
}

fn run_ok(args: &[&str]) {
    let out = gpu_vae(args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Runs a command that must fail and returns its one-line error.
fn error_of(args: &[&str]) -> String {
    let out = gpu_vae(args);
    assert!(!out.status.success(), "{args:?} succeeded");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("Error: ")).collect();
    assert_eq!(lines.len(), 1, "{args:?} should print one Error line, printed:\n{err}");
    lines[0].to_string()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// IDX images (magic 00 00 08 03): count and each image's bytes.
fn read_idx(path: &Path) -> Vec<Vec<u8>> {
    let b = std::fs::read(path).unwrap();
    assert_eq!(b[..4], [0, 0, 8, 3], "{}: IDX images", path.display());
    let dim = |i: usize| u32::from_be_bytes(b[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize;
    let (n, size) = (dim(0), dim(1) * dim(2));
    assert_eq!(b.len(), 16 + n * size);
    b[16..].chunks(size).map(<[u8]>::to_vec).collect()
}

#[test]
fn a_conditional_vae_trains_and_samples_each_class() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cvae");
    run_ok(&["train", "--conditional", "--epochs", "2", "--device", "cpu", "--quiet", "--out", s(&out)]);

    // torch_vae.py --model cvae's shapes: fc1 reads 784 + 10, fc3 20 + 10.
    let (arch, params) = checkpoint::load(&out.join("model.safetensors")).unwrap();
    assert_eq!(arch.config.classes, 10);
    let shape = |name: &str| arch.tensors.iter().find(|t| t.name == name).unwrap().shape.clone();
    assert_eq!(shape("encoder.0.weight"), [400, 794]);
    assert_eq!(shape("decoder.0.weight"), [400, 30]);
    let config = std::fs::read_to_string(out.join("config.json")).unwrap();
    assert!(config.contains("\"classes\": 10") && config.contains("Ankle boot"), "{config}");

    // The saved model alone reproduces the logged test loss (the conditional ELBO).
    let mut model = gpu_vae::advanced::cpu::CpuModel::for_inference(arch.clone(), params);
    let test = std::sync::Arc::new(
        gpu_vae::advanced::data::load(&gpu_vae::advanced::data::DataSpec::Embedded, &Default::default()).unwrap().test,
    );
    let sums = model.evaluate(&test, &EvalPlan { batch_size: 128, seed: 1, noise_std: 0.0 }).unwrap();
    let test_loss = (sums.recon + sums.kl) / test.count as f64;
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let logged: f64 = csv.lines().last().unwrap().split(',').nth(4).unwrap().parse().unwrap();
    assert!((test_loss - logged).abs() < 1e-5 * logged, "reloaded {test_loss} vs logged {logged}");

    // The label matters: one z decoded as a trouser and as a sneaker.
    let z = vec![0.1f32; 20];
    let (a, b) = (model.decode(&z, Some(&[1]), 1).unwrap(), model.decode(&z, Some(&[7]), 1).unwrap());
    let diff: f32 = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32;
    assert!(diff > 0.05, "classes 1 and 7 decode alike (mean |diff| {diff})");

    // A row per class, named at the left margin.
    let all = dir.path().join("all.png");
    run_ok(&["sample", "--run", s(&out), "--class", "all", "--out", s(&all)]);
    let (w, h) = image::image_dimensions(&all).unwrap();
    let (gw, gh) = grid_size(10, 8, 28, 28);
    let names =
        ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];
    let margin = names.iter().map(|n| gpu_vae::advanced::font::text_width(n)).max().unwrap() + 2 * PAD;
    assert_eq!((w, h), (gw + margin, gh));

    // One class by name or number, as IDX: the same draws.
    let (by_name, by_number) = (dir.path().join("sandal.idx"), dir.path().join("5.idx"));
    run_ok(&["sample", "--run", s(&out), "--class", "sandal", "--n", "12", "--format", "idx", "--out", s(&by_name)]);
    run_ok(&["sample", "--run", s(&out), "--class", "5", "--n", "12", "--format", "idx", "--out", s(&by_number)]);
    let images = read_idx(&by_name);
    assert_eq!(images.len(), 12);
    assert_eq!(images, read_idx(&by_number));
    // The uses that read images decode each with its own label (the conditional ELBO).
    let out_dir = dir.path();
    for args in [
        vec!["eval", "--n", "64", "--k", "5"],
        vec!["reconstruct", "--n", "16", "--out", "rec.png"],
        vec!["denoise", "--std", "0.3", "--n", "8", "--out", "den.png"],
        vec!["anomaly", "--score", "elbo"],
        vec!["latent-plot", "--n", "200", "--out", "lat.png"],
    ] {
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        if let Some(i) = args.iter().position(|a| a == "--out") {
            args[i + 1] = s(&out_dir.join(&args[i + 1])).to_string();
        }
        args.extend(["--run".into(), s(&out).into(), "--device".into(), "cpu".into()]);
        run_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    }

    // --n is per class with --class all.
    let rows = dir.path().join("all.idx");
    run_ok(&["sample", "--run", s(&out), "--class", "all", "--n", "12", "--format", "idx", "--out", s(&rows)]);
    assert_eq!(read_idx(&rows).len(), 120);
}

#[test]
fn conditional_misuse_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("vae");
    run_ok(&["train", "--epochs", "1", "--device", "cpu", "--quiet", "--out", s(&plain)]);
    let png = dir.path().join("x.png");
    let err = error_of(&["sample", "--run", s(&plain), "--class", "3", "--out", s(&png)]);
    assert!(err.contains("--class") && err.contains("not a conditional run"), "{err}");

    let cond = dir.path().join("cvae");
    run_ok(&["train", "--conditional", "--epochs", "1", "--device", "cpu", "--quiet", "--out", s(&cond)]);
    let err = error_of(&["sample", "--run", s(&cond), "--class", "10", "--out", s(&png)]);
    assert!(err.contains("10 classes (0 to 9)"), "{err}");
    let err = error_of(&["sample", "--run", s(&cond), "--class", "hat", "--out", s(&png)]);
    assert!(err.contains("\"hat\"") && err.contains("Sneaker"), "{err}");
    let err = error_of(&["sample", "--run", s(&cond), "--device", "gpu", "--out", s(&png)]);
    assert!(err.contains("conditional models run on the CPU path"), "{err}");

    // A flat folder of pictures has no labels.
    let flat = dir.path().join("flat");
    std::fs::create_dir(&flat).unwrap();
    for i in 0..8u8 {
        image::GrayImage::from_pixel(8, 8, image::Luma([i * 30])).save(flat.join(format!("{i}.png"))).unwrap();
    }
    let out = dir.path().join("flat-run");
    let err = error_of(&["train", "--conditional", "--data", s(&flat), "--epochs", "1", "--out", s(&out)]);
    assert!(err.contains("--conditional") && err.contains("no labels"), "{err}");
}
