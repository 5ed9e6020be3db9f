//! Loading data from every source, the errors bad inputs give, and the batch loader.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use gpu_vae::advanced::data::idx::{read_idx, write_idx_images, write_idx_labels};
use gpu_vae::advanced::data::loader::{BatchPlan, spawn_batches};
use gpu_vae::advanced::data::{DataSet, DataSpec, FASHION_MNIST_DIR, FolderOptions, Images, load, parse_data_arg};
use gpu_vae::advanced::rng;

fn images(count: usize, rows: usize, cols: usize) -> Images {
    Images {
        pixels: (0..count * rows * cols).map(|i| (i * 7 % 256) as u8).collect(),
        count,
        channels: 1,
        rows,
        cols,
        labels: None,
        class_names: None,
    }
}

fn gzip(path: &Path) {
    let raw = std::fs::read(path).unwrap();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&raw).unwrap();
    let mut gz = path.as_os_str().to_owned();
    gz.push(".gz");
    std::fs::write(gz, enc.finish().unwrap()).unwrap();
    std::fs::remove_file(path).unwrap();
}

/// An IDX folder: 5 train and 3 test images of 4x3, with labels.
fn idx_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_idx_images(&d.join("train-images-idx3-ubyte"), &images(5, 4, 3)).unwrap();
    write_idx_labels(&d.join("train-labels-idx1-ubyte"), &[0, 1, 2, 1, 0]).unwrap();
    write_idx_images(&d.join("t10k-images-idx3-ubyte"), &images(3, 4, 3)).unwrap();
    write_idx_labels(&d.join("t10k-labels-idx1-ubyte"), &[2, 2, 0]).unwrap();
    dir
}

fn load_dir(dir: &Path) -> gpu_vae::advanced::error::Result<DataSet> {
    load(&DataSpec::Path(dir.to_path_buf()), &FolderOptions::default())
}

/// The error's message, checked to name `file` and to contain `problem`.
fn assert_error(result: gpu_vae::advanced::error::Result<DataSet>, file: &str, problem: &str) {
    let message = result.expect_err("expected an error").to_string();
    assert!(message.contains(file), "{message:?} does not name {file}");
    assert!(message.contains(problem), "{message:?} does not say {problem:?}");
}

#[test]
fn embedded_subset_loads() {
    let set = load(&parse_data_arg(None), &FolderOptions::default()).unwrap();
    assert_eq!(set.name, "fashion-mnist-subset (embedded)");
    for (split, count) in [(&set.train, 10_000), (&set.test, 2_000)] {
        assert_eq!((split.count, split.rows, split.cols), (count, 28, 28));
        assert_eq!(split.pixels.len(), count * 784);
        let labels = split.labels.as_ref().unwrap();
        assert_eq!(labels.len(), count);
        assert!(labels.iter().all(|&l| l < 10));
        // The subset keeps every class.
        assert!((0..10).all(|c| labels.contains(&c)));
        assert_eq!(split.class_names.as_ref().unwrap()[9], "Ankle boot");
    }
}

#[test]
fn full_fashion_mnist_loads_when_installed() {
    if !Path::new(FASHION_MNIST_DIR).is_dir() {
        eprintln!("\n*** skipped: {FASHION_MNIST_DIR} is missing (apt-get install dataset-fashion-mnist) ***\n");
        return;
    }
    let set = load(&parse_data_arg(Some("fashion-mnist")), &FolderOptions::default()).unwrap();
    assert_eq!(set.name, "fashion-mnist");
    assert_eq!((set.train.count, set.test.count), (60_000, 10_000));
    assert_eq!((set.train.rows, set.train.cols), (28, 28));
    assert_eq!(set.test.class_names.as_ref().unwrap().len(), 10);
    // The embedded subset is the start of the full set.
    let subset = load(&DataSpec::Embedded, &FolderOptions::default()).unwrap();
    assert_eq!(subset.train.pixels[..], set.train.pixels[..subset.train.pixels.len()]);
}

