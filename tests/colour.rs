//! Colour end to end: a folder of RGB pictures and a CIFAR-10 folder train
//! conv and MLP VAEs on the CPU, every picture comes out RGB, and every
//! subcommand that uses a trained run works on a colour conv run.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::LazyLock;

use assert_cmd::Command;
use gpu_vae::advanced::apps::codes;
use gpu_vae::advanced::viz::grid_size;

/// A small folder of colour pictures in two classes, and runs trained on it once.
struct Runs {
    _dir: tempfile::TempDir,
    pictures: PathBuf,
    /// A conv VAE on 8x8 RGB (latent 2, so that every plane of `manifold` works).
    conv: PathBuf,
    /// An MLP VAE on the same pictures.
    mlp: PathBuf,
    out: PathBuf,
}

/// Picture `i` of class `class`: a colour gradient, its hue by class; every
/// third one has a transparent corner (composited on black).
fn picture(class: u8, i: u32) -> image::RgbaImage {
    image::RgbaImage::from_fn(10, 10, |x, y| {
        let v = (x * 20 + y * 5 + i * 7) as u8;
        let alpha = if i.is_multiple_of(3) && x < 3 && y < 3 { 0 } else { 255 };
        if class == 0 { image::Rgba([v, 40, 255 - v, alpha]) } else { image::Rgba([200, v, 30, alpha]) }
    })
}

static RUNS: LazyLock<Runs> = LazyLock::new(|| {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let pictures = root.join("pictures");
    for (class, name) in [(0u8, "blue"), (1, "red")] {
        let sub = pictures.join(name);
        std::fs::create_dir_all(&sub).unwrap();
        for i in 0..8 {
            picture(class, i).save(sub.join(format!("{i:02}.png"))).unwrap();
        }
    }
    let train = |name: &str, extra: &[&str]| {
        let out = root.join(name);
        let mut args = vec!["train", "--quiet", "--epochs", "1", "--image-size", "8", "--batch-size", "4"];
        args.extend_from_slice(&["--data", s(&pictures), "--out", s(&out)]);
        args.extend_from_slice(extra);
        ok(&args);
        out
    };
    let out = root.join("out");
    std::fs::create_dir(&out).unwrap();
    Runs {
        conv: train("conv", &["--arch", "conv", "--conv", "4,8", "--latent", "2"]),
        mlp: train("mlp", &["--hidden", "16", "--latent", "3"]),
        pictures,
        out,
        _dir: dir,
    }
});

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn out(name: &str) -> PathBuf {
    RUNS.out.join(name)
}

