//! A whole model on the CPU: forward, loss, backward and Adam for one batch,
//! composed from the op functions of this module.

use super::activation::{relu_backward, relu_forward, sigmoid_backward, sigmoid_forward};
use super::adam::{AdamConfig, adam_update};
use super::loss::{
    bce_with_logits_backward, bce_with_logits_forward, kl_backward, kl_forward, mse_backward, mse_forward,
};
use super::matmul::{bias_add, column_sums, matmul_nn, matmul_nt, matmul_tn};
use super::reparam::{reparameterize_backward, reparameterize_forward};
use crate::model::{Activation, Architecture, Layer, ModelKind, ReconLoss};
use crate::rng::{self, Stream};

/// Loss sums over one batch; the trainer turns them into per-sample numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LossSums {
    pub recon: f64,
    pub kl: f64,
}

impl std::ops::AddAssign for LossSums {
    fn add_assign(&mut self, o: LossSums) {
        self.recon += o.recon;
        self.kl += o.kl;
    }
}

/// Where the reparameterization noise of a forward pass comes from.
#[derive(Clone, Copy, Debug)]
pub struct Noise {
    pub seed: u32,
    pub stream: Stream,
    pub step: u32,
}

/// Weights of the training objective: `recon_scale·recon + kl_scale·kl`.
#[derive(Clone, Copy, Debug)]
pub struct Objective {
    pub recon_scale: f32,
    pub kl_scale: f32,
}

impl Objective {
    /// VAE: summed over the batch (pytorch/examples); AE: mean over batch and pixels (Keras).
    pub fn for_batch(arch: &Architecture, rows: usize, beta: f32) -> Objective {
        match arch.config.kind {
            ModelKind::Vae => Objective { recon_scale: 1.0, kl_scale: beta },
            ModelKind::Ae => Objective { recon_scale: 1.0 / (rows * arch.config.input_dim()) as f32, kl_scale: 0.0 },
        }
    }
}

pub struct CpuModel {
    pub arch: Architecture,
    /// Flat parameters (P), laid out by `arch.tensors`.
    pub params: Vec<f32>,
    grads: Vec<f32>,
    adam_m: Vec<f32>,
    adam_v: Vec<f32>,
    pub adam: AdamConfig,
    /// Adam steps taken so far.
    pub steps: u64,
    work: Workspace,
}

/// Activations of one forward pass, kept for the backward pass.
#[derive(Default)]
struct Workspace {
    rows: usize,
    /// Output of each encoder layer (B, O).
    encoder: Vec<Vec<f32>>,
    /// VAE head output (B, 2L).
    mulv: Vec<f32>,
    /// Reparameterization noise (B, L).
    eps: Vec<f32>,
    /// VAE latent sample (B, L); for an AE the code is the last encoder output.
    z: Vec<f32>,
    /// Output of each decoder layer (B, O); the last is the logits (B, D).
    decoder: Vec<Vec<f32>>,
    /// sigmoid(logits), for the MSE loss (B, D).
    probs: Vec<f32>,
    /// Gradient ping-pong buffers (B, max width).
    grad_a: Vec<f32>,
    grad_b: Vec<f32>,
}

impl CpuModel {
    pub fn new(arch: Architecture, params: Vec<f32>, adam: AdamConfig) -> CpuModel {
        assert_eq!(params.len(), arch.param_count, "parameter count");
        let n = params.len();
        CpuModel {
            arch,
            params,
            grads: vec![0.0; n],
            adam_m: vec![0.0; n],
            adam_v: vec![0.0; n],
            adam,
            steps: 0,
            work: Workspace::default(),
        }
    }

    /// The flat gradient of the last `backward` (P).
    pub fn grads(&self) -> &[f32] {
        &self.grads
    }

    /// One training step: forward, backward, Adam. input and target are (B, D).
    pub fn train_step(&mut self, input: &[f32], target: &[f32], rows: usize, noise: Noise, beta: f32) -> LossSums {
        let sums = self.forward(input, target, rows, noise);
        self.backward(input, target, Objective::for_batch(&self.arch, rows, beta));
        self.steps += 1;
        adam_update(&mut self.params, &mut self.adam_m, &mut self.adam_v, &self.grads, &self.adam, self.steps);
        sums
    }

