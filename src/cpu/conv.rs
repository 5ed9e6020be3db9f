//! 2-D convolutions, NCHW, with PyTorch's weight layouts: `Conv2d` weights
//! are [out, in, kh, kw], `ConvTranspose2d` weights [in, out, kh, kw]. Both
//! go through im2col and the matrix products of `matmul.rs`, one image at a
//! time. A transposed convolution is the adjoint of the convolution that
//! maps its output shape back to its input shape, with the same weight
//! tensor, so the two share every piece: its forward pass is that
//! convolution's input gradient, and its input gradient that convolution's
//! forward pass.

use super::matmul::{matmul_nn, matmul_nt, matmul_tn};

/// A convolution from `in_c x in_h x in_w` to `out_c x out_h x out_w` with a
/// square kernel; for a transposed convolution, the convolution it is the
/// adjoint of (so `in_*` is the transposed one's output).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConvGeom {
    pub in_c: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub out_c: usize,
    pub out_h: usize,
    pub out_w: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl ConvGeom {
    /// The convolution of `in_c x in_h x in_w` images, or `None` when the
    /// kernel does not fit the padded image.
    pub fn conv(
        in_c: usize,
        in_h: usize,
        in_w: usize,
        out_c: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Option<ConvGeom> {
        let side = |n: usize| (n + 2 * padding).checked_sub(kernel).map(|d| d / stride + 1);
        Some(ConvGeom { in_c, in_h, in_w, out_c, out_h: side(in_h)?, out_w: side(in_w)?, kernel, stride, padding })
    }

    /// The convolution whose adjoint is `ConvTranspose2d(in_c, out_c, kernel,
    /// stride, padding, output_padding)` on `in_c x in_h x in_w` images.
    #[allow(clippy::too_many_arguments)]
    pub fn transposed(
        in_c: usize,
        in_h: usize,
        in_w: usize,
        out_c: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        output_padding: usize,
    ) -> Option<ConvGeom> {
        let side = |n: usize| (n.checked_sub(1)? * stride + kernel + output_padding).checked_sub(2 * padding);
        let (h, w) = (side(in_h)?, side(in_w)?);
        // The convolution from the transposed one's output maps h back to in_h.
        let g = ConvGeom::conv(out_c, h, w, in_c, kernel, stride, padding)?;
        (g.out_h == in_h && g.out_w == in_w && output_padding < stride.max(1)).then_some(g)
    }

    fn patch(&self) -> usize {
        self.in_c * self.kernel * self.kernel
    }

    fn out_pixels(&self) -> usize {
        self.out_h * self.out_w
    }

    pub fn in_len(&self) -> usize {
        self.in_c * self.in_h * self.in_w
    }

    pub fn out_len(&self) -> usize {
        self.out_c * self.out_pixels()
    }

    /// The image position a patch entry reads for output pixel (oy, ox), if inside.
    #[inline]
    fn source(&self, ki: usize, kj: usize, oy: usize, ox: usize) -> Option<(usize, usize)> {
        let y = (oy * self.stride + ki).checked_sub(self.padding)?;
        let x = (ox * self.stride + kj).checked_sub(self.padding)?;
        (y < self.in_h && x < self.in_w).then_some((y, x))
    }
}

/// cols (C·k·k, Ho·Wo) = the patches of one image x (C, H, W), zero outside.
pub fn im2col(cols: &mut [f32], x: &[f32], g: &ConvGeom) {
    let k = g.kernel;
    for c in 0..g.in_c {
        for ki in 0..k {
            for kj in 0..k {
                let row = &mut cols[((c * k + ki) * k + kj) * g.out_pixels()..][..g.out_pixels()];
                for oy in 0..g.out_h {
                    for ox in 0..g.out_w {
                        row[oy * g.out_w + ox] = match g.source(ki, kj, oy, ox) {
                            Some((y, x_)) => x[(c * g.in_h + y) * g.in_w + x_],
                            None => 0.0,
                        };
                    }
                }
            }
        }
    }
}

/// dx (C, H, W) += the patches cols (C·k·k, Ho·Wo) summed back where they came from.
pub fn col2im(dx: &mut [f32], cols: &[f32], g: &ConvGeom) {
    let k = g.kernel;
    for c in 0..g.in_c {
        for ki in 0..k {
            for kj in 0..k {
                let row = &cols[((c * k + ki) * k + kj) * g.out_pixels()..][..g.out_pixels()];
                for oy in 0..g.out_h {
                    for ox in 0..g.out_w {
                        if let Some((y, x)) = g.source(ki, kj, oy, ox) {
                            dx[(c * g.in_h + y) * g.in_w + x] += row[oy * g.out_w + ox];
                        }
                    }
                }
            }
        }
    }
}

/// y (B, O·Ho·Wo) = conv(x (B, C·H·W), w [O, C, k, k]) + b (O).
pub fn conv2d_forward(y: &mut [f32], x: &[f32], w: &[f32], b: &[f32], g: &ConvGeom, rows: usize) {
    let mut cols = vec![0.0; g.patch() * g.out_pixels()];
    for (y, x) in y.chunks_exact_mut(g.out_len()).zip(x.chunks_exact(g.in_len())).take(rows) {
        im2col(&mut cols, x, g);
        matmul_nn(y, w, &cols, g.out_c, g.patch(), g.out_pixels(), false);
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
    let mut cols = vec![0.0; g.patch() * g.out_pixels()];
    for (dy, x) in dy.chunks_exact(g.out_len()).zip(x.chunks_exact(g.in_len())).take(rows) {
        im2col(&mut cols, x, g);
        matmul_nt(dw, dy, &cols, g.out_c, g.out_pixels(), g.patch(), true);
        channel_sums(db, dy, g.out_pixels());
    }
    if let Some(dx) = dx {
        conv2d_input_grad(dx, dy, w, g, rows);
    }
}

/// dx (B, C·H·W) = the input gradient of the convolution for dy (B, O·Ho·Wo).
fn conv2d_input_grad(dx: &mut [f32], dy: &[f32], w: &[f32], g: &ConvGeom, rows: usize) {
    let mut cols = vec![0.0; g.patch() * g.out_pixels()];
    for (dx, dy) in dx.chunks_exact_mut(g.in_len()).zip(dy.chunks_exact(g.out_len())).take(rows) {
        matmul_tn(&mut cols, w, dy, g.patch(), g.out_c, g.out_pixels(), false);
        dx.fill(0.0);
        col2im(dx, &cols, g);
    }
}

/// y (B, O·H'·W') = ConvTranspose2d(x (B, C·H·W), w [C, O, k, k]) + b (O),
/// where `g` is the adjoint convolution from (O, H', W') to (C, H, W).
pub fn conv_transpose2d_forward(y: &mut [f32], x: &[f32], w: &[f32], b: &[f32], g: &ConvGeom, rows: usize) {
    conv2d_input_grad(y, x, w, g, rows);
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
    let mut cols = vec![0.0; g.patch() * g.out_pixels()];
    let mut dx = dx;
    for (i, (dy, x)) in dy.chunks_exact(g.in_len()).zip(x.chunks_exact(g.out_len())).take(rows).enumerate() {
        im2col(&mut cols, dy, g);
        matmul_nt(dw, x, &cols, g.out_c, g.out_pixels(), g.patch(), true);
        channel_sums(db, dy, g.in_h * g.in_w);
        if let Some(dx) = dx.as_deref_mut() {
            let dx = &mut dx[i * g.out_len()..][..g.out_len()];
            matmul_nn(dx, w, &cols, g.out_c, g.patch(), g.out_pixels(), false);
        }
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
