//! 2-D convolutions, NCHW, with PyTorch's weight layouts: `Conv2d` weights
//! are [out, in, kh, kw], `ConvTranspose2d` weights [in, out, kh, kw].
//! Layers with 16 channels or more on both sides go through the implicit
//! products of `implicit.rs` (AVX-512); the others, and every layer without
//! AVX-512, through im2col and the matrix products of `matmul.rs`, one product for
//! a few images at a time (patches and channels laid out channel-major),
//! lanes of images in parallel. A transposed convolution is the adjoint of
//! the convolution that maps its output shape back to its input shape, with the same weight
//! tensor, so the two share every piece: its forward pass is that
//! convolution's input gradient, and its input gradient that convolution's
//! forward pass.

use rayon::prelude::*;

use super::implicit;
use super::lanes::{backward_lanes, channel_sums, lane_images};
use super::matmul::{Form, matmul_serial};
use crate::model::{Activation, ConvGeom};

/// A lane works through its images a few at a time, so that the patch matrix
/// (at most this many floats, 1 MiB, one core's L2 cache here) stays near.
const PATCH_FLOATS: usize = 1 << 18;

/// cols (C·k·k, B·Ho·Wo) = the patches of images x (B, C, H, W), zero
/// outside: image b's patches are columns b·Ho·Wo.., so one product covers
/// the images. Each plane is first copied into a zero-bordered one, so that
/// every patch row is a plain strided read: with the bounds handled per row
/// segment (7 to 28 values here), tiny fills and copies were most of the time.
pub fn im2col(cols: &mut [f32], x: &[f32], g: &ConvGeom, rows: usize) {
    let (k, pixels, s) = (g.kernel, g.out_pixels(), g.stride);
    let stride = rows * pixels;
    let (ph, pw) = padded_sides(g);
    with_padded(ph * pw, |padded| {
        crate::fastmath::widest(
            #[inline(always)]
            || {
                for (b, x) in x.chunks_exact(g.in_len()).take(rows).enumerate() {
                    for (c, plane) in x.chunks_exact(g.in_h * g.in_w).enumerate() {
                        // The border stays zero: only the interior is written.
                        for (y, line) in plane.chunks_exact(g.in_w).enumerate() {
                            padded[(y + g.padding) * pw + g.padding..][..g.in_w].copy_from_slice(line);
                        }
                        for ki in 0..k {
                            for kj in 0..k {
                                let row = &mut cols[((c * k + ki) * k + kj) * stride + b * pixels..][..pixels];
                                for (oy, out) in row.chunks_exact_mut(g.out_w).enumerate() {
                                    let line = &padded[(oy * s + ki) * pw + kj..][..g.out_w * s];
                                    match s {
                                        1 => gather::<1>(out, line),
                                        2 => gather::<2>(out, line),
                                        _ => gather_strided(out, line, s),
                                    }
                                }
                            }
                        }
                    }
                }
            },
        )
    })
}

/// out[i] = line[i·S]: a constant stride, so that the loop has no bounds
/// checks and vectorizes.
#[inline(always)]
fn gather<const S: usize>(out: &mut [f32], line: &[f32]) {
    for (o, pixel) in out.iter_mut().zip(line.chunks_exact(S)) {
        *o = pixel[0];
    }
}

#[inline(always)]
fn gather_strided(out: &mut [f32], line: &[f32], s: usize) {
    for (o, pixel) in out.iter_mut().zip(line.chunks_exact(s)) {
        *o = pixel[0];
    }
}

/// line[i·S] += patch[i].
#[inline(always)]
fn scatter_add<const S: usize>(line: &mut [f32], patch: &[f32]) {
    for (pixel, &p) in line.chunks_exact_mut(S).zip(patch) {
        pixel[0] += p;
    }
}

#[inline(always)]
fn scatter_add_strided(line: &mut [f32], patch: &[f32], s: usize) {
    for (pixel, &p) in line.chunks_exact_mut(s).zip(patch) {
        pixel[0] += p;
    }
}

