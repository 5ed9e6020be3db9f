//! Convolutions as products over patches read where they lie (implicit
//! GEMM). Each chunk of images is first transposed to pixel-major order
//! (NHWC), so that a patch's values for one kernel tap are a run of C
//! contiguous values, and the product kernels gather each patch row from its
//! runs (`gemm::Gathered`) instead of reading an im2col matrix 2-9x the
//! image's size. The adjoint (a transposed convolution's forward pass, a
//! convolution's input gradient) goes by the stride's phases: the pixels
//! with (iy + padding) mod s = fy (and fx across) take exactly the taps with
//! ki mod s = fy (and kj mod s = fx), so each phase is one product, with no
//! col2im pass and no multiply by an inserted zero. AVX-512 only (the
//! gathered kernels); `conv.rs` keeps im2col elsewhere and for layers with
//! few channels, whose runs of 1-3 values would starve the kernel.

use std::cell::RefCell;

use rayon::prelude::*;

use super::gemm::{self, Gathered, Product, Strided};
use super::lanes::{backward_lanes, lane_images};
use crate::model::{Activation, ConvGeom};

/// Floats of a chunk's images (input and output) that a lane handles at
/// once: 1 MiB, one core's L2 cache here.
const CHUNK_FLOATS: usize = 1 << 18;

/// Whether `g` takes this path: AVX-512 for the gathered kernels, and at
/// least 16 channels on both sides (the runs, and the kernel's 32 columns).
pub fn suits(g: &ConvGeom) -> bool {
    gemm::available() && g.in_c >= 16 && g.out_c >= 16
}

/// y = act(conv(x) + b) for x (B, C·H·W), w [O, C, k, k], b (O), y (B,
/// O·Ho·Wo); `transposed`: y = act(ConvTranspose2d(x) + b), the adjoint of
/// g, for x (B, O·Ho·Wo), b (C), y (B, C·H·W).
#[allow(clippy::too_many_arguments)]
pub fn forward(
    y: &mut [f32],
    x: &[f32],
    w: &[f32],
    b: &[f32],
    g: &ConvGeom,
    rows: usize,
    act: Activation,
    transposed: bool,
) {
    assert!(gemm::available(), "the implicit convolutions run AVX-512 kernels (`suits`)");
    let plan = Plan::new(g, w, !transposed, transposed);
    let chunk = chunk_images(g, rows);
    let [(x_c, x_pixels), (y_c, y_pixels)] = spaces(g, transposed);
    let (x_len, y_len) = (x_c * x_pixels, y_c * y_pixels);
    let (x, y) = (&x[..rows * x_len], &mut y[..rows * y_len]);
    let lane = lane_images(rows);
    y.par_chunks_mut(lane * y_len).zip(x.par_chunks(lane * x_len)).for_each(|(y, x)| {
        with_scratch(g, [chunk * x_len, chunk * y_len], |[x_t, y_t], runs, zeros| {
            for (y, x) in y.chunks_mut(chunk * y_len).zip(x.chunks(chunk * x_len)) {
                let images = x.len() / x_len;
                transpose_images(x_t, x, x_c, x_pixels, images);
                match transposed {
                    false => plan.forward(y_t, x_t, images, runs, zeros),
                    true => plan.adjoint(y_t, x_t, images, runs, zeros),
                }
                finish(y, y_t, b, y_c, y_pixels, images, act);
            }
        })
    });
}

