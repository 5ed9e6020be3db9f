//! Every CPU op's backward, and the whole AE and VAE objectives, against
//! central finite differences.
//!
//! Tolerance: |analytic − numeric| ≤ ATOL + RTOL·|numeric|. With step h = 1e-2
//! the truncation error is O(h²·f''') ≈ 1e-4 for these smooth functions, and
//! f32 rounding of a sum S of n terms adds about n·6e-8·|term|/h ≈ 1e-4 at
//! our sizes; ATOL = 2e-3 and RTOL = 1e-2 sit well above both and far below
//! the size of any real mistake (a wrong factor of ½ or a dropped term).

use gpu_vae::advanced::cpu::activation::{activation_backward, activation_forward, sigmoid_backward, sigmoid_forward};
use gpu_vae::advanced::cpu::loss::{
    bce_with_logits_backward, bce_with_logits_forward, kl_backward, kl_forward, mse_backward, mse_forward,
};
use gpu_vae::advanced::cpu::matmul::{column_sums, matmul_nn, matmul_nt, matmul_tn};
use gpu_vae::advanced::cpu::reparam::{reparameterize_backward, reparameterize_forward};
use gpu_vae::advanced::cpu::{BatchRef, CpuModel};
use gpu_vae::advanced::engine::AdamConfig;
use gpu_vae::advanced::engine::{Noise, Objective};
use gpu_vae::advanced::model::{Activation, Architecture, InitScheme, ModelConfig, ModelKind, ReconLoss, init_params};
use gpu_vae::advanced::rng::{Stream, normal, uniform};

const H: f32 = 1e-2;
const ATOL: f64 = 2e-3;
const RTOL: f64 = 1e-2;

fn randn(n: usize, salt: u32) -> Vec<f32> {
    (0..n as u32).map(|i| normal(salt, Stream::Sample, 99, i)).collect()
}

fn rand01(n: usize, salt: u32) -> Vec<f32> {
    (0..n as u32).map(|i| uniform(salt, Stream::Sample, 98, i)).collect()
}

/// Compares `analytic` with central differences of `f` at `x`, all coordinates.
fn check(what: &str, x: &[f32], analytic: &[f32], f: impl Fn(&[f32]) -> f64) {
    assert_eq!(x.len(), analytic.len());
    let mut bad = Vec::new();
    let mut probe = x.to_vec();
    for i in 0..x.len() {
        probe[i] = x[i] + H;
        let up = f(&probe);
        probe[i] = x[i] - H;
        let down = f(&probe);
        probe[i] = x[i];
        let numeric = (up - down) / (2.0 * H as f64);
        let a = analytic[i] as f64;
        if (a - numeric).abs() > ATOL + RTOL * numeric.abs() {
            bad.push((i, a, numeric));
        }
    }
    assert!(
        bad.is_empty(),
        "{what}: {} of {} coordinates differ, first: {:?}",
        bad.len(),
        x.len(),
        &bad[..bad.len().min(5)]
    );
}

fn weighted_sum(y: &[f32], w: &[f32]) -> f64 {
    y.iter().zip(w).map(|(&a, &b)| a as f64 * b as f64).sum()
}

#[test]
fn bce_with_logits() {
    let (logits, target) = (randn(65, 1), rand01(65, 2));
    let mut d = vec![0.0; 65];
    bce_with_logits_backward(&mut d, &logits, &target, 1.0);
    check("bce", &logits, &d, |a| bce_with_logits_forward(a, &target));
}

#[test]
fn bce_with_logits_is_finite_for_huge_logits() {
    let loss = bce_with_logits_forward(&[1e4, -1e4, 80.0], &[0.0, 1.0, 1.0]);
    assert!((loss - 2e4).abs() < 1e-3, "{loss}");
}

#[test]
fn mse_through_sigmoid() {
    let (x, target) = (randn(63, 3), rand01(63, 4));
    let mut y = vec![0.0; 63];
    sigmoid_forward(&mut y, &x);
    let mut d = vec![0.0; 63];
    mse_backward(&mut d, &y, &target, 1.0);
    sigmoid_backward(&mut d, &y);
    check("mse∘sigmoid", &x, &d, |x| {
        let mut y = vec![0.0; x.len()];
        sigmoid_forward(&mut y, x);
        mse_forward(&y, &target)
    });
}

