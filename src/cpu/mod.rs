//! The CPU reference path: one plain function per op, forward and backward,
//! each the twin of the WGSL entry point of the same name in `shaders/`.
//!
//! Conventions (as in llm.c): outputs first, gradients prefixed `d`, a shape
//! comment on every slice. B = batch rows, I/O = a layer's input/output width,
//! D = pixels per image, L = latent width.

pub mod activation;
pub mod adam;
pub mod concat;
pub mod conv;
pub mod engine;
mod epoch;
pub mod gemm;
pub mod implicit;
pub mod interpreter;
mod lanes;
pub mod loss;
pub mod matmul;
pub mod reparam;

pub use engine::{BatchRef, CpuModel};

use rayon::prelude::*;

use crate::fastmath::widest;

/// Elements per task of the element-wise loops on rayon's threads: enough
/// work to outweigh the hand-off, few enough to spread a batch's activations.
const ELEMENTS_PER_TASK: usize = 1 << 15;

/// `f(out)` over pieces of `out`, in parallel for large slices.
pub(crate) fn par_apply(out: &mut [f32], f: impl Fn(&mut [f32]) + Sync + Send) {
    let f = |out: &mut [f32]| widest(|| f(out));
    if out.len() <= ELEMENTS_PER_TASK {
        return f(out);
    }
    out.par_chunks_mut(ELEMENTS_PER_TASK).for_each(f);
}

/// `f(out, x)` over matching pieces of `out` and `x` (as long), in parallel for large slices.
pub(crate) fn par_map(out: &mut [f32], x: &[f32], f: impl Fn(&mut [f32], &[f32]) + Sync + Send) {
    assert_eq!(out.len(), x.len(), "par_map: slices of different lengths");
    let f = |out: &mut [f32], x: &[f32]| widest(|| f(out, x));
    if out.len() <= ELEMENTS_PER_TASK {
        return f(out, x);
    }
    out.par_chunks_mut(ELEMENTS_PER_TASK).zip(x.par_chunks(ELEMENTS_PER_TASK)).for_each(|(o, x)| f(o, x));
}

/// `f(out, x, y)` likewise, over three matching slices.
pub(crate) fn par_map2(out: &mut [f32], x: &[f32], y: &[f32], f: impl Fn(&mut [f32], &[f32], &[f32]) + Sync + Send) {
    assert!(out.len() == x.len() && out.len() == y.len(), "par_map2: slices of different lengths");
    let f = |out: &mut [f32], x: &[f32], y: &[f32]| widest(|| f(out, x, y));
    if out.len() <= ELEMENTS_PER_TASK {
        return f(out, x, y);
    }
    out.par_chunks_mut(ELEMENTS_PER_TASK)
        .zip(x.par_chunks(ELEMENTS_PER_TASK))
        .zip(y.par_chunks(ELEMENTS_PER_TASK))
        .for_each(|((o, x), y)| f(o, x, y));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slices longer than a task reach every element (an empty `x` zipped in
    /// once left all of them untouched).
    #[test]
    fn the_parallel_loops_cover_every_element() {
        let n = 3 * ELEMENTS_PER_TASK + 5;
        let (x, y) = (vec![1.0; n], vec![2.0; n]);
        let mut out = vec![0.0; n];
        par_apply(&mut out, |o| o.iter_mut().for_each(|v| *v += 1.0));
        par_map(&mut out, &x, |o, x| o.iter_mut().zip(x).for_each(|(v, x)| *v += x));
        par_map2(&mut out, &x, &y, |o, x, y| o.iter_mut().zip(x).zip(y).for_each(|((v, x), y)| *v += x * y));
        assert!(out.iter().all(|&v| v == 4.0));
    }
}
