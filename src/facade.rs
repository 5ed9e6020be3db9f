//! The crate root's API: [`Run`], [`Image`], [`Latents`], [`Config`] and
//! [`train()`]. Each method calls the code of the `gpu-vae` subcommand that
//! does the same (`train::begin`, `train::run_dir`, `apps`, `device`), so
//! the library and the command line give the same numbers.

use std::cell::RefCell;
use std::path::Path;
use std::sync::Arc;

use crate::apps::{self, Inference, anomaly};
use crate::cli::TrainArgs;
use crate::data::folder;
use crate::device::{self, Device};
use crate::error::{Error, Result};
use crate::model::{Arch, ModelKind};
use crate::train::begin::{self, NewRunOptions};
use crate::train::run_dir::RunDir;
use crate::train::{self, EpochRecord, Progress, TrainConfig};

/// A picture in the model's layout: `channels` planes (1: grey; 3: red,
/// green, blue) of `rows` x `cols` pixels in [0, 1], plane after plane.
///
/// Converts from the `image` crate's `GrayImage`, `RgbImage` and
/// `DynamicImage`, and to `DynamicImage`.
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    channels: usize,
    rows: usize,
    cols: usize,
    pixels: Vec<f32>,
}

impl Image {
    /// An image of `pixels` (`channels`·`rows`·`cols` values in [0, 1],
    /// plane after plane); refused when the sizes disagree, are 0, or a
    /// value is outside [0, 1].
    pub fn new(channels: usize, rows: usize, cols: usize, pixels: Vec<f32>) -> Result<Image> {
        if !matches!(channels, 1 | 3) {
            return Err(Error::invalid("image", format!("{channels} channels; 1 (grey) or 3 (RGB)")));
        }
        if rows == 0 || cols == 0 {
            return Err(Error::invalid("image", format!("{rows}x{cols} pixels; an image has at least one")));
        }
        if pixels.len() != channels * rows * cols {
            let n = pixels.len();
            return Err(Error::invalid("image", format!("{n} pixel values for {channels}x{rows}x{cols}")));
        }
        if let Some(v) = pixels.iter().find(|v| !(0.0..=1.0).contains(*v)) {
            return Err(Error::invalid("image", format!("pixel value {v} is not in [0, 1]")));
        }
        Ok(Image { channels, rows, cols, pixels })
    }

    /// A PNG or JPEG as it is: grey or RGB by its colour type, transparency
    /// composited on black. [`Run::load_image`] reads one at a model's size.
    pub fn open(path: impl AsRef<Path>) -> Result<Image> {
        Ok(Image::from(&folder::read_picture(path.as_ref())?))
    }

    /// Writes the image as a PNG (grey or RGB), atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let mut png = Vec::new();
        image::DynamicImage::from(self)
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .map_err(|e| Error::bad_file(path, format!("PNG encoding failed: {e}")))?;
        crate::fsutil::write_atomic(path, &png)
    }

    /// Writes `images` (all of one size) as one PNG grid, `cols` per row, as
    /// the run's `samples.png` is laid out.
    pub fn save_grid(path: impl AsRef<Path>, images: &[Image], cols: usize) -> Result<()> {
        let Some(first) = images.first() else { return Err(Error::invalid("images", "no images for the grid")) };
        if cols == 0 {
            return Err(Error::invalid("cols", "must be at least 1"));
        }
        let (c, h, w) = (first.channels, first.rows, first.cols);
        if h * w == 0 {
            return Err(Error::invalid("images", "images of 0 pixels"));
        }
        if let Some(i) = images.iter().position(|im| (im.channels, im.rows, im.cols) != (c, h, w)) {
            return Err(Error::invalid("images", format!("image {i} differs in size or channels from image 0")));
        }
        let pixels: Vec<f32> = images.iter().flat_map(|im| im.pixels.iter().copied()).collect();
        crate::viz::write_grid(path.as_ref(), &pixels, c, h, w, cols)
    }

    pub fn channels(&self) -> usize {
        self.channels
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The values, plane after plane.
    pub fn pixels(&self) -> &[f32] {
        &self.pixels
    }

    pub fn into_pixels(self) -> Vec<f32> {
        self.pixels
    }

    fn from_bytes(channels: usize, rows: usize, cols: usize, bytes: &[u8]) -> Image {
        Image { channels, rows, cols, pixels: bytes.iter().map(|&b| b as f32 / 255.0).collect() }
    }

    /// The 8-bit level of each value, rounded (as the run's PNGs are written).
    fn levels(&self) -> impl Iterator<Item = u8> + '_ {
        self.pixels.iter().map(|&v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
    }
}

