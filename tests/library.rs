//! The crate root's API (`gpu_vae::{Run, Image, Latents, Config, train}`)
//! on tiny models trained on the embedded data: the numbers it gives are
//! those of the `gpu-vae` subcommands, conditional runs need their labels,
//! and images convert to and from the `image` crate's buffers.

use std::path::Path;

use assert_cmd::Command;
use gpu_vae::advanced::data::embedded;
use gpu_vae::{Config, Device, Image, ModelKind, Run};

/// A tiny model of `kind`, one epoch on the CPU, into `out`.
fn tiny(kind: ModelKind) -> Config {
    Config::new(kind).hidden(&[32]).latent(3).epochs(1).device(Device::Cpu).tensorboard(false)
}

/// The first `n` test images of the embedded data, and their labels.
fn test_images(n: usize) -> (Vec<Image>, Vec<u8>) {
    let test = embedded::load().unwrap().test;
    let n = n.min(test.count);
    let images = (0..n)
        .map(|i| {
            let pixels = test.image(i).iter().map(|&p| p as f32 / 255.0).collect();
            Image::new(1, test.rows, test.cols, pixels).unwrap()
        })
        .collect();
    (images, test.labels.unwrap()[..n].to_vec())
}

fn gpu_vae(args: &[&str]) -> String {
    let out = Command::cargo_bin("gpu-vae").unwrap().args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn scores_and_threshold_are_those_of_gpu_vae_anomaly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let run = gpu_vae::train(&tiny(ModelKind::Vae), &out).unwrap();
    assert_eq!(run.describe(), "VAE (MLP), 51,318 parameters");
    let (images, _) = test_images(usize::MAX);
    let scores = run.score(&images).unwrap();

    let csv = dir.path().join("scores.csv");
    let report =
        gpu_vae(&["anomaly", "--run", out.to_str().unwrap(), "--device", "cpu", "--csv", csv.to_str().unwrap()]);
    let text = std::fs::read_to_string(&csv).unwrap();
    let cli: Vec<f64> = text.lines().skip(1).map(|l| l.split(',').nth(2).unwrap().parse().unwrap()).collect();
    assert_eq!(cli.len(), scores.len());
    // The CSV rounds to 6 decimals.
    for (i, (a, b)) in scores.iter().zip(&cli).enumerate() {
        assert!((a - b).abs() <= 1e-6, "image {i}: library {a}, gpu-vae anomaly {b}");
    }
    let threshold = run.threshold(3.0).unwrap();
    assert!(report.contains(&format!("threshold {threshold:.6} (mean + 3·std")), "{threshold:.6} in\n{report}");
}

#[test]
fn latents_split_means_from_log_variances_and_decode_back() {
    let dir = tempfile::tempdir().unwrap();
    let run = gpu_vae::train(&tiny(ModelKind::Vae), dir.path().join("run")).unwrap();
    let (images, _) = test_images(5);
    let latents = run.encode(&images).unwrap();
    let log_var = latents.log_var.as_ref().expect("a VAE has log-variances");
    assert_eq!((latents.mean.len(), log_var.len()), (5, 5));
    assert!(latents.mean.iter().chain(log_var).all(|row| row.len() == 3));
    assert_ne!(latents.mean, *log_var);
    // `reconstruct` decodes the posterior means: the same numbers as
    // decoding `Latents::mean`, which would differ had it taken log-variances.
    let decoded = run.decode(&latents.mean).unwrap();
    assert_eq!(decoded, run.reconstruct(&images).unwrap());
    let from_log_var = run.decode(log_var).unwrap();
    assert_ne!(decoded, from_log_var);

    // Opened again from its folder, the run gives the same latents.
    let again = Run::open_on(run.path(), Device::Cpu).unwrap();
    assert_eq!(again.encode(&images).unwrap(), latents);
    assert_eq!(again.sample(4, 9).unwrap(), run.sample(4, 9).unwrap());
    assert_ne!(run.sample(4, 9).unwrap(), run.sample(4, 10).unwrap());
}

#[test]
fn an_ae_has_codes_and_scores_its_reconstruction_error() {
    let dir = tempfile::tempdir().unwrap();
    let run = gpu_vae::train(&tiny(ModelKind::Ae), dir.path().join("run")).unwrap();
    assert_eq!(run.kind(), ModelKind::Ae);
    let (images, _) = test_images(4);
    let latents = run.encode(&images).unwrap();
    assert_eq!(latents.log_var, None);
    let recon = run.reconstruct(&images).unwrap();
    let scores = run.score(&images).unwrap();
    for ((x, y), s) in images.iter().zip(&recon).zip(&scores) {
        let mse = x.pixels().iter().zip(y.pixels()).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>()
            / x.pixels().len() as f64;
        assert!((mse - s).abs() <= 1e-9 * mse.max(1.0), "{mse} vs {s}");
    }
    // An AE samples around its test images' codes, so it reads its data.
    assert_eq!(run.sample(3, 1).unwrap().len(), 3);
}