/// The sides of a plane with its zero border: every patch of the
/// convolution lies inside, (Ho-1)·stride + k <= H + 2·padding.
fn padded_sides(g: &ConvGeom) -> (usize, usize) {
    let side = |out: usize, len: usize| ((out - 1) * g.stride + g.kernel).max(len + g.padding);
    // stride - 1 more columns: a row's last patch reads out_w·stride values
    // from its start (`gather`), the last stride - 1 of them unused.
    (side(g.out_h, g.in_h), side(g.out_w, g.in_w) + g.stride - 1)
}

/// Runs `f` with this thread's zeroed plane of `len` floats, kept from call
/// to call (zeroed again each call: its size follows the geometry).
fn with_padded<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    thread_local! {
        static PADDED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    PADDED.with(|padded| {
        let mut padded = padded.borrow_mut();
        if padded.len() < len {
            padded.resize(len, 0.0);
        }
        let padded = &mut padded[..len];
        padded.fill(0.0);
        f(padded)
    })
}

/// dx (B, C, H, W) = the patches cols (C·k·k, B·Ho·Wo) summed back where
/// they came from, into a zero-bordered plane whose interior is then copied
/// out. Each pixel adds its patch entries in (ki, kj) order, as a loop
/// bounded at the image's edge does.
pub fn col2im(dx: &mut [f32], cols: &[f32], g: &ConvGeom, rows: usize) {
    let (k, pixels, s) = (g.kernel, g.out_pixels(), g.stride);
    let stride = rows * pixels;
    let (ph, pw) = padded_sides(g);
    with_padded(ph * pw, |padded| {
        crate::fastmath::widest(
            #[inline(always)]
            || {
                for (b, dx) in dx.chunks_exact_mut(g.in_len()).take(rows).enumerate() {
                    for (c, plane) in dx.chunks_exact_mut(g.in_h * g.in_w).enumerate() {
                        padded.fill(0.0);
                        for ki in 0..k {
                            for kj in 0..k {
                                let row = &cols[((c * k + ki) * k + kj) * stride + b * pixels..][..pixels];
                                for (oy, patch) in row.chunks_exact(g.out_w).enumerate() {
                                    let line = &mut padded[(oy * s + ki) * pw + kj..][..g.out_w * s];
                                    match s {
                                        1 => scatter_add::<1>(line, patch),
                                        2 => scatter_add::<2>(line, patch),
                                        _ => scatter_add_strided(line, patch, s),
                                    }
                                }
                            }
                        }
                        for (y, line) in plane.chunks_exact_mut(g.in_w).enumerate() {
                            line.copy_from_slice(&padded[(y + g.padding) * pw + g.padding..][..g.in_w]);
                        }
                    }
                }
            },
        )
    })
}

/// dst (C, B·P) from src (B, C, P): channels first, for one product over the images.
fn channels_first(dst: &mut [f32], src: &[f32], channels: usize, pixels: usize, rows: usize) {
    for (b, image) in src.chunks_exact(channels * pixels).take(rows).enumerate() {
        for (c, plane) in image.chunks_exact(pixels).enumerate() {
            dst[c * rows * pixels + b * pixels..][..pixels].copy_from_slice(plane);
        }
    }
}

/// dst (B, C, P) from src (C, B·P).
fn rows_first(dst: &mut [f32], src: &[f32], channels: usize, pixels: usize, rows: usize) {
    for (b, image) in dst.chunks_exact_mut(channels * pixels).take(rows).enumerate() {
        for (c, plane) in image.chunks_exact_mut(pixels).enumerate() {
            plane.copy_from_slice(&src[c * rows * pixels + b * pixels..][..pixels]);
        }
    }
}

