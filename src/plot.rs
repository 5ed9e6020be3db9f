//! Line and scatter charts as PNG, with axes, ticks, labels and a legend
//! drawn in the built-in font: the loss curves, the latent scatter, the ROC.

use std::path::Path;

use image::{Rgb, RgbImage};

use crate::error::{Error, Result};
use crate::font::{self, GLYPH_H};
use crate::fsutil::write_atomic;

/// Matplotlib's "tab10" colours, so that plots look familiar.
pub const PALETTE: [[u8; 3]; 10] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
];
pub const GRAY: [u8; 3] = [150, 150, 150];

/// Size of the plotting area in pixels; margins and legend come on top.
const PLOT_W: u32 = 480;
const PLOT_H: u32 = 360;
const LEFT: u32 = 70;
const TOP: u32 = 28;
const BOTTOM: u32 = 44;
const LEGEND_ROW: u32 = 14;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    Line,
    /// Small squares without lines (scatter).
    Dots,
    /// A line with a marker at each point (few points, e.g. epochs).
    LineDots,
}

#[derive(Clone, Debug)]
pub struct Series {
    /// Legend entry; an empty name keeps the series out of the legend.
    pub name: String,
    pub color: [u8; 3],
    pub mark: Mark,
    pub points: Vec<(f64, f64)>,
}

#[derive(Clone, Debug, Default)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// Axis ranges; `None` fits the data with a small margin.
    pub x_range: Option<(f64, f64)>,
    pub y_range: Option<(f64, f64)>,
}

/// Renders the chart and writes it as a PNG, atomically.
pub fn write_chart(path: &Path, chart: &Chart) -> Result<()> {
    let canvas = render(chart);
    let mut png = Vec::new();
    canvas
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| Error::bad_file(path, format!("PNG encoding failed: {e}")))?;
    write_atomic(path, &png)
}

/// The chart's image: plot area, axes with ticks, title, labels, legend.
pub fn render(chart: &Chart) -> RgbImage {
    let named: Vec<&Series> = chart.series.iter().filter(|s| !s.name.is_empty()).collect();
    let legend_w = named.iter().map(|s| font::text_width(&s.name) + 44).max().unwrap_or(16);
    let (width, height) = (LEFT + PLOT_W + legend_w, TOP + PLOT_H + BOTTOM);
    let mut img = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));

    let points = || chart.series.iter().flat_map(|s| s.points.iter().copied());
    let (x0, x1) = chart.x_range.unwrap_or_else(|| fit_range(points().map(|p| p.0)));
    let (y0, y1) = chart.y_range.unwrap_or_else(|| fit_range(points().map(|p| p.1)));
    let to_px = |x: f64, y: f64| {
        let px = LEFT as f64 + (x - x0) / (x1 - x0) * PLOT_W as f64;
        let py = (TOP + PLOT_H) as f64 - (y - y0) / (y1 - y0) * PLOT_H as f64;
        (px.round() as i64, py.round() as i64)
    };

    // Grid lines and ticks first, so that data draws over them.
    let black = [0, 0, 0];
    for (t, label) in ticks(x0, x1) {
        let (px, _) = to_px(t, y0);
        vline(&mut img, px, TOP, TOP + PLOT_H, [232, 232, 232]);
        vline(&mut img, px, TOP + PLOT_H, TOP + PLOT_H + 4, black);
        text(&mut img, px - font::text_width(&label) as i64 / 2, (TOP + PLOT_H + 7) as i64, &label, black);
    }
    for (t, label) in ticks(y0, y1) {
        let (_, py) = to_px(x0, t);
        hline(&mut img, LEFT, LEFT + PLOT_W, py, [232, 232, 232]);
        hline(&mut img, LEFT - 4, LEFT, py, black);
        text(&mut img, LEFT as i64 - 7 - font::text_width(&label) as i64, py - GLYPH_H as i64 / 2, &label, black);
    }

    let inside = |x: i64, y: i64| {
        (LEFT as i64..=(LEFT + PLOT_W) as i64).contains(&x) && (TOP as i64..=(TOP + PLOT_H) as i64).contains(&y)
    };
    for s in &chart.series {
        let px: Vec<(i64, i64)> = s.points.iter().map(|&(x, y)| to_px(x, y)).collect();
        if s.mark != Mark::Dots {
            for w in px.windows(2) {
                line(&mut img, w[0], w[1], s.color, &inside);
            }
        }
        let radius = match s.mark {
            Mark::Line => continue,
            Mark::Dots => 1,
            Mark::LineDots => 2,
        };
        for &(x, y) in &px {
            square(&mut img, x, y, radius, s.color, &inside);
        }
    }

    // Frame, title, axis labels, legend.
    hline(&mut img, LEFT, LEFT + PLOT_W, TOP as i64, black);
    hline(&mut img, LEFT, LEFT + PLOT_W, (TOP + PLOT_H) as i64, black);
    vline(&mut img, LEFT as i64, TOP, TOP + PLOT_H, black);
    vline(&mut img, (LEFT + PLOT_W) as i64, TOP, TOP + PLOT_H, black);
    let centered = |s: &str| (LEFT + PLOT_W / 2) as i64 - font::text_width(s) as i64 / 2;
    text(&mut img, centered(&chart.title), 10, &chart.title, black);
    text(&mut img, centered(&chart.x_label), (TOP + PLOT_H + 24) as i64, &chart.x_label, black);
    let y_mid = (TOP + PLOT_H / 2) as i64 + font::text_width(&chart.y_label) as i64 / 2;
    for (x, y) in font::pixels(&chart.y_label) {
        // Rotated a quarter turn counter-clockwise: read from bottom to top.
        put(&mut img, 8 + y as i64, y_mid - x as i64, black);
    }
    let lx = (LEFT + PLOT_W + 12) as i64;
    for (k, s) in named.iter().enumerate() {
        let y = (TOP + 6 + k as u32 * LEGEND_ROW) as i64;
        let everywhere = |_: i64, _: i64| true;
        match s.mark {
            Mark::Dots => square(&mut img, lx + 5, y + 3, 2, s.color, &everywhere),
            _ => {
                for dy in 3..5 {
                    line(&mut img, (lx, y + dy), (lx + 12, y + dy), s.color, &everywhere);
                }
            }
        }
        text(&mut img, lx + 18, y, &s.name, black);
    }
    img
}