/// Runs the binary on the CPU.
fn gpu_vae(args: &[&str]) -> Output {
    Command::cargo_bin("gpu-vae").unwrap().args(args).args(["--device", "cpu"]).output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = gpu_vae(args);
    assert!(out.status.success(), "{args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The one-line error of a command that must fail.
fn error_of(args: &[&str]) -> String {
    let out = gpu_vae(args);
    assert!(!out.status.success(), "{args:?} succeeded");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("Error: ")).collect();
    assert_eq!(lines.len(), 1, "{args:?} should print one Error line, printed:\n{err}");
    lines[0].to_string()
}

/// The PNG's size, after checking it is 8-bit RGB.
fn rgb_png(path: &Path) -> (u32, u32) {
    let picture = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(picture.color(), image::ColorType::Rgb8, "{}", path.display());
    (picture.width(), picture.height())
}

#[test]
fn colour_folders_train_conv_and_mlp_models_with_rgb_pictures() {
    for run in [&RUNS.conv, &RUNS.mlp] {
        let config = std::fs::read_to_string(run.join("config.json")).unwrap();
        assert!(config.contains("\"channels\": 3"), "{config}");
        rgb_png(&run.join("samples.png"));
        rgb_png(&run.join("reconstructions.png"));
    }
    // The conv model's first and last layers take and make 3 planes.
    let ckpt = gpu_vae::advanced::train::run_dir::RunDir::open(&RUNS.conv).unwrap();
    let shape = |name: &str| ckpt.arch().tensors.iter().find(|t| t.name == name).unwrap().shape.clone();
    assert_eq!(shape("encoder.0.weight"), [4, 3, 3, 3]);
    assert_eq!(shape("decoder.3.weight"), [4, 3, 3, 3]);
}

#[test]
fn channels_flag_reads_colour_pictures_as_gray() {
    let run = out("gray-run");
    ok(&["train", "--quiet", "--epochs", "1", "--image-size", "8", "--channels", "1"]
        .into_iter()
        .chain(["--data", s(&RUNS.pictures), "--out", s(&run)])
        .collect::<Vec<_>>());
    let picture = image::open(run.join("samples.png")).unwrap();
    assert_eq!(picture.color(), image::ColorType::L8);
    // A usage error from clap.
    let bad = gpu_vae(&["train", "--channels", "2", "--data", s(&RUNS.pictures), "--out", s(&out("x"))]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && err.contains("'2' for '--channels") && err.contains("1 (grayscale) or 3 (RGB)"),
        "{err}"
    );
}

#[test]
fn every_use_of_a_run_works_on_a_colour_conv_run() {
    let run = s(&RUNS.conv);
    let png = out("rec.png");
    ok(&["reconstruct", "--run", run, "--n", "3", "--out", s(&png)]);
    assert_eq!(rgb_png(&png), grid_size(2, 3, 8, 8));

    ok(&["interpolate", "--run", run, "--pairs", "0:1", "--steps", "4", "--slerp", "--out", s(&png)]);
    assert_eq!(rgb_png(&png), grid_size(2, 6, 8, 8));
    let a = RUNS.pictures.join("red").join("01.png");
    let b = RUNS.pictures.join("blue").join("02.png");
    ok(&["interpolate", "--run", run, "--from-file", s(&a), "--to-file", s(&b), "--steps", "3", "--out", s(&png)]);
    assert_eq!(rgb_png(&png), grid_size(1, 5, 8, 8));

    ok(&["manifold", "--run", run, "--n", "4", "--out", s(&png)]);
    assert_eq!(rgb_png(&png), grid_size(4, 4, 8, 8));

    ok(&["latent-plot", "--run", run, "--split", "train", "--out", s(&out("latent.png"))]);

    let file = out("colour.codes");
    ok(&["encode", "--run", run, "--split", "train", "--out", s(&file)]);
    let codes = codes::read(&file).unwrap();
    assert_eq!((codes.channels, codes.image_rows, codes.count), (3, 8, 13));
    let folder = out("decoded");
    let text = ok(&["decode", "--run", run, "--codes", s(&file), "--format", "png", "--out", s(&folder)]);
    assert!(text.contains("8x8 RGB"), "{text}");
    assert_eq!(rgb_png(&folder.join("00012.png")), (8, 8));
    let err = error_of(&["decode", "--run", run, "--codes", s(&file), "--out", s(&out("decoded.idx"))]);
    assert!(err.contains("--format idx") && err.contains("--format png"), "{err}");
    // Codes of a grayscale model are refused by a colour one, by channel count.
    let mut gray = std::fs::read(&file).unwrap();
    gray[11] = 1;
    let gray_file = out("gray.codes");
    std::fs::write(&gray_file, gray).unwrap();
    let err = error_of(&["decode", "--run", run, "--codes", s(&gray_file), "--out", s(&folder)]);
    assert!(err.contains("1 channel(s) (grayscale), the run's model makes 3 (RGB)"), "{err}");

    ok(&["denoise", "--run", run, "--std", "0.3", "--n", "3", "--out", s(&png)]);
    assert_eq!(rgb_png(&png), grid_size(3, 3, 8, 8));

    let text = ok(&["anomaly", "--run", run, "--normal-class", "0", "--roc", s(&out("roc.png"))]);
    assert!(text.contains("ROC-AUC"), "{text}");
    let text = ok(&["eval", "--run", run, "--k", "3"]);
    assert!(text.contains("ELBO"), "{text}");
    ok(&["sample", "--run", run, "--n", "4", "--out", s(&png)]);
    rgb_png(&png);
}

/// A CIFAR-10 folder of `train` records per batch and `test` test records.
fn cifar10(dir: &Path, train: usize, test: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let record = |k: usize| {
        let mut r = vec![(k % 10) as u8];
        r.extend((0..3072).map(|p| ((p / 1024) * 80 + (p % 32) * 4 + k) as u8));
        r
    };
    for i in 1..=5 {
        std::fs::write(dir.join(format!("data_batch_{i}.bin")), (0..train).flat_map(record).collect::<Vec<_>>())
            .unwrap();
    }
    std::fs::write(dir.join("test_batch.bin"), (0..test).flat_map(record).collect::<Vec<_>>()).unwrap();
}

#[test]
fn cifar_trains_a_colour_conv_vae_and_a_gray_run_refuses_it() {
    let data = out("cifar10");
    cifar10(&data, 2, 3);
    let run = out("cifar-run");
    let text = ok(&["train", "--quiet", "--epochs", "1", "--arch", "conv", "--conv", "4,4", "--batch-size", "5"]
        .into_iter()
        .chain(["--data", s(&data), "--out", s(&run)])
        .collect::<Vec<_>>());
    assert!(text.contains("10 train, 3 test, 32x32 RGB"), "{text}");
    assert_eq!(rgb_png(&run.join("reconstructions.png")).0, grid_size(1, 8, 32, 32).0);
    let err = error_of(&["train", "--channels", "1", "--data", s(&data), "--out", s(&out("y"))]);
    assert!(err.contains("invalid --channels: 1") && err.contains("has 3 channel(s)"), "{err}");

    // A grayscale run of 32x32 pictures pointed at the CIFAR folder: one line naming both.
    let gray = out("gray32");
    ok(&["train", "--quiet", "--epochs", "1", "--image-size", "32", "--channels", "1", "--hidden", "8"]
        .into_iter()
        .chain(["--data", s(&RUNS.pictures), "--out", s(&gray)])
        .collect::<Vec<_>>());
    let config = std::fs::read_to_string(gray.join("config.json")).unwrap();
    let moved = config.replace(&format!("\"{}\"", s(&RUNS.pictures)), &format!("\"{}\"", s(&data)));
    assert_ne!(moved, config);
    std::fs::write(gray.join("config.json"), moved).unwrap();
    let err = error_of(&["reconstruct", "--run", s(&gray), "--out", s(&out("z.png"))]);
    assert!(err.contains("images have 3 channel(s) (RGB), the model was trained on 1 (grayscale)"), "{err}");
}
