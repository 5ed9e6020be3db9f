//! Pictures: grids of grayscale or RGB images as PNG.

use std::path::Path;

use crate::error::{Error, Result};
use crate::font;
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

/// Lays out `images` (N, channels·h·w, values in [0, 1]; 1 channel: gray,
/// 3: R, G, B planes) row by row, `cols` per row, on a mid-gray background,
/// and writes the PNG (grayscale or RGB) atomically.
pub fn write_grid(path: &Path, images: &[f32], channels: usize, h: usize, w: usize, cols: usize) -> Result<()> {
    write_labelled_grid(path, images, channels, h, w, cols, &[])
}

/// `write_grid` with `row_labels[r]` written at the left margin of grid row
/// r, in the built-in font (no margin without labels).
pub fn write_labelled_grid(
    path: &Path,
    images: &[f32],
    channels: usize,
    h: usize,
    w: usize,
    cols: usize,
    row_labels: &[String],
) -> Result<()> {
    let tile = channels * h * w;
    let n = images.len() / tile;
    assert!(matches!(channels, 1 | 3), "{channels} channels");
    assert!(
        n > 0 && cols > 0 && images.len() == n * tile,
        "grid of {} values for {channels}x{h}x{w} tiles",
        images.len()
    );
    let rows = n.div_ceil(cols);
    let (width, height) = grid_size(rows, cols, h, w);
    let margin = row_labels.iter().map(|l| font::text_width(l) + 2 * PAD).max().unwrap_or(0);
    let width = width + margin;
    let level = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    let origin =
        |k: usize| (margin + (k % cols) as u32 * (w as u32 + PAD) + PAD, (k / cols) as u32 * (h as u32 + PAD) + PAD);
    // Each label's on-pixels, centred on its row.
    let text: Vec<(u32, u32)> = (row_labels.iter().take(rows).enumerate())
        .flat_map(|(r, label)| {
            let y0 = (r as u32 * (h as u32 + PAD) + PAD + h as u32 / 2).saturating_sub(font::GLYPH_H / 2);
            font::pixels(label).map(move |(x, y)| (PAD + x, y0 + y))
        })
        .filter(|&(x, y)| x < width && y < height)
        .collect();
    let canvas = if channels == 3 {
        let mut canvas = image::RgbImage::from_pixel(width, height, image::Rgb([128; 3]));
        for (k, planes) in images.chunks_exact(tile).enumerate() {
            let (x0, y0) = origin(k);
            for p in 0..h * w {
                let rgb = [0, 1, 2].map(|c| level(planes[c * h * w + p]));
                canvas.put_pixel(x0 + (p % w) as u32, y0 + (p / w) as u32, image::Rgb(rgb));
            }
        }
        text.iter().for_each(|&(x, y)| canvas.put_pixel(x, y, image::Rgb([255; 3])));
        image::DynamicImage::ImageRgb8(canvas)
    } else {
        let mut canvas = image::GrayImage::from_pixel(width, height, image::Luma([128]));
        for (k, tile) in images.chunks_exact(tile).enumerate() {
            let (x0, y0) = origin(k);
            for (p, &v) in tile.iter().enumerate() {
                canvas.put_pixel(x0 + (p % w) as u32, y0 + (p / w) as u32, image::Luma([level(v)]));
            }
        }
        text.iter().for_each(|&(x, y)| canvas.put_pixel(x, y, image::Luma([255])));
        image::DynamicImage::ImageLuma8(canvas)
    };
    let mut png = Vec::new();
    canvas
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| Error::bad_file(path, format!("PNG encoding failed: {e}")))?;
    write_atomic(path, &png)
}

/// Interleaves inputs and reconstructions (both N x tile values) so that each row of
/// `cols` inputs sits above its reconstructions.
pub fn pair_rows(inputs: &[f32], outputs: &[f32], tile: usize, cols: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(inputs.len() * 2);
    for (a, b) in inputs.chunks(tile * cols).zip(outputs.chunks(tile * cols)) {
        out.extend_from_slice(a);
        out.extend_from_slice(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_tiles_come_from_their_three_planes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grid.png");
        // Two 1x2 tiles: planes R, G, B of each.
        let tiles = [1.0, 0.0, 0.0, 1.0, 0.0, 0.5, /* tile 2 */ 0.2, 0.2, 0.4, 0.4, 0.6, 0.6];
        write_grid(&path, &tiles, 3, 1, 2, 2).unwrap();
        let png = image::open(&path).unwrap();
        assert_eq!(png.color(), image::ColorType::Rgb8);
        let rgb = png.to_rgb8();
        let p = PAD;
        assert_eq!(rgb.get_pixel(p, p).0, [255, 0, 0]);
        assert_eq!(rgb.get_pixel(p + 1, p).0, [0, 255, 128]);
        assert_eq!(rgb.get_pixel(p + 2 + PAD, p).0, [51, 102, 153]);
        assert_eq!(rgb.get_pixel(0, 0).0, [128; 3], "mid-gray background");
        write_grid(&path, &tiles, 1, 2, 3, 2).unwrap();
        assert_eq!(image::open(&path).unwrap().color(), image::ColorType::L8);
    }
}