impl From<&image::GrayImage> for Image {
    fn from(grey: &image::GrayImage) -> Image {
        Image::from_bytes(1, grey.height() as usize, grey.width() as usize, grey.as_raw())
    }
}

impl From<&image::RgbImage> for Image {
    fn from(rgb: &image::RgbImage) -> Image {
        Image::from_bytes(3, rgb.height() as usize, rgb.width() as usize, &folder::rgb_planes(rgb))
    }
}

/// Grey for grey colour types, else RGB; alpha is dropped.
impl From<&image::DynamicImage> for Image {
    fn from(picture: &image::DynamicImage) -> Image {
        if picture.color().has_color() { Image::from(&picture.to_rgb8()) } else { Image::from(&picture.to_luma8()) }
    }
}

impl From<&Image> for image::DynamicImage {
    fn from(im: &Image) -> image::DynamicImage {
        let (w, h) = (im.cols as u32, im.rows as u32);
        let levels: Vec<u8> = im.levels().collect();
        if im.channels == 1 {
            let grey = image::GrayImage::from_raw(w, h, levels).expect("sizes checked by Image::new");
            return image::DynamicImage::ImageLuma8(grey);
        }
        let plane = im.rows * im.cols;
        let rgb = image::RgbImage::from_fn(w, h, |x, y| {
            let p = y as usize * im.cols + x as usize;
            image::Rgb([0, 1, 2].map(|c| levels[c * plane + p]))
        });
        image::DynamicImage::ImageRgb8(rgb)
    }
}

/// What the encoder says about each image.
#[derive(Clone, Debug, PartialEq)]
pub struct Latents {
    /// Per image: the posterior mean (VAE) or the code (AE), of the run's
    /// latent width. [`Run::decode`] takes these.
    pub mean: Vec<Vec<f32>>,
    /// Per image: the posterior log-variance (VAE); `None` for an AE.
    pub log_var: Option<Vec<Vec<f32>>>,
}

/// A trained run, opened from its folder: the model on a device, ready for
/// images.
///
/// A conditional run (trained with `--conditional`, [`Run::classes`] > 0)
/// needs each image's class: call the `_labelled` twin of a method (labels
/// are class numbers, one per image); the plain method refuses, and a run
/// that is not conditional refuses labels.
pub struct Run {
    dir: RunDir,
    // The uses take the model mutably (a GPU model owns its buffers); a
    // `Run` is used from one thread, so a RefCell keeps the methods `&self`.
    model: RefCell<Box<dyn Inference>>,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run").field("path", &self.dir.path()).field("model", &self.describe()).finish()
    }
}

impl Run {
    /// The run in `dir` (written by `gpu-vae train` or [`train()`]) on a real
    /// GPU when there is one, else the CPU path ([`Device::Auto`]).
    pub fn open(dir: impl AsRef<Path>) -> Result<Run> {
        Run::open_on(dir, Device::Auto)
    }

