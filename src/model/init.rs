//! Initial parameters, drawn from the counter-based RNG so that any engine
//! starts from the same weights for the same seed.

use super::{Architecture, InitScheme};
use crate::rng::{self, Stream};

/// Fills a fresh flat parameter buffer. Each tensor draws from its own step
/// counter (its index in the layout), so adding a layer leaves the others alone.
pub fn init_params(arch: &Architecture, scheme: InitScheme, seed: u32) -> Vec<f32> {
    let mut params = vec![0.0f32; arch.param_count];
    for (index, spec) in (0u32..).zip(&arch.tensors) {
        let is_bias = spec.shape.len() == 1;
        // A bias takes the fan-in of the weight it belongs to: PyTorch's rule.
        let fan_in = if is_bias { weight_fan_in(arch, index) } else { spec.shape[1] };
        let bound = match (scheme, is_bias) {
            (InitScheme::Torch, _) => 1.0 / (fan_in as f32).sqrt(),
            (InitScheme::Glorot, true) => 0.0,
            (InitScheme::Glorot, false) => (6.0 / (spec.shape[0] + spec.shape[1]) as f32).sqrt(),
        };
        let values = &mut params[spec.offset..spec.offset + spec.len()];
        for (i, p) in values.iter_mut().enumerate() {
            *p = (2.0 * rng::uniform(seed, Stream::Init, index, i as u32) - 1.0) * bound;
        }
    }
    params
}

fn weight_fan_in(arch: &Architecture, bias_index: u32) -> usize {
    let bias = &arch.tensors[bias_index as usize];
    let stem = bias.name.trim_end_matches(".bias");
    arch.tensors
        .iter()
        .find(|t| t.name == format!("{stem}.weight"))
        .map(|w| w.shape[1])
        .expect("every bias has a weight")
}
