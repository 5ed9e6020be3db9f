//! What a model is: its configuration, its layers, and where each parameter
//! lives in the one flat parameter buffer that both engines share.

mod autodiff;
mod conv;
mod graph;
mod init;

pub use conv::ConvGeom;
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

/// The encoder and decoder's kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// Dense layers (`--hidden`).
    #[default]
    Mlp,
    /// Stride-2 3x3 convolutions (`--conv`), mirrored by transposed ones
    /// (the TensorFlow CVAE tutorial's shape).
    Conv,
}

/// The architecture; everything needed to rebuild the model from a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub kind: ModelKind,
    pub image_rows: usize,
    pub image_cols: usize,
    /// Planes per image: 1 (grayscale) or 3 (RGB); runs from before colour have 1.
    #[serde(default = "one_channel")]
    pub channels: usize,
    /// Encoder hidden widths; the decoder mirrors them.
    pub hidden: Vec<usize>,
    pub latent: usize,
    pub loss: ReconLoss,
    /// Activation of the hidden layers (checkpoints from before it was a
    /// choice used ReLU).
    #[serde(default)]
    pub activation: Activation,
    #[serde(default)]
    pub arch: Arch,
    /// Channels of the stride-2 convolutions (`Arch::Conv`); `hidden` then
    /// adds dense layers between the last one and the latent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conv: Vec<usize>,
    /// Classes of a conditional model (`train --conditional`): the one-hot
    /// label joins the input of the encoder's first dense layer and of the
    /// decoder's first layer. 0: not conditional.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub classes: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn one_channel() -> usize {
    1
}

impl ModelConfig {
    /// The pytorch/examples VAE: 784-400-[20, 20] on 28x28 grayscale, ReLU, BCE
    /// (`train`'s defaults; the tests and plans that need its shapes use it).
    pub fn pytorch_vae() -> ModelConfig {
        ModelConfig {
            kind: ModelKind::Vae,
            image_rows: 28,
            image_cols: 28,
            channels: 1,
            hidden: vec![400],
            latent: 20,
            loss: ReconLoss::Bce,
            activation: Activation::Relu,
            arch: Arch::Mlp,
            conv: vec![],
            classes: 0,
        }
    }

    /// Values per image: channels x rows x cols.
    pub fn input_dim(&self) -> usize {
        self.channels * self.image_rows * self.image_cols
    }

    pub fn validate(&self) -> Result<()> {
        if !matches!(self.channels, 1 | 3) {
            return Err(Error::invalid("channels", format!("{} is not 1 (grayscale) or 3 (RGB)", self.channels)));
        }
        if self.latent == 0 {
            return Err(Error::invalid("--latent", "must be at least 1"));
        }
        if self.hidden.contains(&0) {
            return Err(Error::invalid("--hidden", "widths must be at least 1"));
        }
        if self.classes > 256 {
            return Err(Error::invalid("classes", format!("{} classes; labels are bytes, at most 256", self.classes)));
        }
        if self.input_dim() == 0 {
            return Err(Error::invalid("image size", "images have no pixels"));
        }
        if self.arch == Arch::Conv {
            if self.conv.is_empty() || self.conv.contains(&0) {
                return Err(Error::invalid("--conv", "needs at least one width, each at least 1"));
            }
            let halvings = 1usize.checked_shl(self.conv.len() as u32).unwrap_or(0);
            let (r, c) = (self.image_rows, self.image_cols);
            if halvings == 0 || r % halvings != 0 || c % halvings != 0 {
                return Err(Error::invalid(
                    "image size",
                    format!(
                        "{r}x{c} images cannot be halved {} times by the stride-2 convolutions (--conv {:?}): the sides must be multiples of {halvings}",
                        self.conv.len(),
                        self.conv
                    ),
                ));
            }
        }
        Ok(())
    }
}

pub use crate::ops::Activation;