/// The gradients of `forward`: dw += dy·patches(x)ᵀ (transposed: x·patches(dy)ᵀ),
/// db += Σ dy per channel, and dx when asked (the adjoint of dy;
/// transposed: the convolution of dy).
#[allow(clippy::too_many_arguments)]
pub fn backward(
    dx: Option<&mut [f32]>,
    dw: &mut [f32],
    db: &mut [f32],
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    g: &ConvGeom,
    rows: usize,
    transposed: bool,
) {
    assert!(gemm::available(), "the implicit convolutions run AVX-512 kernels (`suits`)");
    let plan = Plan::new(g, w, transposed && dx.is_some(), !transposed && dx.is_some());
    let chunk = chunk_images(g, rows);
    // The tensors in g's input space (C channels) and output space (O channels).
    let (inputs, outputs) = (g.in_len(), g.out_len());
    let (input, output) = if transposed { (dy, x) } else { (x, dy) };
    let x_len = if transposed { outputs } else { inputs };
    // The lanes sum dw in the products' layout (O x (tap, c)), permuted once at the end.
    let mut dwt = vec![0.0; plan.weight_len()];
    backward_lanes(dx, x_len, &mut dwt, db, rows, |mut dx, dwt, db, first, images| {
        let lens = [chunk * inputs, chunk * outputs, chunk * x_len];
        with_scratch(g, lens, |[in_t, out_t, dx_t], runs, zeros| {
            for start in (0..images).step_by(chunk) {
                let (image, count) = (first + start, chunk.min(images - start));
                transpose_images(in_t, &input[image * inputs..], g.in_c, g.in_h * g.in_w, count);
                transpose_images(out_t, &output[image * outputs..], g.out_c, g.out_pixels(), count);
                plan.weight_gradient(dwt, out_t, in_t, count, runs, zeros);
                let dy_t = if transposed { &in_t[..count * inputs] } else { &out_t[..count * outputs] };
                column_sums(db, dy_t);
                if let Some(dx) = dx.as_deref_mut() {
                    match transposed {
                        false => plan.adjoint(dx_t, out_t, count, runs, zeros),
                        true => plan.forward(dx_t, in_t, count, runs, zeros),
                    }
                    let [(channels, pixels), _] = spaces(g, transposed);
                    untranspose_images(&mut dx[start * x_len..], dx_t, channels, pixels, count);
                }
            }
        })
    });
    plan.add_weight_gradient(dw, &dwt);
}

/// (channels, pixels) of `forward`'s x and y.
fn spaces(g: &ConvGeom, transposed: bool) -> [(usize, usize); 2] {
    let (input, output) = ((g.in_c, g.in_h * g.in_w), (g.out_c, g.out_pixels()));
    if transposed { [output, input] } else { [input, output] }
}

/// Images per chunk: as many as keep a chunk's input and output near.
fn chunk_images(g: &ConvGeom, rows: usize) -> usize {
    (CHUNK_FLOATS / (g.in_len() + g.out_len())).clamp(1, lane_images(rows))
}

/// What a layer's products need, built once a call: for the convolution's
/// patches and for each phase of the adjoint, the pixel each (row, tap)
/// reads, and the weights laid out as the products' b.
struct Plan<'g> {
    g: &'g ConvGeom,
    taps: usize,
    /// (output pixel, tap) → the input pixel read, or `OUTSIDE`.
    patches: Vec<usize>,
    /// ((tap, c) x O): w [o, c, tap] transposed, the forward product's b.
    forward: Vec<f32>,
    phases: Vec<Phase>,
}

/// A patch entry outside the image: a run of zeros.
const OUTSIDE: usize = usize::MAX;

/// One phase of the adjoint: the input-grid pixels it covers (as offsets of
/// their rows in a pixel-major image), the output pixel each (pixel, tap)
/// reads, and its b ((tap, o) x C) = w [o, c, tap].
struct Phase {
    rows: Vec<usize>,
    taps: usize,
    sources: Vec<usize>,
    weights: Vec<f32>,
}