    /// Forward pass and loss sums of a batch, keeping the activations.
    pub fn forward(&mut self, input: &[f32], target: &[f32], rows: usize, noise: Noise) -> LossSums {
        let dim = self.arch.config.input_dim();
        assert!(input.len() == rows * dim && target.len() == rows * dim, "batch shape");
        self.work.resize(&self.arch, rows);
        let (arch, w, p) = (&self.arch, &mut self.work, &self.params);

        let mut x = input;
        for (layer, out) in arch.encoder.iter().zip(w.encoder.iter_mut()) {
            dense_forward(out, x, p, layer, rows);
            x = out;
        }
        let mut kl = 0.0;
        if let Some(head) = &arch.head {
            let latent = arch.config.latent;
            dense_forward(&mut w.mulv, x, p, head, rows);
            rng::fill_normal(&mut w.eps, noise.seed, noise.stream, noise.step);
            reparameterize_forward(&mut w.z, &w.mulv, &w.eps, latent);
            kl = kl_forward(&w.mulv, latent);
            x = &w.z;
        }
        for (layer, out) in arch.decoder.iter().zip(w.decoder.iter_mut()) {
            dense_forward(out, x, p, layer, rows);
            x = out;
        }
        let recon = match arch.config.loss {
            ReconLoss::Bce => bce_with_logits_forward(x, target),
            ReconLoss::Mse => {
                sigmoid_forward(&mut w.probs, x);
                mse_forward(&w.probs, target)
            }
        };
        LossSums { recon, kl }
    }

    /// Gradients of the objective into `grads`, from the last `forward`.
    pub fn backward(&mut self, input: &[f32], target: &[f32], objective: Objective) {
        let (arch, w, p, g) = (&self.arch, &mut self.work, &self.params, &mut self.grads);
        let rows = w.rows;
        g.fill(0.0);

        // d is the gradient flowing down, in grad_a; grad_b receives the next one.
        let logits = w.decoder.last().expect("decoder has an output layer");
        let d = &mut w.grad_a[..logits.len()];
        match arch.config.loss {
            ReconLoss::Bce => bce_with_logits_backward(d, logits, target, objective.recon_scale),
            ReconLoss::Mse => {
                mse_backward(d, &w.probs, target, objective.recon_scale);
                sigmoid_backward(d, &w.probs);
            }
        }

        let code: &[f32] = if arch.head.is_some() { &w.z } else { w.encoder.last().expect("AE encoder") };
        for (k, layer) in arch.decoder.iter().enumerate().rev() {
            let x = if k == 0 { code } else { &w.decoder[k - 1] };
            let dx = &mut w.grad_b[..rows * layer.inputs];
            dense_backward(Some(&mut *dx), &w.grad_a[..rows * layer.outputs], x, p, g, layer, rows);
            std::mem::swap(&mut w.grad_a, &mut w.grad_b);
            if k > 0 {
                relu_backward(&mut w.grad_a[..rows * layer.inputs], x);
            }
        }

        // grad_a now holds d(code).
        let latent = arch.config.latent;
        if let Some(head) = &arch.head {
            let dmulv = &mut w.grad_b[..rows * 2 * latent];
            dmulv.fill(0.0);
            reparameterize_backward(dmulv, &w.grad_a[..rows * latent], &w.mulv, &w.eps, latent);
            kl_backward(dmulv, &w.mulv, latent, objective.kl_scale);
            std::mem::swap(&mut w.grad_a, &mut w.grad_b);
            let h: &[f32] = w.encoder.last().map_or(input, |v| v);
            let dh = &mut w.grad_b[..rows * head.inputs];
            let needs_dx = !arch.encoder.is_empty();
            dense_backward(needs_dx.then_some(dh), &w.grad_a[..rows * head.outputs], h, p, g, head, rows);
            std::mem::swap(&mut w.grad_a, &mut w.grad_b);
        }

        for (k, layer) in arch.encoder.iter().enumerate().rev() {
            let y = &w.encoder[k];
            relu_backward(&mut w.grad_a[..rows * layer.outputs], y);
            let x = if k == 0 { input } else { &w.encoder[k - 1] };
            let dx = (k > 0).then(|| &mut w.grad_b[..rows * layer.inputs]);
            dense_backward(dx, &w.grad_a[..rows * layer.outputs], x, p, g, layer, rows);
            std::mem::swap(&mut w.grad_a, &mut w.grad_b);
        }
    }