#[test]
fn idx_round_trips_raw_and_gz() {
    let dir = idx_dir();
    let raw = load_dir(dir.path()).unwrap();
    assert_eq!(raw.train.pixels, images(5, 4, 3).pixels);
    assert_eq!((raw.train.count, raw.train.rows, raw.train.cols), (5, 4, 3));
    assert_eq!(raw.train.labels, Some(vec![0, 1, 2, 1, 0]));
    assert_eq!(raw.test.labels, Some(vec![2, 2, 0]));
    assert_eq!(raw.train.class_names, None);

    for name in ["train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"] {
        gzip(&dir.path().join(name));
    }
    let mixed = load_dir(dir.path()).unwrap();
    assert_eq!((mixed.train, mixed.test), (raw.train, raw.test));
}

#[test]
fn raw_idx_named_gz_still_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x-idx1-ubyte.gz");
    write_idx_labels(&path, &[3, 4]).unwrap();
    assert_eq!(read_idx(&path).unwrap().data, [3, 4]);
}

#[test]
fn idx_labels_are_optional() {
    let dir = idx_dir();
    std::fs::remove_file(dir.path().join("train-labels-idx1-ubyte")).unwrap();
    std::fs::remove_file(dir.path().join("t10k-labels-idx1-ubyte")).unwrap();
    let set = load_dir(dir.path()).unwrap();
    assert_eq!((set.train.count, set.train.labels, set.test.labels), (5, None, None));
}

#[test]
fn missing_folder_and_files() {
    let dir = tempfile::tempdir().unwrap();
    assert_error(load_dir(&dir.path().join("nope")), "nope", "No such file");
    let err = read_idx(&dir.path().join("gone-idx3-ubyte")).unwrap_err().to_string();
    assert!(err.contains("gone-idx3-ubyte") && err.contains("No such file"), "{err}");

    let dir = idx_dir();
    std::fs::remove_file(dir.path().join("t10k-images-idx3-ubyte")).unwrap();
    assert_error(load_dir(dir.path()), "t10k-images-idx3-ubyte", "holds IDX files but no");
}

#[test]
fn wrong_magic() {
    let dir = idx_dir();
    std::fs::write(dir.path().join("t10k-images-idx3-ubyte"), b"\x89PNG\r\n\x1a\n").unwrap();
    assert_error(load_dir(dir.path()), "t10k-images-idx3-ubyte", "magic bytes 89 50 4e 47, expected 00 00 08 01");
    // A label file where images belong.
    let dir = idx_dir();
    let images = dir.path().join("train-images-idx3-ubyte");
    std::fs::copy(dir.path().join("train-labels-idx1-ubyte"), &images).unwrap();
    assert_error(load_dir(dir.path()), "train-images-idx3-ubyte", "expected images");
}

#[test]
fn truncated_files() {
    let dir = idx_dir();
    let path = dir.path().join("train-images-idx3-ubyte");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
    assert_error(
        load_dir(dir.path()),
        "train-images-idx3-ubyte",
        "truncated: header says 5x4x3 = 60 bytes of pixels, file has 59",
    );
    std::fs::write(&path, &bytes[..10]).unwrap();
    assert_error(load_dir(dir.path()), "train-images-idx3-ubyte", "truncated");

    // A cut-off gzip stream.
    let dir = idx_dir();
    let path = dir.path().join("t10k-labels-idx1-ubyte");
    gzip(&path);
    let gz = dir.path().join("t10k-labels-idx1-ubyte.gz");
    let bytes = std::fs::read(&gz).unwrap();
    std::fs::write(&gz, &bytes[..bytes.len() / 2]).unwrap();
    assert_error(load_dir(dir.path()), "t10k-labels-idx1-ubyte.gz", "gunzip failed");
}

