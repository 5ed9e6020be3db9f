//! Pictures: grids of grayscale images as PNG.

use std::path::Path;

use crate::error::{Error, Result};
use crate::fsutil::write_atomic;

/// Columns of the runs' picture grids.
pub const GRID_COLS: usize = 8;

/// Pixels between tiles and around the border.
pub const PAD: u32 = 2;

/// Size in pixels of a grid of `rows x cols` tiles of `h x w`.
pub fn grid_size(rows: usize, cols: usize, h: usize, w: usize) -> (u32, u32) {
    let side = |n: usize, t: usize| n as u32 * (t as u32 + PAD) + PAD;
    (side(cols, w), side(rows, h))
}

/// Lays out `images` (N, h·w, values in [0,1]) row by row, `cols` per row, on a
/// mid-gray background, and writes the PNG atomically.
pub fn write_grid(path: &Path, images: &[f32], h: usize, w: usize, cols: usize) -> Result<()> {
    let n = images.len() / (h * w);
    assert!(n > 0 && cols > 0 && images.len() == n * h * w, "grid of {} values for {h}x{w} tiles", images.len());
    let rows = n.div_ceil(cols);
    let (width, height) = grid_size(rows, cols, h, w);
    let mut canvas = image::GrayImage::from_pixel(width, height, image::Luma([128]));
    for (k, tile) in images.chunks_exact(h * w).enumerate() {
        let (x0, y0) = ((k % cols) as u32 * (w as u32 + PAD) + PAD, (k / cols) as u32 * (h as u32 + PAD) + PAD);
        for (p, &v) in tile.iter().enumerate() {
            let level = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
            canvas.put_pixel(x0 + (p % w) as u32, y0 + (p / w) as u32, image::Luma([level]));
        }
    }
    let mut png = Vec::new();
    canvas
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| Error::bad_file(path, format!("PNG encoding failed: {e}")))?;
    write_atomic(path, &png)
}

/// Interleaves inputs and reconstructions (both N x h·w) so that each row of
/// `cols` inputs sits above its reconstructions.
pub fn pair_rows(inputs: &[f32], outputs: &[f32], tile: usize, cols: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(inputs.len() * 2);
    for (a, b) in inputs.chunks(tile * cols).zip(outputs.chunks(tile * cols)) {
        out.extend_from_slice(a);
        out.extend_from_slice(b);
    }
    out
}
