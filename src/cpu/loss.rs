//! Losses, forward (a sum over the batch, in f64) and backward (the gradient of
//! `scale` times that sum): the loops around `ops`' per-value math. The
//! trainer picks `scale`: 1 for the VAE's summed objective (pytorch/examples),
//! 1/(B·D) for the AE's mean (Keras).

use super::par_map2;
use crate::fastmath;
use crate::ops;

/// Σ BCE(sigmoid(a), x) over the batch, from the logits a.
pub fn bce_with_logits_forward(logits: &[f32], target: &[f32]) -> f64 {
    fastmath::sum_zip(logits, target, ops::bce_with_logits)
}

/// dlogits = scale · (sigmoid(a) - x).
pub fn bce_with_logits_backward(dlogits: &mut [f32], logits: &[f32], target: &[f32], scale: f32) {
    par_map2(dlogits, logits, target, |dlogits, logits, target| {
        for ((d, &a), &x) in dlogits.iter_mut().zip(logits).zip(target) {
            *d = ops::d_bce_with_logits(a, x, scale);
        }
    })
}

/// `bce_with_logits_forward` and `bce_with_logits_backward` in one pass over
/// the batch: the same sum and gradient, bit for bit.
pub fn bce_with_logits_forward_backward(dlogits: &mut [f32], logits: &[f32], target: &[f32], scale: f32) -> f64 {
    let gradient = move |a, x| ops::d_bce_with_logits(a, x, scale);
    fastmath::sum_zip_writing(dlogits, logits, target, ops::bce_with_logits, gradient)
}

/// `mse_forward`, `mse_backward` and `sigmoid_backward` in one pass, for
/// y = sigmoid(logits) against the target: the sum, and the logits' gradient
/// into `d`, bit for bit as the three.
pub fn sigmoid_mse_forward_backward(d: &mut [f32], y: &[f32], target: &[f32], scale: f32) -> f64 {
    let gradient = move |y, x| ops::d_sigmoid(ops::d_mse(y, x, scale), y);
    fastmath::sum_zip_writing(d, y, target, ops::mse, gradient)
}

/// Σ (y - x)².
pub fn mse_forward(y: &[f32], target: &[f32]) -> f64 {
    fastmath::sum_zip(y, target, ops::mse)
}

/// dy = scale · 2 (y - x).
pub fn mse_backward(dy: &mut [f32], y: &[f32], target: &[f32], scale: f32) {
    par_map2(dy, y, target, |dy, y, target| {
        for ((d, &y), &x) in dy.iter_mut().zip(y).zip(target) {
            *d = ops::d_mse(y, x, scale);
        }
    })
}

/// KL(N(mu, e^logvar) ‖ N(0, I)) summed over the batch. mulv is (B, 2L).
pub fn kl_forward(mulv: &[f32], latent: usize) -> f64 {
    mulv.chunks_exact(2 * latent)
        .flat_map(|row| row[..latent].iter().zip(&row[latent..]))
        .map(|(&mu, &lv)| ops::kl(mu, lv) as f64)
        .sum()
}

/// dmulv += scale · (mu, ½(e^lv - 1)).
pub fn kl_backward(dmulv: &mut [f32], mulv: &[f32], latent: usize, scale: f32) {
    for (d, row) in dmulv.chunks_exact_mut(2 * latent).zip(mulv.chunks_exact(2 * latent)) {
        for j in 0..latent {
            let (dmu, dlv) = ops::d_kl(row[j], row[latent + j], scale);
            d[j] += dmu;
            d[latent + j] += dlv;
        }
    }
}