/// dst (B, C, P) = src (C, B·P) + b[c]: `rows_first` and the bias in one pass.
fn rows_first_with_bias(dst: &mut [f32], src: &[f32], bias: &[f32], channels: usize, pixels: usize, rows: usize) {
    crate::fastmath::widest(
        #[inline(always)]
        || {
            for (b, image) in dst.chunks_exact_mut(channels * pixels).take(rows).enumerate() {
                for (c, (plane, &bias)) in image.chunks_exact_mut(pixels).zip(bias).enumerate() {
                    for (d, &v) in plane.iter_mut().zip(&src[c * rows * pixels + b * pixels..][..pixels]) {
                        *d = v + bias;
                    }
                }
            }
        },
    )
}

/// Images per product within a lane: as many as keep the patch matrix
/// small, or one where an image's pixels make a wide enough product: its
/// images then need no reordering between channel-major layouts.
fn chunk_images(g: &ConvGeom, lane: usize) -> usize {
    if g.out_pixels() >= ONE_IMAGE_PIXELS {
        return 1;
    }
    (PATCH_FLOATS / (g.patch() * g.out_pixels())).clamp(1, lane)
}

/// Output pixels from which a product takes one image at a time (16 blocks
/// of the kernels' 32 columns).
const ONE_IMAGE_PIXELS: usize = 512;

/// src (B, C, P) as (C, B·P): src itself for one image, else reordered into `dst`.
fn channel_major<'a>(dst: &'a mut [f32], src: &'a [f32], channels: usize, pixels: usize, rows: usize) -> &'a [f32] {
    if rows == 1 {
        return &src[..channels * pixels];
    }
    channels_first(dst, src, channels, pixels, rows);
    dst
}

/// Runs `f(cols, chans)` with this thread's scratch: a patch matrix for
/// `chunk` images and a channel-major out-space buffer as long. Reused from
/// call to call (every use writes before it reads), so a step neither zeroes
/// nor maps fresh pages for them.
fn with_scratch<R>(g: &ConvGeom, chunk: usize, f: impl FnOnce(&mut [f32], &mut [f32]) -> R) -> R {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let (cols, chans) = (g.patch() * chunk * g.out_pixels(), g.out_c * chunk * g.out_pixels());
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        if scratch.len() < cols + chans {
            scratch.resize(cols + chans, 0.0);
        }
        let (a, b) = scratch[..cols + chans].split_at_mut(cols);
        f(a, b)
    })
}

/// y (B, O·Ho·Wo) = conv(x (B, C·H·W), w [O, C, k, k]) + b (O).
pub fn conv2d_forward(y: &mut [f32], x: &[f32], w: &[f32], b: &[f32], g: &ConvGeom, rows: usize) {
    conv2d_forward_act(y, x, w, b, g, rows, Activation::Identity)
}

/// y = act(conv(x) + b): the activation applied while a chunk's output is
/// still in cache, the same values as a pass over the whole batch after.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_forward_act(y: &mut [f32], x: &[f32], w: &[f32], b: &[f32], g: &ConvGeom, rows: usize, act: Activation) {
    if implicit::suits(g) {
        return implicit::forward(y, x, w, b, g, rows, act, false);
    }
    let lane = lane_images(rows);
    let chunk = chunk_images(g, lane);
    let (x, y) = (&x[..rows * g.in_len()], &mut y[..rows * g.out_len()]);
    y.par_chunks_mut(lane * g.out_len()).zip(x.par_chunks(lane * g.in_len())).for_each(|(y, x)| {
        with_scratch(g, chunk, |cols, yc| {
            for (y, x) in y.chunks_mut(chunk * g.out_len()).zip(x.chunks(chunk * g.in_len())) {
                let images = x.len() / g.in_len();
                let n = images * g.out_pixels();
                let (cols, yc) = (&mut cols[..g.patch() * n], &mut yc[..g.out_c * n]);
                im2col(cols, x, g, images);
                if images == 1 {
                    matmul_serial(Form::Nn, y, w, cols, g.out_c, g.patch(), n, false);
                    add_channel_bias(y, b, n);
                } else {
                    matmul_serial(Form::Nn, yc, w, cols, g.out_c, g.patch(), n, false);
                    rows_first_with_bias(y, yc, b, g.out_c, g.out_pixels(), images);
                }
                activate(y, act);
            }
        });
    });
}

