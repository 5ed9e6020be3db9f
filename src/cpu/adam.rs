//! Adam (Kingma & Ba), in PyTorch's form: eps is added to the bias-corrected
//! sqrt(v̂). One loop over the whole flat parameter buffer.

use rayon::prelude::*;

use crate::engine::AdamConfig;

/// params, m, v (P) updated from grads (P) for step t (1-based). Memory-bound
/// (16 bytes read and 12 written per parameter), so it runs on every core.
pub fn adam_update(params: &mut [f32], m: &mut [f32], v: &mut [f32], grads: &[f32], cfg: &AdamConfig, t: u64) {
    let (c1, c2) = cfg.corrections(t);
    // Below ~64k parameters a thread costs more than it saves.
    let chunk = 1 << 16;
    params
        .par_chunks_mut(chunk)
        .zip(m.par_chunks_mut(chunk))
        .zip(v.par_chunks_mut(chunk))
        .zip(grads.par_chunks(chunk))
        .for_each(|(((p, m), v), g)| crate::fastmath::widest(|| adam_chunk(p, m, v, g, cfg, c1, c2)));
}

#[inline(always)]
fn adam_chunk(params: &mut [f32], m: &mut [f32], v: &mut [f32], grads: &[f32], cfg: &AdamConfig, c1: f32, c2: f32) {
    let (b1, b2) = (cfg.beta1, cfg.beta2);
    for (((p, m), v), &g) in params.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(grads) {
        *m = b1 * *m + (1.0 - b1) * g;
        *v = b2 * *v + (1.0 - b2) * g * g;
        *p -= cfg.lr * (*m * c1) / ((*v).sqrt() * c2 + cfg.eps);
    }
}
