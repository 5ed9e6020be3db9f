//! Subcommands that use a trained run (`--run DIR`): arguments, checks, and
//! the calls into `crate::apps`, which does the work.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::builder::TypedValueParser;
use clap::{ArgGroup, Args, Subcommand, ValueEnum};

use super::DeviceArgs;
use super::train::{load_data, load_run};
use crate::apps::{self, Inference, anomaly, codes, denoise, eval, interpolate, latent_plot, manifold, reconstruct};
use crate::data::{Images, idx};
use crate::limits;
use crate::model::{Architecture, ModelKind, ReconLoss};
use crate::train::TrainConfig;
use crate::viz::write_grid;

#[derive(Subcommand, Debug)]
pub enum AppCommand {
    /// A grid of images above their reconstructions, with per-image MSE and PSNR.
    Reconstruct(ReconstructArgs),
    /// Decode the latent walk between pairs of images, one row per pair.
    Interpolate(InterpolateArgs),
    /// Decode a grid over a plane of the latent space (the "digit manifold").
    Manifold(ManifoldArgs),
    /// Scatter of the latent means coloured by label (PCA to 2-D when larger).
    LatentPlot(LatentPlotArgs),
    /// Compress a split into a file of quantized latent codes.
    Encode(EncodeArgs),
    /// Turn a codes file back into images.
    Decode(DecodeArgs),
    /// Corrupt images with noise and reconstruct them: noisy / denoised / clean rows.
    Denoise(DenoiseArgs),
    /// Anomaly scores, a threshold, and ROC-AUC, precision and recall against labels.
    Anomaly(AnomalyArgs),
    /// ELBO (reconstruction + KL) and a VAE's importance-weighted NLL bound.
    Eval(EvalArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Split {
    Train,
    Test,
}

/// The run, the images, the device.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// A run directory written by `gpu-vae train`.
    #[arg(long)]
    pub run: PathBuf,
    /// Which split of the run's data to use.
    #[arg(long, value_enum, default_value_t = Split::Test)]
    pub split: Split,
    #[command(flatten)]
    pub device: DeviceArgs,
}

#[derive(Args, Debug)]
pub struct ReconstructArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Number of images (the first ones of the split), 8 per grid row.
    #[arg(long, default_value_t = 32)]
    pub n: usize,
    /// PNG file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Write per-image MSE and PSNR here instead of printing them.
    #[arg(long)]
    pub csv: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct InterpolateArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Index of the first image of a pair in the split (with --to).
    #[arg(long, requires = "to")]
    pub from: Option<usize>,
    #[arg(long, requires = "from")]
    pub to: Option<usize>,
    /// Pairs of image indices, e.g. 0:1,2:3 [default without --from or files: 0:1,2:3,4:5,6:7].
    #[arg(long, value_delimiter = ',', value_parser = parse_pair)]
    pub pairs: Vec<(usize, usize)>,
    /// A PNG/JPEG for the first end (with --to-file); resized to the model's size.
    #[arg(long, requires = "to_file")]
    pub from_file: Option<PathBuf>,
    #[arg(long, requires = "from_file")]
    pub to_file: Option<PathBuf>,
    /// Decoded points per walk, both ends included.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Also walk the great circle (VAE): a second row per pair.
    #[arg(long)]
    pub slerp: bool,
    /// PNG file to write.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct ManifoldArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Tiles per side of the grid.
    #[arg(long, default_value_t = 30)]
    pub n: usize,
    /// Two latent dimensions to span, e.g. 0,1 [default: a 2-D latent's own,
    /// else the split's first two principal directions].
    #[arg(long, value_delimiter = ',')]
    pub dims: Option<Vec<usize>>,
    /// PNG file to write.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct LatentPlotArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Plot only the first N images [default: all].
    #[arg(long)]
    pub n: Option<usize>,
    /// PNG file to write.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct EncodeArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Bits per latent value: 16 (f16) or 8 (per-dimension affine).
    #[arg(long, default_value_t = 16, value_parser = clap::builder::PossibleValuesParser::new(["8", "16"]).map(|s| s.parse::<u8>().expect("8 or 16")))]
    pub bits: u8,
    /// Encode only the first N images [default: all].
    #[arg(long)]
    pub n: Option<usize>,
    /// Codes file to write.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ImageFormat {
    /// One IDX image file (MNIST format).
    Idx,
    /// A folder of PNGs, 00000.png, 00001.png, ...
    Png,
}

