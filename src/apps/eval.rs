//! `eval`: the test-set ELBO split into reconstruction and KL, and a VAE's
//! importance-weighted bound on the negative log-likelihood (Burda et al.,
//! "Importance Weighted Autoencoders", 2016).
//!
//! Likelihoods p(x|z): Bernoulli for BCE models, −log p = BCE-with-logits
//! summed over pixels (the training loss, also on gray pixels). MSE models:
//! a Gaussian N(sigmoid(logits), ½·I), the variance at which −log p =
//! Σ(y − x)² + (D/2)·ln π is the training loss plus a constant, so that the
//! ELBO and the IWAE bound of such a model are comparable nats.

use super::{
    CHUNK, Draws, Inference, Split, at_least_one, first_pixels, mean, require_vae, sample_steps, split_images,
};
use crate::cpu::loss::{bce_with_logits_forward, kl_forward, mse_forward};
use crate::data::DataSet;
use crate::error::{Error, Result};
use crate::limits;
use crate::model::{ModelKind, ReconLoss};
use crate::ops::sigmoid;
use crate::rng::{self, Stream};

/// Importance samples per image of the IWAE bound when none are asked for.
pub const DEFAULT_K: usize = 100;

pub struct EvalOptions {
    pub split: Split,
    /// Evaluate only the first n images [default: all].
    pub n: Option<usize>,
    /// Importance samples per image (VAE) [default: [`DEFAULT_K`]].
    pub k: Option<usize>,
}

impl EvalOptions {
    pub fn check(&self) -> Result<()> {
        self.n.map_or(Ok(()), |n| at_least_one("--n", n))?;
        if let Some(k) = self.k {
            at_least_one("--k", k)?;
            limits::at_most("--k", k, limits::MAX_IWAE_K)?;
        }
        Ok(())
    }
}

pub struct EvalReport {
    pub split: Split,
    pub count: usize,
    pub loss: ReconLoss,
    /// Means over the images, in nats.
    pub recon: f64,
    pub kl: f64,
    /// A VAE's importance samples per image and mean bound on −log p(x);
    /// `None` for an AE, which has no prior.
    pub iwae: Option<(usize, f64)>,
}

/// The ELBO's terms and (VAE) the IWAE bound of the first images of a split.
pub fn run(model: &mut dyn Inference, data: &DataSet, o: &EvalOptions, draws: Draws) -> Result<EvalReport> {
    o.check()?;
    draws.check()?;
    let vae = model.arch().config.kind == ModelKind::Vae;
    if o.k.is_some() {
        require_vae(model.arch(), "--k")?;
    }
    let images = split_images(model.arch(), data, o.split)?;
    let (x, rows) = first_pixels(images, o.n);
    let labels = super::first_labels(model, images, rows)?;
    let labels = labels.as_deref();
    let k = o.k.unwrap_or(DEFAULT_K);
    if vae {
        check_iwae(rows, k, model.arch().config.latent)?;
    }
    let terms = elbo_terms(model, &x, labels, rows, draws.batch_size, draws.seed)?;
    let recon = mean(&terms.iter().map(|t| t.recon).collect::<Vec<_>>());
    let kl = mean(&terms.iter().map(|t| t.kl).collect::<Vec<_>>());
    let iwae = if vae { Some((k, mean(&iwae_nll(model, &x, labels, rows, k, draws.seed, 0)?))) } else { None };
    Ok(EvalReport { split: o.split, count: rows, loss: model.arch().config.loss, recon, kl, iwae })
}

impl std::fmt::Display for EvalReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let likelihood = match self.loss {
            ReconLoss::Bce => "Bernoulli",
            ReconLoss::Mse => "Gaussian (variance 1/2)",
        };
        let (recon, kl) = (self.recon, self.kl);
        writeln!(f, "{} {} images, {likelihood} likelihood, nats per image:", self.count, self.split)?;
        match self.iwae {
            None => writeln!(f, "  -log p(x|z) at the code: {recon:.3} (an AE has no prior: no ELBO)"),
            Some((k, nll)) => {
                writeln!(f, "  ELBO {:.3} = -(reconstruction {recon:.3} + KL {kl:.3})", -(recon + kl))?;
                writeln!(f, "  IWAE bound, k = {k}: log p(x) >= {:.3}, NLL <= {nll:.3}", -nll)
            }
        }
    }
}

/// One image's negative ELBO = recon + kl, in nats (an AE: recon only, kl 0).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ElboTerms {
    /// −log p(x|z) at one draw z ~ q(z|x) (an AE: at its code).
    pub recon: f64,
    /// KL(q(z|x) ‖ N(0, I)), exact.
    pub kl: f64,
}

/// −log p(x|z) of one image x (D) given the decoder's logits (D).
pub fn neg_log_likelihood(logits: &[f32], x: &[f32], loss: ReconLoss) -> f64 {
    match loss {
        ReconLoss::Bce => bce_with_logits_forward(logits, x),
        ReconLoss::Mse => {
            let probs: Vec<f32> = logits.iter().map(|&l| sigmoid(l)).collect();
            mse_forward(&probs, x) + 0.5 * x.len() as f64 * std::f64::consts::PI.ln()
        }
    }
}

