//! The programs in `examples/`, run on the embedded data: each file is a
//! module here, and its work function (public for this) is called with
//! temporary paths (their `main`s only read the command line). `cargo test`
//! also builds them as programs, as `cargo build --examples` does.

use std::path::Path;

use gpu_vae::Image;
use gpu_vae::advanced::data::embedded;

#[allow(dead_code)]
#[path = "../examples/train_and_sample.rs"]
mod train_and_sample;

#[allow(dead_code)]
#[path = "../examples/encode_decode.rs"]
mod encode_decode;

#[allow(dead_code)]
#[path = "../examples/anomaly_folder.rs"]
mod anomaly_folder;

/// Test image `i` of the embedded data.
fn test_image(i: usize) -> (Image, u8) {
    let test = embedded::load().unwrap().test;
    let pixels = test.image(i).iter().map(|&p| p as f32 / 255.0).collect();
    (Image::new(1, test.rows, test.cols, pixels).unwrap(), test.labels.unwrap()[i])
}

fn mse(a: &Image, b: &Image) -> f64 {
    let (a, b) = (a.pixels(), b.pixels());
    a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>() / a.len() as f64
}

#[test]
fn the_examples_train_sample_encode_decode_and_score() {
    let dir = tempfile::tempdir().unwrap();
    let (run_dir, samples) = (dir.path().join("run"), dir.path().join("samples.png"));
    train_and_sample::train_and_sample(&run_dir, &samples).unwrap();
    assert!(run_dir.join("model.safetensors").is_file());
    // 4 rows of 8 tiles of 28x28, 2 pixels apart and around.
    assert_eq!(image::image_dimensions(&samples).unwrap(), (8 * 30 + 2, 4 * 30 + 2));

    // Encode and decode a test image: its reconstruction is nearer to it
    // than to a test image of another class.
    let (a, label_a) = test_image(0);
    let other = (1..50).map(test_image).find(|(_, l)| *l != label_a).unwrap().0;
    let (input, output) = (dir.path().join("in.png"), dir.path().join("out.png"));
    a.save(&input).unwrap();
    encode_decode::encode_decode(&run_dir, &input, &output).unwrap();
    let decoded = Image::open(&output).unwrap();
    assert_eq!((decoded.channels(), decoded.rows(), decoded.cols()), (1, 28, 28));
    assert!(mse(&decoded, &a) < mse(&decoded, &other), "{} vs {}", mse(&decoded, &a), mse(&decoded, &other));

    // A folder of five test images and one of noise: the noise scores
    // highest and is flagged; at most one real image is.
    let folder = dir.path().join("folder");
    std::fs::create_dir(&folder).unwrap();
    for i in 0..5 {
        test_image(i).0.save(folder.join(format!("test-{i}.png"))).unwrap();
    }
    let mut state = 1u32;
    let noise: Vec<f32> = (0..28 * 28)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1u32 << 24) as f32
        })
        .collect();
    Image::new(1, 28, 28, noise).unwrap().save(folder.join("noise.png")).unwrap();
    std::fs::write(folder.join("notes.txt"), "not a picture").unwrap();
    let scored = anomaly_folder::anomaly_folder(&run_dir, &folder).unwrap();
    assert_eq!(scored.len(), 6, "the six pictures, not the text file");
    let name = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
    let top = scored.iter().max_by(|a, b| a.1.total_cmp(&b.1)).unwrap();
    assert_eq!(name(&top.0), "noise.png", "{scored:?}");
    assert!(top.2, "noise is flagged: {scored:?}");
    assert!(scored.iter().filter(|s| s.2).count() <= 2, "{scored:?}");
}
