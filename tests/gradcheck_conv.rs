//! The convolutions' backward passes against central finite differences,
//! and the transposed convolution as the adjoint of the convolution, on
//! awkward shapes (odd sizes, stride 1 and 2, padding 0 and 1, 1 and 3
//! channels, one and two images).
//!
//! Tolerance as in tests/gradcheck.rs: |analytic − numeric| ≤ 2e-3 +
//! 1e-2·|numeric| with h = 1e-2 (the objectives are linear in each argument,
//! so only f32 rounding of sums of at most a few hundred terms remains).

use gpu_vae::advanced::cpu::conv::{
    conv_transpose2d_backward, conv_transpose2d_forward, conv2d_backward, conv2d_forward,
};
use gpu_vae::advanced::model::ConvGeom;
use gpu_vae::advanced::rng::{Stream, normal};

const H: f32 = 1e-2;

fn randn(n: usize, salt: u32) -> Vec<f32> {
    (0..n as u32).map(|i| normal(salt, Stream::Sample, 97, i)).collect()
}

fn check(what: &str, x: &[f32], analytic: &[f32], f: impl Fn(&[f32]) -> f64) {
    let mut probe = x.to_vec();
    for i in 0..x.len() {
        probe[i] = x[i] + H;
        let up = f(&probe);
        probe[i] = x[i] - H;
        let down = f(&probe);
        probe[i] = x[i];
        let numeric = (up - down) / (2.0 * H as f64);
        let a = analytic[i] as f64;
        assert!((a - numeric).abs() <= 2e-3 + 1e-2 * numeric.abs(), "{what}[{i}]: analytic {a}, numeric {numeric}");
    }
}

fn dot(y: &[f32], w: &[f32]) -> f64 {
    y.iter().zip(w).map(|(&a, &b)| a as f64 * b as f64).sum()
}

/// (channels in, size h x w, channels out, kernel, stride, padding)
const SHAPES: [(usize, usize, usize, usize, usize, usize, usize); 5] =
    [(1, 5, 7, 2, 3, 1, 0), (3, 6, 5, 4, 3, 2, 1), (2, 7, 7, 3, 3, 2, 1), (1, 4, 4, 1, 1, 1, 0), (3, 5, 4, 2, 2, 2, 0)];

#[test]
fn conv2d_gradients() {
    for (s, &(c, h, w, o, k, stride, pad)) in SHAPES.iter().enumerate() {
        let g = ConvGeom::conv(c, h, w, o, k, stride, pad).unwrap();
        let rows = 1 + s % 2;
        let salt = 10 * s as u32;
        let (x, wt, b) = (randn(rows * g.in_len(), salt), randn(o * c * k * k, salt + 1), randn(o, salt + 2));
        let weights = randn(rows * g.out_len(), salt + 3);
        let f = |x: &[f32], wt: &[f32], b: &[f32]| {
            let mut y = vec![0.0; rows * g.out_len()];
            conv2d_forward(&mut y, x, wt, b, &g, rows);
            dot(&y, &weights)
        };
        let (mut dx, mut dw, mut db) = (vec![0.0; x.len()], vec![0.0; wt.len()], vec![0.0; o]);
        conv2d_backward(Some(&mut dx), &mut dw, &mut db, &weights, &x, &wt, &g, rows);
        let what = format!("conv2d {g:?} rows {rows}");
        check(&format!("{what} dx"), &x, &dx, |x| f(x, &wt, &b));
        check(&format!("{what} dw"), &wt, &dw, |wt| f(&x, wt, &b));
        check(&format!("{what} db"), &b, &db, |b| f(&x, &wt, b));
    }
}

#[test]
fn conv_transpose2d_gradients() {
    // (channels in, size, channels out, kernel, stride, padding, output padding)
    for (s, &(c, h, w, o, k, stride, pad, op)) in [
        (2usize, 3usize, 3usize, 3usize, 3usize, 2usize, 1usize, 1usize),
        (1, 4, 5, 2, 3, 1, 1, 0),
        (3, 2, 3, 1, 2, 2, 0, 0),
    ]
    .iter()
    .enumerate()
    {
        let g = ConvGeom::transposed(c, h, w, o, k, stride, pad, op).unwrap();
        let rows = 1 + s % 2;
        let salt = 100 + 10 * s as u32;
        let (x, wt, b) = (randn(rows * c * h * w, salt), randn(c * o * k * k, salt + 1), randn(o, salt + 2));
        let weights = randn(rows * g.in_len(), salt + 3);
        let f = |x: &[f32], wt: &[f32], b: &[f32]| {
            let mut y = vec![0.0; rows * g.in_len()];
            conv_transpose2d_forward(&mut y, x, wt, b, &g, rows);
            dot(&y, &weights)
        };
        let (mut dx, mut dw, mut db) = (vec![0.0; x.len()], vec![0.0; wt.len()], vec![0.0; o]);
        conv_transpose2d_backward(Some(&mut dx), &mut dw, &mut db, &weights, &x, &wt, &g, rows);
        let what = format!("conv_transpose2d {g:?} rows {rows}");
        check(&format!("{what} dx"), &x, &dx, |x| f(x, &wt, &b));
        check(&format!("{what} dw"), &wt, &dw, |wt| f(&x, wt, &b));
        check(&format!("{what} db"), &b, &db, |b| f(&x, &wt, b));
    }
}

