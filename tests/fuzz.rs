//! Seeded mutation fuzzing of every reader of outside bytes: IDX files (raw
//! and gzipped, as bytes and as files, sparse ones included), folders of
//! images (their size headers too), CIFAR binaries, checkpoints, optimizer
//! states and codes files; and run-folder locks taken by many threads at
//! once. A case may
//! load or be refused; it must never panic or abort, and what loads must be
//! consistent (sizes that match, finite values).
//!
//! Each test runs a few thousand cases in seconds. A longer run:
//!
//! ```sh
//! FUZZ_CASES=1000000 cargo test --release --test fuzz   # FUZZ_SEED=N for another sequence
//! ```
//!
//! A failing case prints its seed and index; the same seed reproduces it.

use std::io::Write;
use std::path::Path;

use gpu_vae::advanced::apps::codes;
use gpu_vae::advanced::checkpoint;
use gpu_vae::advanced::data::idx::{parse_idx_file, read_idx};
use gpu_vae::advanced::data::{self, DataSpec, FolderOptions};
use gpu_vae::advanced::model::{Architecture, InitScheme, ModelConfig, ModelKind, ReconLoss, init_params};

/// xorshift64*: tiny, seeded, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// A size that breaks naive arithmetic more often than a random one does.
    fn extreme(&mut self) -> u64 {
        const VALUES: [u64; 10] = [0, 1, 2, 255, 1 << 16, (1 << 31) - 1, 1 << 31, u32::MAX as u64, 1 << 62, u64::MAX];
        if self.below(4) == 0 { self.next() } else { VALUES[self.below(VALUES.len())] }
    }
}

fn cases(default: usize) -> usize {
    std::env::var("FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn seed() -> u64 {
    std::env::var("FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(1)
}

/// Runs `case` on `n` seeded generators, naming the failing case on a panic.
fn fuzz(name: &str, default_cases: usize, mut case: impl FnMut(&mut Rng)) {
    let (n, seed) = (cases(default_cases), seed());
    for i in 0..n {
        let mut rng = Rng::new(seed.wrapping_mul(1_000_003).wrapping_add(i as u64));
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(&mut rng)));
        if let Err(panic) = outcome {
            panic!("{name}: case {i} of seed {seed} panicked: {:?}", panic.downcast_ref::<String>());
        }
    }
}

/// 1 to 4 random edits: bit flips, byte sets, truncations, insertions,
/// deletions, and `fields` (offset, width) overwritten with extreme values.
fn mutate(rng: &mut Rng, base: &[u8], fields: &[(usize, usize)]) -> Vec<u8> {
    let mut b = base.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(b.len() + 1);
        match rng.below(7) {
            0 if !b.is_empty() => {
                let (i, bit) = (at.min(b.len() - 1), rng.below(8));
                b[i] ^= 1 << bit;
            }
            1 if !b.is_empty() => {
                let i = at.min(b.len() - 1);
                b[i] = rng.next() as u8;
            }
            2 => b.truncate(at),
            3 => {
                let extra: Vec<u8> = (0..1 + rng.below(16)).map(|_| rng.next() as u8).collect();
                b.splice(at..at, extra);
            }
            4 => {
                let end = (at + 1 + rng.below(16)).min(b.len());
                b.drain(at.min(end)..end);
            }
            _ if !fields.is_empty() => {
                let (offset, width) = fields[rng.below(fields.len())];
                let value = rng.extreme().to_le_bytes();
                let big_endian = rng.below(2) == 0;
                for k in 0..width {
                    if let Some(byte) = b.get_mut(offset + k) {
                        *byte = if big_endian { value[width - 1 - k] } else { value[k] };
                    }
                }
            }
            _ => {}
        }
    }
    b
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