/// Data limits with 5% margins; a degenerate range is widened to ±1 around it.
fn fit_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) =
        values.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if lo > hi {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 * hi.abs().max(1.0) {
        return (lo - 1.0, hi + 1.0);
    }
    let pad = 0.05 * (hi - lo);
    (lo - pad, hi + pad)
}

/// About five round tick values (1, 2 or 5 times a power of ten) in [lo, hi], labeled.
fn ticks(lo: f64, hi: f64) -> Vec<(f64, String)> {
    let raw = (hi - lo) / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * magnitude).find(|&s| s >= raw).unwrap_or(10.0 * magnitude);
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last)
        .map(|k| {
            let v = k as f64 * step;
            let label = format!("{:.*}", decimals, v);
            // "-0.0" is just zero.
            let label = if v == 0.0 { format!("{:.*}", decimals, 0.0) } else { label };
            (v, label)
        })
        .collect()
}

fn put(img: &mut RgbImage, x: i64, y: i64, color: [u8; 3]) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, Rgb(color));
    }
}

fn text(img: &mut RgbImage, x: i64, y: i64, s: &str, color: [u8; 3]) {
    for (dx, dy) in font::pixels(s) {
        put(img, x + dx as i64, y + dy as i64, color);
    }
}

fn hline(img: &mut RgbImage, x0: u32, x1: u32, y: i64, color: [u8; 3]) {
    for x in x0..=x1 {
        put(img, x as i64, y, color);
    }
}

fn vline(img: &mut RgbImage, x: i64, y0: u32, y1: u32, color: [u8; 3]) {
    for y in y0..=y1 {
        put(img, x, y as i64, color);
    }
}

/// Bresenham's line, drawing only where `keep` allows.
fn line(
    img: &mut RgbImage,
    (mut x, mut y): (i64, i64),
    (x1, y1): (i64, i64),
    color: [u8; 3],
    keep: &dyn Fn(i64, i64) -> bool,
) {
    let (dx, dy) = ((x1 - x).abs(), -(y1 - y).abs());
    let (sx, sy) = ((x1 - x).signum(), (y1 - y).signum());
    let mut err = dx + dy;
    // Far off-canvas points would make the walk long; the plot is at most a few thousand pixels.
    for _ in 0..=(dx.max(-dy)).min(100_000) {
        if keep(x, y) {
            put(img, x, y, color);
        }
        if x == x1 && y == y1 {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x += sx;
        }
        if e2 <= dx {
            err += dx;
            y += sy;
        }
    }
}

fn square(img: &mut RgbImage, x: i64, y: i64, radius: i64, color: [u8; 3], keep: &dyn Fn(i64, i64) -> bool) {
    for py in y - radius..=y + radius {
        for px in x - radius..=x + radius {
            if keep(px, py) {
                put(img, px, py, color);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_inside() {
        let t: Vec<String> = ticks(0.0, 1.0).into_iter().map(|(_, l)| l).collect();
        assert_eq!(t, ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]);
        let t: Vec<String> = ticks(-3.3, 1.7).into_iter().map(|(_, l)| l).collect();
        assert_eq!(t, ["-3", "-2", "-1", "0", "1"]);
        assert!(ticks(240.0, 290.0).iter().all(|(v, _)| (240.0..=290.0).contains(v)));
    }

    #[test]
    fn degenerate_ranges_widen() {
        assert_eq!(fit_range([3.0, 3.0].into_iter()), (2.0, 4.0));
        assert_eq!(fit_range(std::iter::empty()), (0.0, 1.0));
    }

    #[test]
    fn series_colours_reach_the_image() {
        let chart = Chart {
            series: vec![Series {
                name: "a".into(),
                color: PALETTE[3],
                mark: Mark::Line,
                points: vec![(0.0, 0.0), (1.0, 1.0)],
            }],
            ..Chart::default()
        };
        let img = render(&chart);
        let red = img.pixels().filter(|p| p.0 == PALETTE[3]).count();
        // The diagonal spans 90% of the plot's width (5% margins), plus the legend swatch.
        assert!(red > (0.9 * PLOT_W as f64) as usize, "{red} pixels drawn");
    }
}