#[test]
fn transposed_convolution_is_the_adjoint() {
    // <conv(x), y> = <x, convT(y)> with the same weights and no bias.
    let g = ConvGeom::conv(3, 7, 6, 2, 3, 2, 1).unwrap();
    let (x, y, w) = (randn(g.in_len(), 1), randn(g.out_len(), 2), randn(2 * 3 * 9, 3));
    let mut cx = vec![0.0; g.out_len()];
    conv2d_forward(&mut cx, &x, &w, &[0.0; 2], &g, 1);
    let mut ty = vec![0.0; g.in_len()];
    conv_transpose2d_forward(&mut ty, &y, &w, &[0.0; 3], &g, 1);
    let (a, b) = (dot(&cx, &y), dot(&x, &ty));
    assert!((a - b).abs() < 1e-4 * a.abs().max(1.0), "{a} vs {b}");
}

/// The whole objective of a small convolutional model against its analytic gradient.
fn check_conv_model(
    kind: gpu_vae::advanced::model::ModelKind,
    hidden: Vec<usize>,
    activation: gpu_vae::advanced::model::Activation,
) {
    check_conv_model_of(kind, hidden, activation, 0);
}

/// As `check_conv_model`, conditional on `classes` when not 0 (row r of class r % classes).
fn check_conv_model_of(
    kind: gpu_vae::advanced::model::ModelKind,
    hidden: Vec<usize>,
    activation: gpu_vae::advanced::model::Activation,
    classes: usize,
) {
    use gpu_vae::advanced::cpu::{BatchRef, CpuModel};
    use gpu_vae::advanced::engine::{AdamConfig, Noise, Objective};
    use gpu_vae::advanced::model::{Arch, Architecture, InitScheme, ModelConfig, ReconLoss, init_params};
    let config = ModelConfig {
        kind,
        image_rows: 8,
        image_cols: 4,
        channels: 1,
        hidden,
        latent: 2,
        loss: ReconLoss::Bce,
        activation,
        arch: Arch::Conv,
        conv: vec![2, 3],
        classes,
    };
    let arch = Architecture::new(&config).unwrap();
    let params = init_params(&arch, InitScheme::Torch, 3);
    let rows = 2;
    let target: Vec<f32> =
        (0..rows as u32 * 32).map(|i| gpu_vae::advanced::rng::uniform(4, Stream::Sample, 5, i)).collect();
    let noise = Noise { seed: 5, stream: Stream::Reparam, step: 0 };
    let objective = Objective::for_batch(&arch, rows, 0.7);
    let adam = AdamConfig { lr: 0.0, beta1: 0.9, beta2: 0.999, eps: 1e-8 };
    let mut model = CpuModel::new(arch.clone(), params.clone(), adam);
    let labels: Option<Vec<u8>> = (classes > 0).then(|| (0..rows).map(|r| (r % classes) as u8).collect());
    let onehot = gpu_vae::advanced::engine::one_hot_labels(&arch, labels.as_deref(), rows).unwrap();
    let batch = BatchRef { clean: &target, noisy: None, labels: onehot.as_deref() };
    model.gradients(batch, rows, noise, objective);
    let analytic = model.grads().to_vec();
    check(&format!("conv {kind:?} {:?} {activation:?} classes {classes}", config.hidden), &params, &analytic, |p| {
        let mut m = CpuModel::new(arch.clone(), p.to_vec(), adam);
        let s = m.forward(batch, rows, noise);
        objective.recon_scale as f64 * s.recon + objective.kl_scale as f64 * s.kl
    });
}

/// A conditional conv VAE (the label joins the flattened features before
/// mu/logvar and z before the decoder's dense layer) and conv AE (before its
/// dense layer).
#[test]
fn whole_conditional_conv_models() {
    check_conv_model_of(
        gpu_vae::advanced::model::ModelKind::Vae,
        vec![],
        gpu_vae::advanced::model::Activation::Tanh,
        2,
    );
    check_conv_model_of(
        gpu_vae::advanced::model::ModelKind::Ae,
        vec![3],
        gpu_vae::advanced::model::Activation::Tanh,
        3,
    );
}

#[test]
fn whole_conv_vae() {
    check_conv_model(gpu_vae::advanced::model::ModelKind::Vae, vec![], gpu_vae::advanced::model::Activation::Tanh);
}

/// The convolutions keep their pre-activation for SiLU's backward.
#[test]
fn whole_conv_vae_silu() {
    check_conv_model(gpu_vae::advanced::model::ModelKind::Vae, vec![3], gpu_vae::advanced::model::Activation::Silu);
}

#[test]
fn whole_conv_ae_with_a_dense_layer() {
    check_conv_model(gpu_vae::advanced::model::ModelKind::Ae, vec![3], gpu_vae::advanced::model::Activation::Tanh);
}