#[derive(Args, Debug)]
pub struct DecodeArgs {
    /// A run directory written by `gpu-vae train` (the model that encoded).
    #[arg(long)]
    pub run: PathBuf,
    /// A codes file written by `gpu-vae encode`.
    #[arg(long)]
    pub codes: PathBuf,
    #[arg(long, value_enum, default_value_t = ImageFormat::Idx)]
    pub format: ImageFormat,
    /// IDX file or PNG folder to write.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub device: DeviceArgs,
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("noise").required(true).args(["std", "salt_pepper"])))]
pub struct DenoiseArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Gaussian noise of this standard deviation (clipped to [0, 1]).
    #[arg(long, allow_negative_numbers = true)]
    pub std: Option<f32>,
    /// Salt-and-pepper noise: each pixel black or white with this probability.
    #[arg(long, allow_negative_numbers = true)]
    pub salt_pepper: Option<f32>,
    /// Number of images (the first ones of the split), 8 per grid row.
    #[arg(long, default_value_t = 16)]
    pub n: usize,
    /// Seed of the noise.
    #[arg(long, default_value_t = 1)]
    pub seed: u32,
    /// PNG file to write.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScoreArg {
    /// Negative ELBO (VAE).
    Elbo,
    /// Reconstruction MSE.
    Recon,
}

#[derive(Args, Debug)]
pub struct AnomalyArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Anomaly score [default: elbo for a VAE, recon for an AE].
    #[arg(long, value_enum)]
    pub score: Option<ScoreArg>,
    /// Flag images scoring above this [default: mean + k·std of the normal training images' scores].
    #[arg(long, allow_negative_numbers = true)]
    pub threshold: Option<f64>,
    /// Standard deviations above the mean for the default threshold.
    #[arg(long, default_value_t = 3.0, allow_negative_numbers = true)]
    pub k: f64,
    /// The normal class; every other label is an anomaly [default: the run's --normal-class].
    #[arg(long)]
    pub normal_class: Option<u8>,
    /// Write the ROC curve here (PNG); needs labels and a normal class.
    #[arg(long)]
    pub roc: Option<PathBuf>,
    /// Write per-image scores here.
    #[arg(long)]
    pub csv: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Evaluate only the first N images [default: all].
    #[arg(long)]
    pub n: Option<usize>,
    /// Importance samples per image for the IWAE bound (VAE) [default: 100; Burda et al. use 5000].
    #[arg(long)]
    pub k: Option<usize>,
}

pub fn run(command: AppCommand) -> anyhow::Result<()> {
    match command {
        AppCommand::Reconstruct(a) => run_reconstruct(a),
        AppCommand::Interpolate(a) => run_interpolate(a),
        AppCommand::Manifold(a) => run_manifold(a),
        AppCommand::LatentPlot(a) => run_latent_plot(a),
        AppCommand::Encode(a) => run_encode(a),
        AppCommand::Decode(a) => run_decode(a),
        AppCommand::Denoise(a) => run_denoise(a),
        AppCommand::Anomaly(a) => run_anomaly(a),
        AppCommand::Eval(a) => run_eval(a),
    }
}

fn parse_pair(s: &str) -> Result<(usize, usize), String> {
    let (a, b) = s.split_once(':').ok_or_else(|| format!("{s:?} is not a pair I:J"))?;
    let index = |v: &str| v.trim().parse::<usize>().map_err(|_| format!("{v:?} is not an image index"));
    Ok((index(a)?, index(b)?))
}