    /// The run in `dir` on `device`.
    pub fn open_on(dir: impl AsRef<Path>, device: Device) -> Result<Run> {
        let dir = RunDir::open(dir.as_ref())?;
        let model = device::open_inference(device, false, dir.arch(), dir.params().to_vec(), &mut |_| {})?;
        Ok(Run { dir, model: RefCell::new(model) })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The model as `gpu-vae train` names it: "VAE (MLP), 652,824 parameters".
    pub fn describe(&self) -> String {
        self.dir.config().describe_model(self.dir.arch().param_count)
    }

    /// The device computing, for the user.
    pub fn device(&self) -> String {
        self.model.borrow().device()
    }

    /// The run's settings, as in its `config.json`.
    pub fn config(&self) -> &TrainConfig {
        self.dir.config()
    }

    pub fn kind(&self) -> ModelKind {
        self.dir.arch().config.kind
    }

    /// (channels, rows, cols) of the images the model takes and gives.
    pub fn image_shape(&self) -> (usize, usize, usize) {
        let c = &self.dir.arch().config;
        (c.channels, c.image_rows, c.image_cols)
    }

    /// Numbers per latent vector.
    pub fn latent_dim(&self) -> usize {
        self.dir.arch().config.latent
    }

    /// Classes of a conditional run; 0 for one that is not conditional.
    pub fn classes(&self) -> usize {
        self.dir.arch().config.classes
    }

    /// The picture at `path` at the model's size and colour, resized and
    /// converted as `gpu-vae train` reads a folder of pictures.
    pub fn load_image(&self, path: impl AsRef<Path>) -> Result<Image> {
        let (c, h, w) = self.image_shape();
        Ok(Image::from_bytes(c, h, w, &folder::read_planes(path.as_ref(), c, h, w)?))
    }

    /// The encoder's view of each image (`gpu-vae encode`).
    pub fn encode(&self, images: &[Image]) -> Result<Latents> {
        self.encode_with(images, None)
    }

    /// [`Run::encode`] for a conditional run: `labels[i]` is image i's class.
    pub fn encode_labelled(&self, images: &[Image], labels: &[u8]) -> Result<Latents> {
        self.encode_with(images, Some(labels))
    }

    /// Images decoded from latent vectors (each [`Run::latent_dim`] numbers):
    /// the decoder's pixel probabilities, as `gpu-vae decode` writes them.
    pub fn decode(&self, z: &[Vec<f32>]) -> Result<Vec<Image>> {
        self.decode_with(z, None)
    }

    /// [`Run::decode`] for a conditional run: `labels[i]` is row i's class.
    pub fn decode_labelled(&self, z: &[Vec<f32>], labels: &[u8]) -> Result<Vec<Image>> {
        self.decode_with(z, Some(labels))
    }

    /// `n` images decoded from draws of the prior with `seed`, those of
    /// `gpu-vae sample --n N --seed S` (an AE, which has no prior, draws
    /// around the codes of the run's test images, so it reads its data).
    pub fn sample(&self, n: usize, seed: u32) -> Result<Vec<Image>> {
        self.sample_with(n, None, seed)
    }

    /// [`Run::sample`] for a conditional run: one image of each class in `labels`.
    pub fn sample_labelled(&self, labels: &[u8], seed: u32) -> Result<Vec<Image>> {
        self.sample_with(labels.len(), Some(labels), seed)
    }

    /// Each image decoded from its posterior mean (or code), as
    /// `gpu-vae reconstruct` shows them.
    pub fn reconstruct(&self, images: &[Image]) -> Result<Vec<Image>> {
        self.reconstruct_with(images, None)
    }

    /// [`Run::reconstruct`] for a conditional run.
    pub fn reconstruct_labelled(&self, images: &[Image], labels: &[u8]) -> Result<Vec<Image>> {
        self.reconstruct_with(images, Some(labels))
    }

    /// Anomaly scores, larger for stranger images, as `gpu-vae anomaly`
    /// computes them: a VAE's negative ELBO in nats (one posterior draw,
    /// following the run's batch size and seed), an AE's reconstruction
    /// error (mean squared, per pixel).
    pub fn score(&self, images: &[Image]) -> Result<Vec<f64>> {
        self.score_with(images, None)
    }

    /// [`Run::score`] for a conditional run.
    pub fn score_labelled(&self, images: &[Image], labels: &[u8]) -> Result<Vec<f64>> {
        self.score_with(images, Some(labels))
    }

    /// `gpu-vae anomaly`'s default threshold on [`Run::score`]: `k` standard
    /// deviations above the mean score of the run's normal training images
    /// (its `--normal-class` when it has one, else all); reads its data.
    pub fn threshold(&self, k: f64) -> Result<f64> {
        if !k.is_finite() {
            return Err(Error::invalid("k", format!("{k} is not a finite number")));
        }
        let data = self.dir.load_data()?;
        let (normal, _) = anomaly::normal_training_images(&data.train, self.config().normal_class)?;
        let (x, rows) = apps::first_pixels(&normal, None);
        let mut model = self.model.borrow_mut();
        let labels = apps::first_labels(model.as_ref(), &normal, rows)?;
        let scores = self.scores(model.as_mut(), &x, labels.as_deref(), rows)?;
        Ok(anomaly::threshold(&scores, k))
    }

    fn encode_with(&self, images: &[Image], labels: Option<&[u8]>) -> Result<Latents> {
        let (x, rows) = self.pixels_of(images, labels)?;
        let code = apps::encode_all(self.model.borrow_mut().as_mut(), &x, labels, rows)?;
        let latent = self.latent_dim();
        let width = self.dir.arch().code_width();
        let split = |from: usize| code.chunks_exact(width).map(move |r| r[from..from + latent].to_vec());
        Ok(match self.kind() {
            ModelKind::Vae => Latents { mean: split(0).collect(), log_var: Some(split(latent).collect()) },
            ModelKind::Ae => Latents { mean: split(0).collect(), log_var: None },
        })
    }

    fn decode_with(&self, z: &[Vec<f32>], labels: Option<&[u8]>) -> Result<Vec<Image>> {
        check_labels(labels, z.len())?;
        let latent = self.latent_dim();
        if let Some((i, row)) = z.iter().enumerate().find(|(_, row)| row.len() != latent) {
            let n = row.len();
            return Err(Error::invalid(
                "latents",
                format!("row {i} has {n} numbers, the model's latent width is {latent}"),
            ));
        }
        if let Some(v) = z.iter().flatten().find(|v| !v.is_finite()) {
            return Err(Error::invalid("latents", format!("{v} is not a finite number")));
        }
        let flat: Vec<f32> = z.concat();
        let pixels = apps::decode_all(self.model.borrow_mut().as_mut(), &flat, labels, z.len())?;
        Ok(self.images_of(pixels))
    }

    fn sample_with(&self, n: usize, labels: Option<&[u8]>, seed: u32) -> Result<Vec<Image>> {
        crate::limits::at_most("n", n, crate::limits::MAX_SAMPLES)?;
        crate::limits::check_rows("n", n, &self.dir.arch().config)?;
        let reference = match self.kind() {
            ModelKind::Ae => Some(self.dir.load_data()?.test),
            ModelKind::Vae => None,
        };
        let pixels = train::pictures::samples(self.model.borrow_mut().as_mut(), reference.as_ref(), n, labels, seed)?;
        Ok(self.images_of(pixels))
    }

    fn reconstruct_with(&self, images: &[Image], labels: Option<&[u8]>) -> Result<Vec<Image>> {
        let (x, rows) = self.pixels_of(images, labels)?;
        let pixels = apps::reconstruct(self.model.borrow_mut().as_mut(), &x, labels, rows)?;
        Ok(self.images_of(pixels))
    }

    fn score_with(&self, images: &[Image], labels: Option<&[u8]>) -> Result<Vec<f64>> {
        let (x, rows) = self.pixels_of(images, labels)?;
        self.scores(self.model.borrow_mut().as_mut(), &x, labels, rows)
    }

    /// `anomaly`'s default score of x (rows, D).
    fn scores(&self, model: &mut dyn Inference, x: &[f32], labels: Option<&[u8]>, rows: usize) -> Result<Vec<f64>> {
        if rows == 0 {
            return Ok(Vec::new());
        }
        let score = anomaly::Score::resolve(None, self.dir.arch())?;
        let draws = self.dir.draws();
        anomaly::scores(model, x, labels, rows, score, draws.batch_size, draws.seed)
    }

    /// The images' pixels (N, D), each checked against the model's size.
    fn pixels_of(&self, images: &[Image], labels: Option<&[u8]>) -> Result<(Vec<f32>, usize)> {
        check_labels(labels, images.len())?;
        let (c, h, w) = self.image_shape();
        for (i, im) in images.iter().enumerate() {
            if (im.channels, im.rows, im.cols) != (c, h, w) {
                return Err(Error::invalid(
                    "images",
                    format!(
                        "image {i} is {}x{} with {} channel(s), the model takes {h}x{w} with {c} ({}); \
                         Run::load_image reads a picture at the model's size",
                        im.rows,
                        im.cols,
                        im.channels,
                        apps::colour_name(c)
                    ),
                ));
            }
        }
        Ok((images.iter().flat_map(|im| im.pixels.iter().copied()).collect(), images.len()))
    }

    fn images_of(&self, pixels: Vec<f32>) -> Vec<Image> {
        let (c, h, w) = self.image_shape();
        pixels
            .chunks_exact(c * h * w)
            .map(|p| Image { channels: c, rows: h, cols: w, pixels: p.iter().map(|v| v.clamp(0.0, 1.0)).collect() })
            .collect()
    }
}

/// One label per row; whether the model takes labels is the model's check
/// (`engine::one_hot_labels`), which refuses missing ones.
fn check_labels(labels: Option<&[u8]>, rows: usize) -> Result<()> {
    match labels {
        Some(l) if l.len() != rows => Err(Error::invalid("labels", format!("{} labels for {rows} rows", l.len()))),
        _ => Ok(()),
    }
}

/// What to train, where and how: the settings of a run (its `config.json`)
/// plus the device. Starts from `gpu-vae train`'s defaults for a model.
#[derive(Clone, Debug)]
pub struct Config {
    settings: TrainConfig,
    device: Device,
    options: NewRunOptions,
    tensorboard: bool,
}

impl Config {
    /// `gpu-vae train --model KIND`'s defaults: a dense encoder and decoder,
    /// the embedded data, 10 epochs, [`Device::Auto`].
    pub fn new(kind: ModelKind) -> Config {
        Config::with_arch(kind, Arch::Mlp)
    }