#[test]
fn zero_images() {
    let dir = idx_dir();
    // An empty image file's header: 0 images of 4x3.
    let header = [0, 0, 8, 3, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 3];
    std::fs::write(dir.path().join("t10k-images-idx3-ubyte"), header).unwrap();
    assert_error(load_dir(dir.path()), "t10k-images-idx3-ubyte", "zero images");
}

#[test]
fn label_count_mismatch_names_both_files() {
    let dir = idx_dir();
    write_idx_labels(&dir.path().join("train-labels-idx1-ubyte"), &[1, 2, 3, 4]).unwrap();
    let message = load_dir(dir.path()).unwrap_err().to_string();
    assert!(
        message.contains("train-labels-idx1-ubyte: 4 labels, but")
            && message.contains("train-images-idx3-ubyte has 5 images"),
        "{message}"
    );
}

#[test]
fn train_test_size_mismatch() {
    let dir = idx_dir();
    write_idx_images(&dir.path().join("t10k-images-idx3-ubyte"), &images(3, 3, 4)).unwrap();
    write_idx_labels(&dir.path().join("t10k-labels-idx1-ubyte"), &[0, 0, 0]).unwrap();
    assert_error(load_dir(dir.path()), "t10k-images-idx3-ubyte", "images are 3x4, but");
    assert_error(load_dir(dir.path()), "train-images-idx3-ubyte has 4x3", "");
}

#[test]
fn fashion_mnist_keyword() {
    assert_eq!(parse_data_arg(Some("fashion-mnist")), DataSpec::Path(PathBuf::from(FASHION_MNIST_DIR)));
    if Path::new(FASHION_MNIST_DIR).exists() {
        return; // The install hint only shows where the package is missing.
    }
    let message = load(&parse_data_arg(Some("fashion-mnist")), &FolderOptions::default()).unwrap_err().to_string();
    assert!(message.contains("apt-get install dataset-fashion-mnist") && message.contains("--data DIR"), "{message}");
}

/// Saves a `w x h` image whose pixels are `value`, as RGB so loading must convert it.
fn save_rgb(path: &Path, w: u32, h: u32, value: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_pixel(w, h, image::Rgb([value; 3])).save(path).unwrap();
}

/// Three classes, sub-folders named out of order, images of mixed sizes and formats.
fn class_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for i in 0..4 {
        save_rgb(&d.join(format!("cat/{i}.png")), 10, 12, 10 + i);
        save_rgb(&d.join(format!("ant/{i}.PNG")), 28, 28, 100 + i);
    }
    save_rgb(&d.join("bee/a.jpg"), 40, 30, 200);
    save_rgb(&d.join("bee/b.jpeg"), 40, 30, 200);
    std::fs::write(d.join("bee/notes.txt"), "ignored").unwrap();
    dir
}

fn folder(dir: &Path, image_size: Option<usize>, seed: u32) -> gpu_vae::advanced::error::Result<DataSet> {
    let options = FolderOptions { image_size, test_fraction: 0.25, seed, channels: None };
    load(&DataSpec::Path(dir.to_path_buf()), &options)
}

/// Joins the splits back into (first pixel, label) pairs, sorted.
fn contents(set: &DataSet) -> Vec<(u8, u8)> {
    let mut all: Vec<(u8, u8)> = [&set.train, &set.test]
        .into_iter()
        .flat_map(|s| (0..s.count).map(move |i| (s.image(i)[0], s.labels.as_ref().unwrap()[i])))
        .collect();
    all.sort_unstable();
    all
}