#[test]
fn idx_reader() {
    let mut images = vec![0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5];
    images.extend((0..60).map(|i| i as u8));
    let labels = vec![0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9];
    let fields = [(2, 1), (3, 1), (4, 4), (8, 4), (12, 4)];
    let path = Path::new("fuzz.idx");
    fuzz("idx", 5000, |rng| {
        let base = if rng.below(2) == 0 { &images } else { &labels };
        let raw = mutate(rng, base, &fields);
        // Raw, the mutated contents gzipped, or the gzip stream itself mutated.
        let bytes = match rng.below(3) {
            0 => raw,
            1 => gzip(&raw),
            _ => mutate(rng, &gzip(base), &[]),
        };
        if let Ok(idx) = parse_idx_file(&bytes, path) {
            assert_eq!(idx.data.len(), idx.dims.iter().product::<usize>());
            let _ = idx.clone().into_images(path);
            let _ = idx.into_labels(path);
        }
    });
}

fn png_bytes(w: u32, h: u32, seed: u8) -> Vec<u8> {
    let img = image::GrayImage::from_fn(w, h, |x, y| image::Luma([(x * 7 + y * 3) as u8 ^ seed]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn jpeg_bytes(w: u32, h: u32) -> Vec<u8> {
    let img = image::GrayImage::from_fn(w, h, |x, y| image::Luma([(x * 11 + y * 5) as u8]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

/// PNG width and height overwritten, with the chunk's CRC fixed so that the
/// decoder reads them rather than stopping at the checksum.
fn png_with_size(png: &[u8], w: u32, h: u32) -> Vec<u8> {
    let mut b = png.to_vec();
    b[16..20].copy_from_slice(&w.to_be_bytes());
    b[20..24].copy_from_slice(&h.to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(&b[12..29]);
    b[29..33].copy_from_slice(&crc.sum().to_be_bytes());
    b
}

#[test]
fn image_folder_reader() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.png"), png_bytes(6, 5, 0)).unwrap();
    let (png, jpeg) = (png_bytes(6, 5, 1), jpeg_bytes(6, 5));
    let spec = DataSpec::Path(dir.path().to_path_buf());
    fuzz("image folder", 2000, |rng| {
        let (name, bytes) = match rng.below(3) {
            0 => ("b.png", mutate(rng, &png, &[(16, 4), (20, 4), (24, 1), (25, 1)])),
            1 => ("b.png", png_with_size(&png, rng.extreme() as u32, rng.extreme() as u32)),
            _ => ("b.jpg", mutate(rng, &jpeg, &[])),
        };
        for stale in ["b.png", "b.jpg"] {
            let _ = std::fs::remove_file(dir.path().join(stale));
        }
        std::fs::write(dir.path().join(name), bytes).unwrap();
        let image_size = match rng.below(8) {
            0 => Some(rng.extreme() as usize),
            1..3 => None,
            _ => Some(1 + rng.below(12)),
        };
        let options = FolderOptions {
            image_size,
            test_fraction: 0.5,
            seed: rng.next() as u32,
            channels: [None, Some(1), Some(3)][rng.below(3)],
        };
        if let Ok(set) = data::load(&spec, &options) {
            for split in [&set.train, &set.test] {
                assert_eq!(split.pixels.len(), split.count * split.dim());
            }
            assert_eq!(set.train.count + set.test.count, 2);
        }
    });
}

#[test]
fn cifar_reader() {
    let dir = tempfile::tempdir().unwrap();
    // CIFAR-100: records of 2 label bytes and 3072 pixels, no header.
    let record: Vec<u8> = [3, 77].into_iter().chain((0..3072).map(|p| p as u8)).collect();
    let two = [record.clone(), record].concat();
    let spec = DataSpec::Path(dir.path().to_path_buf());
    fuzz("cifar folder", 300, |rng| {
        for name in ["train.bin", "test.bin"] {
            let bytes = if rng.below(2) == 0 { two.clone() } else { mutate(rng, &two, &[(0, 2), (3074, 2)]) };
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
        if let Ok(set) = data::load(&spec, &FolderOptions::default()) {
            for split in [&set.train, &set.test] {
                assert_eq!((split.channels, split.rows, split.cols), (3, 32, 32));
                assert_eq!(split.pixels.len(), split.count * split.dim());
                assert_eq!(split.labels.as_ref().map(Vec::len), Some(split.count));
            }
        }
    });
}

fn small_model() -> (Architecture, Vec<f32>) {
    let config = ModelConfig {
        kind: ModelKind::Vae,
        image_rows: 4,
        image_cols: 3,
        channels: 1,
        hidden: vec![3],
        latent: 2,
        loss: ReconLoss::Bce,
        activation: gpu_vae::advanced::model::Activation::Relu,
        arch: gpu_vae::advanced::model::Arch::Mlp,
        conv: vec![],
        classes: 0,
    };
    let arch = Architecture::new(&config).unwrap();
    let params = init_params(&arch, InitScheme::Torch, 1);
    (arch, params)
}

/// The checkpoint with one number of its header (tensor offsets and shapes,
/// or a size in the model's metadata) replaced by an extreme value, and the
/// header's length prefix fixed: the reader then has to check the number itself.
fn with_extreme_header_number(rng: &mut Rng, file: &[u8]) -> Vec<u8> {
    let n = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&file[8..8 + n]).unwrap();
    let digits: Vec<(usize, usize)> = header
        .char_indices()
        .filter(|&(i, c)| c.is_ascii_digit() && !header[..i].ends_with(|p: char| p.is_ascii_digit()))
        .map(|(i, _)| (i, header[i..].find(|c: char| !c.is_ascii_digit()).map_or(header.len(), |l| i + l)))
        .collect();
    let (start, end) = digits[rng.below(digits.len())];
    let new_header = format!("{}{}{}", &header[..start], rng.extreme(), &header[end..]);
    let mut out = (new_header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(new_header.as_bytes());
    out.extend_from_slice(&file[8 + n..]);
    out
}

#[test]
fn checkpoint_reader() {
    let (arch, params) = small_model();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    checkpoint::save(&path, &arch, &params).unwrap();
    let file = std::fs::read(&path).unwrap();
    checkpoint::parse(&file, &path).unwrap();
    fuzz("checkpoint", 5000, |rng| {
        let bytes = match rng.below(2) {
            0 => mutate(rng, &file, &[(0, 8)]),
            _ => with_extreme_header_number(rng, &file),
        };
        if let Ok((arch, params)) = checkpoint::parse(&bytes, &path) {
            assert_eq!(params.len(), arch.param_count);
            assert!(params.iter().all(|v| v.is_finite()));
        }
    });
}

#[test]
fn codes_reader() {
    let z: Vec<f32> = (0..15).map(|i| (i as f32 - 7.0) * 0.3).collect();
    let bases = [
        codes::to_bytes(&z, 3, (1, 28, 28), codes::Bits::Sixteen),
        codes::to_bytes(&z, 3, (1, 28, 28), codes::Bits::Eight),
    ];
    let fields = [(8, 2), (10, 1), (12, 4), (16, 4), (20, 4), (24, 4), (28, 4), (32, 4), (36, 4)];
    let (arch, _) = small_model();
    let path = Path::new("fuzz.codes");
    fuzz("codes", 5000, |rng| {
        let base = &bases[rng.below(2)];
        let bytes = mutate(rng, base, &fields);
        if let Ok(c) = codes::parse(&bytes, path) {
            assert_eq!(c.values.len(), c.count * c.latent);
            assert!(c.values.iter().all(|v| v.is_finite()));
            let _ = codes::check_model(&c, &arch, path);
        }
    });
}

#[test]
fn raw_idx_files_are_checked_before_they_are_read() {
    // Through the file reader: a header against the file's length (sparse
    // files of up to 2^40 bytes cost nothing to make, and must cost nothing
    // to refuse).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fuzz-idx");
    let mut images = vec![0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5];
    images.extend((0..60).map(|i| i as u8));
    fuzz("raw idx file", 500, |rng| {
        let bytes = mutate(rng, &images, &[(3, 1), (4, 4), (8, 4), (12, 4)]);
        std::fs::write(&path, &bytes).unwrap();
        if rng.below(4) == 0 {
            std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(rng.next() % (1 << 40)).unwrap();
        }
        if let Ok(idx) = read_idx(&path) {
            assert_eq!(idx.data.len(), idx.dims.iter().product::<usize>());
        }
    });
}

/// A JPEG with its frame header's height and width set to `h` and `w`.
fn jpeg_with_size(jpeg: &[u8], w: u16, h: u16) -> Vec<u8> {
    let mut b = jpeg.to_vec();
    let sof = b.windows(2).position(|m| m == [0xFF, 0xC0]).unwrap();
    b[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
    b[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
    b
}

#[test]
fn picture_size_headers() {
    // Every declared size is refused or decoded within the cap: none may
    // take memory in proportion to what it declares.
    let dir = tempfile::tempdir().unwrap();
    let (png, jpeg) = (png_bytes(6, 5, 1), jpeg_bytes(6, 5));
    fuzz("picture size headers", 300, |rng| {
        let (w, h) = (rng.extreme() as u32, rng.extreme() as u32);
        let (name, bytes) = if rng.below(2) == 0 {
            ("p.png", png_with_size(&png, w, h))
        } else {
            ("p.jpg", jpeg_with_size(&jpeg, w as u16, h as u16))
        };
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        if let Ok(picture) = data::folder::read_picture(&path) {
            assert!(picture.width() as u64 * picture.height() as u64 <= gpu_vae::advanced::limits::MAX_PICTURE_PIXELS);
        }
    });
}

#[test]
fn optimizer_state_reader() {
    use gpu_vae::advanced::engine::{AdamState, LossSums};
    use gpu_vae::advanced::train::state::{self, Position, TrainState};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("optimizer.safetensors");
    let st = TrainState {
        position: Position { epochs_done: 1, batches_done: 2, step: 9, seed: 3, config: 4, data: 5 },
        adam: AdamState { m: vec![0.5, -1.0, 2.0], v: vec![1.0, 0.0, 3.0], steps: 9 },
        partial: LossSums { recon: 1.5, kl: 0.25 },
        partial_seconds: 2.0,
        metrics: "epoch,train_loss,train_recon,train_kl,test_loss,test_recon,test_kl,seconds,samples_per_s\n".into(),
        config: Some("{}".into()),
    };
    state::save(&path, &st).unwrap();
    let file = std::fs::read(&path).unwrap();
    assert_eq!(state::parse(&file, &path, 3).unwrap(), st);
    fuzz("optimizer state", 3000, |rng| {
        let bytes = match rng.below(2) {
            0 => mutate(rng, &file, &[(0, 8)]),
            _ => with_extreme_header_number(rng, &file),
        };
        if let Ok(back) = state::parse(&bytes, &path, 3) {
            assert!(back.adam.m.iter().chain(&back.adam.v).all(|v| v.is_finite()));
            assert!(back.adam.v.iter().all(|&v| v >= 0.0));
            assert!(back.partial_seconds.is_finite() && back.partial_seconds >= 0.0);
            assert!(back.partial.recon.is_finite() && back.partial.kl.is_finite());
        }
    });
}

#[test]
fn run_folder_locks_under_contention() {
    // Threads (each its own open file, as processes are) claim one folder
    // over and over, some after planting a stale lock: never two at once.
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let (holders, taken) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let rounds = cases(200) / 8 + 1;
    std::thread::scope(|scope| {
        for t in 0..8u64 {
            let (dir, holders, taken) = (dir.path(), &holders, &taken);
            scope.spawn(move || {
                let mut rng = Rng::new(seed() ^ t);
                for _ in 0..rounds {
                    if rng.below(8) == 0 {
                        let _ = std::fs::write(dir.join(".lock"), "0\n");
                    }
                    if let Ok(lock) = gpu_vae::advanced::train::run_dir::claim(dir, true) {
                        assert_eq!(holders.fetch_add(1, Ordering::SeqCst), 0, "two holders at once");
                        std::thread::sleep(std::time::Duration::from_micros(rng.below(300) as u64));
                        holders.fetch_sub(1, Ordering::SeqCst);
                        taken.fetch_add(1, Ordering::SeqCst);
                        drop(lock);
                    }
                }
            });
        }
    });
    assert!(taken.load(Ordering::SeqCst) > 0);
}
