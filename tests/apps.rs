//! The subcommands that use a trained run, end to end on the embedded data:
//! the files they write, the numbers they report, and one-line errors.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::LazyLock;

use assert_cmd::Command;
use gpu_vae::advanced::apps::{self, Inference, codes, eval};
use gpu_vae::advanced::checkpoint;
use gpu_vae::advanced::cpu::CpuModel;
use gpu_vae::advanced::data::{self, DataSpec, Images, idx};
use gpu_vae::advanced::train::loss_plot::write_loss_plot;
use gpu_vae::advanced::train::{EpochRecord, Losses};
use gpu_vae::advanced::viz::grid_size;

/// Runs trained once for the whole test binary (1 epoch each, about a second).
struct Runs {
    _dir: tempfile::TempDir,
    /// The default VAE (latent 20).
    vae: PathBuf,
    /// A VAE with a 2-D latent.
    vae2: PathBuf,
    /// The default AE trained on class 1 only (8 epochs of 5 steps, so that it
    /// tells trousers from the rest).
    ae: PathBuf,
    /// A VAE trained on an unlabeled folder of pictures.
    unlabeled: PathBuf,
    /// Scratch space for outputs.
    out: PathBuf,
}

static RUNS: LazyLock<Runs> = LazyLock::new(|| {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let train = |name: &str, extra: &[&str]| {
        let out = root.join(name);
        let mut args = vec!["train", "--device", "cpu", "--quiet", "--out", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        let run = gpu_vae(&args);
        assert!(run.status.success(), "training {name}: {}", stderr(&run));
        out
    };
    let pictures = root.join("pictures");
    std::fs::create_dir(&pictures).unwrap();
    let test = embedded().1;
    for i in 0..12 {
        let tile = image::GrayImage::from_raw(28, 28, test.image(i).to_vec()).unwrap();
        tile.save(pictures.join(format!("{i:02}.png"))).unwrap();
    }
    let out = root.join("out");
    std::fs::create_dir(&out).unwrap();
    Runs {
        vae: train("vae", &["--epochs", "1"]),
        vae2: train("vae2", &["--epochs", "1", "--latent", "2"]),
        ae: train("ae", &["--model", "ae", "--normal-class", "1", "--epochs", "8"]),
        unlabeled: train("unlabeled", &["--epochs", "1", "--data", pictures.to_str().unwrap()]),
        out,
        _dir: dir,
    }
});

/// Runs the binary on the CPU path unless the arguments pick a device, so that
/// the numbers checked here do not depend on the machine's GPU
/// (tests/gpu_inference.rs compares the devices).
fn gpu_vae(args: &[&str]) -> Output {
    let mut cmd = Command::cargo_bin("gpu-vae").unwrap();
    cmd.args(args);
    if !args.contains(&"--device") {
        cmd.args(["--device", "cpu"]);
    }
    cmd.output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs a command that must succeed and returns its standard output.
fn ok(args: &[&str]) -> String {
    let out = gpu_vae(args);
    assert!(out.status.success(), "{args:?} failed:\n{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command that must fail and returns its one-line error.
fn error_of(args: &[&str]) -> String {
    let out = gpu_vae(args);
    assert!(!out.status.success(), "{args:?} succeeded");
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("Error: ")).collect();
    assert_eq!(lines.len(), 1, "{args:?} should print one Error line, printed:\n{err}");
    lines[0].to_string()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn out(name: &str) -> PathBuf {
    RUNS.out.join(name)
}

fn png_size(path: &Path) -> (u32, u32) {
    image::image_dimensions(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The number printed right after `marker` in `text`.
fn number_after(text: &str, marker: &str) -> f64 {
    let rest = &text[text.find(marker).unwrap_or_else(|| panic!("{marker:?} not in:\n{text}")) + marker.len()..];
    let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-')).unwrap_or(rest.len());
    rest[..end].parse().unwrap_or_else(|_| panic!("no number after {marker:?} in:\n{text}"))
}

fn embedded() -> (Images, Images) {
    let set = data::load(&DataSpec::Embedded, &Default::default()).unwrap();
    (set.train, set.test)
}

fn model(run: &Path) -> CpuModel {
    let (arch, params) = checkpoint::load(&run.join("model.safetensors")).unwrap();
    gpu_vae::advanced::cpu::CpuModel::for_inference(arch.clone(), params)
}

#[test]
fn reconstruct_writes_pairs_of_rows_and_a_csv() {
    let png = out("rec.png");
    let csv = out("rec.csv");
    let text = ok(&["reconstruct", "--run", s(&RUNS.vae), "--n", "12", "--out", s(&png), "--csv", s(&csv)]);
    assert!(text.contains("device: cpu"), "{text}");
    // 12 images, 8 per row: 2 rows of inputs, each above a row of reconstructions.
    assert_eq!(png_size(&png), grid_size(4, 8, 28, 28));
    let rows: Vec<Vec<f64>> = std::fs::read_to_string(&csv)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    assert_eq!(rows.len(), 12);
    for r in &rows {
        assert!((r[2] - apps::psnr(r[1])).abs() < 1e-3 && r[2] > 8.0, "{r:?}");
    }
    let mean_mse = rows.iter().map(|r| r[1]).sum::<f64>() / 12.0;
    assert!((number_after(&text, "mean MSE ") - mean_mse).abs() < 1e-5, "{text}");

    // Fewer images than a row: a narrower grid; the train split works too.
    let text = ok(&["reconstruct", "--run", s(&RUNS.vae), "--split", "train", "--n", "3", "--out", s(&png)]);
    assert_eq!(png_size(&png), grid_size(2, 3, 28, 28));
    assert_eq!(text.matches("PSNR").count(), 4, "3 images and the mean:\n{text}");
}

#[test]
fn interpolate_rows_per_pair_and_walk() {
    let png = out("interp.png");
    ok(&["interpolate", "--run", s(&RUNS.vae), "--pairs", "0:1,2:3", "--steps", "6", "--slerp", "--out", s(&png)]);
    // Two pairs x (linear, spherical); each row: image A, 6 steps, image B.
    assert_eq!(png_size(&png), grid_size(4, 8, 28, 28));

    // Picture files of another size are resized to the model's.
    let test = embedded().1;
    let (a, b) = (out("a.png"), out("b.png"));
    for (path, i) in [(&a, 0), (&b, 5)] {
        let tile = image::GrayImage::from_raw(28, 28, test.image(i).to_vec()).unwrap();
        image::imageops::resize(&tile, 40, 40, image::imageops::FilterType::Triangle).save(path).unwrap();
    }
    ok(&[
        "interpolate",
        "--run",
        s(&RUNS.vae),
        "--from-file",
        s(&a),
        "--to-file",
        s(&b),
        "--steps",
        "3",
        "--out",
        s(&png),
    ]);
    assert_eq!(png_size(&png), grid_size(1, 5, 28, 28));
    ok(&["interpolate", "--run", s(&RUNS.ae), "--from", "4", "--to", "9", "--out", s(&png)]);
    assert_eq!(png_size(&png), grid_size(1, 12, 28, 28));

    let err = error_of(&["interpolate", "--run", s(&RUNS.ae), "--slerp", "--out", s(&png)]);
    assert!(err.contains("--slerp") && err.contains("needs a VAE"), "{err}");
    let err = error_of(&["interpolate", "--run", s(&RUNS.vae), "--pairs", "0:2000", "--out", s(&png)]);
    assert!(err.contains("2000") && err.contains("has 2000 images"), "{err}");
    let err = error_of(&["interpolate", "--run", s(&RUNS.vae), "--steps", "1", "--out", s(&png)]);
    assert!(err.contains("invalid --steps"), "{err}");
}

#[test]
fn manifold_grids() {
    let png = out("manifold.png");
    let text = ok(&["manifold", "--run", s(&RUNS.vae2), "--n", "7", "--out", s(&png)]);
    assert!(text.contains("prior quantiles"), "{text}");
    assert_eq!(png_size(&png), grid_size(7, 7, 28, 28));
    let text = ok(&["manifold", "--run", s(&RUNS.vae), "--n", "5", "--out", s(&png)]);
    assert!(text.contains("principal directions"), "{text}");
    assert_eq!(png_size(&png), grid_size(5, 5, 28, 28));
    let text = ok(&["manifold", "--run", s(&RUNS.ae), "--dims", "3,7", "--n", "4", "--out", s(&png)]);
    assert!(text.contains("z3 and z7"), "{text}");
    assert_eq!(png_size(&png), grid_size(4, 4, 28, 28));

    let err = error_of(&["manifold", "--run", s(&RUNS.vae), "--dims", "2,2", "--out", s(&png)]);
    assert!(err.contains("invalid --dims"), "{err}");
    let err = error_of(&["manifold", "--run", s(&RUNS.vae2), "--dims", "0,2", "--out", s(&png)]);
    assert!(err.contains("invalid --dims") && err.contains("0..1"), "{err}");
    let err = error_of(&["manifold", "--run", s(&RUNS.vae2), "--n", "0", "--out", s(&png)]);
    assert_eq!(err, "Error: invalid --n: must be at least 1");
}

#[test]
fn latent_plot_needs_labels() {
    let png = out("latent.png");
    ok(&["latent-plot", "--run", s(&RUNS.vae), "--out", s(&png)]);
    let (w, h) = png_size(&png);
    assert!(w > h && h > 300, "{w}x{h}");
    ok(&["latent-plot", "--run", s(&RUNS.vae2), "--n", "100", "--out", s(&png)]);
    let err = error_of(&["latent-plot", "--run", s(&RUNS.unlabeled), "--out", s(&png)]);
    assert!(err.contains("needs labels") && err.contains("pictures"), "{err}");
}

/// Encoding then decoding gives `reconstruct`'s images up to quantization.
/// Latent values: 16 bits within 2⁻¹¹ of themselves (2⁻²⁵ absolute below
/// 2⁻¹⁴, where f16 is subnormal); 8 bits within scale/2 = range/510 per
/// dimension. Pixels (u8): measured at most 1/255 off with either, on average
/// 0.003/255 (16 bits) and 0.08/255 (8 bits); the bounds checked are
/// 1/255 and 0.02/255 for 16 bits, 3/255 and 0.3/255 for 8 bits.
#[test]
fn encode_then_decode_matches_reconstruct_within_quantization() {
    let n = 300;
    let test = embedded().1;
    let mut m = model(&RUNS.vae);
    let x = apps::pixels(&test, &(0..n).collect::<Vec<_>>());
    let exact = codes::to_u8(&apps::reconstruct(&mut m, &x, None, n).unwrap());
    let means = apps::latent_means(&mut m, &x, None, n).unwrap();
    let latent = m.arch.config.latent;

    for (bits, size, max_diff, mean_diff) in [("16", 32 + 2 * 20 * n, 1, 0.02), ("8", 32 + 8 * 20 + 20 * n, 3, 0.3)] {
        let file = out(&format!("test{bits}.codes"));
        let text = ok(&["encode", "--run", s(&RUNS.vae), "--bits", bits, "--n", &n.to_string(), "--out", s(&file)]);
        assert_eq!(std::fs::metadata(&file).unwrap().len() as usize, size, "{bits} bits");
        assert!((number_after(&text, "values:\n  ") - size as f64 / n as f64).abs() < 0.06, "bytes per image:\n{text}");
        assert!(number_after(&text, "B file)\n  ") > 15.0, "ratio to raw pixels:\n{text}");
        assert!(text.contains("smaller than the gzip -9 IDX file"), "{text}");
        let (quantized, unquantized) =
            (number_after(&text, "round trip PSNR "), number_after(&text, "(unquantized codes: "));
        assert!((quantized - unquantized).abs() < 0.2, "{text}");

        let codes = codes::read(&file).unwrap();
        let bound = |k: usize| match bits {
            "16" => (means[k].abs() / 2048.0).max(2f32.powi(-25)),
            _ => {
                let col = means.iter().skip(k % latent).step_by(latent);
                let (lo, hi) = col.fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
                (hi - lo) / 510.0 * 1.001
            }
        };
        for (k, (q, z)) in codes.values.iter().zip(&means).enumerate() {
            assert!((q - z).abs() <= bound(k), "{bits} bits: value {k} is {z}, decodes to {q}");
        }

        let decoded = out(&format!("test{bits}.idx"));
        ok(&["decode", "--run", s(&RUNS.vae), "--codes", s(&file), "--out", s(&decoded)]);
        let images = idx::read_idx(&decoded).unwrap();
        assert_eq!(images.dims, [n, 28, 28]);
        let diffs: Vec<i32> = images.data.iter().zip(&exact).map(|(&a, &b)| (a as i32 - b as i32).abs()).collect();
        let max = *diffs.iter().max().unwrap();
        let mean = diffs.iter().sum::<i32>() as f64 / diffs.len() as f64;
        assert!(max <= max_diff && mean <= mean_diff, "{bits} bits: max {max}/255, mean {mean}/255");
    }

    let folder = out("decoded-pngs");
    ok(&["decode", "--run", s(&RUNS.vae), "--codes", s(&out("test8.codes")), "--format", "png", "--out", s(&folder)]);
    assert_eq!(std::fs::read_dir(&folder).unwrap().count(), n);
    assert_eq!(png_size(&folder.join("00299.png")), (28, 28));
}

#[test]
fn bad_codes_files_are_named() {
    let good = out("bad-source.codes");
    ok(&["encode", "--run", s(&RUNS.vae), "--n", "10", "--out", s(&good)]);
    let bytes = std::fs::read(&good).unwrap();
    let decode = |codes: &Path, run: &Path| {
        error_of(&["decode", "--run", s(run), "--codes", s(codes), "--out", s(&out("bad.idx"))])
    };

    let truncated = out("truncated.codes");
    std::fs::write(&truncated, &bytes[..bytes.len() - 3]).unwrap();
    let err = decode(&truncated, &RUNS.vae);
    assert!(err.contains("truncated.codes: truncated: header says 10 images x 20 values"), "{err}");
    std::fs::write(&truncated, &bytes[..16]).unwrap();
    assert!(decode(&truncated, &RUNS.vae).contains("the header takes 32"));

    let wrong = out("wrong.codes");
    std::fs::write(&wrong, b"\x00\x00\x08\x03 an IDX file, not codes").unwrap();
    assert!(decode(&wrong, &RUNS.vae).contains("not a gpu-vae codes file"));
    let err = decode(&good, &RUNS.vae2);
    assert!(err.contains("codes have 20 latent dimensions, the run's model has 2"), "{err}");
    let err = error_of(&["encode", "--run", s(&RUNS.vae), "--n", "0", "--out", s(&good)]);
    assert_eq!(err, "Error: invalid --n: must be at least 1");
}

#[test]
fn denoise_shows_three_rows_and_improves_psnr() {
    let png = out("denoise.png");
    let text = ok(&["denoise", "--run", s(&RUNS.vae), "--std", "0.5", "--n", "16", "--out", s(&png)]);
    // 16 images, 8 per row: two groups of noisy, denoised and clean rows.
    assert_eq!(png_size(&png), grid_size(6, 8, 28, 28));
    let (noisy, denoised) = (number_after(&text, "PSNR "), number_after(&text, "dB noisy, "));
    assert!(denoised > noisy + 0.5, "{text}");
    ok(&["denoise", "--run", s(&RUNS.ae), "--salt-pepper", "0.2", "--n", "5", "--out", s(&png)]);
    assert_eq!(png_size(&png), grid_size(3, 5, 28, 28));

    let err = error_of(&["denoise", "--run", s(&RUNS.vae), "--std", "-1", "--out", s(&png)]);
    assert!(err.contains("invalid --std"), "{err}");
    let err = error_of(&["denoise", "--run", s(&RUNS.vae), "--salt-pepper", "1.5", "--out", s(&png)]);
    assert!(err.contains("invalid --salt-pepper"), "{err}");
}

#[test]
fn anomaly_scores_against_the_normal_class() {
    let (roc, csv) = (out("roc.png"), out("scores.csv"));
    // The AE was trained on class 1 (trousers), its config says so.
    let text = ok(&["anomaly", "--run", s(&RUNS.ae), "--roc", s(&roc), "--csv", s(&csv)]);
    assert!(text.contains("mean + 3·std of 1027 class-1 training scores"), "{text}");
    let auc = number_after(&text, "ROC-AUC ");
    assert!(auc > 0.6, "trousers reconstruct better than the rest: AUC {auc}\n{text}");
    let (w, h) = png_size(&roc);
    assert!(w > 500 && h > 300, "{w}x{h}");
    let lines: Vec<String> = std::fs::read_to_string(&csv).unwrap().lines().map(String::from).collect();
    assert_eq!(lines.len(), 2001);
    assert_eq!(lines[0], "index,label,score,flagged");
    let flagged = lines[1..].iter().filter(|l| l.ends_with(",1")).count();
    assert!(text.contains(&format!("{flagged} of 2000 test images flagged")), "{text}");

    // A VAE scores by negative ELBO; a given threshold and class override the defaults.
    let text = ok(&["anomaly", "--run", s(&RUNS.vae), "--normal-class", "1", "--threshold", "300"]);
    assert!(text.contains("negative ELBO") && text.contains("(given)") && text.contains("ROC-AUC"), "{text}");
    let text = ok(&["anomaly", "--run", s(&RUNS.vae)]);
    assert!(text.contains("no ROC-AUC"), "{text}");

    let err = error_of(&["anomaly", "--run", s(&RUNS.ae), "--score", "elbo"]);
    assert!(err.contains("--score elbo") && err.contains("needs a VAE"), "{err}");
    let err = error_of(&["anomaly", "--run", s(&RUNS.vae), "--roc", s(&roc)]);
    assert!(err.contains("--roc needs labels and a normal class"), "{err}");
}

#[test]
fn eval_reports_elbo_and_iwae() {
    let text = ok(&["eval", "--run", s(&RUNS.vae), "--n", "200", "--k", "20"]);
    let elbo = number_after(&text, "ELBO ");
    let (recon, kl) = (number_after(&text, "reconstruction "), number_after(&text, "KL "));
    assert!((elbo + recon + kl).abs() < 2e-3, "{text}");
    assert!(number_after(&text, "NLL <= ") < -elbo, "{text}");
    let text = ok(&["eval", "--run", s(&RUNS.ae)]);
    assert!(text.contains("no ELBO"), "{text}");

    let err = error_of(&["eval", "--run", s(&RUNS.ae), "--k", "10"]);
    assert!(err.contains("--k") && err.contains("needs a VAE"), "{err}");
    assert_eq!(error_of(&["eval", "--run", s(&RUNS.vae), "--n", "0"]), "Error: invalid --n: must be at least 1");
    let missing = out("no-such-run");
    let err = error_of(&["eval", "--run", s(&missing)]);
    assert!(err.contains("no-such-run: not a run directory"), "{err}");
}

/// The whole test split's ELBO uses the trainer's test-loss draws, so it is
/// the test loss of `metrics.csv` (up to the CSV's 6 decimals and f64 sums).
#[test]
fn elbo_reproduces_the_test_loss() {
    let test = embedded().1;
    let mut m = model(&RUNS.vae);
    let x = apps::pixels(&test, &(0..test.count).collect::<Vec<_>>());
    let terms = eval::elbo_terms(&mut m, &x, None, test.count, 128, 1).unwrap();
    let elbo = terms.iter().map(|t| t.recon + t.kl).sum::<f64>() / test.count as f64;
    let csv = std::fs::read_to_string(RUNS.vae.join("metrics.csv")).unwrap();
    let test_loss: f64 = csv.lines().nth(1).unwrap().split(',').nth(4).unwrap().parse().unwrap();
    assert!((elbo - test_loss).abs() < 1e-3, "ELBO {elbo} vs test loss {test_loss}");
}

/// With k = 1 the IWAE bound is a one-sample ELBO (with a sampled KL instead
/// of the exact one); with more samples it tightens. "Equal" and "tighter"
/// are judged against 4 standard errors of the mean per-image difference
/// (so a correct implementation fails about once in 15,000 runs).
#[test]
fn iwae_bound_tightens_the_elbo() {
    let n = 300;
    let test = embedded().1;
    let mut m = model(&RUNS.vae);
    let x = apps::pixels(&test, &(0..n).collect::<Vec<_>>());
    let neg_elbo: Vec<f64> =
        eval::elbo_terms(&mut m, &x, None, n, 128, 1).unwrap().iter().map(|t| t.recon + t.kl).collect();
    let k1 = eval::iwae_nll(&mut m, &x, None, n, 1, 1, 0).unwrap();
    let k50 = eval::iwae_nll(&mut m, &x, None, n, 50, 1, 0).unwrap();
    let mean_diff = |a: &[f64], b: &[f64]| {
        let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
        (apps::mean(&d), apps::std_dev(&d) / (n as f64).sqrt())
    };
    let (diff, se) = mean_diff(&k1, &neg_elbo);
    assert!(diff.abs() < 4.0 * se, "k=1 bound vs -ELBO: {diff} ± {se}");
    let (gain, se) = mean_diff(&neg_elbo, &k50);
    assert!(gain > 4.0 * se, "k=50 tightens the bound by {gain} ± {se} nats");
    let (gain, se) = mean_diff(&k1, &k50);
    assert!(gain > 4.0 * se, "k=50 vs k=1: {gain} ± {se} nats");

    // Chunking does not change the numbers: 1500 samples span two decoder calls.
    let one = eval::iwae_nll(&mut m, &x[..784], None, 1, 1500, 1, 0).unwrap()[0];
    let again = eval::iwae_nll(&mut m, &x[..784 * 2], None, 2, 1500, 1, 0).unwrap()[0];
    assert!((one - again).abs() < 1e-9, "{one} vs {again}");
    assert_eq!(m.device(), "cpu");
}

#[test]
fn loss_plot_is_written() {
    let loss = |total| Losses { total, recon: total, kl: 0.0 };
    let records: Vec<EpochRecord> = (1..=4)
        .map(|epoch| EpochRecord {
            epoch,
            train: loss(300.0 - 10.0 * epoch as f64),
            test: loss(295.0 - 8.0 * epoch as f64),
            seconds: 1.0,
            samples_per_s: 1e4,
            lr: 1e-3,
        })
        .collect();
    let png = out("loss.png");
    write_loss_plot(&png, &records).unwrap();
    let img = image::open(&png).unwrap().to_rgb8();
    // Both curves are drawn in their colours.
    for colour in [gpu_vae::advanced::plot::PALETTE[0], gpu_vae::advanced::plot::PALETTE[1]] {
        assert!(img.pixels().filter(|p| p.0 == colour).count() > 100);
    }
    write_loss_plot(&png, &records[..1]).unwrap();
}