#[test]
fn folder_classes_resize_and_split() {
    let dir = class_folder();
    let set = folder(dir.path(), Some(28), 1).unwrap();
    assert_eq!(set.train.class_names, Some(vec!["ant".into(), "bee".into(), "cat".into()]));
    // ceil(10 * 0.25) = 3 held out.
    assert_eq!((set.train.count, set.test.count), (7, 3));
    assert_eq!((set.train.rows, set.train.cols, set.test.dim()), (28, 28, 784));
    assert_eq!(set.train.pixels.len(), 7 * 784);
    // Flat colours survive grayscale and resizing (JPEG up to rounding).
    let c = contents(&set);
    assert_eq!(&c[..4], &[(10, 2), (11, 2), (12, 2), (13, 2)]);
    assert_eq!(&c[4..8], &[(100, 0), (101, 0), (102, 0), (103, 0)]);
    assert!(c[8..].iter().all(|&(p, l)| l == 1 && p.abs_diff(200) <= 2), "{c:?}");
    for s in [&set.train, &set.test] {
        assert!((0..s.count).all(|i| s.image(i).iter().all(|&p| p == s.image(i)[0] || p.abs_diff(200) <= 2)));
    }
}

#[test]
fn folder_split_is_deterministic_and_disjoint() {
    let dir = class_folder();
    let a = folder(dir.path(), Some(8), 5).unwrap();
    let b = folder(dir.path(), Some(8), 5).unwrap();
    assert_eq!((&a.train, &a.test), (&b.train, &b.test));
    // Pixel values identify the PNG images; the two JPEGs are alike, so compare the multiset.
    assert_eq!(contents(&a), contents(&folder(dir.path(), Some(8), 6).unwrap()));
    let test_pixels = |s: &DataSet| (0..s.test.count).map(|i| s.test.image(i)[0]).collect::<Vec<_>>();
    let seeds: Vec<Vec<u8>> = (0..8).map(|seed| test_pixels(&folder(dir.path(), Some(8), seed).unwrap())).collect();
    assert!(seeds.iter().any(|t| *t != seeds[0]), "the seed should change the split");
    for t in &seeds {
        assert_eq!(t.len(), 3);
    }
}

#[test]
fn unlabeled_folder_and_tiny_splits() {
    let dir = tempfile::tempdir().unwrap();
    save_rgb(&dir.path().join("a.png"), 5, 5, 1);
    let one = folder(dir.path(), None, 0).unwrap();
    assert_eq!((one.train.count, one.test.count, one.train.labels), (1, 0, None));
    save_rgb(&dir.path().join("b.png"), 5, 5, 2);
    let options = FolderOptions { image_size: None, test_fraction: 0.0, seed: 0, channels: None };
    let two = load(&DataSpec::Path(dir.path().into()), &options).unwrap();
    assert_eq!((two.train.count, two.test.count, two.train.rows), (1, 1, 5));
}

#[test]
fn native_size_mismatch_names_both_files() {
    let dir = tempfile::tempdir().unwrap();
    save_rgb(&dir.path().join("a.png"), 5, 5, 1);
    save_rgb(&dir.path().join("b.png"), 6, 5, 1);
    let message = folder(dir.path(), None, 0).unwrap_err().to_string();
    assert!(message.contains("b.png: image is 6x5, but") && message.contains("a.png is 5x5"), "{message}");
    assert_eq!(folder(dir.path(), Some(4), 0).unwrap().train.dim(), 16);
}

#[test]
fn bad_folders() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("readme.txt"), "no images").unwrap();
    assert_error(folder(dir.path(), Some(28), 0), "", "no IDX files and no PNG/JPEG images");

    std::fs::write(dir.path().join("broken.png"), "not a png").unwrap();
    assert_error(folder(dir.path(), Some(28), 0), "broken.png", "cannot decode image");

    let dir = class_folder();
    save_rgb(&dir.path().join("stray.png"), 5, 5, 1);
    assert_error(folder(dir.path(), Some(28), 0), "stray.png", "beside class sub-folders");

    let dir = tempfile::tempdir().unwrap();
    for c in 0..257 {
        std::fs::create_dir(dir.path().join(format!("{c:03}"))).unwrap();
    }
    save_rgb(&dir.path().join("000/a.png"), 2, 2, 1);
    assert_error(folder(dir.path(), Some(28), 0), "", "257 class sub-folders");

    let file = dir.path().join("000/a.png");
    assert_error(folder(&file, Some(28), 0), "a.png", "not a directory");
}

