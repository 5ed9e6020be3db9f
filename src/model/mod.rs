//! What a model is: its configuration, its layers, and where each parameter
//! lives in the one flat parameter buffer that both engines share.

mod autodiff;
mod graph;
mod init;

pub use graph::{Graph, LossTerm, Node, Op, TensorId, TensorInfo};
pub use init::init_params;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Plain (or, with noise, denoising) autoencoder.
    Ae,
    /// Variational autoencoder: Gaussian posterior, reparameterization, KL term.
    Vae,
}

/// Reconstruction loss of the decoder's output against the clean image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ReconLoss {
    /// Binary cross-entropy, computed from the logits.
    Bce,
    /// Squared error of the sigmoid output.
    Mse,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum InitScheme {
    /// PyTorch nn.Linear: weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    Torch,
    /// Keras: Glorot-uniform weights, zero biases.
    Glorot,
}

/// The architecture; everything needed to rebuild the model from a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub kind: ModelKind,
    pub image_rows: usize,
    pub image_cols: usize,
    /// Encoder hidden widths; the decoder mirrors them.
    pub hidden: Vec<usize>,
    pub latent: usize,
    pub loss: ReconLoss,
    /// Activation of the hidden layers (checkpoints from before it was a
    /// choice used ReLU).
    #[serde(default)]
    pub activation: Activation,
}

impl ModelConfig {
    pub fn input_dim(&self) -> usize {
        self.image_rows * self.image_cols
    }

    pub fn validate(&self) -> Result<()> {
        if self.latent == 0 {
            return Err(Error::invalid("--latent", "must be at least 1"));
        }
        if self.hidden.contains(&0) {
            return Err(Error::invalid("--hidden", "widths must be at least 1"));
        }
        if self.input_dim() == 0 {
            return Err(Error::invalid("image size", "images have no pixels"));
        }
        Ok(())
    }
}

/// An element-wise activation; its backward pass needs only its output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    /// No activation (output layers, the VAE head).
    #[value(skip)]
    Identity,
    /// max(x, 0).
    #[default]
    Relu,
    /// x for x > 0, else 0.01·x (PyTorch's default slope).
    LeakyRelu,
    /// tanh(x).
    Tanh,
}

impl Activation {
    /// The slope of `LeakyRelu` below zero.
    pub const LEAKY_SLOPE: f32 = 0.01;
}

/// One dense layer `y = act(x·Wᵀ + b)`; W is [outputs, inputs] as in PyTorch.
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    /// The checkpoint name stem (`encoder.0`); `mu|logvar` for the VAE head.
    pub name: String,
    pub inputs: usize,
    pub outputs: usize,
    /// Offsets into the flat parameter buffer.
    pub weight: usize,
    pub bias: usize,
    pub activation: Activation,
}

/// A named view of part of the flat buffer, shaped like PyTorch's tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub offset: usize,
}

impl TensorSpec {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The layers in execution order and the parameter layout.
///
/// AE:  x ─encoder (ReLU each, the last one is the code z)─► z ─decoder─► logits
/// VAE: x ─encoder (ReLU)─► h ─head─► [mu | logvar] (B, 2L) ─reparam─► z ─decoder─► logits
///
/// The VAE's mu and logvar layers are stored back to back (both weights, then
/// both biases) so that they run as one `head` layer with 2L outputs, and are
/// still saved as two PyTorch-shaped modules.
#[derive(Clone, Debug, PartialEq)]
pub struct Architecture {
    pub config: ModelConfig,
    pub encoder: Vec<Layer>,
    pub head: Option<Layer>,
    /// The last decoder layer produces logits (no activation); the sigmoid is
    /// part of the loss or of `decode`.
    pub decoder: Vec<Layer>,
    pub tensors: Vec<TensorSpec>,
    pub param_count: usize,
}

impl Architecture {
    pub fn new(config: &ModelConfig) -> Result<Architecture> {
        config.validate()?;
        let mut builder = LayoutBuilder::default();
        let dim = config.input_dim();
        let latent = config.latent;

        let mut encoder = Vec::new();
        let mut width = dim;
        for (i, &h) in config.hidden.iter().enumerate() {
            encoder.push(builder.dense(&format!("encoder.{i}"), width, h, config.activation));
            width = h;
        }
        let head = match config.kind {
            ModelKind::Ae => {
                let name = format!("encoder.{}", config.hidden.len());
                encoder.push(builder.dense(&name, width, latent, config.activation));
                None
            }
            ModelKind::Vae => Some(builder.mu_logvar(width, latent)),
        };

        let mut decoder = Vec::new();
        let mut width = latent;
        for (i, &h) in config.hidden.iter().rev().enumerate() {
            decoder.push(builder.dense(&format!("decoder.{i}"), width, h, config.activation));
            width = h;
        }
        let name = format!("decoder.{}", config.hidden.len());
        decoder.push(builder.dense(&name, width, dim, Activation::Identity));

        Ok(Architecture {
            config: config.clone(),
            encoder,
            head,
            decoder,
            param_count: builder.next,
            tensors: builder.tensors,
        })
    }

