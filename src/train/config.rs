//! Everything that defines a training run, saved as the run's `config.json`.

use serde::{Deserialize, Serialize};

use crate::engine::AdamConfig;
use crate::error::{Error, Result};
use crate::limits;
use crate::model::{Arch, InitScheme, ModelConfig, ModelKind};
use crate::schedule::LrSchedule;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub model: ModelConfig,
    pub init: InitScheme,
    pub adam: AdamConfig,
    /// Absent (constant) in runs from before schedules.
    #[serde(default, skip_serializing_if = "LrSchedule::is_constant")]
    pub lr_schedule: LrSchedule,
    pub batch_size: usize,
    pub epochs: usize,
    /// Weight of the KL term (VAE).
    pub beta: f32,
    /// Epochs over which beta ramps up linearly from beta/warmup to beta (0 = off).
    pub kl_warmup: usize,
    /// Std of the Gaussian noise on the input (denoising model), 0 = off.
    pub noise_std: f32,
    pub seed: u32,
    /// Train on this class only (one-class anomaly protocol).
    pub normal_class: Option<u8>,
    /// The `--data` argument, so that `sample` and friends can reload the data.
    pub data: String,
    /// Held-out share when the data is a folder of pictures.
    pub test_fraction: f32,
    /// A conditional model's class names, label by label (as the data names
    /// them; empty when it names none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub class_names: Vec<String>,
}

impl TrainConfig {
    /// Checks every field, with sizes capped (`crate::limits`): a run's
    /// config.json is validated like the command line that wrote it.
    pub fn validate(&self) -> Result<()> {
        limits::check_model(&self.model)?;
        limits::check_batch(self.batch_size, &self.model)?;
        if !self.class_names.is_empty() && self.class_names.len() != self.model.classes {
            let (names, classes) = (self.class_names.len(), self.model.classes);
            return Err(Error::invalid("class_names", format!("{names} names for a model of {classes} classes")));
        }
        let lr = self.adam.lr;
        if !lr.is_finite() || lr <= 0.0 {
            return Err(Error::invalid("--lr", format!("{lr} is not a positive finite number")));
        }
        self.lr_schedule.validate(lr)?;
        if !self.adam.eps.is_finite() || self.adam.eps <= 0.0 {
            return Err(Error::invalid("--adam-eps", format!("{} is not a positive finite number", self.adam.eps)));
        }
        if !self.beta.is_finite() || self.beta < 0.0 {
            return Err(Error::invalid("--beta", format!("{} is not a finite number >= 0", self.beta)));
        }
        if !self.noise_std.is_finite() || self.noise_std < 0.0 {
            return Err(Error::invalid("--noise", format!("{} is not a finite number >= 0", self.noise_std)));
        }
        let f = self.test_fraction;
        if !(0.0..1.0).contains(&f) {
            return Err(Error::invalid("--test-fraction", format!("{f} is not in [0, 1)")));
        }
        Ok(())
    }

    /// The model as users name it, with its parameter count:
    /// "VAE (MLP), 652,824 parameters", "conditional denoising AE (conv) on
    /// 10 classes, ...".
    pub fn describe_model(&self, params: usize) -> String {
        let m = &self.model;
        let conditional = if m.classes > 0 { "conditional " } else { "" };
        let denoising = if self.noise_std > 0.0 { "denoising " } else { "" };
        let kind = match m.kind {
            ModelKind::Vae => "VAE",
            ModelKind::Ae => "AE",
        };
        let arch = match m.arch {
            Arch::Mlp => "MLP",
            Arch::Conv => "conv",
        };
        let classes = if m.classes > 0 { format!(" on {} classes", m.classes) } else { String::new() };
        format!("{conditional}{denoising}{kind} ({arch}){classes}, {} parameters", thousands(params))
    }

    /// The KL weight for epoch `epoch` (1-based) after the linear warm-up.
    pub fn beta_at(&self, epoch: usize) -> f32 {
        if self.kl_warmup == 0 { self.beta } else { self.beta * (epoch as f32 / self.kl_warmup as f32).min(1.0) }
    }
}

/// `n` with commas between thousands: 652,824.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_separated() {
        let cases = [(0, "0"), (999, "999"), (1000, "1,000"), (652824, "652,824"), (1234567, "1,234,567")];
        for (n, text) in cases {
            assert_eq!(thousands(n), text);
        }
    }
}