#[test]
fn loader_yields_every_index_once_in_order() {
    // Image i is filled with the value i, so each row says which image it is.
    let count = 23;
    let dim = 6;
    let images = Arc::new(Images {
        pixels: (0..count * dim).map(|i| (i / dim) as u8).collect(),
        count,
        channels: 1,
        rows: 2,
        cols: 3,
        labels: None,
        class_names: None,
    });
    let order = rng::permutation(count, 9, 0);
    let plan = BatchPlan { order: order.clone(), batch_size: 5, noise_std: 0.0, seed: 1, first_step: 0, classes: 0 };
    let batches: Vec<_> = spawn_batches(images, plan).iter().collect();
    assert_eq!(batches.iter().map(|b| b.rows).collect::<Vec<_>>(), [5, 5, 5, 5, 3]);
    let mut seen = Vec::new();
    for (n, b) in batches.iter().enumerate() {
        assert_eq!((b.index, b.clean.len()), (n, b.rows * dim));
        assert!(b.input.is_none());
        for row in b.clean.chunks_exact(dim) {
            assert!(row.iter().all(|&x| x == row[0]));
            seen.push((row[0] * 255.0).round() as u32);
        }
    }
    assert_eq!(seen, order);
}

#[test]
fn loader_noise_is_deterministic_and_clamped() {
    // Every pixel 128, so batches differ only in their noise.
    let images = Arc::new(Images { pixels: vec![128; 10 * 16], ..images(10, 4, 4) });
    let plan = |seed, first_step| BatchPlan {
        order: (0..10).collect(),
        batch_size: 4,
        noise_std: 0.5,
        seed,
        first_step,
        classes: 0,
    };
    let inputs = |p| spawn_batches(images.clone(), p).iter().map(|b| b.input.unwrap()).collect::<Vec<_>>();
    let a = inputs(plan(3, 100));
    assert_eq!(a, inputs(plan(3, 100)));
    assert_ne!(a, inputs(plan(4, 100)));
    let later = inputs(plan(3, 101));
    assert_eq!(a[1], later[0], "batch b draws at step first_step + b");
    assert_eq!(a[2].len(), 2 * 16, "short last batch");
    let all: Vec<f32> = a.concat();
    assert!(all.iter().all(|x| (0.0..=1.0).contains(x)));
    // std 0.5 around 0.5 must hit both clamps.
    assert!(all.contains(&0.0) && all.contains(&1.0));
}