/// Per-image ELBO terms of x (N, D). The draws are the trainer's test-loss
/// draws: batch b of `batch_size` images uses `Stream::EvalReparam` at step b,
/// so with the run's batch size and seed the mean reproduces `metrics.csv`
/// (for a model trained without input noise).
pub fn elbo_terms(
    model: &mut dyn Inference,
    x: &[f32],
    labels: Option<&[u8]>,
    rows: usize,
    batch_size: usize,
    seed: u32,
) -> Result<Vec<ElboTerms>> {
    let cfg = model.arch().config.clone();
    let (dim, latent) = (cfg.input_dim(), cfg.latent);
    let mut out = Vec::with_capacity(rows);
    for (b, batch) in x.chunks(batch_size * dim).enumerate() {
        let n = batch.len() / dim;
        let labels = labels.map(|l| &l[b * batch_size..b * batch_size + n]);
        let code = model.encode(batch, labels, n)?;
        let (z, kl) = match cfg.kind {
            ModelKind::Ae => (code, vec![0.0; n]),
            ModelKind::Vae => {
                let mut eps = vec![0.0; n * latent];
                rng::fill_normal(&mut eps, seed, Stream::EvalReparam, b as u32);
                let mut z = vec![0.0; n * latent];
                crate::cpu::reparam::reparameterize_forward(&mut z, &code, &eps, latent);
                (z, code.chunks_exact(2 * latent).map(|row| kl_forward(row, latent)).collect())
            }
        };
        let logits = model.decode_logits(&z, labels, n)?;
        for ((l, xi), kl) in logits.chunks_exact(dim).zip(batch.chunks_exact(dim)).zip(kl) {
            out.push(ElboTerms { recon: neg_log_likelihood(l, xi, cfg.loss), kl });
        }
    }
    Ok(out)
}

/// Per-image upper bounds on −log p(x) of a VAE, with k importance samples:
/// −log (1/k) Σᵢ p(x|zᵢ) p(zᵢ) / q(zᵢ|x), zᵢ ~ q(z|x). Log-weights are
/// accumulated in f64 by a running log-sum-exp; decoder calls are at most
/// [`CHUNK`] rows, so memory does not grow with k. Image i of x draws
/// `Stream::Sample` at step `sample_steps::IWAE + first_index + i`.
pub fn iwae_nll(
    model: &mut dyn Inference,
    x: &[f32],
    labels: Option<&[u8]>,
    rows: usize,
    k: usize,
    seed: u32,
    first_index: usize,
) -> Result<Vec<f64>> {
    super::require_vae(model.arch(), "the importance-weighted bound")?;
    assert!(k >= 1, "at least one importance sample");
    let cfg = model.arch().config.clone();
    let (dim, latent) = (cfg.input_dim(), cfg.latent);
    let mulv = super::encode_all(model, x, labels, rows)?;
    // Running log-sum-exp per image: (max, Σ exp(w - max)).
    // Checked first: a wrapped rows·k of 0 printed a bound of inf and succeeded.
    check_iwae(rows, k, latent)?;
    let total = rows * k;
    let mut acc = vec![(f64::NEG_INFINITY, 0.0f64); rows];
    let mut start = 0;
    while start < total {
        let end = (start + CHUNK).min(total);
        let n = end - start;
        let mut z = vec![0.0f32; n * latent];
        // ½ Σ eps² + ½ Σ logvar - ½ Σ z²: log p(z) - log q(z|x), the 2π terms cancel.
        let mut log_ratio = vec![0.0f64; n];
        for (r, (zr, lr)) in z.chunks_exact_mut(latent).zip(log_ratio.iter_mut()).enumerate() {
            let (image, sample) = ((start + r) / k, (start + r) % k);
            let row = &mulv[image * 2 * latent..(image + 1) * 2 * latent];
            let step = sample_steps::IWAE + (first_index + image) as u32;
            for j in 0..latent {
                let eps = rng::normal(seed, Stream::Sample, step, (sample * latent + j) as u32);
                let (mu, logvar) = (row[j], row[latent + j]);
                zr[j] = mu + (0.5 * logvar).exp() * eps;
                *lr += 0.5 * ((eps as f64).powi(2) + logvar as f64 - (zr[j] as f64).powi(2));
            }
        }
        // Each sample decoded with its image's class.
        let sample_labels: Option<Vec<u8>> = labels.map(|l| (start..end).map(|i| l[i / k]).collect());
        let logits = model.decode_logits(&z, sample_labels.as_deref(), n)?;
        for (r, (l, lr)) in logits.chunks_exact(dim).zip(log_ratio).enumerate() {
            let image = (start + r) / k;
            let w = lr - neg_log_likelihood(l, &x[image * dim..(image + 1) * dim], cfg.loss);
            let (m, s) = &mut acc[image];
            if w > *m {
                *s = *s * (*m - w).exp() + 1.0;
                *m = w;
            } else {
                *s += (w - *m).exp();
            }
        }
        start = end;
    }
    Ok(acc.into_iter().map(|(m, s)| -(m + s.ln() - (k as f64).ln())).collect())
}

/// Errors unless `k` importance samples for each of `rows` images and a
/// latent of `latent` values fit the caps: each image draws k·L normals,
/// indexed by a u32, and all of them are decoded.
pub fn check_iwae(rows: usize, k: usize, latent: usize) -> Result<()> {
    limits::at_most("--k", k, limits::MAX_IWAE_K)?;
    if k.checked_mul(latent).is_none_or(|n| n > u32::MAX as usize) {
        return Err(Error::invalid(
            "--k",
            format!("{k} samples of {latent} latent values exceed 2^32 draws per image"),
        ));
    }
    match rows.checked_mul(k) {
        Some(t) if t as u64 <= limits::MAX_IWAE_SAMPLES => Ok(()),
        _ => Err(too_many_samples(rows, k)),
    }
}

fn too_many_samples(rows: usize, k: usize) -> Error {
    Error::invalid(
        "--k",
        format!("{rows} images x {k} samples exceed the limit of {} importance samples", limits::MAX_IWAE_SAMPLES),
    )
}