/// Beyond this a manifold's PNG runs into hundreds of megapixels.
const MAX_GRID_SIDE: usize = 200;

fn at_least_one(name: &str, n: usize) -> anyhow::Result<()> {
    if n == 0 {
        bail!("invalid {name}: must be at least 1");
    }
    Ok(())
}

/// A loaded run with its model on the chosen device.
struct Loaded {
    config: TrainConfig,
    arch: Architecture,
    model: Box<dyn Inference>,
}

fn open(run: &Path, device: &DeviceArgs) -> anyhow::Result<Loaded> {
    let (config, arch, params) = load_run(run)?;
    let model = super::device::open_inference(device, &arch, params)?;
    println!("device: {}", model.device());
    Ok(Loaded { config, arch, model })
}

/// The run's images of one split, checked against the model's image size.
fn split_images(loaded: &Loaded, split: Split) -> anyhow::Result<Images> {
    let data = load_data(&loaded.config)?;
    let images = match split {
        Split::Train => data.train,
        Split::Test => data.test,
    };
    apps::check_image_size(&loaded.arch, &images, &loaded.config.data)?;
    Ok(images)
}

fn split_name(split: Split) -> &'static str {
    match split {
        Split::Train => "train",
        Split::Test => "test",
    }
}

/// The pixels of the first `n` images (all when `None`).
fn first(images: &Images, n: Option<usize>) -> (Vec<f32>, usize) {
    let indices: Vec<usize> = (0..n.unwrap_or(images.count).min(images.count)).collect();
    (apps::pixels(images, &indices), indices.len())
}

fn wrote(path: &Path) {
    println!("wrote {}", path.display());
}

fn run_reconstruct(a: ReconstructArgs) -> anyhow::Result<()> {
    at_least_one("--n", a.n)?;
    let mut loaded = open(&a.run.run, &a.run.device)?;
    let images = split_images(&loaded, a.run.split)?;
    let r = reconstruct::reconstruct_first(loaded.model.as_mut(), &images, a.n)?;
    match &a.csv {
        Some(path) => {
            reconstruct::write_csv(path, &r.mse)?;
            wrote(path);
        }
        None => {
            r.mse.iter().enumerate().for_each(|(i, &m)| println!("image {i}: MSE {m:.6}, PSNR {:.2} dB", apps::psnr(m)))
        }
    }
    let psnrs: Vec<f64> = r.mse.iter().map(|&m| apps::psnr(m)).collect();
    println!(
        "{} {} images: mean MSE {:.6}, mean PSNR {:.2} dB",
        r.mse.len(),
        split_name(a.run.split),
        apps::mean(&r.mse),
        apps::mean(&psnrs)
    );
    reconstruct::write_pairs(&a.out, &r, images.rows, images.cols)?;
    wrote(&a.out);
    Ok(())
}