/// One dense layer `y = act(x·Wᵀ + b)`; W is [outputs, inputs] as in PyTorch.
/// What a layer computes; its weights are shaped as PyTorch's module's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LayerKind {
    /// `nn.Linear`: weight [outputs, inputs].
    Dense,
    /// `nn.Conv2d`: weight [out_c, in_c, k, k].
    Conv2d(ConvGeom),
    /// `nn.ConvTranspose2d`, the adjoint of the convolution `ConvGeom`
    /// (from this layer's output shape to its input shape): weight [in, out, k, k].
    ConvTranspose2d(ConvGeom),
}

/// One layer `y = act(layer(x) + b)` on flattened (C·H·W) rows.
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    /// The checkpoint name stem (`encoder.0`); `mu|logvar` for the VAE head.
    pub name: String,
    pub kind: LayerKind,
    pub inputs: usize,
    pub outputs: usize,
    /// Of `inputs`, the last ones that are the one-hot label (a conditional
    /// model's layers that read [x, onehot(y)]); 0 for the others.
    pub labels: usize,
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
/// AE:  x ─encoder (act each, the last one is the code z)─► z ─decoder─► logits
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
        match config.arch {
            Arch::Mlp => Architecture::mlp(config),
            Arch::Conv => Architecture::conv(config),
        }
    }

    fn mlp(config: &ModelConfig) -> Result<Architecture> {
        let mut builder = LayoutBuilder::default();
        let dim = config.input_dim();
        let latent = config.latent;

        let mut encoder = Vec::new();
        let mut width = dim + config.classes;
        for (i, &h) in config.hidden.iter().enumerate() {
            encoder.push(builder.dense(&format!("encoder.{i}"), width, h, config.activation));
            width = h;
        }
        let head = builder.code(config, &mut encoder, width);

        let mut decoder = Vec::new();
        let mut width = latent + config.classes;
        for (i, &h) in config.hidden.iter().rev().enumerate() {
            decoder.push(builder.dense(&format!("decoder.{i}"), width, h, config.activation));
            width = h;
        }
        let name = format!("decoder.{}", config.hidden.len());
        decoder.push(builder.dense(&name, width, dim, Activation::Identity));
        Ok(builder.finish(config, encoder, head, decoder))
    }

    /// `torch_vae.py --model convvae`: stride-2 3x3 convolutions (padding 1)
    /// to C x H/2^n x W/2^n, flattened into the dense layers (`hidden`) and
    /// the code; the decoder a dense layer back to that shape, transposed
    /// convolutions (stride 2, padding 1, output padding 1) through the
    /// widths in reverse, and a stride-1 transposed convolution to the image's
    /// channels, giving the logits.
    fn conv(config: &ModelConfig) -> Result<Architecture> {
        let mut builder = LayoutBuilder::default();
        let act = config.activation;
        let (mut c, mut h, mut w) = (config.channels, config.image_rows, config.image_cols);
        let mut encoder = Vec::new();
        for (i, &out) in config.conv.iter().enumerate() {
            let g = ConvGeom::conv(c, h, w, out, 3, 2, 1).expect("validated sizes");
            encoder.push(builder.conv2d(&format!("encoder.{i}"), g, act));
            (c, h, w) = (out, g.out_h, g.out_w);
        }
        let (flat_c, flat_h, flat_w) = (c, h, w);
        let mut width = c * h * w + config.classes;
        for &hidden in &config.hidden {
            let name = format!("encoder.{}", encoder.len());
            encoder.push(builder.dense(&name, width, hidden, act));
            width = hidden;
        }
        let head = builder.code(config, &mut encoder, width);

        let mut decoder =
            vec![builder.dense("decoder.0", config.latent + config.classes, flat_c * flat_h * flat_w, act)];
        let (mut c, mut h, mut w) = (flat_c, flat_h, flat_w);
        for &out in config.conv.iter().rev() {
            let g = ConvGeom::transposed(c, h, w, out, 3, 2, 1, 1).expect("validated sizes");
            decoder.push(builder.conv_transpose2d(&format!("decoder.{}", decoder.len()), g, act));
            (c, h, w) = (out, g.in_h, g.in_w);
        }
        let g = ConvGeom::transposed(c, h, w, config.channels, 3, 1, 1, 0).expect("same size");
        decoder.push(builder.conv_transpose2d(&format!("decoder.{}", decoder.len()), g, Activation::Identity));
        Ok(builder.finish(config, encoder, head, decoder))
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
        Layer { name: name.to_string(), kind: LayerKind::Dense, inputs, outputs, weight, bias, activation, labels: 0 }
    }

    fn conv2d(&mut self, name: &str, g: ConvGeom, activation: Activation) -> Layer {
        let weight = self.take(format!("{name}.weight"), vec![g.out_c, g.in_c, g.kernel, g.kernel]);
        let bias = self.take(format!("{name}.bias"), vec![g.out_c]);
        let (inputs, outputs) = (g.in_len(), g.out_len());
        Layer {
            name: name.to_string(),
            kind: LayerKind::Conv2d(g),
            inputs,
            outputs,
            weight,
            bias,
            activation,
            labels: 0,
        }
    }

    /// The adjoint of the convolution `g`: from g's output shape to its input shape.
    fn conv_transpose2d(&mut self, name: &str, g: ConvGeom, activation: Activation) -> Layer {
        let weight = self.take(format!("{name}.weight"), vec![g.out_c, g.in_c, g.kernel, g.kernel]);
        let bias = self.take(format!("{name}.bias"), vec![g.in_c]);
        let (inputs, outputs) = (g.out_len(), g.in_len());
        Layer {
            name: name.to_string(),
            kind: LayerKind::ConvTranspose2d(g),
            inputs,
            outputs,
            weight,
            bias,
            activation,
            labels: 0,
        }
    }

    /// The AE's code layer (pushed onto the encoder) or the VAE's head.
    fn code(&mut self, config: &ModelConfig, encoder: &mut Vec<Layer>, width: usize) -> Option<Layer> {
        match config.kind {
            ModelKind::Ae => {
                let name = format!("encoder.{}", encoder.len());
                encoder.push(self.dense(&name, width, config.latent, config.activation));
                None
            }
            ModelKind::Vae => Some(self.mu_logvar(width, config.latent)),
        }
    }

    /// Marks the layers that read the one-hot label: the encoder's first
    /// dense one (after any convolutions) and the decoder's first.
    fn finish(
        self,
        config: &ModelConfig,
        mut encoder: Vec<Layer>,
        mut head: Option<Layer>,
        mut decoder: Vec<Layer>,
    ) -> Architecture {
        let first_dense = encoder.iter_mut().chain(head.iter_mut()).find(|l| l.kind == LayerKind::Dense);
        for layer in first_dense.into_iter().chain(decoder.first_mut()) {
            layer.labels = config.classes;
        }
        Architecture { config: config.clone(), encoder, head, decoder, param_count: self.next, tensors: self.tensors }
    }

    fn mu_logvar(&mut self, inputs: usize, latent: usize) -> Layer {
        let weight = self.take("mu.weight".into(), vec![latent, inputs]);
        self.take("logvar.weight".into(), vec![latent, inputs]);
        let bias = self.take("mu.bias".into(), vec![latent]);
        self.take("logvar.bias".into(), vec![latent]);
        let (outputs, activation) = (2 * latent, Activation::Identity);
        Layer { name: "mu|logvar".into(), kind: LayerKind::Dense, inputs, outputs, weight, bias, activation, labels: 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vae() -> ModelConfig {
        ModelConfig::pytorch_vae()
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

#[cfg(test)]
mod conv_tests {
    use super::*;

    fn conv_vae(latent: usize, hidden: Vec<usize>) -> ModelConfig {
        ModelConfig {
            kind: ModelKind::Vae,
            image_rows: 28,
            image_cols: 28,
            channels: 1,
            hidden,
            latent,
            loss: ReconLoss::Bce,
            activation: Activation::Relu,
            arch: Arch::Conv,
            conv: vec![32, 64],
            classes: 0,
        }
    }

    #[test]
    fn the_conv_vae_is_the_references_by_name_and_shape() {
        let arch = Architecture::new(&conv_vae(16, vec![])).unwrap();
        let shapes: Vec<(&str, Vec<usize>)> = arch.tensors.iter().map(|t| (t.name.as_str(), t.shape.clone())).collect();
        let want: Vec<(&str, Vec<usize>)> = vec![
            ("encoder.0.weight", vec![32, 1, 3, 3]),
            ("encoder.0.bias", vec![32]),
            ("encoder.1.weight", vec![64, 32, 3, 3]),
            ("encoder.1.bias", vec![64]),
            ("mu.weight", vec![16, 64 * 7 * 7]),
            ("logvar.weight", vec![16, 64 * 7 * 7]),
            ("mu.bias", vec![16]),
            ("logvar.bias", vec![16]),
            ("decoder.0.weight", vec![64 * 7 * 7, 16]),
            ("decoder.0.bias", vec![64 * 7 * 7]),
            ("decoder.1.weight", vec![64, 64, 3, 3]),
            ("decoder.1.bias", vec![64]),
            ("decoder.2.weight", vec![64, 32, 3, 3]),
            ("decoder.2.bias", vec![32]),
            ("decoder.3.weight", vec![32, 1, 3, 3]),
            ("decoder.3.bias", vec![1]),
        ];
        assert_eq!(shapes, want);
        // The reference's parameter count (torch_vae.py --model convvae --latent 16).
        assert_eq!(arch.param_count, 320 + 18_496 + 2 * (3136 * 16 + 16) + (16 * 3136 + 3136) + 36_928 + 18_464 + 289);
        assert_eq!(arch.decoder.last().unwrap().outputs, 784);
        // --hidden 16: the keras-io layer before mu and logvar.
        let keras = Architecture::new(&conv_vae(2, vec![16])).unwrap();
        assert_eq!(keras.encoder[2].name, "encoder.2");
        assert_eq!((keras.encoder[2].inputs, keras.encoder[2].outputs), (3136, 16));
    }

    #[test]
    fn colour_conv_models_take_and_make_three_planes() {
        let arch =
            Architecture::new(&ModelConfig { channels: 3, image_rows: 32, image_cols: 32, ..conv_vae(16, vec![]) })
                .unwrap();
        let shape = |name: &str| arch.tensors.iter().find(|t| t.name == name).unwrap().shape.clone();
        assert_eq!(shape("encoder.0.weight"), [32, 3, 3, 3]);
        assert_eq!(shape("decoder.3.weight"), [32, 3, 3, 3]);
        assert_eq!(shape("decoder.3.bias"), [3]);
        assert_eq!(arch.encoder[0].inputs, 3 * 32 * 32);
        assert_eq!(arch.decoder.last().unwrap().outputs, 3 * 32 * 32);
        assert_eq!(arch.param_count, crate::limits::check_model(&arch.config).unwrap());
        let err = Architecture::new(&ModelConfig { channels: 2, ..conv_vae(16, vec![]) }).unwrap_err().to_string();
        assert!(err.contains("channels") && err.contains("not 1"), "{err}");
    }

    #[test]
    fn configs_from_before_colour_have_one_channel() {
        let mut json = serde_json::to_value(conv_vae(16, vec![])).unwrap();
        json.as_object_mut().unwrap().remove("channels");
        let config: ModelConfig = serde_json::from_value(json).unwrap();
        assert_eq!(config.channels, 1);
    }

    #[test]
    fn sizes_the_strides_cannot_halve_are_refused_by_name() {
        let err = Architecture::new(&ModelConfig { image_rows: 30, ..conv_vae(16, vec![]) }).unwrap_err().to_string();
        assert!(err.contains("30x28") && err.contains("multiples of 4"), "{err}");
    }
}