/// dw += dy·colsᵀ, db += Σ dy per channel, and dx = col2im(wᵀ·dy) when asked,
/// for dy (B, O·Ho·Wo) and x (B, C·H·W).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward(
    dx: Option<&mut [f32]>,
    dw: &mut [f32],
    db: &mut [f32],
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    g: &ConvGeom,
    rows: usize,
) {
    if implicit::suits(g) {
        return implicit::backward(dx, dw, db, dy, x, w, g, rows, false);
    }
    let chunk = chunk_images(g, lane_images(rows));
    backward_lanes(dx, g.in_len(), dw, db, rows, |mut dx, dw, db, first, images| {
        with_scratch(g, chunk, |cols, dyc| {
            for start in (0..images).step_by(chunk) {
                let count = chunk.min(images - start);
                let (image, n) = (first + start, count * g.out_pixels());
                let (cols, dyc) = (&mut cols[..g.patch() * n], &mut dyc[..g.out_c * n]);
                im2col(cols, &x[image * g.in_len()..], g, count);
                let dyc = channel_major(dyc, &dy[image * g.out_len()..], g.out_c, g.out_pixels(), count);
                weight_gradient(dw, dyc, cols, g.out_c, n, g.patch());
                channel_sums(db, dyc, n);
                if let Some(dx) = dx.as_deref_mut() {
                    matmul_serial(Form::Tn, cols, w, dyc, g.patch(), g.out_c, n, false);
                    col2im(&mut dx[start * g.in_len()..], cols, g, count);
                }
            }
        });
    });
}

/// y (B, O·H'·W') = ConvTranspose2d(x (B, C·H·W), w [C, O, k, k]) + b (O),
/// where `g` is the adjoint convolution from (O, H', W') to (C, H, W).
pub fn conv_transpose2d_forward(y: &mut [f32], x: &[f32], w: &[f32], b: &[f32], g: &ConvGeom, rows: usize) {
    conv_transpose2d_forward_act(y, x, w, b, g, rows, Activation::Identity)
}

/// y = act(ConvTranspose2d(x) + b), activated chunk by chunk as `conv2d_forward_act`.
#[allow(clippy::too_many_arguments)]
pub fn conv_transpose2d_forward_act(
    y: &mut [f32],
    x: &[f32],
    w: &[f32],
    b: &[f32],
    g: &ConvGeom,
    rows: usize,
    act: Activation,
) {
    if implicit::suits(g) {
        return implicit::forward(y, x, w, b, g, rows, act, true);
    }
    let lane = lane_images(rows);
    let chunk = chunk_images(g, lane);
    let (x, y) = (&x[..rows * g.out_len()], &mut y[..rows * g.in_len()]);
    y.par_chunks_mut(lane * g.in_len()).zip(x.par_chunks(lane * g.out_len())).for_each(|(y, x)| {
        with_scratch(g, chunk, |cols, xc| {
            for (y, x) in y.chunks_mut(chunk * g.in_len()).zip(x.chunks(chunk * g.out_len())) {
                let images = x.len() / g.out_len();
                let n = images * g.out_pixels();
                let (xc, cols) = (&mut xc[..g.out_c * n], &mut cols[..g.patch() * n]);
                let xc = channel_major(xc, x, g.out_c, g.out_pixels(), images);
                matmul_serial(Form::Tn, cols, w, xc, g.patch(), g.out_c, n, false);
                col2im(y, cols, g, images);
                for y in y.chunks_exact_mut(g.in_len()) {
                    add_channel_bias(y, b, g.in_h * g.in_w);
                }
                activate(y, act);
            }
        });
    });
}