impl<'g> Plan<'g> {
    fn new(g: &'g ConvGeom, w: &[f32], forward: bool, adjoint: bool) -> Plan<'g> {
        let (k, s, p, (o_n, c_n)) = (g.kernel, g.stride, g.padding, (g.out_c, g.in_c));
        assert_eq!(w.len(), o_n * g.patch(), "weights of {g:?}");
        let grid = |h: usize, w: usize| (0..h).flat_map(move |y| (0..w).map(move |x| (y, x))).collect::<Vec<_>>();
        let taps = grid(k, k);
        let weight = |o: usize, c: usize, (ki, kj): (usize, usize)| w[((o * c_n + c) * k + ki) * k + kj];
        let patches = grid(g.out_h, g.out_w)
            .into_iter()
            .flat_map(|(oy, ox)| taps.iter().map(move |&(ki, kj)| g.source(ki, kj, oy, ox)))
            .map(|at| at.map_or(OUTSIDE, |(y, x)| y * g.in_w + x))
            .collect();
        let forward = match forward {
            true => {
                taps.iter().flat_map(|&t| (0..c_n).flat_map(move |c| (0..o_n).map(move |o| weight(o, c, t)))).collect()
            }
            false => Vec::new(),
        };
        let mut phases = Vec::new();
        for (fy, fx) in grid(s, s).into_iter().filter(|_| adjoint) {
            let on = |&(y, x): &(usize, usize)| (y + p) % s == fy && (x + p) % s == fx;
            let pixels: Vec<_> = grid(g.in_h, g.in_w).into_iter().filter(on).collect();
            let taps: Vec<_> = taps.iter().copied().filter(|&(ki, kj)| ki % s == fy && kj % s == fx).collect();
            // Tap (ki, kj) reaches pixel (y, x) from output pixel ((y + p - ki) / s, ...): exact, by the phase.
            let source = |(y, x): (usize, usize), (ki, kj): (usize, usize)| {
                let (oy, ox) = ((y + p).checked_sub(ki)? / s, (x + p).checked_sub(kj)? / s);
                (oy < g.out_h && ox < g.out_w).then_some(oy * g.out_w + ox)
            };
            let sources = pixels.iter().flat_map(|&at| taps.iter().map(move |&t| source(at, t).unwrap_or(OUTSIDE)));
            let weights = taps.iter().flat_map(|&t| (0..o_n).flat_map(move |o| (0..c_n).map(move |c| weight(o, c, t))));
            phases.push(Phase {
                rows: pixels.iter().map(|&(y, x)| (y * g.in_w + x) * c_n).collect(),
                taps: taps.len(),
                sources: sources.collect(),
                weights: weights.collect(),
            });
        }
        Plan { g, taps: taps.len(), patches, forward, phases }
    }

    /// y_t (images·Ho·Wo x O) = patches(x_t) · w: the convolution of
    /// pixel-major images x_t (images·H·W x C).
    fn forward(&self, y_t: &mut [f32], x_t: &[f32], images: usize, runs: &mut Vec<*const f32>, zeros: &[f32]) {
        let g = self.g;
        gather(runs, x_t, g.in_len(), g.in_c, images, &self.patches, zeros);
        let m = images * g.out_pixels();
        assert!(y_t.len() >= m * g.out_c && self.forward.len() == self.taps * g.in_c * g.out_c);
        let a = Gathered { runs: runs.as_ptr(), per_row: self.taps, len: g.in_c };
        let b = Strided { at: self.forward.as_ptr(), rs: g.out_c, cs: 1 };
        let (k, n, c) = (self.taps * g.in_c, g.out_c, y_t.as_mut_ptr());
        // SAFETY: AVX-512 (`suits`); every run holds C values of x_t or of
        // the zeros; b holds K x N and y_t M x N (asserted).
        unsafe { gemm::sgemm_gathered_a(Product { m, k, n, a, b, c, ldc: n, accumulate: false }, None) }
    }

    /// x_t (images·H·W x C) = the adjoint of the convolution applied to
    /// dy_t (images·Ho·Wo x O), a product a phase whose rows go straight to
    /// their pixels.
    fn adjoint(&self, x_t: &mut [f32], dy_t: &[f32], images: usize, runs: &mut Vec<*const f32>, zeros: &[f32]) {
        thread_local! {
            static OFFSETS: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
        }
        let g = self.g;
        let (c_n, len) = (g.in_c, g.in_len());
        assert!(x_t.len() >= images * len);
        for phase in &self.phases {
            gather(runs, dy_t, g.out_len(), g.out_c, images, &phase.sources, zeros);
            let m = images * phase.rows.len();
            assert!(phase.weights.len() == phase.taps * g.out_c * c_n);
            let a = Gathered { runs: runs.as_ptr(), per_row: phase.taps, len: g.out_c };
            let b = Strided { at: phase.weights.as_ptr(), rs: c_n, cs: 1 };
            let (k, c) = (phase.taps * g.out_c, x_t.as_mut_ptr());
            OFFSETS.with(|offsets| {
                let mut offsets = offsets.borrow_mut();
                offsets.clear();
                offsets.extend((0..images).flat_map(|i| phase.rows.iter().map(move |at| i * len + at)));
                // SAFETY: as in `forward`; the phases' pixels are distinct rows
                // of x_t, and K = 0 (a phase no tap reaches) zeroes them.
                unsafe {
                    gemm::sgemm_gathered_a(
                        Product { m, k, n: c_n, a, b, c, ldc: c_n, accumulate: false },
                        Some(&offsets),
                    )
                };
            });
        }
    }

    fn weight_len(&self) -> usize {
        self.g.out_c * self.taps * self.g.in_c
    }

    /// dwt (O x (tap, c)) += dy_tᵀ · patches(x_t), for dy_t (images·Ho·Wo x
    /// O) and x_t (images·H·W x C), both pixel-major.
    fn weight_gradient(
        &self,
        dwt: &mut [f32],
        dy_t: &[f32],
        x_t: &[f32],
        images: usize,
        runs: &mut Vec<*const f32>,
        zeros: &[f32],
    ) {
        let g = self.g;
        gather(runs, x_t, g.in_len(), g.in_c, images, &self.patches, zeros);
        let k = images * g.out_pixels();
        assert!(dwt.len() == self.weight_len() && dy_t.len() >= k * g.out_c);
        let a = Strided { at: dy_t.as_ptr(), rs: 1, cs: g.out_c };
        let b = Gathered { runs: runs.as_ptr(), per_row: self.taps, len: g.in_c };
        let (m, n, c) = (g.out_c, self.taps * g.in_c, dwt.as_mut_ptr());
        // SAFETY: as in `forward`: a is dy_t read transposed, b's rows the patches.
        unsafe { gemm::sgemm_gathered_b(Product { m, k, n, a, b, c, ldc: n, accumulate: true }) }
    }

    /// dw [o, c, tap] += dwt [o, tap, c].
    fn add_weight_gradient(&self, dw: &mut [f32], dwt: &[f32]) {
        let (taps, c_n) = (self.taps, self.g.in_c);
        for (dw, dwt) in dw.chunks_exact_mut(c_n * taps).zip(dwt.chunks_exact(c_n * taps)) {
            for (c, dw) in dw.chunks_exact_mut(taps).enumerate() {
                dw.iter_mut().enumerate().for_each(|(t, d)| *d += dwt[t * c_n + c]);
            }
        }
    }
}

/// The runs of a patch matrix over `images` pixel-major images in `src`
/// (`len` floats each, `channels` a pixel): image by image, the pixel each
/// of `sources` reads, or the zeros.
fn gather(
    runs: &mut Vec<*const f32>,
    src: &[f32],
    len: usize,
    channels: usize,
    images: usize,
    sources: &[usize],
    zeros: &[f32],
) {
    assert!(zeros.len() >= channels && src.len() >= images * len);
    runs.clear();
    for image in src.chunks_exact(len).take(images) {
        runs.extend(sources.iter().map(|&pixel| match pixel {
            OUTSIDE => zeros.as_ptr(),
            pixel => image[pixel * channels..][..channels].as_ptr(),
        }));
    }
}

/// dst (images, P, C) = src (images, C, P): channel-major images to pixel-major.
fn transpose_images(dst: &mut [f32], src: &[f32], channels: usize, pixels: usize, images: usize) {
    let len = channels * pixels;
    for (d, s) in dst.chunks_exact_mut(len).zip(src.chunks_exact(len)).take(images) {
        gemm::transpose(d, s, channels, pixels);
    }
}

/// dst (images, C, P) = src (images, P, C).
fn untranspose_images(dst: &mut [f32], src: &[f32], channels: usize, pixels: usize, images: usize) {
    let len = channels * pixels;
    for (d, s) in dst.chunks_exact_mut(len).zip(src.chunks_exact(len)).take(images) {
        gemm::transpose(d, s, pixels, channels);
    }
}

/// y (images, C, P) = act(y_t (images, P, C) + b): the bias and the
/// activation on the pixel-major rows, then the transpose.
fn finish(y: &mut [f32], y_t: &mut [f32], b: &[f32], channels: usize, pixels: usize, images: usize, act: Activation) {
    let y_t = &mut y_t[..images * pixels * channels];
    crate::fastmath::widest(
        #[inline(always)]
        || {
            for row in y_t.chunks_exact_mut(channels) {
                row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
            }
            if act != Activation::Identity {
                crate::ops::activate_slice(y_t, act);
            }
        },
    );
    untranspose_images(y, y_t, channels, pixels, images);
}

/// db (C) += the column sums of rows_t (P, C): 16 channels at a time in
/// registers, each summed over the rows in order (a channel-major sum was
/// one chain of dependent adds, 4 cycles a value).
fn column_sums(db: &mut [f32], rows_t: &[f32]) {
    let channels = db.len();
    crate::fastmath::widest(
        #[inline(always)]
        || {
            for (block, db) in db.chunks_mut(16).enumerate() {
                let mut sums = [0.0f32; 16];
                for row in rows_t.chunks_exact(channels) {
                    let row = &row[block * 16..][..db.len()];
                    sums.iter_mut().zip(row).for_each(|(s, v)| *s += v);
                }
                db.iter_mut().zip(sums).for_each(|(d, s)| *d += s);
            }
        },
    )
}

/// Runs `f(buffers, runs, zeros)` with this thread's scratch: buffers of
/// `lens` floats (reused from call to call; every use writes before it
/// reads), the runs' pointers, and zeros for the runs outside the image.
fn with_scratch<const N: usize, R>(
    g: &ConvGeom,
    lens: [usize; N],
    f: impl FnOnce([&mut [f32]; N], &mut Vec<*const f32>, &[f32]) -> R,
) -> R {
    thread_local! {
        static FLOATS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
        static RUNS: RefCell<Vec<*const f32>> = const { RefCell::new(Vec::new()) };
    }
    FLOATS.with(|floats| {
        RUNS.with(|runs| {
            let (mut floats, mut runs) = (floats.borrow_mut(), runs.borrow_mut());
            // Every part from a 64-byte boundary, as the buffer's start.
            let line = |len: usize| len.next_multiple_of(16);
            let widest = line(g.in_c.max(g.out_c));
            let total = lens.iter().map(|&len| line(len)).sum::<usize>() + widest;
            let (zeros, mut rest) = gemm::aligned(&mut floats, total).split_at_mut(widest);
            zeros.fill(0.0);
            let parts = lens.map(|len| {
                let (part, tail) = std::mem::take(&mut rest).split_at_mut(line(len));
                rest = tail;
                &mut part[..len]
            });
            f(parts, &mut runs, zeros)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize, salt: u32) -> Vec<f32> {
        (0..len as u32).map(|i| crate::rng::uniform(salt, crate::rng::Stream::Init, 0, i) - 0.5).collect()
    }

    /// Sums in f64 with the sum of the terms' magnitudes, for the bound below.
    #[derive(Clone, Copy, Default)]
    struct Sum {
        value: f64,
        magnitude: f64,
        terms: usize,
    }

    impl Sum {
        fn add(&mut self, a: f32, b: f32) {
            let t = a as f64 * b as f64;
            (self.value, self.magnitude, self.terms) = (self.value + t, self.magnitude + t.abs(), self.terms + 1);
        }
    }

    /// A float sum of n products in any order is within n·u·Σ|terms| of the
    /// exact one (u = 2^-24; plus one rounding for a bias or an addend).
    fn close(got: &[f32], want: &[Sum], what: &str, g: &ConvGeom) {
        assert_eq!(got.len(), want.len(), "{what} of {g:?}");
        for (i, (&a, s)) in got.iter().zip(want).enumerate() {
            let bound = (s.terms + 2) as f64 * f64::from(f32::EPSILON) / 2.0 * (s.magnitude + s.value.abs()) + 1e-30;
            assert!((a as f64 - s.value).abs() <= bound, "{what} [{i}] of {g:?}: {a} vs {} (bound {bound:e})", s.value);
        }
    }

    /// The pixel loops of the convolution g over `rows` images: y = conv(x) + b,
    /// and, for dy, dx = adjoint(dy), dw = Σ dy·patches(x).
    #[allow(clippy::type_complexity)]
    fn reference(
        g: &ConvGeom,
        rows: usize,
        x: &[f32],
        w: &[f32],
        b: &[f32],
        dy: &[f32],
    ) -> (Vec<Sum>, Vec<Sum>, Vec<Sum>) {
        let k = g.kernel;
        let (mut y, mut dx, mut dw) = (
            vec![Sum::default(); rows * g.out_len()],
            vec![Sum::default(); rows * g.in_len()],
            vec![Sum::default(); w.len()],
        );
        for n in 0..rows {
            for (o, &bias) in b.iter().enumerate() {
                for (oy, ox) in (0..g.out_h).flat_map(|oy| (0..g.out_w).map(move |ox| (oy, ox))) {
                    let out = n * g.out_len() + (o * g.out_h + oy) * g.out_w + ox;
                    y[out].add(bias, 1.0);
                    for c in 0..g.in_c {
                        for (ki, kj) in (0..k).flat_map(|ki| (0..k).map(move |kj| (ki, kj))) {
                            if let Some((iy, ix)) = g.source(ki, kj, oy, ox) {
                                let (at, wi) = (
                                    n * g.in_len() + (c * g.in_h + iy) * g.in_w + ix,
                                    ((o * g.in_c + c) * k + ki) * k + kj,
                                );
                                y[out].add(w[wi], x[at]);
                                dx[at].add(w[wi], dy[out]);
                                dw[wi].add(dy[out], x[at]);
                            }
                        }
                    }
                }
            }
        }
        (y, dx, dw)
    }

    /// Every product of the implicit path against the pixel loops, on
    /// awkward shapes: 1, 3, 7, 17 and 40 channels, odd sides, strides 1-3
    /// (phases that no tap reaches: kernel 1 at stride 2), padding 0-2,
    /// kernels 1, 3, 5, batches of 1 and 37 (several lanes, and chunks
    /// within a lane for the 64x64 images).
    #[test]
    fn the_implicit_products_match_the_pixel_loops() {
        if !gemm::available() {
            eprintln!("SKIPPED: the implicit path runs the AVX-512 kernels, and this CPU has no AVX-512");
            return;
        }
        let shapes = [
            // (in_c, h, w, out_c, kernel, stride, padding, rows)
            (1, 7, 5, 3, 3, 1, 1, 1),
            (3, 9, 11, 7, 3, 2, 1, 37),
            (7, 5, 5, 17, 3, 2, 0, 3),
            (17, 8, 7, 3, 1, 2, 0, 2),
            (40, 13, 9, 33, 5, 3, 2, 3),
            (17, 64, 64, 17, 3, 2, 1, 37),
            (33, 14, 14, 40, 3, 2, 1, 5),
        ];
        for (in_c, h, w_side, out_c, kernel, stride, padding, rows) in shapes {
            let g = ConvGeom::conv(in_c, h, w_side, out_c, kernel, stride, padding).unwrap();
            let (x, w, b, dy) =
                (data(rows * g.in_len(), 1), data(out_c * g.patch(), 2), data(out_c, 3), data(rows * g.out_len(), 4));
            let (y_want, dx_want, dw_want) = reference(&g, rows, &x, &w, &b, &dy);
            let mut y = vec![f32::NAN; rows * g.out_len()];
            forward(&mut y, &x, &w, &b, &g, rows, Activation::Identity, false);
            close(&y, &y_want, "conv y", &g);
            let (mut dx, mut dw, mut db) = (vec![f32::NAN; rows * g.in_len()], vec![0.0; w.len()], vec![0.0; out_c]);
            backward(Some(&mut dx), &mut dw, &mut db, &dy, &x, &w, &g, rows, false);
            close(&dx, &dx_want, "conv dx", &g);
            close(&dw, &dw_want, "conv dw", &g);
            // The transposed convolution: forward is the adjoint (bias per
            // its output channel), its dx the convolution, its dw the same
            // sums with the roles of x and dy swapped.
            let bias_t = data(in_c, 5);
            let mut y_t = vec![f32::NAN; rows * g.in_len()];
            forward(&mut y_t, &dy, &w, &bias_t, &g, rows, Activation::Identity, true);
            let (_, adjoint, _) = reference(&g, rows, &x, &w, &b, &dy);
            let with_bias: Vec<Sum> = adjoint
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let mut s = *s;
                    s.add(bias_t[(i % g.in_len()) / (g.in_h * g.in_w)], 1.0);
                    s
                })
                .collect();
            close(&y_t, &with_bias, "transposed y", &g);
            let (mut dx_t, mut dw_t, mut db_t) =
                (vec![f32::NAN; rows * g.out_len()], vec![0.0; w.len()], vec![0.0; in_c]);
            backward(Some(&mut dx_t), &mut dw_t, &mut db_t, &x, &dy, &w, &g, rows, true);
            let conv_of_x: Vec<Sum> = y_want
                .iter()
                .enumerate()
                .map(|(i, s)| Sum { value: s.value - b[(i % g.out_len()) / g.out_pixels()] as f64, ..*s })
                .collect();
            close(&dx_t, &conv_of_x, "transposed dx", &g);
            close(&dw_t, &dw_want, "transposed dw", &g);
            // db: the same bound over each channel's values.
            let channel_sum = |v: &[f32], c: usize, pixels: usize| {
                let mut s = Sum::default();
                let planes = v.len() / rows / pixels;
                v.chunks_exact(pixels).skip(c).step_by(planes).flatten().for_each(|&v| s.add(v, 1.0));
                s
            };
            close(&db, &(0..out_c).map(|o| channel_sum(&dy, o, g.out_pixels())).collect::<Vec<_>>(), "conv db", &g);
            let sums: Vec<Sum> = (0..in_c).map(|c| channel_sum(&x, c, g.in_h * g.in_w)).collect();
            close(&db_t, &sums, "transposed db", &g);
        }
    }
}
