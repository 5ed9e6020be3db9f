//! Rewrites of the lowered call list. Each keeps the results of the unfused
//! list, whose calls are the CPU interpreter's functions one for one, so the
//! CPU reference of a fused kernel is the sequence it replaced (the
//! GPU-vs-CPU step tests run both, `tests/gpu_steps.rs`).
//!
//! A rewrite is a function `Vec<Call> -> Vec<Call>`; add one to `fuse`.

use super::lower::{Call, Matmul, size};
use super::shaders::{Kernel, MatmulVariant};
use crate::model::Activation;

/// Which rewrites run: all by default; `GPU_VAE_FUSE=0` turns them off (the
/// unfused list, one dispatch per CPU function, products on the naive
/// variant) for debugging and A/B runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fusion {
    pub epilogues: bool,
    pub tiles: bool,
    pub split_k: bool,
}

impl Fusion {
    pub const ALL: Fusion = Fusion { epilogues: true, tiles: true, split_k: true };
    pub const NONE: Fusion = Fusion { epilogues: false, tiles: false, split_k: false };

    pub fn from_env() -> Fusion {
        match std::env::var("GPU_VAE_FUSE").as_deref() {
            Ok("0") => Fusion::NONE,
            _ => Fusion::ALL,
        }
    }
}

/// The rewrites of `fusion` for a program of at most `max_rows` rows on an
/// adapter with `limits`.
pub fn fuse(calls: Vec<Call>, fusion: Fusion, max_rows: usize, limits: &wgpu::Limits) -> Vec<Call> {
    let mut calls = calls;
    if fusion.epilogues {
        calls = epilogues(calls);
    }
    if fusion.tiles {
        calls = tiles(calls, max_rows, limits);
    }
    if fusion.split_k {
        calls = split_k(calls, max_rows);
    }
    calls
}

/// A product followed by a bias add and an activation of its output becomes
/// one product with the bias and activation in its epilogue (the epilogue
/// applies them in the CPU's order: sum, + bias, activation).
fn epilogues(calls: Vec<Call>) -> Vec<Call> {
    let mut out: Vec<Call> = Vec::with_capacity(calls.len());
    for call in calls {
        // A convolution's activation, into the kernel writing its output.
        if let (Some(Call::Conv { out: prev_out, act: prev_act, kernel, .. }), Call::Activation { y, act, .. }) =
            (out.last_mut(), &call)
            && *prev_out == super::lower::Buf::Tensor(*y)
            && *prev_act == Activation::Identity
            && matches!(kernel, Kernel::Conv2dForward | Kernel::Conv2dBackwardData)
        {
            *prev_act = *act;
            continue;
        }
        let Some(Call::Matmul(prev)) = out.last_mut() else {
            out.push(call);
            continue;
        };
        let plain_output = |y| !prev.accumulate && prev.c == (super::lower::Buf::Tensor(y), 0);
        match call {
            Call::BiasAdd { y, bias, .. }
                if plain_output(y) && prev.bias.is_none() && prev.act == Activation::Identity =>
            {
                prev.bias = Some(bias);
            }
            Call::Activation { y, act, .. } if plain_output(y) && prev.act == Activation::Identity => prev.act = act,
            call => out.push(call),
        }
    }
    out
}

/// Each product gets the tiled variant its shape and the adapter's limits
/// call for (`MatmulVariant::for_shape`).
fn tiles(calls: Vec<Call>, max_rows: usize, limits: &wgpu::Limits) -> Vec<Call> {
    calls
        .into_iter()
        .map(|call| match call {
            Call::Matmul(m) => {
                Call::Matmul(Matmul { variant: MatmulVariant::for_shape(size(m.m, max_rows), m.n, limits), ..m })
            }
            call => call,
        })
        .collect()
}

/// Products with too few output tiles to fill a GPU are split along K into
/// slices, each a workgroup layer of the same dispatch, and a finish pass
/// adds the slices in order (deterministic) and applies the epilogue.
fn split_k(calls: Vec<Call>, max_rows: usize) -> Vec<Call> {
    let mut out = Vec::with_capacity(calls.len());
    for call in calls {
        match call {
            Call::Matmul(m) => {
                let slices = m.variant.split_k(size(m.m, max_rows), size(m.k, max_rows), m.n);
                if slices > 1 {
                    let split = Matmul { slices, ..m };
                    out.push(Call::Matmul(split));
                    out.push(Call::SplitFinish(split));
                } else {
                    out.push(Call::Matmul(m));
                }
            }
            call => out.push(call),
        }
    }
    out
}