/// The transposed convolution's gradients: dw += x·cols(dy)ᵀ, db += Σ dy per
/// channel, dx = conv(dy) when asked.
#[allow(clippy::too_many_arguments)]
pub fn conv_transpose2d_backward(
    dx: Option<&mut [f32]>,
    dw: &mut [f32],
    db: &mut [f32],
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    g: &ConvGeom,
    rows: usize,
) {
    if implicit::suits(g) {
        return implicit::backward(dx, dw, db, dy, x, w, g, rows, true);
    }
    let chunk = chunk_images(g, lane_images(rows));
    backward_lanes(dx, g.out_len(), dw, db, rows, |mut dx, dw, db, first, images| {
        with_scratch(g, chunk, |cols, xc| {
            for start in (0..images).step_by(chunk) {
                let count = chunk.min(images - start);
                let (image, n) = (first + start, count * g.out_pixels());
                let (cols, xc) = (&mut cols[..g.patch() * n], &mut xc[..g.out_c * n]);
                im2col(cols, &dy[image * g.in_len()..], g, count);
                let (xc, x) = (&mut xc[..], &x[image * g.out_len()..]);
                weight_gradient(dw, channel_major(xc, x, g.out_c, g.out_pixels(), count), cols, g.out_c, n, g.patch());
                for dy in dy[image * g.in_len()..].chunks_exact(g.in_len()).take(count) {
                    channel_sums(db, dy, g.in_h * g.in_w);
                }
                if let Some(dx) = dx.as_deref_mut() {
                    let dx = &mut dx[start * g.out_len()..];
                    if count == 1 {
                        matmul_serial(Form::Nn, &mut dx[..g.out_len()], w, cols, g.out_c, g.patch(), n, false);
                    } else {
                        matmul_serial(Form::Nn, xc, w, cols, g.out_c, g.patch(), n, false);
                        rows_first(dx, xc, g.out_c, g.out_pixels(), count);
                    }
                }
            }
        });
    });
}

