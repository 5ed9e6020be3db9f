//! 2-D convolutions, NCHW, with PyTorch's weight layouts: `Conv2d` weights
//! are [out, in, kh, kw], `ConvTranspose2d` weights [in, out, kh, kw]. Both
//! go through im2col and the matrix products of `matmul.rs`, one product for
//! the whole batch (patches and channels laid out channel-major). A transposed convolution is the adjoint of the convolution that
//! maps its output shape back to its input shape, with the same weight
//! tensor, so the two share every piece: its forward pass is that
//! convolution's input gradient, and its input gradient that convolution's
//! forward pass.

use super::matmul::{matmul_nn, matmul_nt, matmul_tn};
use crate::model::ConvGeom;

/// cols (C·k·k, B·Ho·Wo) = the patches of images x (B, C, H, W), zero
/// outside: image b's patches are columns b·Ho·Wo.., so one product covers
/// the batch.
pub fn im2col(cols: &mut [f32], x: &[f32], g: &ConvGeom, rows: usize) {
    let (k, pixels) = (g.kernel, g.out_pixels());
    let stride = rows * pixels;
    for (b, x) in x.chunks_exact(g.in_len()).take(rows).enumerate() {
        for c in 0..g.in_c {
            let plane = &x[c * g.in_h * g.in_w..][..g.in_h * g.in_w];
            for ki in 0..k {
                for kj in 0..k {
                    let row = &mut cols[((c * k + ki) * k + kj) * stride + b * pixels..][..pixels];
                    for oy in 0..g.out_h {
                        for ox in 0..g.out_w {
                            row[oy * g.out_w + ox] = match g.source(ki, kj, oy, ox) {
                                Some((y, x)) => plane[y * g.in_w + x],
                                None => 0.0,
                            };
                        }
                    }
                }
            }
        }
    }
}

/// dx (B, C, H, W) = the patches cols (C·k·k, B·Ho·Wo) summed back where they came from.
pub fn col2im(dx: &mut [f32], cols: &[f32], g: &ConvGeom, rows: usize) {
    let (k, pixels) = (g.kernel, g.out_pixels());
    let stride = rows * pixels;
    for (b, dx) in dx.chunks_exact_mut(g.in_len()).take(rows).enumerate() {
        dx.fill(0.0);
        for c in 0..g.in_c {
            let plane = &mut dx[c * g.in_h * g.in_w..][..g.in_h * g.in_w];
            for ki in 0..k {
                for kj in 0..k {
                    let row = &cols[((c * k + ki) * k + kj) * stride + b * pixels..][..pixels];
                    for oy in 0..g.out_h {
                        for ox in 0..g.out_w {
                            if let Some((y, x)) = g.source(ki, kj, oy, ox) {
                                plane[y * g.in_w + x] += row[oy * g.out_w + ox];
                            }
                        }
                    }
                }
            }
        }
    }
}

/// dst (C, B·P) from src (B, C, P): channels first, for one product over the batch.
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

/// y (B, O·Ho·Wo) = conv(x (B, C·H·W), w [O, C, k, k]) + b (O).
pub fn conv2d_forward(y: &mut [f32], x: &[f32], w: &[f32], b: &[f32], g: &ConvGeom, rows: usize) {
    let n = rows * g.out_pixels();
    let mut cols = vec![0.0; g.patch() * n];
    im2col(&mut cols, x, g, rows);
    let mut yc = vec![0.0; g.out_c * n];
    matmul_nn(&mut yc, w, &cols, g.out_c, g.patch(), n, false);
    rows_first(y, &yc, g.out_c, g.out_pixels(), rows);
    for y in y.chunks_exact_mut(g.out_len()).take(rows) {
        add_channel_bias(y, b, g.out_pixels());
    }
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
    let n = rows * g.out_pixels();
    let mut cols = vec![0.0; g.patch() * n];
    im2col(&mut cols, x, g, rows);
    let mut dyc = vec![0.0; g.out_c * n];
    channels_first(&mut dyc, dy, g.out_c, g.out_pixels(), rows);
    matmul_nt(dw, &dyc, &cols, g.out_c, n, g.patch(), true);
    channel_sums(db, &dyc, n);
    if let Some(dx) = dx {
        matmul_tn(&mut cols, w, &dyc, g.patch(), g.out_c, n, false);
        col2im(dx, &cols, g, rows);
    }
}

/// y (B, O·H'·W') = ConvTranspose2d(x (B, C·H·W), w [C, O, k, k]) + b (O),
/// where `g` is the adjoint convolution from (O, H', W') to (C, H, W).
pub fn conv_transpose2d_forward(y: &mut [f32], x: &[f32], w: &[f32], b: &[f32], g: &ConvGeom, rows: usize) {
    let n = rows * g.out_pixels();
    let mut xc = vec![0.0; g.out_c * n];
    channels_first(&mut xc, x, g.out_c, g.out_pixels(), rows);
    let mut cols = vec![0.0; g.patch() * n];
    matmul_tn(&mut cols, w, &xc, g.patch(), g.out_c, n, false);
    col2im(y, &cols, g, rows);
    for y in y.chunks_exact_mut(g.in_len()).take(rows) {
        add_channel_bias(y, b, g.in_h * g.in_w);
    }
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
    let n = rows * g.out_pixels();
    let mut cols = vec![0.0; g.patch() * n];
    im2col(&mut cols, dy, g, rows);
    let mut xc = vec![0.0; g.out_c * n];
    channels_first(&mut xc, x, g.out_c, g.out_pixels(), rows);
    matmul_nt(dw, &xc, &cols, g.out_c, n, g.patch(), true);
    for dy in dy.chunks_exact(g.in_len()).take(rows) {
        channel_sums(db, dy, g.in_h * g.in_w);
    }
    if let Some(dx) = dx {
        matmul_nn(&mut xc, w, &cols, g.out_c, g.patch(), n, false);
        rows_first(dx, &xc, g.out_c, g.out_pixels(), rows);
    }
}

/// y (C, P) += b[c] on every pixel of channel c.
fn add_channel_bias(y: &mut [f32], b: &[f32], pixels: usize) {
    for (plane, &b) in y.chunks_exact_mut(pixels).zip(b) {
        plane.iter_mut().for_each(|v| *v += b);
    }
}

/// db (C) += the sums of each channel's plane of dy (C, P).
fn channel_sums(db: &mut [f32], dy: &[f32], pixels: usize) {
    for (d, plane) in db.iter_mut().zip(dy.chunks_exact(pixels)) {
        *d += plane.iter().sum::<f32>();
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
