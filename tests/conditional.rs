//! Conditional models end to end on the embedded data (Fashion-MNIST's ten
//! classes): `train --conditional`, the checkpoint's PyTorch shapes and class
//! names, the saved model's test loss, `sample --class`, `reconstruct
//! --as-class`, `interpolate --classes`, `manifold --class`, labelled codes,
//! and a one-line error for every misuse.

use std::path::Path;
use std::process::Output;

use assert_cmd::Command;
use gpu_vae::advanced::apps::{self, codes};
use gpu_vae::advanced::checkpoint;
use gpu_vae::advanced::engine::{Engine, EvalPlan, Inference};
use gpu_vae::advanced::viz::{PAD, grid_size};

const NAMES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

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
    // The checkpoint alone names the classes too.
    assert_eq!(checkpoint::class_names(&out.join("model.safetensors")).unwrap(), NAMES);

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
    let margin = NAMES.iter().map(|n| gpu_vae::advanced::font::text_width(n)).max().unwrap() + 2 * PAD;
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

/// The 28x28 tile at grid row `r`, column `c` of a PNG written by `viz::write_grid`.
fn tile(png: &image::GrayImage, r: usize, c: usize) -> Vec<u8> {
    let (x0, y0) = (c as u32 * (28 + PAD) + PAD, r as u32 * (28 + PAD) + PAD);
    (0..28).flat_map(|y| (0..28).map(move |x| png.get_pixel(x0 + x, y0 + y)[0])).collect()
}

fn grid(path: &Path, rows: usize, cols: usize) -> image::GrayImage {
    let png = image::open(path).unwrap().to_luma8();
    assert_eq!(png.dimensions(), grid_size(rows, cols, 28, 28), "{}: {rows}x{cols} tiles", path.display());
    png
}

fn max_diff(a: &[u8], b: &[u8]) -> u8 {
    a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).max().unwrap()
}

/// The least largest-pixel change (of 255) that counts as "decoded as another
/// class": a model that ignored its label would decode the same tile exactly
/// (0). After two epochs on the embedded data the changes measured 26 to 36
/// between classes and 14 to 31 from a walk's middle to its ends.
const CHANGED: u8 = 10;

#[test]
fn every_use_takes_the_class() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("cvae");
    run_ok(&["train", "--conditional", "--epochs", "2", "--device", "cpu", "--quiet", "--out", s(&run)]);
    let at = |name: &str| dir.path().join(name);
    let test =
        gpu_vae::advanced::data::load(&gpu_vae::advanced::data::DataSpec::Embedded, &Default::default()).unwrap().test;
    let labels = test.labels.clone().unwrap();

    // reconstruct --as-class all: a row per image, the image, its
    // reconstruction, then each class; its own class's tile is its reconstruction.
    let all = at("as-all.png");
    run_ok(&["reconstruct", "--run", s(&run), "--n", "5", "--as-class", "all", "--device", "cpu", "--out", s(&all)]);
    let png = grid(&all, 5, 12);
    for (i, &label) in labels.iter().enumerate().take(5) {
        let own = 2 + label as usize;
        assert_eq!(tile(&png, i, own), tile(&png, i, 1), "image {i}: as its own class {own}");
        assert_eq!(tile(&png, i, 0), test.image(i), "image {i} itself");
        let other = 2 + (label as usize + 1) % 10;
        let moved = max_diff(&tile(&png, i, other), &tile(&png, i, 1));
        assert!(moved > CHANGED, "image {i} as another class: {moved}");
    }
    // One class, by name: three tiles a row, the same as that column of `all`.
    let sandal = at("as-sandal.png");
    run_ok(&[
        "reconstruct",
        "--run",
        s(&run),
        "--n",
        "5",
        "--as-class",
        "sandal",
        "--device",
        "cpu",
        "--out",
        s(&sandal),
    ]);
    let one = grid(&sandal, 5, 3);
    (0..5).for_each(|i| assert_eq!(tile(&one, i, 2), tile(&png, i, 2 + 5), "image {i} as a sandal"));

    // interpolate --classes: each row the image, then its latent mean decoded
    // from class 1 to class 7; the ends are `--as-class 1` and `7`.
    let walk = at("walk.png");
    let args = ["--run", s(&run), "--n", "5", "--steps", "6", "--device", "cpu", "--out", s(&walk)];
    run_ok(&[&["interpolate", "--classes", "trouser:7"], &args[..]].concat());
    let w = grid(&walk, 5, 7);
    for i in 0..5 {
        assert_eq!(tile(&w, i, 0), test.image(i));
        assert_eq!(tile(&w, i, 1), tile(&png, i, 2 + 1), "row {i} starts as a trouser");
        assert_eq!(tile(&w, i, 6), tile(&png, i, 2 + 7), "row {i} ends as a sneaker");
        // Between the ends, neither class.
        let middle = tile(&w, i, 3);
        let (from, to) = (max_diff(&middle, &tile(&w, i, 1)), max_diff(&middle, &tile(&w, i, 6)));
        assert!(from > CHANGED / 2 && to > CHANGED / 2, "row {i}: {from} {to}");
    }

    // manifold --class: the same plane, decoded as two classes.
    let (bag, shirt) = (at("bag.png"), at("shirt.png"));
    run_ok(&["manifold", "--run", s(&run), "--n", "4", "--class", "8", "--device", "cpu", "--out", s(&bag)]);
    run_ok(&["manifold", "--run", s(&run), "--n", "4", "--class", "shirt", "--device", "cpu", "--out", s(&shirt)]);
    let (bag, shirt) = (grid(&bag, 4, 4), grid(&shirt, 4, 4));
    assert!(max_diff(&tile(&bag, 1, 1), &tile(&shirt, 1, 1)) > CHANGED, "the class changes the manifold");

    // The codes carry each image's label and decode with it: within f16's
    // rounding of the reconstructions with the true labels.
    let (file, idx) = (at("test.codes"), at("decoded.idx"));
    run_ok(&["encode", "--run", s(&run), "--n", "40", "--device", "cpu", "--out", s(&file)]);
    let c = codes::read(&file).unwrap();
    assert_eq!((c.classes, c.labels.as_deref()), (10, Some(&labels[..40])));
    let out = gpu_vae(&["decode", "--run", s(&run), "--codes", s(&file), "--device", "cpu", "--out", s(&idx)]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("each with its label (of 10 classes)"));
    let (arch, params) = checkpoint::load(&run.join("model.safetensors")).unwrap();
    let mut model = gpu_vae::advanced::cpu::CpuModel::for_inference(arch, params);
    let x = apps::pixels(&test, &(0..40).collect::<Vec<_>>());
    let want = codes::to_u8(&apps::reconstruct(&mut model, &x, Some(&labels[..40]), 40).unwrap());
    let decoded: Vec<u8> = read_idx(&idx).concat();
    assert!(max_diff(&decoded, &want) <= 1, "decoded codes vs reconstructions with the true labels");
    // With one label changed the file decodes that image differently.
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 40;
    bytes[last] = (labels[0] + 1) % 10;
    std::fs::write(&file, &bytes).unwrap();
    run_ok(&["decode", "--run", s(&run), "--codes", s(&file), "--device", "cpu", "--out", s(&idx)]);
    let relabelled = read_idx(&idx);
    assert!(max_diff(&relabelled[0], &want[..784]) > CHANGED, "image 0 decoded as another class");
    assert_eq!(relabelled[1..].concat(), decoded[784..], "the other images as before");
}

