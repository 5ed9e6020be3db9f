//! Caps on every size that comes from outside (flags, file headers, checkpoint
//! metadata, config.json), checked with overflow-checked arithmetic before
//! anything is allocated from it, so that a crafted number is a one-line
//! error and never an abort, a wrapped product or an exhausted memory.
//!
//! The caps are far above what the models here need and far below what
//! would take a machine's memory.

use crate::error::{Error, Result};
use crate::model::{Arch, Architecture, ModelConfig, ModelKind};

/// Side of a square image, in pixels (`--image-size`, a model's image size).
pub const MAX_IMAGE_SIDE: usize = 1024;
/// Hidden layers of an encoder (the decoder mirrors them).
pub const MAX_HIDDEN_LAYERS: usize = 64;
/// Most convolutions of `--arch conv`, and the widest.
pub const MAX_CONV_LAYERS: usize = 8;
pub const MAX_CONV_WIDTH: usize = 4096;
/// Parameters of a model: 1 GiB of f32, 4 GiB with gradients and Adam moments.
pub const MAX_PARAMS: usize = 1 << 28;
/// Rows of a training or evaluation batch.
pub const MAX_BATCH: usize = 1 << 16;
/// Batch rows times the widest layer: the size of one activation buffer.
pub const MAX_BATCH_VALUES: usize = 1 << 26;
/// Images decoded by `sample --n`.
pub const MAX_SAMPLES: usize = 1 << 16;
/// Points of one `interpolate` walk.
pub const MAX_STEPS: usize = 1000;
/// Importance samples per image (`eval --k`); Burda et al. use 5,000.
pub const MAX_IWAE_K: usize = 1 << 20;
/// Importance samples over all images (`eval`: images · k), each one decode:
/// a billion already takes hours.
pub const MAX_IWAE_SAMPLES: u64 = 1 << 30;
/// Pixels decoded from a codes file, stored one byte each.
pub const MAX_DECODED_PIXELS: usize = 1 << 32;

/// Pixels of one picture read from a folder (or `--from-file`), checked from
/// its header before it is decoded: 16 megapixels, at most 128 MiB decoded
/// even as 16-bit RGBA (larger photos: resize them first).
pub const MAX_PICTURE_PIXELS: u64 = 1 << 24;
/// Bytes of one picture file, read whole before it is decoded.
pub const MAX_PICTURE_FILE_BYTES: u64 = 1 << 26;

/// Errors unless `value <= max`; `name` is the flag or field.
pub fn at_most(name: &'static str, value: usize, max: usize) -> Result<()> {
    if value > max {
        return Err(Error::invalid(name, format!("{value} is more than the limit of {max}")));
    }
    Ok(())
}

/// The number of parameters of a model, computed with checked arithmetic in
/// the layout `Architecture::new` builds (which does not check), after
/// checking every width; call it before `Architecture::new` on any
/// configuration read from outside.
pub fn check_model(config: &ModelConfig) -> Result<usize> {
    // The sides first: `validate` multiplies them.
    at_most("image rows", config.image_rows, MAX_IMAGE_SIDE)?;
    at_most("image cols", config.image_cols, MAX_IMAGE_SIDE)?;
    config.validate()?;
    at_most("number of hidden layers", config.hidden.len(), MAX_HIDDEN_LAYERS)?;
    let too_many = || {
        let (rows, cols) = (config.image_rows, config.image_cols);
        let shape = format!("{rows}x{cols} images, hidden {:?}, latent {}", config.hidden, config.latent);
        Error::invalid("model size", format!("{shape}: more than {MAX_PARAMS} parameters"))
    };
    // A dense layer holds outputs·inputs weights and `outputs` biases.
    let dense = |inputs: usize, outputs: usize| inputs.checked_add(1)?.checked_mul(outputs);
    let dim = config.input_dim();
    let mut layers = Vec::new();
    let mut width = dim;
    let conv = config.arch == Arch::Conv;
    // The 3x3 convolutions of `--arch conv`: each encoder one (c_prev -> c,
    // from the image's channels) and the transposed one mirroring it in the
    // decoder (c -> c_prev, the last one to the image's channels), plus
    // the decoder's first transposed one (last -> last).
    let mut total = 0usize;
    if conv {
        at_most("number of --conv layers", config.conv.len(), MAX_CONV_LAYERS)?;
        let mut channels = config.channels;
        let mut pairs = Vec::new();
        for &c in &config.conv {
            at_most("--conv width", c, MAX_CONV_WIDTH)?;
            pairs.push((channels, c, c)); // encoder conv: bias per output channel
            pairs.push((c, channels, channels)); // decoder transposed conv: bias per its output
            channels = c;
        }
        pairs.push((channels, channels, channels));
        for (a, b, bias) in pairs {
            let n = a.checked_mul(b).and_then(|n| n.checked_mul(9)).and_then(|n| n.checked_add(bias));
            total = n.and_then(|n| total.checked_add(n)).ok_or_else(too_many)?;
        }
        let shrink = 1usize << config.conv.len();
        width = channels * (config.image_rows / shrink) * (config.image_cols / shrink);
    }
    let flat = width;
    // A conditional model's one-hot labels join the first encoder layer's
    // input and the decoder's first layer's (`classes` is at most 256).
    width += config.classes;
    for &h in &config.hidden {
        layers.push((width, h));
        width = h;
    }
    match config.kind {
        ModelKind::Ae => layers.push((width, config.latent)),
        ModelKind::Vae => layers.push((width, config.latent.checked_mul(2).ok_or_else(too_many)?)),
    }
    let code = config.latent.checked_add(config.classes).ok_or_else(too_many)?;
    if conv {
        // The decoder's dense layer back to the flattened shape; `hidden` is not mirrored.
        layers.push((code, flat));
    } else {
        let mut width = code;
        for &h in config.hidden.iter().rev() {
            layers.push((width, h));
            width = h;
        }
        layers.push((width, dim));
    }
    for (inputs, outputs) in layers {
        total = dense(inputs, outputs).and_then(|n| total.checked_add(n)).ok_or_else(too_many)?;
    }
    if total > MAX_PARAMS {
        return Err(too_many());
    }
    Ok(total)
}