#[test]
fn loader_stops_when_receiver_drops() {
    let images = Arc::new(images(200, 2, 2));
    let plan =
        BatchPlan { order: (0..200).collect(), batch_size: 1, noise_std: 0.1, seed: 0, first_step: 0, classes: 0 };
    let rx = spawn_batches(images.clone(), plan);
    assert_eq!(rx.recv().unwrap().index, 0);
    drop(rx);
    // The thread holds a reference to the images until it ends.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while Arc::strong_count(&images) > 1 {
        assert!(std::time::Instant::now() < deadline, "the batch thread did not stop");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Loads a folder of pictures at native size, all in the train split.
fn pictures(dir: &Path, channels: Option<usize>) -> gpu_vae::advanced::error::Result<Images> {
    let options = FolderOptions { image_size: None, test_fraction: 0.0, seed: 0, channels };
    Ok(load(&DataSpec::Path(dir.to_path_buf()), &options)?.train)
}

#[test]
fn colour_folders_load_as_rgb_planes_by_default() {
    // One picture per folder, so that it is the train split.
    let (gray_dir, colour_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Gray pictures, even saved as RGB, load as one channel.
    save_rgb(&gray_dir.path().join("a.png"), 3, 2, 50);
    assert_eq!(pictures(gray_dir.path(), None).unwrap().channels, 1);
    // One coloured pixel makes the folder RGB: planes R, G, B, each rows x cols.
    let mut colour = image::RgbImage::from_pixel(3, 2, image::Rgb([50; 3]));
    colour.put_pixel(2, 1, image::Rgb([10, 20, 30]));
    colour.save(colour_dir.path().join("b.png")).unwrap();
    let rgb = pictures(colour_dir.path(), None).unwrap();
    assert_eq!((rgb.channels, rgb.rows, rgb.cols, rgb.dim()), (3, 2, 3, 18));
    let b = rgb.image(0);
    assert_eq!((b[5], b[11], b[17]), (10, 20, 30));
    assert!(b.iter().enumerate().all(|(i, &p)| i % 6 == 5 || p == 50));
    // --channels 1 asks for gray anyway, --channels 3 for planes of gray pictures.
    let gray = pictures(colour_dir.path(), Some(1)).unwrap();
    assert_eq!((gray.channels, gray.dim()), (1, 6));
    assert_eq!(gray.image(0)[..5], [50; 5]);
    assert_eq!(pictures(gray_dir.path(), Some(3)).unwrap().image(0), [50; 18]);
    let err = pictures(gray_dir.path(), Some(2)).unwrap_err().to_string();
    assert!(err.contains("--channels") && err.contains("2 is not 1"), "{err}");
}

#[test]
fn alpha_is_composited_on_black() {
    let dir = tempfile::tempdir().unwrap();
    let mut rgba = image::RgbaImage::from_pixel(2, 1, image::Rgba([200, 100, 50, 255]));
    rgba.put_pixel(1, 0, image::Rgba([200, 100, 50, 0]));
    rgba.save(dir.path().join("rgba.png")).unwrap();
    let rgb = pictures(dir.path(), None).unwrap();
    assert_eq!(rgb.image(0), [200, 0, 100, 0, 50, 0]);
    // Half transparent gray: half as bright.
    let la = image::GrayAlphaImage::from_pixel(1, 1, image::LumaA([200, 128]));
    std::fs::remove_file(dir.path().join("rgba.png")).unwrap();
    la.save(dir.path().join("la.png")).unwrap();
    let gray = pictures(dir.path(), None).unwrap();
    assert_eq!((gray.channels, gray.image(0)), (1, &[100u8][..]));
}

/// CIFAR records: label byte(s), then R, G, B planes; pixel p of record k is (k + p) mod 256.
fn cifar_records(labels: &[&[u8]]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for (k, l) in labels.iter().enumerate() {
        bytes.extend_from_slice(l);
        bytes.extend((0..3072).map(|p| ((k + p) % 256) as u8));
    }
    bytes
}

fn write_cifar10(dir: &Path, per_batch: usize) {
    for i in 1..=5 {
        let labels: Vec<[u8; 1]> = (0..per_batch).map(|k| [(i + k) as u8 % 10]).collect();
        let refs: Vec<&[u8]> = labels.iter().map(|l| &l[..]).collect();
        std::fs::write(dir.join(format!("data_batch_{i}.bin")), cifar_records(&refs)).unwrap();
    }
    std::fs::write(dir.join("test_batch.bin"), cifar_records(&[&[7], &[3]])).unwrap();
}

#[test]
fn cifar10_folders_load_with_labels_and_names() {
    let dir = tempfile::tempdir().unwrap();
    write_cifar10(dir.path(), 2);
    let names: String = (0..10).map(|i| format!("class{i}\n")).collect();
    std::fs::write(dir.path().join("batches.meta.txt"), names + "\n").unwrap();
    let set = load(&DataSpec::Path(dir.path().into()), &FolderOptions::default()).unwrap();
    assert_eq!((set.train.count, set.train.channels, set.train.rows, set.train.cols), (10, 3, 32, 32));
    assert_eq!(set.train.labels.as_deref(), Some(&[1, 2, 2, 3, 3, 4, 4, 5, 5, 6][..]));
    assert_eq!(set.test.labels.as_deref(), Some(&[7, 3][..]));
    assert_eq!(set.test.image(1)[..3], [1, 2, 3]);
    assert_eq!(set.test.image(1)[3071], (3072u32 % 256) as u8);
    assert_eq!(set.train.class_names.as_ref().unwrap()[9], "class9");
}

#[test]
fn cifar100_uses_the_fine_label() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("train.bin"), cifar_records(&[&[1, 42], &[2, 99], &[3, 0]])).unwrap();
    std::fs::write(dir.path().join("test.bin"), cifar_records(&[&[4, 17]])).unwrap();
    let set = load(&DataSpec::Path(dir.path().into()), &FolderOptions::default()).unwrap();
    assert_eq!(set.train.labels.as_deref(), Some(&[42, 99, 0][..]));
    assert_eq!((set.test.count, set.test.labels.as_deref()), (1, Some(&[17][..])));
    assert_eq!(set.test.image(0)[..2], [0, 1]);
    assert_eq!(set.train.class_names, None);
}