fn run_interpolate(a: InterpolateArgs) -> anyhow::Result<()> {
    if a.steps < 2 {
        bail!("invalid --steps: must be at least 2 (the two ends)");
    }
    limits::at_most("--steps", a.steps, limits::MAX_STEPS)?;
    let mut loaded = open(&a.run.run, &a.run.device)?;
    if a.slerp {
        apps::require_vae(&loaded.arch, "--slerp")?;
    }
    let cfg = loaded.arch.config.clone();
    let mut index_pairs: Vec<(usize, usize)> = a.from.zip(a.to).into_iter().chain(a.pairs.iter().copied()).collect();
    let mut pairs = Vec::new();
    if let (Some(from), Some(to)) = (&a.from_file, &a.to_file) {
        let load = |p: &Path| interpolate::load_picture(p, cfg.image_rows, cfg.image_cols);
        pairs.push((load(from)?, load(to)?));
    } else if index_pairs.is_empty() {
        index_pairs = vec![(0, 1), (2, 3), (4, 5), (6, 7)];
    }
    if !index_pairs.is_empty() {
        let images = split_images(&loaded, a.run.split)?;
        for &(i, j) in &index_pairs {
            if let Some(&bad) = [i, j].iter().find(|&&k| k >= images.count) {
                bail!("invalid image index {bad}: the {} split has {} images", split_name(a.run.split), images.count);
            }
            pairs.push((apps::pixels(&images, &[i]), apps::pixels(&images, &[j])));
        }
    }
    let walks: &[interpolate::Walk] =
        if a.slerp { &[interpolate::Walk::Linear, interpolate::Walk::Spherical] } else { &[interpolate::Walk::Linear] };
    // Every tile of the picture is one image of the model's size.
    limits::check_rows("--steps", pairs.len() * walks.len() * (a.steps + 2), &cfg)?;
    let tiles = interpolate::interpolation_rows(loaded.model.as_mut(), &pairs, a.steps, walks)?;
    write_grid(&a.out, &tiles, cfg.image_rows, cfg.image_cols, a.steps + 2)?;
    println!(
        "{} pair(s), {} steps between the posterior means, {}",
        pairs.len(),
        a.steps,
        if a.slerp { "linear then spherical rows" } else { "linear" }
    );
    wrote(&a.out);
    Ok(())
}

fn run_manifold(a: ManifoldArgs) -> anyhow::Result<()> {
    at_least_one("--n", a.n)?;
    if a.n > MAX_GRID_SIDE {
        bail!("invalid --n: at most {MAX_GRID_SIDE} tiles per side");
    }
    if let Some(d) = &a.dims
        && (d.len() != 2 || d[0] == d[1])
    {
        bail!("invalid --dims: two different dimensions a,b are needed, got {d:?}");
    }
    let mut loaded = open(&a.run.run, &a.run.device)?;
    let cfg = loaded.arch.config.clone();
    limits::check_rows("--n", a.n * a.n, &cfg)?;
    let latent = cfg.latent;
    if latent < 2 {
        bail!("manifold needs a latent of at least 2 dimensions; this run's has {latent}");
    }
    let dims = a.dims.as_ref().map(|d| (d[0], d[1]));
    if let Some((x, y)) = dims
        && x.max(y) >= latent
    {
        bail!("invalid --dims: the latent has dimensions 0..{}, got {x},{y}", latent - 1);
    }
    let vae = cfg.kind == ModelKind::Vae;
    let plane = match (dims, vae) {
        (Some(d), true) => manifold::Plane::prior_quantiles(latent, d, a.n),
        (None, true) if latent == 2 => manifold::Plane::prior_quantiles(latent, (0, 1), a.n),
        _ => {
            let images = split_images(&loaded, a.run.split)?;
            let (x, rows) = first(&images, None);
            let means = apps::latent_means(loaded.model.as_mut(), &x, rows)?;
            match dims {
                Some(d) => manifold::Plane::code_dims(&means, latent, d, a.n),
                None if latent == 2 => manifold::Plane::code_dims(&means, latent, (0, 1), a.n),
                None => manifold::Plane::principal(&means, latent, a.n),
            }
        }
    };
    let pictures = apps::decode_all(loaded.model.as_mut(), &plane.latents(), a.n * a.n)?;
    write_grid(&a.out, &pictures, cfg.image_rows, cfg.image_cols, a.n)?;
    println!("{}x{} grid: {}", a.n, a.n, plane.description);
    wrote(&a.out);
    Ok(())
}

