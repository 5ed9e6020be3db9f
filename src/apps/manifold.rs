//! `manifold`: decode a grid of latent points spanning a plane of the latent
//! space, as the Keras VAE example draws its digit manifold.

use std::path::PathBuf;

use super::{Inference, Split, at_least_one, check_class, decode_all, first_labels, first_pixels, latent_means};
use super::{pca, split_images, wrote};
use crate::data::DataSet;
use crate::error::{Error, Result};
use crate::limits;
use crate::model::{Architecture, ModelKind};
use crate::viz::write_grid;

/// Beyond this a manifold's PNG runs into hundreds of megapixels.
pub const MAX_GRID_SIDE: usize = 200;

pub struct ManifoldOptions {
    /// The split whose codes span the plane (see [`ManifoldOptions::needs_data`]).
    pub split: Split,
    /// Tiles per side of the grid.
    pub n: usize,
    /// Two latent dimensions to span [default: a 2-D latent's own, else the
    /// split's first two principal directions].
    pub dims: Option<(usize, usize)>,
    /// The class a conditional model decodes the plane with (`--class`;
    /// needed for one, refused for others).
    pub class: Option<u8>,
    pub out: PathBuf,
}

impl ManifoldOptions {
    pub fn check(&self) -> Result<()> {
        at_least_one("--n", self.n)?;
        if self.n > MAX_GRID_SIDE {
            return Err(Error::invalid("--n", format!("at most {MAX_GRID_SIDE} tiles per side")));
        }
        if let Some((a, b)) = self.dims
            && a == b
        {
            return Err(Error::invalid("--dims", format!("two different dimensions a,b are needed, got {a},{b}")));
        }
        Ok(())
    }

    /// Whether the plane comes from the codes of the data (an AE's, or a
    /// VAE's principal directions) rather than the prior.
    pub fn needs_data(&self, arch: &Architecture) -> bool {
        arch.config.kind == ModelKind::Ae || (self.dims.is_none() && arch.config.latent != 2)
    }
}

pub struct ManifoldReport {
    pub n: usize,
    /// What the grid's axes are.
    pub plane: String,
    pub class: Option<u8>,
    pub out: PathBuf,
}

/// Decodes an n x n grid over a plane of the latent space. `data` is needed
/// when [`ManifoldOptions::needs_data`].
pub fn run(model: &mut dyn Inference, data: Option<&DataSet>, o: &ManifoldOptions) -> Result<ManifoldReport> {
    o.check()?;
    let cfg = model.arch().config.clone();
    match o.class {
        Some(k) => check_class(model.arch(), "--class", k)?,
        None if cfg.classes > 0 => {
            let why =
                format!("the model is conditional: name the class to decode the plane as (0 to {})", cfg.classes - 1);
            return Err(Error::invalid("--class", why));
        }
        None => {}
    }
    limits::check_rows("--n", o.n * o.n, &cfg)?;
    let latent = cfg.latent;
    if latent < 2 {
        return Err(Error::unsupported(
            "manifold",
            format!("a latent of at least 2 dimensions; this run's has {latent}"),
        ));
    }
    if let Some((x, y)) = o.dims
        && x.max(y) >= latent
    {
        return Err(Error::invalid("--dims", format!("the latent has dimensions 0..{}, got {x},{y}", latent - 1)));
    }
    let plane = if o.needs_data(model.arch()) {
        let data = data.ok_or_else(|| Error::unsupported("manifold", "the run's data for this plane"))?;
        let images = split_images(model.arch(), data, o.split)?;
        let (x, rows) = first_pixels(images, None);
        // A conditional model's codes of the images, each encoded with its own label.
        let labels = first_labels(model, images, rows)?;
        let means = latent_means(model, &x, labels.as_deref(), rows)?;
        match o.dims {
            Some(d) => Plane::code_dims(&means, latent, d, o.n),
            None if latent == 2 => Plane::code_dims(&means, latent, (0, 1), o.n),
            None => Plane::principal(&means, latent, o.n),
        }
    } else {
        Plane::prior_quantiles(latent, o.dims.unwrap_or((0, 1)), o.n)
    };
    let labels = o.class.map(|k| vec![k; o.n * o.n]);
    let pictures = decode_all(model, &plane.latents(), labels.as_deref(), o.n * o.n)?;
    write_grid(&o.out, &pictures, cfg.channels, cfg.image_rows, cfg.image_cols, o.n)?;
    Ok(ManifoldReport { n: o.n, plane: plane.description, class: o.class, out: o.out.clone() })
}