#[test]
fn relu_away_from_the_kink() {
    // Keep |x| > h so that no probe crosses 0, where ReLU has no derivative.
    let x: Vec<f32> = randn(64, 5).iter().map(|v| if v.abs() < 0.1 { v + 0.3 } else { *v }).collect();
    let w = randn(64, 6);
    let mut y = x.clone();
    activation_forward(&mut y, Activation::Relu);
    let mut d = w.clone();
    activation_backward(&mut d, None, &y, Activation::Relu);
    check("relu", &x, &d, |x| {
        let mut y = x.to_vec();
        activation_forward(&mut y, Activation::Relu);
        weighted_sum(&y, &w)
    });
}

#[test]
fn every_activation_away_from_the_kink() {
    let x: Vec<f32> = randn(65, 7).iter().map(|v| if v.abs() < 0.1 { v + 0.3 } else { *v }).collect();
    let w = randn(65, 8);
    for act in Activation::ALL {
        let mut y = x.clone();
        activation_forward(&mut y, act);
        let mut d = w.clone();
        activation_backward(&mut d, Some(&x), &y, act);
        check(&format!("{act:?}"), &x, &d, |x| {
            let mut y = x.to_vec();
            activation_forward(&mut y, act);
            weighted_sum(&y, &w)
        });
    }
}

#[test]
fn kl_divergence() {
    let (latent, rows) = (3, 7);
    let mulv = randn(rows * 2 * latent, 7);
    let mut d = vec![0.0; mulv.len()];
    kl_backward(&mut d, &mulv, latent, 1.0);
    check("kl", &mulv, &d, |m| kl_forward(m, latent));
}

#[test]
fn reparameterization() {
    let (latent, rows) = (5, 3);
    let mulv = randn(rows * 2 * latent, 8);
    let eps = randn(rows * latent, 9);
    let w = randn(rows * latent, 10);
    let mut d = vec![0.0; mulv.len()];
    reparameterize_backward(&mut d, &w, &mulv, &eps, latent);
    check("reparam", &mulv, &d, |m| {
        let mut z = vec![0.0; rows * latent];
        reparameterize_forward(&mut z, m, &eps, latent);
        weighted_sum(&z, &w)
    });
}

#[test]
fn matmul_forms_are_each_others_gradients() {
    // y (M,N) = x (M,K) · W (N,K)ᵀ; L = Σ w·y. dW = dyᵀ·x (tn), dx = dy·W (nn).
    let (m, k, n) = (7, 9, 5);
    let (x, wt, dy) = (randn(m * k, 11), randn(n * k, 12), randn(m * n, 13));
    let loss = |x: &[f32], wt: &[f32]| {
        let mut y = vec![0.0; m * n];
        matmul_nt(&mut y, x, wt, m, k, n, false);
        weighted_sum(&y, &dy)
    };
    let mut dw = vec![0.0; n * k];
    matmul_tn(&mut dw, &dy, &x, n, m, k, false);
    check("dW", &wt, &dw, |wt| loss(&x, wt));
    let mut dx = vec![0.0; m * k];
    matmul_nn(&mut dx, &dy, &wt, m, n, k, false);
    check("dx", &x, &dx, |x| loss(x, &wt));
    // Bias: y = 1·bᵀ broadcast, so dL/db = column sums of dy.
    let mut db = vec![0.0; n];
    column_sums(&mut db, &dy, m, n);
    let bias = randn(n, 14);
    check("db", &bias, &db, |b| (0..m).map(|r| weighted_sum(b, &dy[r * n..(r + 1) * n])).sum());
}

/// The whole objective of a small model against its analytic gradient.
fn check_model(kind: ModelKind, loss: ReconLoss, hidden: Vec<usize>) {
    check_model_with(kind, loss, hidden, Activation::Relu);
}

fn check_model_with(kind: ModelKind, loss: ReconLoss, hidden: Vec<usize>, activation: Activation) {
    let config = ModelConfig {
        kind,
        image_rows: 5,
        image_cols: 7,
        channels: 1,
        hidden,
        latent: 3,
        loss,
        activation,
        arch: gpu_vae::advanced::model::Arch::Mlp,
        conv: vec![],
        classes: 0,
    };
    check_config(config);
}

