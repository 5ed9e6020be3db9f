//! Shared by the GPU test binaries: one device for the whole binary, its
//! kernels in both shader modes, loud skipping, and tolerance checks.

#![allow(dead_code)]

use std::io::Write;
use std::sync::{Arc, OnceLock};

use gpu_vae::advanced::data::Images;
use gpu_vae::advanced::gpu::{GpuContext, GpuOptions, Kernels};
use gpu_vae::advanced::rng::{self, Stream};

pub struct Mode {
    pub checked: bool,
    pub ctx: Arc<GpuContext>,
    pub kernels: Arc<Kernels>,
}

pub struct Gpu {
    /// Trusted modules first, then checked ones: every test runs both.
    pub modes: Vec<Mode>,
}

static GPU: OnceLock<Result<Gpu, String>> = OnceLock::new();

/// The shared device, or `None` after printing why the test is skipped. The
/// message goes straight to stderr, past the harness's capture, so that a
/// skipped test never looks like a pass. With `GPU_VAE_REQUIRE_GPU=1` (set by
/// `.ci/run`, where lavapipe is installed) a missing adapter fails the test.
pub fn gpu(test: &str) -> Option<&'static Gpu> {
    let gpu = GPU.get_or_init(|| {
        let base = GpuContext::new(GpuOptions::default()).map_err(|e| e.to_string())?;
        let mut modes = Vec::new();
        for checked in [false, true] {
            let ctx = Arc::new(base.with_checked_shaders(checked));
            let kernels = ctx.kernels().map_err(|e| e.to_string())?;
            modes.push(Mode { checked, ctx, kernels });
        }
        Ok(Gpu { modes })
    });
    match gpu {
        Ok(g) => Some(g),
        Err(why) => {
            if std::env::var("GPU_VAE_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("{test}: GPU_VAE_REQUIRE_GPU=1 but there is no wgpu adapter ({why})");
            }
            let _ = writeln!(std::io::stderr(), "{test}: skipped: no wgpu adapter ({why})");
            None
        }
    }
}

impl Mode {
    pub fn name(&self) -> &'static str {
        if self.checked { "checked" } else { "trusted" }
    }
}

/// Uniform values in (lo, hi], reproducible from `salt`.
pub fn random(len: usize, salt: u32, lo: f32, hi: f32) -> Vec<f32> {
    (0..len as u32).map(|i| lo + (hi - lo) * rng::uniform(salt, Stream::Sample, 77, i)).collect()
}

/// Panics unless `|g − c| ≤ atol + rtol·|c|` everywhere, naming the first
/// mismatching indices and the worst one.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let mut bad = Vec::new();
    let mut worst = (0usize, 0.0f32);
    for (i, (&g, &c)) in got.iter().zip(want).enumerate() {
        let err = (g - c).abs();
        let ok = err <= atol + rtol * c.abs();
        if !ok || g.is_nan() {
            bad.push(i);
        }
        let excess = err / (atol + rtol * c.abs());
        if excess > worst.1 || g.is_nan() {
            worst = (i, if g.is_nan() { f32::INFINITY } else { excess });
        }
    }
    if !bad.is_empty() {
        let first: Vec<String> = bad.iter().take(8).map(|&i| format!("[{i}] gpu {} cpu {}", got[i], want[i])).collect();
        panic!(
            "{what}: {} of {} values differ by more than {atol} + {rtol}·|cpu|; first: {}; worst [{}] at {:.1}x the tolerance",
            bad.len(),
            got.len(),
            first.join(", "),
            worst.0,
            worst.1
        );
    }
}

/// `count` deterministic pseudo-random images of rows x cols, no labels: the
/// data of the whole-step tests.
pub fn random_images(count: usize, rows: usize, cols: usize) -> Arc<Images> {
    random_planes(count, 1, rows, cols)
}

/// `count` deterministic pseudo-random images of `channels` planes of rows x cols.
pub fn random_planes(count: usize, channels: usize, rows: usize, cols: usize) -> Arc<Images> {
    let len = count * channels * rows * cols;
    let pixels = (0..len).map(|i| (rng::pcg4d([1, 2, 3, i as u32])[0] >> 24) as u8).collect();
    Arc::new(Images { pixels, count, channels, rows, cols, labels: None, class_names: None })
}

/// `random_planes` with pseudo-random labels below `classes` (none for 0).
pub fn random_labelled(count: usize, channels: usize, rows: usize, cols: usize, classes: usize) -> Arc<Images> {
    let mut images = Arc::unwrap_or_clone(random_planes(count, channels, rows, cols));
    if classes > 0 {
        images.labels = Some((0..count).map(|i| (rng::pcg4d([4, 5, 6, i as u32])[0] % classes as u32) as u8).collect());
    }
    Arc::new(images)
}