    /// `gpu-vae train --model KIND --arch ARCH`'s defaults.
    pub fn with_arch(kind: ModelKind, arch: Arch) -> Config {
        let settings = crate::cli::config_from_args(&TrainArgs::defaults_for(kind, arch))
            .expect("train's defaults make a configuration");
        Config { settings, device: Device::Auto, options: NewRunOptions::default(), tensorboard: true }
    }

    /// Data: a folder of IDX files or of pictures, `fashion-mnist`, or `embedded` (`--data`).
    pub fn data(mut self, data: impl Into<String>) -> Config {
        self.settings.data = data.into();
        self
    }

    pub fn epochs(mut self, epochs: usize) -> Config {
        self.settings.epochs = epochs;
        self
    }

    pub fn batch_size(mut self, batch_size: usize) -> Config {
        self.settings.batch_size = batch_size;
        self
    }

    /// The encoder's hidden widths, mirrored by the decoder (`--hidden`).
    pub fn hidden(mut self, widths: &[usize]) -> Config {
        self.settings.model.hidden = widths.to_vec();
        self
    }

    pub fn latent(mut self, width: usize) -> Config {
        self.settings.model.latent = width;
        self
    }

    /// Adam's learning rate (`--lr`).
    pub fn lr(mut self, lr: f32) -> Config {
        self.settings.adam.lr = lr;
        self
    }