fn run_latent_plot(a: LatentPlotArgs) -> anyhow::Result<()> {
    if let Some(n) = a.n {
        at_least_one("--n", n)?;
    }
    let mut loaded = open(&a.run.run, &a.run.device)?;
    let latent = loaded.arch.config.latent;
    if latent < 2 {
        bail!("latent-plot needs a latent of at least 2 dimensions; this run's has {latent}");
    }
    let images = split_images(&loaded, a.run.split)?;
    let Some(labels) = &images.labels else {
        bail!("latent-plot needs labels to colour by, and the data {} has none", loaded.config.data);
    };
    let (x, rows) = first(&images, a.n);
    let means = apps::latent_means(loaded.model.as_mut(), &x, rows)?;
    let what = if loaded.arch.config.kind == ModelKind::Vae { "posterior means" } else { "codes" };
    let title = format!("Latent {what}, {rows} {} images", split_name(a.run.split));
    latent_plot::write_latent_plot(&a.out, &means, latent, &labels[..rows], images.class_names.as_deref(), &title)?;
    println!("{rows} images{}", if latent > 2 { ", projected on their first two principal directions" } else { "" });
    wrote(&a.out);
    Ok(())
}

fn run_encode(a: EncodeArgs) -> anyhow::Result<()> {
    if let Some(n) = a.n {
        at_least_one("--n", n)?;
    }
    let bits = if a.bits == 8 { codes::Bits::Eight } else { codes::Bits::Sixteen };
    let mut loaded = open(&a.run.run, &a.run.device)?;
    let cfg = loaded.arch.config.clone();
    let images = split_images(&loaded, a.run.split)?;
    let (x, rows) = first(&images, a.n);
    let model = loaded.model.as_mut();
    let means = apps::latent_means(model, &x, rows)?;
    let bytes = codes::to_bytes(&means, cfg.latent, cfg.image_rows, cfg.image_cols, bits);
    crate::fsutil::write_atomic(&a.out, &bytes)?;

    let back = codes::parse(&bytes, &a.out)?;
    let dim = cfg.input_dim();
    let mean_psnr = |z: &[f32], model: &mut dyn Inference| -> anyhow::Result<f64> {
        let y = apps::decode_all(model, z, rows)?;
        Ok(apps::mean(&apps::per_image_mse(&x, &y, dim).into_iter().map(apps::psnr).collect::<Vec<_>>()))
    };
    let (quantized, exact) = (mean_psnr(&back.values, model)?, mean_psnr(&means, model)?);
    let subset = images.select(&(0..rows).collect::<Vec<_>>());
    let gz = codes::gzip_idx_bytes(&subset);
    let per_image = bytes.len() as f64 / rows as f64;
    println!("{rows} {} images, {}-bit codes of {} values:", split_name(a.run.split), a.bits, cfg.latent);
    println!("  {per_image:.1} B per image ({} B file)", bytes.len());
    println!("  {:.1}x smaller than raw pixels ({dim} B per image)", dim as f64 / per_image);
    println!(
        "  {:.1}x smaller than the gzip -9 IDX file ({gz} B, {:.1} B per image)",
        gz as f64 / bytes.len() as f64,
        gz as f64 / rows as f64
    );
    println!("  round trip PSNR {quantized:.2} dB (unquantized codes: {exact:.2} dB)");
    wrote(&a.out);
    Ok(())
}

fn run_decode(a: DecodeArgs) -> anyhow::Result<()> {
    let c = codes::read(&a.codes)?;
    let mut loaded = open(&a.run, &a.device)?;
    codes::check_model(&c, &loaded.arch, &a.codes)?;
    // Chunk by chunk, so that only the bytes of the images are held, not their f32s.
    let mut pixels = Vec::new();
    for z in c.values.chunks(apps::CHUNK * c.latent) {
        pixels.extend(codes::to_u8(&apps::decode_all(loaded.model.as_mut(), z, z.len() / c.latent)?));
    }
    let decoded =
        Images { pixels, count: c.count, rows: c.image_rows, cols: c.image_cols, labels: None, class_names: None };
    match a.format {
        ImageFormat::Idx => idx::write_idx_images(&a.out, &decoded)?,
        ImageFormat::Png => {
            std::fs::create_dir_all(&a.out)
                .with_context(|| format!("{}: cannot create the folder", a.out.display()))?;
            for i in 0..decoded.count {
                let path = a.out.join(format!("{i:05}.png"));
                let tile =
                    image::GrayImage::from_raw(c.image_cols as u32, c.image_rows as u32, decoded.image(i).to_vec())
                        .expect("one image's pixels");
                tile.save(&path).with_context(|| format!("{}: cannot write", path.display()))?;
            }
        }
    }
    println!("decoded {} images of {}x{}", c.count, c.image_rows, c.image_cols);
    wrote(&a.out);
    Ok(())
}