#[test]
fn a_conditional_run_takes_labels_and_refuses_to_go_without() {
    let dir = tempfile::tempdir().unwrap();
    let run = gpu_vae::train(&tiny(ModelKind::Vae).conditional(true), dir.path().join("run")).unwrap();
    assert_eq!(run.classes(), 10);
    assert!(run.describe().starts_with("conditional VAE (MLP) on 10 classes, "), "{}", run.describe());
    let (images, labels) = test_images(6);
    let missing = "invalid labels: the model is conditional (10 classes): give each image's class";
    assert_eq!(run.encode(&images).unwrap_err().to_string(), missing);
    assert_eq!(run.sample(2, 1).unwrap_err().to_string(), missing);
    assert_eq!(run.score(&images).unwrap_err().to_string(), missing);
    assert_eq!(run.decode(&[vec![0.0; 3]]).unwrap_err().to_string(), missing);
    assert_eq!(run.reconstruct(&images).unwrap_err().to_string(), missing);
    let short = run.encode_labelled(&images, &labels[..5]).unwrap_err().to_string();
    assert_eq!(short, "invalid labels: 5 labels for 6 rows");
    let beyond = run.encode_labelled(&images, &[10; 6]).unwrap_err().to_string();
    assert!(beyond.contains("class 10, but the model has 10"), "{beyond}");

    let latents = run.encode_labelled(&images, &labels).unwrap();
    let recon = run.reconstruct_labelled(&images, &labels).unwrap();
    assert_eq!(run.decode_labelled(&latents.mean, &labels).unwrap(), recon);
    // The label changes the decoded image.
    let other: Vec<u8> = labels.iter().map(|l| (l + 1) % 10).collect();
    assert_ne!(run.decode_labelled(&latents.mean, &other).unwrap(), recon);
    assert_eq!(run.score_labelled(&images, &labels).unwrap().len(), 6);
    assert_eq!(run.sample_labelled(&[0, 9, 9], 1).unwrap().len(), 3);

    // A run that is not conditional refuses labels.
    let plain = gpu_vae::train(&tiny(ModelKind::Vae), dir.path().join("plain")).unwrap();
    let e = plain.encode_labelled(&images, &labels).unwrap_err().to_string();
    assert!(e.contains("not conditional"), "{e}");
}

#[test]
fn images_of_another_size_and_bad_inputs_are_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let run = gpu_vae::train(&tiny(ModelKind::Vae), dir.path().join("run")).unwrap();
    let small = Image::new(1, 20, 20, vec![0.5; 400]).unwrap();
    let e = run.encode(&[small]).unwrap_err().to_string();
    assert!(e.starts_with("invalid images: image 0 is 20x20 with 1 channel(s), the model takes 28x28"), "{e}");
    let colour = Image::new(3, 28, 28, vec![0.5; 3 * 784]).unwrap();
    assert!(run.score(&[colour]).unwrap_err().to_string().contains("with 3 channel(s)"));
    let e = run.decode(&[vec![0.0; 4]]).unwrap_err().to_string();
    assert_eq!(e, "invalid latents: row 0 has 4 numbers, the model's latent width is 3");
    assert!(run.decode(&[vec![f32::NAN; 3]]).is_err());
    assert!(run.encode(&[]).unwrap().mean.is_empty());
    assert!(run.score(&[]).unwrap().is_empty());

    assert!(Image::new(1, 2, 2, vec![0.0; 3]).unwrap_err().to_string().contains("3 pixel values for 1x2x2"));
    assert!(Image::new(2, 1, 1, vec![0.0; 2]).is_err());
    assert!(Image::new(1, 1, 2, vec![0.0, 1.5]).unwrap_err().to_string().contains("1.5 is not in [0, 1]"));
    let missing = dir.path().join("missing.png");
    let e = run.load_image(&missing).unwrap_err().to_string();
    assert!(e.starts_with(&missing.display().to_string()) && !e.contains('\n'), "{e}");

    // Training refuses what `gpu-vae train` refuses, with its words.
    let e = gpu_vae::train(&tiny(ModelKind::Vae).epochs(0), dir.path().join("none")).unwrap_err();
    assert_eq!(e.to_string(), "invalid --epochs: 0; a run trains at least 1 epoch");
    let e = gpu_vae::train(&tiny(ModelKind::Vae), dir.path().join("run")).unwrap_err().to_string();
    assert!(e.contains("holds a run already"), "{e}");
}

#[test]
fn images_convert_to_and_from_the_image_crate() {
    let grey = image::GrayImage::from_fn(5, 3, |x, y| image::Luma([(x * 40 + y * 7) as u8]));
    let im = Image::from(&grey);
    assert_eq!((im.channels(), im.rows(), im.cols()), (1, 3, 5));
    assert_eq!(im.pixels()[1], 40.0 / 255.0);
    assert_eq!(image::DynamicImage::from(&im), image::DynamicImage::ImageLuma8(grey));

    let rgb = image::RgbImage::from_fn(4, 2, |x, y| image::Rgb([x as u8, 10 + y as u8, 200]));
    let im = Image::from(&image::DynamicImage::ImageRgb8(rgb.clone()));
    assert_eq!(im.channels(), 3);
    // Planes: all red, then all green, then all blue.
    assert_eq!(im.pixels()[..4], [0.0, 1.0, 2.0, 3.0].map(|v| v / 255.0));
    assert_eq!(im.pixels()[8], 10.0 / 255.0);
    assert_eq!(image::DynamicImage::from(&im), image::DynamicImage::ImageRgb8(rgb));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.png");
    im.save(&path).unwrap();
    assert_eq!(Image::open(&path).unwrap(), im);
    let grid = dir.path().join("grid.png");
    Image::save_grid(&grid, &[im.clone(), im.clone(), im], 2).unwrap();
    assert_eq!(image::image_dimensions(&grid).unwrap(), (2 * 6 + 2, 2 * 4 + 2));
    assert!(Image::save_grid(Path::new("unused.png"), &[], 2).is_err());
}
