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
        let fan_in = if is_bias { weight_fan_in(arch, index) } else { fans(&spec.shape).0 };
        let bound = match (scheme, is_bias) {
            (InitScheme::Torch, _) => 1.0 / (fan_in as f32).sqrt(),
            (InitScheme::Glorot, true) => 0.0,
            (InitScheme::Glorot, false) => {
                let (fan_in, fan_out) = fans(&spec.shape);
                (6.0 / (fan_in + fan_out) as f32).sqrt()
            }
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
        .map(|w| fans(&w.shape).0)
        .expect("every bias has a weight")
}

/// (fan_in, fan_out) of a weight shaped [out, in, k...] as PyTorch lays out
/// dense and convolution weights: each counts the receptive field k... too.
fn fans(shape: &[usize]) -> (usize, usize) {
    let receptive: usize = shape.iter().skip(2).product();
    (shape[1] * receptive, shape[0] * receptive)
}

#[cfg(test)]
mod tests {
    use super::fans;

    #[test]
    fn fans_count_the_receptive_field() {
        assert_eq!(fans(&[400, 784]), (784, 400));
        // A Conv2d(3, 32, 3x3) weight: PyTorch's fan_in is 3·9, fan_out 32·9.
        assert_eq!(fans(&[32, 3, 3, 3]), (27, 288));
    }
}
