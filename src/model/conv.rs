//! The geometry of a 2-D convolution, shared by the model builders and both
//! engines.

/// A convolution from `in_c x in_h x in_w` to `out_c x out_h x out_w` with a
/// square kernel; for a transposed convolution, the convolution it is the
/// adjoint of (so `in_*` is the transposed one's output).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
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

    pub fn patch(&self) -> usize {
        self.in_c * self.kernel * self.kernel
    }

    pub fn out_pixels(&self) -> usize {
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
    pub fn source(&self, ki: usize, kj: usize, oy: usize, ox: usize) -> Option<(usize, usize)> {
        let y = (oy * self.stride + ki).checked_sub(self.padding)?;
        let x = (ox * self.stride + kj).checked_sub(self.padding)?;
        (y < self.in_h && x < self.in_w).then_some((y, x))
    }
}