fn run_denoise(a: DenoiseArgs) -> anyhow::Result<()> {
    at_least_one("--n", a.n)?;
    let corruption = match (a.std, a.salt_pepper) {
        (Some(std), _) if !std.is_finite() || std <= 0.0 => {
            bail!("invalid --std: {std} is not a positive finite number")
        }
        (Some(std), _) => denoise::Corruption::Gaussian { std },
        (_, Some(p)) if !(p > 0.0 && p <= 1.0) => bail!("invalid --salt-pepper: {p} is not a probability in (0, 1]"),
        (_, Some(p)) => denoise::Corruption::SaltPepper { p },
        (None, None) => unreachable!("clap requires --std or --salt-pepper"),
    };
    let mut loaded = open(&a.run.run, &a.run.device)?;
    let images = split_images(&loaded, a.run.split)?;
    let (clean, rows) = first(&images, Some(a.n));
    let d = denoise::denoise(loaded.model.as_mut(), &clean, rows, corruption, a.seed)?;
    println!(
        "{rows} {} images, {corruption}: PSNR {:.2} dB noisy, {:.2} dB denoised",
        split_name(a.run.split),
        d.psnr_noisy,
        d.psnr_denoised
    );
    denoise::write_triples(&a.out, &d, &clean, images.rows, images.cols, reconstruct::grid_cols(rows))?;
    wrote(&a.out);
    Ok(())
}

fn run_anomaly(a: AnomalyArgs) -> anyhow::Result<()> {
    if !a.k.is_finite() {
        bail!("invalid --k: {} is not a finite number", a.k);
    }
    if let Some(t) = a.threshold
        && !t.is_finite()
    {
        bail!("invalid --threshold: {t} is not a finite number");
    }
    let mut loaded = open(&a.run.run, &a.run.device)?;
    let score = match a.score {
        Some(ScoreArg::Elbo) => {
            apps::require_vae(&loaded.arch, "--score elbo")?;
            anomaly::Score::Elbo
        }
        Some(ScoreArg::Recon) => anomaly::Score::Recon,
        None if loaded.arch.config.kind == ModelKind::Vae => anomaly::Score::Elbo,
        None => anomaly::Score::Recon,
    };
    let normal_class = a.normal_class.or(loaded.config.normal_class);
    let data = load_data(&loaded.config)?;
    apps::check_image_size(&loaded.arch, &data.test, &loaded.config.data)?;
    let images = match a.run.split {
        Split::Train => &data.train,
        Split::Test => &data.test,
    };
    let truth = match (&images.labels, normal_class) {
        (Some(labels), Some(normal)) => Some(labels.iter().map(|&l| l != normal).collect::<Vec<bool>>()),
        _ => None,
    };
    if a.roc.is_some() && truth.is_none() {
        bail!("--roc needs labels and a normal class (train --normal-class K, or --normal-class K)");
    }
    let (batch, seed) = (loaded.config.batch_size, loaded.config.seed);
    let model = loaded.model.as_mut();

    let (threshold, origin) = match a.threshold {
        Some(t) => (t, "given".to_string()),
        None => {
            let normal = match normal_class {
                Some(class) if data.train.labels.is_some() => data.train.with_label(class),
                _ => data.train.clone(),
            };
            if normal.count == 0 {
                bail!("--normal-class {}: no training images have this label", normal_class.unwrap_or_default());
            }
            let (x, rows) = first(&normal, None);
            let s = anomaly::scores(model, &x, rows, score, batch, seed)?;
            let which = normal_class.map_or("all".to_string(), |c| format!("class-{c}"));
            (anomaly::threshold(&s, a.k), format!("mean + {}·std of {rows} {which} training scores", a.k))
        }
    };
    let (x, rows) = first(images, None);
    let scores = anomaly::scores(model, &x, rows, score, batch, seed)?;
    let flagged = scores.iter().filter(|&&s| s > threshold).count();
    println!("score: {score}; threshold {threshold:.6} ({origin})");
    println!("{flagged} of {rows} {} images flagged", split_name(a.run.split));
    match &truth {
        Some(truth) => {
            let c = anomaly::Confusion::at(&scores, truth, threshold);
            let normal = normal_class.expect("truth needs a normal class");
            match anomaly::roc_auc(&scores, truth) {
                Some(auc) => println!("normal class {normal}: ROC-AUC {auc:.4}"),
                None => println!("normal class {normal}: ROC-AUC undefined (only one kind of image in the split)"),
            }
            println!(
                "at the threshold: precision {:.4}, recall {:.4} (tp {}, fp {}, tn {}, fn {})",
                c.precision(),
                c.recall(),
                c.true_pos,
                c.false_pos,
                c.true_neg,
                c.false_neg
            );
            if let Some(path) = &a.roc {
                let auc = anomaly::roc_auc(&scores, truth).unwrap_or(f64::NAN);
                let title = format!("Anomaly ROC, normal class {normal}, score: {score}");
                anomaly::write_roc(path, &anomaly::roc_curve(&scores, truth), auc, &title)?;
                wrote(path);
            }
        }
        None => {
            println!("no ROC-AUC: it needs labels and a normal class (train --normal-class K, or --normal-class K)")
        }
    }
    if let Some(path) = &a.csv {
        anomaly::write_csv(path, &scores, images.labels.as_deref(), threshold)?;
        wrote(path);
    }
    Ok(())
}