    /// The KL term's weight (`--beta`).
    pub fn beta(mut self, beta: f32) -> Config {
        self.settings.beta = beta;
        self
    }

    /// Standard deviation of input noise: a denoising model (`--noise`).
    pub fn noise(mut self, std: f32) -> Config {
        self.settings.noise_std = std;
        self
    }

    /// Train on one class only (`--normal-class`).
    pub fn normal_class(mut self, class: u8) -> Config {
        self.settings.normal_class = Some(class);
        self
    }

    /// A conditional model over the data's classes (`--conditional`).
    pub fn conditional(mut self, on: bool) -> Config {
        self.options.conditional = on;
        self
    }

    pub fn seed(mut self, seed: u32) -> Config {
        self.settings.seed = seed;
        self
    }

    pub fn device(mut self, device: Device) -> Config {
        self.device = device;
        self
    }

    /// Replace a run already in the output folder (`--force`).
    pub fn force(mut self, force: bool) -> Config {
        self.options.force = force;
        self
    }

    /// Write a TensorBoard event file into the run (on by default).
    pub fn tensorboard(mut self, on: bool) -> Config {
        self.tensorboard = on;
        self
    }

    /// Every setting, for those without a method here (`advanced::train::TrainConfig`).
    pub fn settings_mut(&mut self) -> &mut TrainConfig {
        &mut self.settings
    }

    pub fn settings(&self) -> &TrainConfig {
        &self.settings
    }
}

/// Trains a new run of `config` into the folder `out` (created; a run
/// already there is replaced only with [`Config::force`]) as `gpu-vae train`
/// does, quietly, and opens it on the same device.
pub fn train(config: &Config, out: impl AsRef<Path>) -> Result<Run> {
    let out = out.as_ref();
    let new = begin::new_run(config.settings.clone(), out, &config.options)?;
    let train_images = begin::training_images(new.data.train, new.config.normal_class)?;
    let mut engine = device::open_engine(config.device, false, &new.arch, &new.params, &new.config, &mut |_| {})?;
    let run = train::Run {
        config: &new.config,
        arch: &new.arch,
        train: Arc::new(train_images),
        test: Arc::new(new.data.test),
        out,
        tensorboard: config.tensorboard,
    };
    train::train(&run, engine.as_mut(), &mut Quiet)?;
    drop(new.lock);
    Run::open_on(out, config.device)
}

/// Progress reported to no one.
struct Quiet;

impl Progress for Quiet {
    fn epoch_started(&mut self, _epoch: usize, _batches: usize) {}
    fn tick(&mut self, _batches_done: usize, _train_loss: f64) {}
    fn epoch_done(&mut self, _record: &EpochRecord) {}
}