#[test]
fn bad_cifar_files_are_one_line_errors() {
    let load_err = |dir: &Path| load(&DataSpec::Path(dir.into()), &FolderOptions::default()).unwrap_err().to_string();
    let dir = tempfile::tempdir().unwrap();
    write_cifar10(dir.path(), 1);
    // A truncated last record.
    let test = dir.path().join("test_batch.bin");
    let bytes = std::fs::read(&test).unwrap();
    std::fs::write(&test, &bytes[..bytes.len() - 1]).unwrap();
    let err = load_err(dir.path());
    assert!(
        err.contains(
            "test_batch.bin: truncated record: 6145 bytes is not a whole number of 3073-byte CIFAR-10 records"
        ),
        "{err}"
    );
    assert!(!err.contains('\n'));
    // Empty, and of the other variant's record size.
    std::fs::write(&test, []).unwrap();
    assert!(load_err(dir.path()).contains("test_batch.bin: empty"));
    std::fs::write(&test, cifar_records(&[&[1, 2]])).unwrap();
    assert!(load_err(dir.path()).contains("3074 bytes is not a whole number of 3073-byte"));
    // A missing batch.
    std::fs::write(&test, cifar_records(&[&[1]])).unwrap();
    std::fs::remove_file(dir.path().join("data_batch_4.bin")).unwrap();
    assert!(load_err(dir.path()).ends_with("holds CIFAR-10 files but no data_batch_4.bin"));
    // CIFAR-100 without its test file.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("train.bin"), cifar_records(&[&[1, 2]])).unwrap();
    assert!(load_err(dir.path()).ends_with("holds CIFAR-100 files but no test.bin"));
}

