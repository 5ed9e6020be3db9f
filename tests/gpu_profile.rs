//! `GpuEngine::profile_train_steps` on whatever adapter there is (skipped
//! loudly without one, or without timestamp queries): every dispatch of every
//! step gets a duration under the label of the program's own dispatch, and the
//! profiled steps train exactly as `train_epoch` does. The tiny model of
//! tests/gpu_steps.rs: 13x20 images, hidden [13], latent 5, batch 17 over 40
//! images, so one epoch is steps of 17, 17 and 6 rows.

#[path = "common/gpu.rs"]
mod gpu_common;

use std::io::Write;
use std::sync::Arc;

use gpu_common::gpu;
use gpu_vae::advanced::data::Images;
use gpu_vae::advanced::engine::AdamConfig;
use gpu_vae::advanced::engine::{Engine, EpochPlan};
use gpu_vae::advanced::gpu::{GpuEngine, TimestampMode};
use gpu_vae::advanced::model::{Activation, Architecture, InitScheme, ModelConfig, ModelKind, ReconLoss, init_params};
use gpu_vae::advanced::rng;

const COUNT: usize = 40;
const BATCH: usize = 17;
const SEED: u32 = 5;
const ROWS: usize = 13;
const COLS: usize = 20;

fn images() -> Arc<Images> {
    gpu_common::random_images(COUNT, ROWS, COLS)
}

fn arch() -> Architecture {
    let config = ModelConfig {
        kind: ModelKind::Vae,
        image_rows: ROWS,
        image_cols: COLS,
        channels: 1,
        hidden: vec![13],
        latent: 5,
        loss: ReconLoss::Bce,
        activation: Activation::Relu,
        arch: gpu_vae::advanced::model::Arch::Mlp,
        conv: vec![],
        classes: 0,
    };
    Architecture::new(&config).unwrap()
}

fn plan() -> EpochPlan {
    EpochPlan {
        order: rng::permutation(COUNT, SEED, 0),
        batch_size: BATCH,
        first_step: 0,
        seed: SEED,
        noise_std: 0.0,
        beta: 1.0,
        lr: Default::default(),
    }
}

fn skip(test: &str, why: &str) {
    let _ = writeln!(std::io::stderr(), "{test}: skipped: {why}");
}

#[test]
fn profile_names_and_times_every_dispatch() {
    let name = "profile_names_and_times_every_dispatch";
    let Some(gpu) = gpu(name) else { return };
    let ctx = &gpu.modes[0].ctx;
    let modes: Vec<TimestampMode> = [TimestampMode::InsidePasses, TimestampMode::PassPerDispatch]
        .into_iter()
        .filter(|m| m.supported(ctx))
        .collect();
    if modes.is_empty() {
        skip(name, &format!("{} has no timestamp queries (features {:?})", ctx.describe(), ctx.adapter.features()));
        return;
    }
    for mode in [TimestampMode::InsidePasses, TimestampMode::PassPerDispatch] {
        if !modes.contains(&mode) {
            skip(name, &format!("{mode:?}: not supported by {}", ctx.describe()));
        }
    }
    let arch = arch();
    let params = init_params(&arch, InitScheme::Torch, SEED);
    let adam = AdamConfig { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8 };
    let images = images();
    let plan = plan();

    // The reference: the same epoch without timestamps.
    let mut plain = GpuEngine::new(ctx.clone(), arch.clone(), &params, adam, BATCH).unwrap();
    plain.train_epoch(&images, &plan, &mut |_, _| {}).unwrap();
    let want_params = plain.params().unwrap();

    for mode in modes {
        let mut engine = GpuEngine::new(ctx.clone(), arch.clone(), &params, adam, BATCH).unwrap();
        // More steps than the epoch has: the profile takes them all, the short one included.
        let profile = engine.profile_train_steps(&images, &plan, 10, mode).unwrap();
        let per_step = engine.stats().dispatches_per_train_step;
        let table = profile.table(Some(1000.0));
        eprintln!("{name} ({mode:?}, {}):\n{table}", ctx.describe());

        assert_eq!(profile.mode, mode);
        assert_eq!(profile.steps, 3, "{mode:?}");
        assert_eq!(profile.dispatches.len(), 3 * per_step, "{mode:?}");
        for (step, rows) in [17u32, 17, 6].into_iter().enumerate() {
            let want = engine.train_step_labels(&images, false, rows).unwrap();
            assert_eq!(want.len(), per_step);
            let got: Vec<&str> =
                profile.dispatches.iter().filter(|d| d.step == step).map(|d| d.label.as_str()).collect();
            assert_eq!(got, want, "{mode:?}: step {step}'s labels");
        }
        for (i, d) in profile.dispatches.iter().enumerate() {
            assert_eq!((d.step, d.index), (i / per_step, i % per_step), "{mode:?}: dispatch order");
            assert!(d.ns >= 0.0 && d.ns.is_finite(), "{mode:?}: {d:?} has a negative or non-finite duration");
        }
        assert_eq!(profile.backwards, 0);
        let first = &profile.dispatches[0];
        assert_eq!(first.label, "gather_batch");
        // Adam last: in the weight gradients' epilogue (see tests/gpu_steps.rs),
        // or its own dispatch on adapters with few storage bindings.
        assert!(profile.dispatches[per_step - 1].label.contains("adam"), "{:?}", profile.dispatches[per_step - 1]);
        // The thin first layer (260 -> 13) is a stage of a row chain, named by shape.
        let wanted = profile.dispatches.iter().any(|d| d.label.contains("matmul_nt 17x260x13"));
        assert!(wanted, "{mode:?}: no first-layer product among {:?}", &profile.dispatches[..per_step]);

        // Per-kernel rows: calls add up to the dispatch count, shares to one.
        let calls: f64 = profile.kernels.iter().map(|k| k.calls_per_step).sum();
        assert!((calls - per_step as f64).abs() < 1e-9, "{mode:?}: {calls} calls per step");
        let us: f64 = profile.kernels.iter().map(|k| k.us_per_step).sum();
        assert!((us - profile.gpu_us_per_step).abs() <= 1e-9 * us.max(1.0));
        if profile.gpu_us_per_step > 0.0 {
            let shares: f64 = profile.kernels.iter().map(|k| k.share).sum();
            assert!((shares - 1.0).abs() < 1e-9, "{mode:?}: shares add up to {shares}");
        }
        assert!(table.lines().count() == profile.kernels.len() + 6, "{table}");

        // Timestamps change nothing the step computes.
        assert_eq!(engine.params().unwrap(), want_params, "{mode:?}: profiled steps trained differently");
    }
}