#[test]
fn class_flags_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let (plain, cond) = (dir.path().join("vae"), dir.path().join("cvae"));
    run_ok(&["train", "--epochs", "1", "--device", "cpu", "--quiet", "--out", s(&plain)]);
    run_ok(&["train", "--conditional", "--epochs", "1", "--device", "cpu", "--quiet", "--out", s(&cond)]);
    let png = dir.path().join("x.png");
    let with = |run: &Path, args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--run", s(run), "--device", "cpu", "--out", s(&png)]);
        error_of(&all)
    };

    // On a run that is not conditional.
    for (args, flag) in [
        (&["reconstruct", "--as-class", "3"][..], "--as-class"),
        (&["interpolate", "--classes", "1:2"], "--classes"),
        (&["manifold", "--class", "1"], "--class"),
    ] {
        let err = with(&plain, args);
        assert!(err.contains(&format!("invalid {flag}: ")) && err.contains("not a conditional run"), "{err}");
    }
    // Out of range, and names that are not the run's.
    let err = with(&cond, &["reconstruct", "--as-class", "10"]);
    assert!(err.contains("invalid --as-class: 10, but the run has 10 classes (0 to 9)"), "{err}");
    let err = with(&cond, &["reconstruct", "--as-class", "hat"]);
    assert!(err.contains("\"hat\" is not `all`, a class number (0 to 9) or a name (T-shirt/top,"), "{err}");
    let err = with(&cond, &["interpolate", "--classes", "0:12"]);
    assert!(err.contains("invalid --classes: 12, but the run has 10 classes"), "{err}");
    let err = with(&cond, &["interpolate", "--classes", "hat:1"]);
    assert!(err.contains("invalid --classes: \"hat\" is not a class number") && err.contains("Sneaker"), "{err}");
    let err = with(&cond, &["interpolate", "--classes", "all:1"]);
    assert!(err.contains("\"all\" is not a class number"), "{err}");
    let err = with(&cond, &["interpolate", "--classes", "3"]);
    assert!(err.contains("invalid --classes: \"3\" is not a pair of classes A:B"), "{err}");
    let err = with(&cond, &["manifold", "--class", "99"]);
    assert!(err.contains("invalid --class: 99, but the run has 10 classes"), "{err}");
    // A conditional run's uses that need a class say so.
    let err = with(&cond, &["manifold"]);
    assert!(err.contains("invalid --class: the model is conditional"), "{err}");
    let err = with(&cond, &["interpolate"]);
    assert!(err.contains("--classes A:B"), "{err}");

    // Codes and models that do not go together.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/codes-v2");
    let idx = dir.path().join("x.idx");
    let old = fixtures.join("plain-8bit.codes");
    let err = error_of(&["decode", "--run", s(&cond), "--codes", s(&old), "--device", "cpu", "--out", s(&idx)]);
    assert!(err.contains("codes carry no labels") && err.contains("conditional (10 classes)"), "{err}");
    let labelled = dir.path().join("c.codes");
    run_ok(&["encode", "--run", s(&cond), "--n", "4", "--device", "cpu", "--out", s(&labelled)]);
    let err = error_of(&["decode", "--run", s(&plain), "--codes", s(&labelled), "--device", "cpu", "--out", s(&idx)]);
    assert!(err.contains("codes carry labels of 10 classes") && err.contains("not conditional"), "{err}");
    // Files from before labels (version 2) still decode with a plain run.
    for name in ["plain-8bit.codes", "plain-16bit.codes"] {
        run_ok(&[
            "decode",
            "--run",
            s(&plain),
            "--codes",
            s(&fixtures.join(name)),
            "--device",
            "cpu",
            "--out",
            s(&idx),
        ]);
        assert_eq!(read_idx(&idx).len(), 3, "{name}");
    }
}
