//! How the convolutions share a batch between threads: lanes of consecutive
//! images, each summing its own weight gradient, added in lane order, so
//! that a result does not depend on the number of threads.

use rayon::prelude::*;

/// The batch is split into at most this many lanes of consecutive images,
/// run in parallel. Each lane sums its own weight gradient and the lanes'
/// sums are added in lane order, so a result does not depend on the number
/// of threads.
pub const LANES: usize = 16;

/// Images per lane for a batch of `rows`.
pub fn lane_images(rows: usize) -> usize {
    rows.div_ceil(LANES).max(1)
}

/// Runs `step(dx, dw, db, first_image, images)` over lanes of images in
/// parallel, each with its own zeroed gradient sums, then adds the lanes'
/// sums to dw and db in lane order. `dx` (when asked) is cut into the lanes'
/// images, `dx_len` floats each.
pub fn backward_lanes(
    dx: Option<&mut [f32]>,
    dx_len: usize,
    dw: &mut [f32],
    db: &mut [f32],
    rows: usize,
    step: impl Fn(Option<&mut [f32]>, &mut [f32], &mut [f32], usize, usize) + Sync,
) {
    let lane = lane_images(rows);
    let lanes = rows.div_ceil(lane);
    let mut dx_lanes: Vec<Option<&mut [f32]>> = match dx {
        Some(dx) => dx[..rows * dx_len].chunks_mut(lane * dx_len).map(Some).collect(),
        None => (0..lanes).map(|_| None).collect(),
    };
    let sums = dw.len() + db.len();
    let mut partial = vec![0.0; lanes * sums];
    dx_lanes.par_iter_mut().zip(partial.par_chunks_mut(sums)).enumerate().for_each(|(l, (dx, part))| {
        let (pw, pb) = part.split_at_mut(dw.len());
        let first = l * lane;
        step(dx.as_deref_mut(), pw, pb, first, lane.min(rows - first));
    });
    // Every sum adds the lanes in lane order, pieces of dw on the threads.
    let (dw_len, partial) = (dw.len(), &partial);
    dw.par_chunks_mut(SUM_PIECE).enumerate().for_each(|(i, dw)| {
        for part in partial.chunks_exact(sums) {
            dw.iter_mut().zip(&part[i * SUM_PIECE..]).for_each(|(d, p)| *d += p);
        }
    });
    for part in partial.chunks_exact(sums) {
        db.iter_mut().zip(&part[dw_len..]).for_each(|(d, p)| *d += p);
    }
}

/// Weights a task of the lanes' final sum adds up.
const SUM_PIECE: usize = 4096;

/// db (C) += the sums of each channel's plane of dy (C, P): 16 partial sums
/// a plane (one vector), added in a fixed order at the end, where one chain
/// of dependent adds took 4 cycles a value.
pub fn channel_sums(db: &mut [f32], dy: &[f32], pixels: usize) {
    crate::fastmath::widest(
        #[inline(always)]
        || {
            for (d, plane) in db.iter_mut().zip(dy.chunks_exact(pixels)) {
                let mut sums = [0.0f32; 16];
                let mut rows = plane.chunks_exact(16);
                for row in &mut rows {
                    sums.iter_mut().zip(row).for_each(|(s, v)| *s += v);
                }
                sums.iter_mut().zip(rows.remainder()).for_each(|(s, v)| *s += v);
                *d += sums.iter().sum::<f32>();
            }
        },
    )
}