/// A JPEG of `w`x`h` with the size in its frame header (SOF0) overwritten.
fn jpeg_declaring(w: u32, h: u32, declared: u16) -> Vec<u8> {
    let img = image::GrayImage::from_fn(w, h, |x, y| image::Luma([(x * 11 + y * 5) as u8]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    let mut b = out.into_inner();
    let sof = b.windows(2).position(|m| m == [0xFF, 0xC0]).unwrap();
    b[sof + 5..sof + 9].copy_from_slice(&[declared.to_be_bytes(), declared.to_be_bytes()].concat());
    b
}

#[test]
fn picture_sizes_are_capped_from_their_headers() {
    // A 389 KB PNG of 20000x20000 took 1.58 GB; an 855-byte JPEG declaring
    // 12000x12000, 855 MB. Both are refused from their headers now.
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("png");
    std::fs::create_dir(&png).unwrap();
    let mut big = Vec::new();
    image::GrayImage::new(8, 8).write_to(&mut std::io::Cursor::new(&mut big), image::ImageFormat::Png).unwrap();
    big[16..24].copy_from_slice(&[20000u32.to_be_bytes(), 20000u32.to_be_bytes()].concat());
    let mut crc = flate2::Crc::new();
    crc.update(&big[12..29]);
    big[29..33].copy_from_slice(&crc.sum().to_be_bytes());
    for name in ["a.png", "b.png"] {
        std::fs::write(png.join(name), &big).unwrap();
    }
    assert_error(load_dir(&png), "a.png", "its header says 20000x20000 = 400000000 pixels, more than the limit");
    let jpg = dir.path().join("jpg");
    std::fs::create_dir(&jpg).unwrap();
    for name in ["a.jpg", "b.jpg"] {
        std::fs::write(jpg.join(name), jpeg_declaring(16, 16, 12000)).unwrap();
    }
    assert_error(load_dir(&jpg), "a.jpg", "its header says 12000x12000");
    let e = gpu_vae::advanced::data::folder::read_planes(&jpg.join("a.jpg"), 1, 28, 28).unwrap_err().to_string();
    assert!(e.contains("12000x12000"), "{e}");
}

#[test]
fn truncated_jpegs_are_refused_like_truncated_pngs() {
    let dir = tempfile::tempdir().unwrap();
    let whole = jpeg_declaring(32, 32, 32);
    std::fs::write(dir.path().join("a.jpg"), &whole).unwrap();
    std::fs::write(dir.path().join("b.jpg"), &whole[..whole.len() * 2 / 3]).unwrap();
    assert_error(load_dir(dir.path()), "b.jpg", "the JPEG is truncated");
    std::fs::write(dir.path().join("b.jpg"), &whole).unwrap();
    assert_eq!(load_dir(dir.path()).unwrap().train.count + 1, 2);
}

#[test]
fn idx_headers_are_checked_before_the_data_is_read() {
    // A gzip IDX declaring 256x2000x2000 unpacked 1 GB before the side cap
    // refused it; a raw file was read whole (3 GiB) before its header was checked.
    let dir = tempfile::tempdir().unwrap();
    let gz = dir.path().join("train-images-idx3-ubyte.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&[0, 0, 8, 3, 0, 0, 1, 0, 0, 0, 7, 208, 0, 0, 7, 208]).unwrap();
    enc.write_all(&vec![0u8; 1 << 20]).unwrap();
    std::fs::write(&gz, enc.finish().unwrap()).unwrap();
    let e = read_idx(&gz).unwrap_err().to_string();
    assert!(e.contains("256x2000x2000: images of 2000x2000, more than the limit of 1024 per side"), "{e}");
    let raw = dir.path().join("raw");
    let mut file = std::fs::File::create(&raw).unwrap();
    file.write_all(&[0, 0, 8, 3, 0, 0, 0, 10, 0, 0, 0, 28, 0, 0, 0, 28]).unwrap();
    file.set_len(1 << 30).unwrap(); // sparse: nothing is written
    let e = read_idx(&raw).unwrap_err().to_string();
    assert!(e.contains("trailing data: header says 10x28x28 = 7840 bytes of pixels, file has 1073741808"), "{e}");
}

#[test]
fn cifar_labels_beyond_the_classes_are_refused() {
    let load_err = |dir: &Path| load(&DataSpec::Path(dir.into()), &FolderOptions::default()).unwrap_err().to_string();
    let dir = tempfile::tempdir().unwrap();
    write_cifar10(dir.path(), 1);
    std::fs::write(dir.path().join("test_batch.bin"), cifar_records(&[&[3], &[200]])).unwrap();
    let err = load_err(dir.path());
    assert!(err.contains("test_batch.bin: record 1 has label 200, but CIFAR-10 has 10 classes (0 to 9)"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("train.bin"), cifar_records(&[&[1, 150]])).unwrap();
    std::fs::write(dir.path().join("test.bin"), cifar_records(&[&[4, 17]])).unwrap();
    assert!(load_err(dir.path()).contains("train.bin: record 0 has label 150, but CIFAR-100 has 100 classes"));
    std::fs::write(dir.path().join("train.bin"), cifar_records(&[&[20, 15]])).unwrap();
    assert!(load_err(dir.path()).contains("record 0 has label 20, but CIFAR-100 has 20 classes"));
}