fn run_eval(a: EvalArgs) -> anyhow::Result<()> {
    if let Some(n) = a.n {
        at_least_one("--n", n)?;
    }
    if let Some(k) = a.k {
        at_least_one("--k", k)?;
        limits::at_most("--k", k, limits::MAX_IWAE_K)?;
    }
    let mut loaded = open(&a.run.run, &a.run.device)?;
    let vae = loaded.arch.config.kind == ModelKind::Vae;
    if a.k.is_some() {
        apps::require_vae(&loaded.arch, "--k")?;
    }
    let images = split_images(&loaded, a.run.split)?;
    let (x, rows) = first(&images, a.n);
    if vae {
        eval::check_iwae(rows, a.k.unwrap_or(100), loaded.arch.config.latent)?;
    }
    let (batch, seed, loss) = (loaded.config.batch_size, loaded.config.seed, loaded.arch.config.loss);
    let model = loaded.model.as_mut();
    let terms = eval::elbo_terms(model, &x, rows, batch, seed)?;
    let recon = apps::mean(&terms.iter().map(|t| t.recon).collect::<Vec<_>>());
    let kl = apps::mean(&terms.iter().map(|t| t.kl).collect::<Vec<_>>());
    let likelihood = match loss {
        ReconLoss::Bce => "Bernoulli",
        ReconLoss::Mse => "Gaussian (variance 1/2)",
    };
    println!("{rows} {} images, {likelihood} likelihood, nats per image:", split_name(a.run.split));
    if !vae {
        println!("  -log p(x|z) at the code: {recon:.3} (an AE has no prior: no ELBO)");
        return Ok(());
    }
    println!("  ELBO {:.3} = -(reconstruction {recon:.3} + KL {kl:.3})", -(recon + kl));
    let k = a.k.unwrap_or(100);
    let nll = apps::mean(&eval::iwae_nll(model, &x, rows, k, seed, 0)?);
    println!("  IWAE bound, k = {k}: log p(x) >= {:.3}, NLL <= {nll:.3}", -nll);
    Ok(())
}