    /// The encoder's output for x (B, D): mulv (B, 2L) for a VAE, z (B, L) for an AE.
    pub fn encode(&mut self, x: &[f32], rows: usize) -> Vec<f32> {
        let mut cur = x.to_vec();
        for layer in self.arch.encoder.iter().chain(self.arch.head.iter()) {
            let mut out = vec![0.0; rows * layer.outputs];
            dense_forward(&mut out, &cur, &self.params, layer, rows);
            cur = out;
        }
        cur
    }

    /// The decoder's logits (B, D) for z (B, L).
    pub fn decode_logits(&mut self, z: &[f32], rows: usize) -> Vec<f32> {
        let mut cur = z.to_vec();
        for layer in &self.arch.decoder {
            let mut out = vec![0.0; rows * layer.outputs];
            dense_forward(&mut out, &cur, &self.params, layer, rows);
            cur = out;
        }
        cur
    }

    /// Pixel probabilities sigmoid(decoder(z)) for z (B, L).
    pub fn decode(&mut self, z: &[f32], rows: usize) -> Vec<f32> {
        let mut probs = self.decode_logits(z, rows);
        probs.iter_mut().for_each(|v| *v = super::activation::sigmoid(*v));
        probs
    }
}

/// out (B,O) = act(x (B,I) · Wᵀ + b).
fn dense_forward(out: &mut [f32], x: &[f32], params: &[f32], layer: &Layer, rows: usize) {
    let (i, o) = (layer.inputs, layer.outputs);
    matmul_nt(out, x, &params[layer.weight..layer.weight + o * i], rows, i, o, false);
    bias_add(out, &params[layer.bias..layer.bias + o], rows, o);
    if layer.activation == Activation::Relu {
        relu_forward(out);
    }
}

/// dW += dyᵀ·x, db += Σ dy, and dx = dy·W when asked. dy is the gradient of the
/// layer's pre-activation (the caller has applied the activation's backward).
fn dense_backward(
    dx: Option<&mut [f32]>,
    dy: &[f32],
    x: &[f32],
    params: &[f32],
    grads: &mut [f32],
    layer: &Layer,
    rows: usize,
) {
    let (i, o) = (layer.inputs, layer.outputs);
    matmul_tn(&mut grads[layer.weight..layer.weight + o * i], dy, x, o, rows, i, true);
    column_sums(&mut grads[layer.bias..layer.bias + o], dy, rows, o);
    if let Some(dx) = dx {
        matmul_nn(dx, dy, &params[layer.weight..layer.weight + o * i], rows, o, i, false);
    }
}

impl Workspace {
    fn resize(&mut self, arch: &Architecture, rows: usize) {
        if self.rows == rows && !self.decoder.is_empty() {
            return;
        }
        self.rows = rows;
        let sized = |n: usize| vec![0.0f32; rows * n];
        {
            self.encoder = arch.encoder.iter().map(|l| sized(l.outputs)).collect();
            self.decoder = arch.decoder.iter().map(|l| sized(l.outputs)).collect();
            let latent = arch.config.latent;
            let is_vae = arch.head.is_some();
            self.mulv = if is_vae { sized(2 * latent) } else { Vec::new() };
            self.eps = if is_vae { sized(latent) } else { Vec::new() };
            self.z = if is_vae { sized(latent) } else { Vec::new() };
            self.probs = if arch.config.loss == ReconLoss::Mse { sized(arch.config.input_dim()) } else { Vec::new() };
            self.grad_a = sized(arch.max_width());
            self.grad_b = sized(arch.max_width());
        }
    }
}