/// Errors unless a batch of `batch_size` rows fits the caps for this model.
pub fn check_batch(batch_size: usize, config: &ModelConfig) -> Result<()> {
    if batch_size == 0 {
        return Err(Error::invalid("--batch-size", "must be at least 1"));
    }
    at_most("--batch-size", batch_size, MAX_BATCH)?;
    check_rows("--batch-size", batch_size, config)
}

/// Errors unless `rows` rows of the model's widest layer fit one activation
/// buffer of at most [`MAX_BATCH_VALUES`]; `name` is the flag that sets `rows`.
pub fn check_rows(name: &'static str, rows: usize, config: &ModelConfig) -> Result<()> {
    let dim = config.image_rows.saturating_mul(config.image_cols).saturating_mul(config.channels);
    let widest = if config.arch == Arch::Conv {
        // The layout is metadata only, and `check_model` has bounded it.
        Architecture::new(config).map_or(usize::MAX, |a| a.max_width())
    } else {
        // A conditional model's labels widen the first layers' inputs.
        let joined = [dim.saturating_add(config.classes), config.latent.saturating_add(config.classes)];
        config.hidden.iter().copied().chain(joined).chain([config.latent.saturating_mul(2)]).max().unwrap_or(0)
    };
    match rows.checked_mul(widest) {
        Some(values) if values <= MAX_BATCH_VALUES => Ok(()),
        _ => Err(Error::invalid(
            name,
            format!("{rows} rows of the widest layer ({widest}) exceed the limit of {MAX_BATCH_VALUES} values"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Architecture, ReconLoss};

    fn config(kind: ModelKind, hidden: Vec<usize>) -> ModelConfig {
        ModelConfig {
            kind,
            image_rows: 28,
            image_cols: 27,
            channels: 1,
            hidden,
            latent: 5,
            loss: ReconLoss::Bce,
            activation: crate::model::Activation::Relu,
            arch: crate::model::Arch::Mlp,
            conv: vec![],
            classes: 0,
        }
    }

    #[test]
    fn parameter_count_matches_the_architecture() {
        for kind in [ModelKind::Ae, ModelKind::Vae] {
            for hidden in [vec![], vec![400], vec![7, 3, 11]] {
                let c = config(kind, hidden);
                assert_eq!(check_model(&c).unwrap(), Architecture::new(&c).unwrap().param_count, "{c:?}");
            }
        }
    }

    #[test]
    fn colour_conv_and_conditional_parameter_counts_match_the_architecture() {
        for channels in [1, 3] {
            for (arch, conv, hidden) in
                [(Arch::Mlp, vec![], vec![9]), (Arch::Conv, vec![4, 6], vec![]), (Arch::Conv, vec![5], vec![7])]
            {
                for (kind, classes) in
                    [(ModelKind::Ae, 0), (ModelKind::Vae, 0), (ModelKind::Ae, 3), (ModelKind::Vae, 10)]
                {
                    let c = ModelConfig {
                        channels,
                        image_rows: 8,
                        image_cols: 12,
                        arch,
                        conv: conv.clone(),
                        classes,
                        ..config(kind, hidden.clone())
                    };
                    assert_eq!(check_model(&c).unwrap(), Architecture::new(&c).unwrap().param_count, "{c:?}");
                    let widest = Architecture::new(&c).unwrap().max_width();
                    assert!(check_rows("--n", MAX_BATCH_VALUES / widest, &c).is_ok());
                    assert!(check_rows("--n", MAX_BATCH_VALUES / widest + 1, &c).is_err(), "{c:?}");
                }
            }
        }
    }

    #[test]
    fn huge_models_are_refused_before_any_arithmetic_wraps() {
        for hidden in [vec![1_000_000_000], vec![1 << 62], vec![usize::MAX], vec![1 << 40, 1 << 40]] {
            let e = check_model(&config(ModelKind::Vae, hidden)).unwrap_err().to_string();
            assert!(e.contains("parameters"), "{e}");
        }
        let e = check_model(&ModelConfig { latent: usize::MAX, ..config(ModelKind::Vae, vec![]) }).unwrap_err();
        assert!(e.to_string().contains("parameters"), "{e}");
        let e = check_model(&ModelConfig { image_rows: 1 << 33, ..config(ModelKind::Ae, vec![]) }).unwrap_err();
        assert!(e.to_string().contains("image rows"), "{e}");
    }

    #[test]
    fn batches_are_capped() {
        let c = config(ModelKind::Vae, vec![400]);
        assert!(check_batch(128, &c).is_ok());
        for bad in [0, 100_000_000_000, MAX_BATCH + 1] {
            assert!(check_batch(bad, &c).unwrap_err().to_string().contains("--batch-size"));
        }
        let wide = config(ModelKind::Vae, vec![1 << 20]);
        assert!(check_batch(MAX_BATCH, &wide).unwrap_err().to_string().contains("widest layer"));
    }
}