/// dw (O, P) += dy (O, N) · cols (P, N)ᵀ, computed as its transpose
/// cols · dyᵀ and added in: the product kernels then pack dy (O·N) and read
/// the patch matrix where it lies, where dy·colsᵀ packed the patch matrix
/// (P·N, 4-9x larger) through a transposing copy. Each sum is the same
/// chain of multiply-adds either way, added to dw once.
fn weight_gradient(dw: &mut [f32], dy: &[f32], cols: &[f32], o: usize, n: usize, p: usize) {
    thread_local! {
        static TRANSPOSED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    TRANSPOSED.with(|t| {
        let mut t = t.borrow_mut();
        t.resize(p * o, 0.0);
        matmul_serial(Form::Nt, &mut t, cols, dy, p, n, o, false);
        for (i, row) in dw.chunks_exact_mut(p).enumerate() {
            row.iter_mut().zip(t.iter().skip(i).step_by(o)).for_each(|(d, v)| *d += v);
        }
    })
}

/// y = act(y), compiled for the widest vectors (no call for the identity).
fn activate(y: &mut [f32], act: Activation) {
    if act != Activation::Identity {
        crate::fastmath::widest(
            #[inline(always)]
            || crate::ops::activate_slice(y, act),
        )
    }
}

/// y (C, P) += b[c] on every pixel of channel c.
fn add_channel_bias(y: &mut [f32], b: &[f32], pixels: usize) {
    for (plane, &b) in y.chunks_exact_mut(pixels).zip(b) {
        plane.iter_mut().for_each(|v| *v += b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_sizes_follow_pytorch() {
        // Conv2d(1, 32, 3, stride 2, padding 1) on 28x28: 14x14.
        let g = ConvGeom::conv(1, 28, 28, 32, 3, 2, 1).unwrap();
        assert_eq!((g.out_h, g.out_w), (14, 14));
        // ConvTranspose2d(64, 64, 3, stride 2, padding 1, output_padding 1) on 7x7: 14x14.
        let t = ConvGeom::transposed(64, 7, 7, 64, 3, 2, 1, 1).unwrap();
        assert_eq!((t.in_h, t.in_w, t.out_h, t.out_w), (14, 14, 7, 7));
        // A kernel larger than the padded image has no output.
        assert!(ConvGeom::conv(1, 2, 2, 1, 5, 1, 0).is_none());
    }

    fn data(len: usize, salt: u32) -> Vec<f32> {
        (0..len as u32).map(|i| crate::rng::uniform(salt, crate::rng::Stream::Init, 0, i) - 0.5).collect()
    }

    fn close(got: &[f32], want: &[f32], what: &str) {
        for (i, (a, b)) in got.iter().zip(want).enumerate() {
            assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{what} [{i}]: {a} vs {b}");
        }
    }

    /// 37 images take several lanes of several products each (the patch
    /// matrices of these shapes hold 2 images): the batch must give what its
    /// images give one at a time, gradients summed. fp32 sums in another
    /// order differ in the last bits: 1e-4 relative.
    #[test]
    fn a_batch_is_its_images_one_at_a_time() {
        let rows = 37;
        let conv = ConvGeom::conv(3, 60, 60, 5, 3, 1, 1).unwrap();
        let transposed = ConvGeom::transposed(6, 40, 40, 8, 3, 2, 1, 1).unwrap();
        for (g, is_conv) in [(conv, true), (transposed, false)] {
            assert!(chunk_images(&g, lane_images(rows)) < lane_images(rows));
            let (x_len, y_len) = if is_conv { (g.in_len(), g.out_len()) } else { (g.out_len(), g.in_len()) };
            let (x, w, b, dy) =
                (data(rows * x_len, 1), data(g.out_c * g.patch(), 2), data(8, 3), data(rows * y_len, 4));
            let b = if is_conv { &b[..g.out_c] } else { &b[..g.in_c] };
            let run = |rows: usize, x: &[f32], dy: &[f32]| {
                let (mut y, mut dx, mut dw, mut db) =
                    (vec![0.0; rows * y_len], vec![0.0; rows * x_len], vec![0.0; w.len()], vec![0.0; b.len()]);
                if is_conv {
                    conv2d_forward(&mut y, x, &w, b, &g, rows);
                    conv2d_backward(Some(&mut dx), &mut dw, &mut db, dy, x, &w, &g, rows);
                } else {
                    conv_transpose2d_forward(&mut y, x, &w, b, &g, rows);
                    conv_transpose2d_backward(Some(&mut dx), &mut dw, &mut db, dy, x, &w, &g, rows);
                }
                (y, dx, dw, db)
            };
            let (y, dx, dw, db) = run(rows, &x, &dy);
            let (mut want_dw, mut want_db) = (vec![0.0; dw.len()], vec![0.0; db.len()]);
            for i in 0..rows {
                let (yi, dxi, dwi, dbi) = run(1, &x[i * x_len..][..x_len], &dy[i * y_len..][..y_len]);
                close(&y[i * y_len..][..y_len], &yi, "y");
                close(&dx[i * x_len..][..x_len], &dxi, "dx");
                want_dw.iter_mut().zip(dwi).for_each(|(s, d)| *s += d);
                want_db.iter_mut().zip(dbi).for_each(|(s, d)| *s += d);
            }
            close(&dw, &want_dw, "dw");
            close(&db, &want_db, "db");
        }
    }

    /// The zero-bordered im2col and col2im against loops over `source` on
    /// awkward shapes (1, 3, 7 channels; odd sides; strides 1-3; padding 0
    /// and 1; a 1x1 and a 5x5 kernel; batch 1 and 2). Both are exact: one
    /// copies, the other adds each pixel's entries in (ki, kj) order as the
    /// reference does.
    #[test]
    fn im2col_and_col2im_match_the_pixel_loops() {
        let shapes = [
            (1, 7, 5, 3, 1, 1, 1),
            (3, 9, 11, 3, 2, 1, 2),
            (7, 5, 5, 3, 2, 0, 1),
            (3, 8, 7, 1, 1, 0, 2),
            (1, 13, 9, 5, 3, 1, 1),
            (7, 14, 14, 3, 2, 1, 2),
        ];
        for (c, h, w, k, stride, padding, rows) in shapes {
            let g = ConvGeom::conv(c, h, w, 4, k, stride, padding).unwrap();
            let x = data(rows * g.in_len(), 5);
            let n = rows * g.out_pixels();
            let mut cols = vec![f32::NAN; g.patch() * n];
            im2col(&mut cols, &x, &g, rows);
            let cols_in = data(cols.len(), 6);
            let mut dx = vec![f32::NAN; rows * g.in_len()];
            col2im(&mut dx, &cols_in, &g, rows);
            let mut want_dx = vec![0.0f32; dx.len()];
            for b in 0..rows {
                for ci in 0..c {
                    for ki in 0..k {
                        for kj in 0..k {
                            let r = (ci * k + ki) * k + kj;
                            for oy in 0..g.out_h {
                                for ox in 0..g.out_w {
                                    let col = r * n + b * g.out_pixels() + oy * g.out_w + ox;
                                    let at =
                                        g.source(ki, kj, oy, ox).map(|(y, x)| b * g.in_len() + (ci * h + y) * w + x);
                                    assert_eq!(cols[col], at.map_or(0.0, |i| x[i]), "cols {r} {oy} {ox} of {g:?}");
                                    if let Some(i) = at {
                                        want_dx[i] += cols_in[col];
                                    }
                                }
                            }
                        }
                    }
                }
            }
            assert_eq!(dx, want_dx, "col2im of {g:?}");
        }
    }

    /// The activation applied per chunk is the whole-batch pass's, bit for bit.
    #[test]
    fn a_fused_activation_is_the_separate_pass() {
        let rows = 5;
        let g = ConvGeom::conv(3, 9, 9, 4, 3, 2, 1).unwrap();
        let (w, b) = (data(g.out_c * g.patch(), 2), data(g.in_c.max(g.out_c), 3));
        for act in [Activation::Relu, Activation::Tanh, Activation::Gelu] {
            let x = data(rows * g.in_len(), 1);
            let (mut fused, mut plain) = (vec![0.0; rows * g.out_len()], vec![0.0; rows * g.out_len()]);
            conv2d_forward_act(&mut fused, &x, &w, &b[..g.out_c], &g, rows, act);
            conv2d_forward(&mut plain, &x, &w, &b[..g.out_c], &g, rows);
            crate::ops::activate_slice(&mut plain, act);
            assert_eq!(fused, plain);
            let x = data(rows * g.out_len(), 1);
            let (mut fused, mut plain) = (vec![0.0; rows * g.in_len()], vec![0.0; rows * g.in_len()]);
            conv_transpose2d_forward_act(&mut fused, &x, &w, &b[..g.in_c], &g, rows, act);
            conv_transpose2d_forward(&mut plain, &x, &w, &b[..g.in_c], &g, rows);
            crate::ops::activate_slice(&mut plain, act);
            assert_eq!(fused, plain);
        }
    }

    #[test]
    fn a_one_by_one_convolution_is_a_per_pixel_product() {
        let g = ConvGeom::conv(2, 2, 3, 3, 1, 1, 0).unwrap();
        let x: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let w = [1.0, 0.0, 0.0, 1.0, 1.0, -1.0];
        let b = [0.5, 0.0, 0.0];
        let mut y = vec![0.0; 18];
        conv2d_forward(&mut y, &x, &w, &b, &g, 1);
        let want: Vec<f32> =
            (0..6).map(|p| x[p] + 0.5).chain((0..6).map(|p| x[6 + p])).chain((0..6).map(|p| x[p] - x[6 + p])).collect();
        assert_eq!(y, want);
    }
}