impl std::fmt::Display for ManifoldReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{} grid: {}", self.n, self.n, self.plane)?;
        match self.class {
            Some(k) => writeln!(f, ", decoded as class {k}")?,
            None => writeln!(f)?,
        }
        wrote(f, &self.out)
    }
}

/// Φ⁻¹(p), the standard normal quantile, for p in (0, 1), by Acklam's rational
/// approximations (central region and two tails): relative error below
/// 1.15·10⁻⁹ over the whole range, far below what a decoded picture shows.
/// Returns ∓∞ at 0 and 1 and NaN outside [0, 1].
pub fn inverse_normal_cdf(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e+01,
        2.209460984245205e+02,
        -2.759285104469687e+02,
        1.38357751867269e+02,
        -3.066479806614716e+01,
        2.506628277459239e+00,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e+01,
        1.615858368580409e+02,
        -1.556989798598866e+02,
        6.680131188771972e+01,
        -1.328068155288572e+01,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-03,
        -3.223964580411365e-01,
        -2.400758277161838e+00,
        -2.549732539343734e+00,
        4.374664141464968e+00,
        2.938163982698783e+00,
    ];
    const D: [f64; 4] = [7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00];
    const P_LOW: f64 = 0.02425;

    if !(0.0..=1.0).contains(&p) {
        return f64::NAN;
    }
    if p == 0.0 {
        return f64::NEG_INFINITY;
    }
    if p == 1.0 {
        return f64::INFINITY;
    }
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < P_LOW {
        tail((-2.0 * p.ln()).sqrt())
    } else if p <= 1.0 - P_LOW {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    }
}

/// A plane of the latent space: `center + x·axes[0] + y·axes[1]` for x in
/// `values[0]` (across the grid) and y in `values[1]` (up the grid).
#[derive(Clone, Debug)]
pub struct Plane {
    pub center: Vec<f64>,
    pub axes: [Vec<f64>; 2],
    pub values: [Vec<f64>; 2],
    /// What the axes are, for the user.
    pub description: String,
}

fn linspace(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    (0..n).map(|i| if n == 1 { (lo + hi) / 2.0 } else { lo + (hi - lo) * i as f64 / (n - 1) as f64 }).collect()
}

fn unit(latent: usize, dim: usize) -> Vec<f64> {
    (0..latent).map(|j| if j == dim { 1.0 } else { 0.0 }).collect()
}

impl Plane {
    /// The prior's quantiles Φ⁻¹(linspace(0.05, 0.95, n)) along latent
    /// dimensions a and b, the others 0 (the prior's mean): a VAE's manifold.
    pub fn prior_quantiles(latent: usize, (a, b): (usize, usize), n: usize) -> Plane {
        let q: Vec<f64> = linspace(0.05, 0.95, n).into_iter().map(inverse_normal_cdf).collect();
        Plane {
            center: vec![0.0; latent],
            axes: [unit(latent, a), unit(latent, b)],
            values: [q.clone(), q],
            description: format!("prior quantiles 0.05..0.95 along z{a} and z{b}, other dimensions 0"),
        }
    }