/// The whole objective of `config`'s model against its analytic gradient; a
/// conditional model's rows get classes 2, 0, 1, 2, ...
fn check_config(config: ModelConfig) {
    let (kind, loss, activation) = (config.kind, config.loss, config.activation);
    let arch = Architecture::new(&config).unwrap();
    let params = init_params(&arch, InitScheme::Torch, 3);
    let rows = 4;
    let target = rand01(rows * 35, 15);
    let labels: Option<Vec<u8>> =
        (config.classes > 0).then(|| (0..rows).map(|r| ((r + 2) % config.classes) as u8).collect());
    let onehot = gpu_vae::advanced::engine::one_hot_labels(&arch, labels.as_deref(), rows).unwrap();
    let batch = BatchRef { clean: &target, noisy: None, labels: onehot.as_deref() };
    let noise = Noise { seed: 5, stream: Stream::Reparam, step: 0 };
    let objective = Objective::for_batch(&arch, rows, 0.7);
    let adam = AdamConfig { lr: 0.0, beta1: 0.9, beta2: 0.999, eps: 1e-8 };
    let mut model = CpuModel::new(arch.clone(), params.clone(), adam);
    model.gradients(batch, rows, noise, objective);
    let analytic = model.grads().to_vec();
    let what = format!("{kind:?} {loss:?} hidden {:?} {activation:?} classes {}", config.hidden, config.classes);
    check(&what, &params, &analytic, |p| {
        let mut m = CpuModel::new(arch.clone(), p.to_vec(), adam);
        let s = m.forward(batch, rows, noise);
        objective.recon_scale as f64 * s.recon + objective.kl_scale as f64 * s.kl
    });
}

/// Conditional models: the labels join the first encoder layer (or the head,
/// without hidden layers) and the decoder's first layer through `Concat`,
/// whose backward hands each input its columns of the gradient.
#[test]
fn whole_conditional_models() {
    for (kind, hidden) in [(ModelKind::Vae, vec![6]), (ModelKind::Vae, vec![]), (ModelKind::Ae, vec![5, 4])] {
        let config = ModelConfig {
            kind,
            image_rows: 5,
            image_cols: 7,
            channels: 1,
            hidden,
            latent: 3,
            loss: ReconLoss::Bce,
            activation: Activation::Tanh,
            arch: gpu_vae::advanced::model::Arch::Mlp,
            conv: vec![],
            classes: 3,
        };
        check_config(config);
    }
}

#[test]
fn whole_vae_bce() {
    check_model(ModelKind::Vae, ReconLoss::Bce, vec![6]);
}

#[test]
fn whole_vae_mse_two_hidden_layers() {
    check_model(ModelKind::Vae, ReconLoss::Mse, vec![6, 4]);
}

#[test]
fn whole_vae_without_hidden_layers() {
    check_model(ModelKind::Vae, ReconLoss::Bce, vec![]);
}

#[test]
fn whole_ae_mse() {
    check_model(ModelKind::Ae, ReconLoss::Mse, vec![6]);
}

#[test]
fn whole_ae_bce_no_hidden() {
    check_model(ModelKind::Ae, ReconLoss::Bce, vec![]);
}

#[test]
fn whole_vae_tanh() {
    check_model_with(ModelKind::Vae, ReconLoss::Bce, vec![6, 4], Activation::Tanh);
}

#[test]
fn whole_ae_leaky_relu() {
    check_model_with(ModelKind::Ae, ReconLoss::Mse, vec![6], Activation::LeakyRelu);
}

#[test]
fn whole_vae_identity_hidden_layers() {
    // Regression: backward once applied ReLU's mask whatever the activation.
    check_model_with(ModelKind::Vae, ReconLoss::Mse, vec![6], Activation::Identity);
}

/// The activations whose backward reads the kept pre-activation, through a
/// whole model: the pre-activation reaches the right backward node.
#[test]
fn whole_models_with_activations_that_need_their_input() {
    for activation in [Activation::Silu, Activation::Gelu, Activation::Softplus] {
        check_model_with(ModelKind::Vae, ReconLoss::Bce, vec![6, 4], activation);
        check_model_with(ModelKind::Ae, ReconLoss::Mse, vec![6], activation);
    }
    check_model_with(ModelKind::Vae, ReconLoss::Mse, vec![6], Activation::Elu);
}