    /// Width of the encoder's output: 2L (mu, logvar) for a VAE, L for an AE.
    pub fn code_width(&self) -> usize {
        match self.head {
            Some(ref h) => h.outputs,
            None => self.config.latent,
        }
    }

    pub fn layers(&self) -> impl Iterator<Item = &Layer> {
        self.encoder.iter().chain(self.head.iter()).chain(self.decoder.iter())
    }

    /// The widest activation, for sizing work buffers.
    pub fn max_width(&self) -> usize {
        self.layers().map(|l| l.outputs.max(l.inputs)).max().unwrap_or(0)
    }
}

#[derive(Default)]
struct LayoutBuilder {
    next: usize,
    tensors: Vec<TensorSpec>,
}

impl LayoutBuilder {
    fn take(&mut self, name: String, shape: Vec<usize>) -> usize {
        let offset = self.next;
        self.next += shape.iter().product::<usize>();
        self.tensors.push(TensorSpec { name, shape, offset });
        offset
    }

    fn dense(&mut self, name: &str, inputs: usize, outputs: usize, activation: Activation) -> Layer {
        let weight = self.take(format!("{name}.weight"), vec![outputs, inputs]);
        let bias = self.take(format!("{name}.bias"), vec![outputs]);
        Layer { name: name.to_string(), inputs, outputs, weight, bias, activation }
    }

    fn mu_logvar(&mut self, inputs: usize, latent: usize) -> Layer {
        let weight = self.take("mu.weight".into(), vec![latent, inputs]);
        self.take("logvar.weight".into(), vec![latent, inputs]);
        let bias = self.take("mu.bias".into(), vec![latent]);
        self.take("logvar.bias".into(), vec![latent]);
        Layer { name: "mu|logvar".into(), inputs, outputs: 2 * latent, weight, bias, activation: Activation::Identity }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vae() -> ModelConfig {
        ModelConfig {
            kind: ModelKind::Vae,
            image_rows: 28,
            image_cols: 28,
            hidden: vec![400],
            latent: 20,
            loss: ReconLoss::Bce,
            activation: Activation::Relu,
        }
    }

    #[test]
    fn default_vae_matches_pytorch_example() {
        let arch = Architecture::new(&vae()).unwrap();
        // fc1 784·400+400, fc21/fc22 2·(400·20+20), fc3 20·400+400, fc4 400·784+784.
        assert_eq!(arch.param_count, 652_824);
        let names: Vec<_> = arch.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "encoder.0.weight",
                "encoder.0.bias",
                "mu.weight",
                "logvar.weight",
                "mu.bias",
                "logvar.bias",
                "decoder.0.weight",
                "decoder.0.bias",
                "decoder.1.weight",
                "decoder.1.bias"
            ]
        );
        let head = arch.head.as_ref().unwrap();
        assert_eq!(head.bias - head.weight, 2 * 20 * 400, "mu and logvar weights are adjacent");
    }

    #[test]
    fn tensors_tile_the_buffer() {
        let arch = Architecture::new(&ModelConfig { hidden: vec![7, 5], ..vae() }).unwrap();
        let mut next = 0;
        for t in &arch.tensors {
            assert_eq!(t.offset, next, "{}", t.name);
            next += t.len();
        }
        assert_eq!(next, arch.param_count);
    }

    #[test]
    fn zero_latent_is_rejected() {
        let err = Architecture::new(&ModelConfig { latent: 0, ..vae() }).unwrap_err();
        assert!(err.to_string().contains("--latent"), "{err}");
    }
}