    /// Mean ± 2 std of the codes (N, L) along dimensions a and b, the others at
    /// their mean: an AE has no prior to take quantiles of.
    pub fn code_dims(codes: &[f32], latent: usize, (a, b): (usize, usize), n: usize) -> Plane {
        let fitted = pca::fit(codes, latent);
        let spread = |d: usize| {
            let var = codes.chunks_exact(latent).map(|r| (r[d] as f64 - fitted.mean[d]).powi(2)).sum::<f64>()
                / (codes.len() / latent) as f64;
            linspace(-2.0 * var.sqrt(), 2.0 * var.sqrt(), n)
        };
        Plane {
            axes: [unit(latent, a), unit(latent, b)],
            values: [spread(a), spread(b)],
            center: fitted.mean,
            description: format!("mean ± 2 std of the codes along z{a} and z{b}, other dimensions at their mean"),
        }
    }

    /// Mean ± 2 std along the first two principal directions of the codes (N, L).
    pub fn principal(codes: &[f32], latent: usize, n: usize) -> Plane {
        let fitted = pca::fit(codes, latent);
        let spread = |k: usize| linspace(-2.0 * fitted.variances[k].sqrt(), 2.0 * fitted.variances[k].sqrt(), n);
        Plane {
            values: [spread(0), spread(1)],
            axes: [fitted.components[0].clone(), fitted.components[1].clone()],
            center: fitted.mean,
            description: "mean ± 2 std along the first two principal directions of the latent means".into(),
        }
    }

    /// The grid's latent points (n·n, L), row by row from the top: the top row
    /// has the largest y, x grows to the right, as in the Keras example.
    pub fn latents(&self) -> Vec<f32> {
        let [xs, ys] = &self.values;
        let mut out = Vec::with_capacity(xs.len() * ys.len() * self.center.len());
        for &y in ys.iter().rev() {
            for &x in xs {
                let point = self.center.iter().zip(&self.axes[0]).zip(&self.axes[1]);
                out.extend(point.map(|((c, u), v)| (c + x * u + y * v) as f32));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference quantiles to 16 digits (scipy.stats.norm.ppf, which agrees
    /// with Wichura's AS241 to double precision).
    #[test]
    fn inverse_normal_cdf_is_accurate() {
        let cases = [
            (0.5, 0.0),
            (0.975, 1.959963984540054),
            (0.95, 1.6448536269514722),
            (0.05, -1.6448536269514722),
            (0.8413447460685429, 1.0),
            (0.01, -2.3263478740408408),
            (0.001, -3.090232306167813),
            (0.999, 3.090232306167813),
            (1e-10, -6.361340902404056),
        ];
        for (p, want) in cases {
            let got = inverse_normal_cdf(p);
            let err = (got - want).abs() / want.abs().max(1.0);
            assert!(err < 1.2e-9, "Φ⁻¹({p}) = {got}, want {want} (relative error {err:e})");
        }
        assert_eq!(inverse_normal_cdf(0.0), f64::NEG_INFINITY);
        assert_eq!(inverse_normal_cdf(1.0), f64::INFINITY);
        assert!(inverse_normal_cdf(1.5).is_nan());
        // Symmetric, and increasing across the region boundaries at 0.02425 and 0.97575.
        let ps = linspace(0.001, 0.999, 999);
        assert!(ps.windows(2).all(|w| inverse_normal_cdf(w[0]) < inverse_normal_cdf(w[1])));
        assert!(ps.iter().all(|&p| (inverse_normal_cdf(p) + inverse_normal_cdf(1.0 - p)).abs() < 1e-8));
    }

    #[test]
    fn grid_rows_go_down_in_y_and_across_in_x() {
        let plane = Plane::prior_quantiles(3, (0, 2), 3);
        let z = plane.latents();
        assert_eq!(z.len(), 9 * 3);
        let q = inverse_normal_cdf(0.95) as f32;
        // Top-left: x low, y high; the unused dimension stays 0.
        assert_eq!(&z[..3], &[-q, 0.0, q]);
        assert_eq!(&z[z.len() - 3..], &[q, 0.0, -q]);
        assert!(z[12..15].iter().all(|v| v.abs() < 1e-12), "the center: {:?}", &z[12..15]);
    }
}
