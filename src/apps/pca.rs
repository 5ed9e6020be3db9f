//! Principal components of a small data matrix (latent codes: tens of
//! columns), by the cyclic Jacobi eigenvalue method on the covariance in f64.

/// Components sorted by decreasing variance.
#[derive(Clone, Debug)]
pub struct Pca {
    pub mean: Vec<f64>,
    /// Unit vectors; the largest entry of each is positive, so results are reproducible.
    pub components: Vec<Vec<f64>>,
    /// Variance of the data along each component.
    pub variances: Vec<f64>,
}

/// Fits all principal components of `data` (N, dim), N ≥ 1.
pub fn fit(data: &[f32], dim: usize) -> Pca {
    let n = data.len() / dim;
    assert!(n > 0 && data.len() == n * dim, "PCA of {} values in rows of {dim}", data.len());
    let mut mean = vec![0.0f64; dim];
    for row in data.chunks_exact(dim) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += v as f64 / n as f64;
        }
    }
    let mut cov = vec![0.0f64; dim * dim];
    for row in data.chunks_exact(dim) {
        for i in 0..dim {
            let di = row[i] as f64 - mean[i];
            for j in i..dim {
                cov[i * dim + j] += di * (row[j] as f64 - mean[j]) / n as f64;
            }
        }
    }
    for i in 0..dim {
        for j in 0..i {
            cov[i * dim + j] = cov[j * dim + i];
        }
    }
    let (values, vectors) = jacobi_eigen(cov, dim);
    let mut order: Vec<usize> = (0..dim).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
    let components = order
        .iter()
        .map(|&k| {
            let mut v: Vec<f64> = (0..dim).map(|i| vectors[i * dim + k]).collect();
            let largest = v.iter().copied().fold(0.0f64, |a, x| if x.abs() > a.abs() { x } else { a });
            if largest < 0.0 {
                v.iter_mut().for_each(|x| *x = -*x);
            }
            v
        })
        .collect();
    let variances = order.iter().map(|&k| values[k].max(0.0)).collect();
    Pca { mean, components, variances }
}

impl Pca {
    /// Coordinates (N, k) of `data` (N, dim) along the first `k` components.
    pub fn project(&self, data: &[f32], k: usize) -> Vec<f32> {
        let dim = self.mean.len();
        let mut out = Vec::with_capacity(data.len() / dim * k);
        for row in data.chunks_exact(dim) {
            for c in &self.components[..k] {
                out.push(row.iter().zip(&self.mean).zip(c).map(|((&x, m), c)| (x as f64 - m) * c).sum::<f64>() as f32);
            }
        }
        out
    }
}

/// Eigenvalues and eigenvectors (columns of the returned dim x dim matrix) of
/// a symmetric matrix, by cyclic Jacobi rotations until the off-diagonal is
/// negligible (quadratic convergence: a handful of sweeps).
fn jacobi_eigen(mut a: Vec<f64>, n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut v = vec![0.0f64; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let scale: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j].powi(2))
            .sum();
        if off.sqrt() <= 1e-15 * scale || scale == 0.0 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                // The rotation angle that zeroes a[p][q] (Numerical Recipes §11.1).
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i * n + i]).collect(), v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_axes_of_an_elongated_cloud() {
        // Points along (3, 4)/5 with spread 10, across it with spread 1, in 3-D with a constant third column.
        let mut data = Vec::new();
        for k in -5..=5 {
            for m in [-1.0f32, 1.0] {
                let (a, b) = (k as f32 * 2.0, m);
                data.extend([1.0 + 0.6 * a - 0.8 * b, 2.0 + 0.8 * a + 0.6 * b, 7.0]);
            }
        }
        let pca = fit(&data, 3);
        assert!((pca.mean[0] - 1.0).abs() < 1e-6 && (pca.mean[2] - 7.0).abs() < 1e-6);
        let c = &pca.components[0];
        // The data are f32: 1e-7 relative.
        assert!((c[0] - 0.6).abs() < 1e-6 && (c[1] - 0.8).abs() < 1e-6 && c[2].abs() < 1e-9, "{c:?}");
        // Var of 2k for k = -5..=5 is 4·10 = 40; across, 1.
        assert!((pca.variances[0] - 40.0).abs() < 1e-4 && (pca.variances[1] - 1.0).abs() < 1e-5, "{:?}", pca.variances);
        assert!(pca.variances[2].abs() < 1e-9);
        let p = pca.project(&data[..3], 2);
        assert!((p[0] + 10.0).abs() < 1e-4 && (p[1].abs() - 1.0).abs() < 1e-4, "{p:?}");
    }
}
