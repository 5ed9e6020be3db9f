//! Adam (Kingma & Ba), in PyTorch's form (`ops::adam`): one loop over the
//! whole flat parameter buffer.

use rayon::prelude::*;

use crate::ops::{AdamStep, adam};

/// params, m, v (P) updated from grads (P) with one step's settings.
/// Memory-bound (16 bytes read and 12 written per parameter), so it runs on
/// every core.
pub fn adam_update(params: &mut [f32], m: &mut [f32], v: &mut [f32], grads: &[f32], step: &AdamStep) {
    // Below ~64k parameters a thread costs more than it saves.
    let chunk = 1 << 16;
    params
        .par_chunks_mut(chunk)
        .zip(m.par_chunks_mut(chunk))
        .zip(v.par_chunks_mut(chunk))
        .zip(grads.par_chunks(chunk))
        .for_each(|(((p, m), v), g)| crate::fastmath::widest(|| adam_chunk(p, m, v, g, step)));
}

#[inline(always)]
fn adam_chunk(params: &mut [f32], m: &mut [f32], v: &mut [f32], grads: &[f32], step: &AdamStep) {
    for (((p, m), v), &g) in params.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(grads) {
        (*p, *m, *v) = adam(*p, *m, *v, g, step);
    }
}
