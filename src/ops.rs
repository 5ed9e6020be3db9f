//! The element-wise ops, each written once for the CPU: forward and backward
//! math on one value. Their WGSL twins, with the same names and the same
//! operation order, are in `shaders/ops.wgsl`, which every GPU kernel form
//! includes (the family kernels, product epilogues, row-chain stages);
//! `tests/ops.rs` runs both on the same inputs. The CPU loops (`cpu::`) call
//! these inside their vectorized passes, so they stay branch-free where the
//! loops need it and use `fastmath`'s exp and ln where the loops did.

use serde::{Deserialize, Serialize};

use crate::fastmath::{exp, ln_1p_unit};

/// A hidden layer's activation. Its math is `activate` and `d_activate`
/// below (and their WGSL twins, which see it as `ACT_<NAME>` = `code()`);
/// adding one is a variant here, its arms there, and its WGSL arms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
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
    /// x·σ(x) (SiLU, "swish").
    Silu,
    /// x·Φ(x), PyTorch's exact GELU (Φ from erfc, not the tanh approximation).
    Gelu,
    /// x for x > 0, else e^x − 1 (alpha 1).
    Elu,
    /// ln(1 + e^x) (beta 1; x itself above 20, PyTorch's threshold).
    Softplus,
}

impl Activation {
    pub const ALL: [Activation; 8] = [
        Activation::Identity,
        Activation::Relu,
        Activation::LeakyRelu,
        Activation::Tanh,
        Activation::Silu,
        Activation::Gelu,
        Activation::Elu,
        Activation::Softplus,
    ];
    /// The slope of `LeakyRelu` below zero.
    pub const LEAKY_SLOPE: f32 = 0.01;

    /// The code kernels take (`ACT_<NAME>` in WGSL).
    pub fn code(self) -> u32 {
        self as u32
    }

    /// Whether `d_activate` reads the input x, not only the output: then a
    /// layer's forward keeps its pre-activation for the backward pass.
    pub fn needs_input(self) -> bool {
        matches!(self, Activation::Silu | Activation::Gelu | Activation::Softplus)
    }

    /// `LeakyRelu` -> `LEAKY_RELU`: the WGSL constant's name after `ACT_`.
    pub fn constant_name(self) -> String {
        let mut name = String::new();
        for (i, c) in format!("{self:?}").chars().enumerate() {
            if c.is_uppercase() && i > 0 {
                name.push('_');
            }
            name.push(c.to_ascii_uppercase());
        }
        name
    }
}

/// 1 / (1 + e^-x).
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// d·σ'(x) from y = σ(x).
#[inline(always)]
pub fn d_sigmoid(d: f32, y: f32) -> f32 {
    d * (y * (1.0 - y))
}

/// ln(1 + e^-|x|), which overflows nowhere: the tail of softplus and BCE.
#[inline(always)]
pub fn ln_1p_exp_neg_abs(x: f32) -> f32 {
    ln_1p_unit(exp(-x.abs()))
}

/// erfc(z) from the Chebyshev fit of Numerical Recipes' `erfcc`: fractional
/// error below 1.2e-7 for every z (in exact arithmetic), so Φ(x) =
/// ½·erfc(−x/√2) keeps its relative accuracy far into the lower tail. e^(−z²)
/// is e^(−h²)·e^((h − z)(h + z)) with h = z cut to 12 bits, whose square is
/// exact in f32 (fdlibm's erfcf does the same): z² rounded in f32 would cost
/// ~z²·6e-8 of relative error, 5e-6 at z = 9.
#[inline(always)]
pub fn erfc(z: f32) -> f32 {
    let a = z.abs();
    let h = f32::from_bits(a.to_bits() & 0xffff_f000);
    let t = 1.0 / (1.0 + 0.5 * a);
    let p = -1.265_512_2
        + t * (1.000_023_7
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_204 + t * (1.488_515_9 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * exp(-h * h) * exp((h - a) * (h + a) + p);
    if z >= 0.0 { r } else { 2.0 - r }
}

/// Φ(x), the standard normal distribution function.
#[inline(always)]
pub fn normal_cdf(x: f32) -> f32 {
    0.5 * erfc(-x * std::f32::consts::FRAC_1_SQRT_2)
}

/// A hidden layer's activation.
#[inline(always)]
pub fn activate(x: f32, act: Activation) -> f32 {
    match act {
        Activation::Identity => x,
        Activation::Relu => x.max(0.0),
        Activation::LeakyRelu => {
            if x > 0.0 {
                x
            } else {
                Activation::LEAKY_SLOPE * x
            }
        }
        Activation::Tanh => x.tanh(),
        Activation::Silu => x * sigmoid(x),
        Activation::Gelu => x * normal_cdf(x),
        Activation::Elu => {
            if x > 0.0 {
                x
            } else {
                exp(x) - 1.0
            }
        }
        Activation::Softplus => {
            if x > 20.0 {
                x
            } else {
                x.max(0.0) + ln_1p_exp_neg_abs(x)
            }
        }
    }
}

/// `y[i] = activate(y[i], act)` over a slice: the match on `act` outside
/// the loop, so that each activation's loop is its own and vectorizes.
#[inline(always)]
pub fn activate_slice(y: &mut [f32], act: Activation) {
    macro_rules! each {
        ($($a:ident),*) => {
            match act {
                $(Activation::$a => y.iter_mut().for_each(|v| *v = activate(*v, Activation::$a)),)*
            }
        };
    }
    each!(Identity, Relu, LeakyRelu, Tanh, Silu, Gelu, Elu, Softplus)
}

/// `d[i] = d_activate(d[i], x[i], y[i], act)` over slices (`x` = `y` for the
/// activations that need only their output), one loop per activation.
#[inline(always)]
pub fn d_activate_slice(d: &mut [f32], x: &[f32], y: &[f32], act: Activation) {
    macro_rules! each {
        ($($a:ident),*) => {
            match act {
                $(Activation::$a => {
                    for ((g, &x), &y) in d.iter_mut().zip(x).zip(y) {
                        *g = d_activate(*g, x, y, Activation::$a);
                    }
                })*
            }
        };
    }
    each!(Identity, Relu, LeakyRelu, Tanh, Silu, Gelu, Elu, Softplus)
}

/// d·act'(x) from the input x and the output y = act(x); activations that
/// need only y (`needs_input` false) are handed y for x too. Selects rather
/// than branches, so loops vectorize.
#[inline(always)]
pub fn d_activate(d: f32, x: f32, y: f32, act: Activation) -> f32 {
    match act {
        Activation::Identity => d,
        Activation::Relu => {
            if y <= 0.0 {
                0.0
            } else {
                d
            }
        }
        // A positive slope: y > 0 exactly where x > 0.
        Activation::LeakyRelu => {
            if y <= 0.0 {
                d * Activation::LEAKY_SLOPE
            } else {
                d
            }
        }
        Activation::Tanh => d * (1.0 - y * y),
        Activation::Silu => {
            let s = sigmoid(x);
            d * (s * (1.0 + x * (1.0 - s)))
        }
        Activation::Gelu => {
            // φ(x) = e^(−x²/2)/√(2π).
            let pdf = exp(-0.5 * x * x) * 0.398_942_3;
            d * (normal_cdf(x) + x * pdf)
        }
        // e^x = y + 1 below zero, and y > 0 exactly where x > 0.
        Activation::Elu => {
            if y > 0.0 {
                d
            } else {
                d * (y + 1.0)
            }
        }
        Activation::Softplus => {
            if x > 20.0 {
                d
            } else {
                d * sigmoid(x)
            }
        }
    }
}

/// BCE of σ(a) against the target t: max(a,0) - a·t + ln(1 + e^-|a|), stable for any a.
#[inline(always)]
pub fn bce_with_logits(a: f32, t: f32) -> f32 {
    a.max(0.0) - a * t + ln_1p_exp_neg_abs(a)
}

/// The gradient of `scale`·BCE with respect to the logit a.
#[inline(always)]
pub fn d_bce_with_logits(a: f32, t: f32, scale: f32) -> f32 {
    scale * (sigmoid(a) - t)
}

/// (y - t)².
#[inline(always)]
pub fn mse(y: f32, t: f32) -> f32 {
    (y - t) * (y - t)
}

/// The gradient of `scale`·(y - t)² with respect to y.
#[inline(always)]
pub fn d_mse(y: f32, t: f32, scale: f32) -> f32 {
    scale * 2.0 * (y - t)
}

/// KL(N(mu, e^lv) ‖ N(0, 1)) = -½ (1 + lv - mu² - e^lv).
#[inline(always)]
pub fn kl(mu: f32, lv: f32) -> f32 {
    -0.5 * (1.0 + lv - mu * mu - lv.exp())
}

/// The gradient of `scale`·KL with respect to (mu, lv).
#[inline(always)]
pub fn d_kl(mu: f32, lv: f32, scale: f32) -> (f32, f32) {
    (scale * mu, scale * 0.5 * (lv.exp() - 1.0))
}

/// z = mu + e^(lv/2)·eps.
#[inline(always)]
pub fn reparameterize(mu: f32, lv: f32, eps: f32) -> f32 {
    mu + (0.5 * lv).exp() * eps
}

/// The gradient of z with respect to (mu, lv), given dz.
#[inline(always)]
pub fn d_reparameterize(dz: f32, lv: f32, eps: f32) -> (f32, f32) {
    (dz, dz * eps * 0.5 * (0.5 * lv).exp())
}

/// A denoising model's input: clamp(clean + std·n, 0, 1), n a standard normal draw.
#[inline(always)]
pub fn input_noise(clean: f32, std: f32, n: f32) -> f32 {
    (clean + std * n).clamp(0.0, 1.0)
}

/// Adam's settings for one step: the learning rate of the step (a schedule
/// may change it), betas, eps and the bias corrections 1/(1 - βᵗ) (in f64 on
/// the host, then rounded). Kernels get them from the step's uniform row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamStep {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub c1: f32,
    pub c2: f32,
}

/// One parameter's Adam update, in PyTorch's form (eps added to the
/// bias-corrected √v̂): the new (param, m, v). Moments below f32's smallest
/// normal are kept as zero: the weights of a pixel that is always 0 (the
/// border of Fashion-MNIST) have gradient 0, and their moments would decay
/// through thousands of steps of subnormals, which x86 computes about a
/// hundred times slower (the encoder's update took 15% of the VAE's CPU
/// step, 7% flushed). What they would add to a parameter is below 1e-30.
#[inline(always)]
pub fn adam(p: f32, m: f32, v: f32, g: f32, s: &AdamStep) -> (f32, f32, f32) {
    let m = normal_or_zero(s.beta1 * m + (1.0 - s.beta1) * g);
    let v = normal_or_zero(s.beta2 * v + (1.0 - s.beta2) * g * g);
    (p - s.lr * (m * s.c1) / (v.sqrt() * s.c2 + s.eps), m, v)
}

#[inline(always)]
fn normal_or_zero(x: f32) -> f32 {
    if x.abs() < f32::MIN_POSITIVE { 0.0 } else { x }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A moment that decays below the smallest normal is stored as zero, a
    /// normal one is kept, and the parameter does not move for either.
    #[test]
    fn adam_keeps_no_subnormal_moments() {
        let s = AdamStep { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, c1: 1.0, c2: 1.0 };
        let tiny = f32::MIN_POSITIVE;
        assert_eq!(adam(0.5, tiny, tiny, 0.0, &s), (0.5, 0.0, 0.0));
        let (p, m, v) = adam(0.5, 2.0 * tiny, 2.0 * tiny, 0.0, &s);
        assert_eq!((p, m, v), (0.5, 0.9 * 2.0 * tiny, 0.999 * 2.0 * tiny));
        assert!(m.is_normal() && v.is_normal());
    }

    /// The erfc fit in f32 against libm's f64 erfc at the same f32 inputs,
    /// and GELU through it. GELU's Φ(x) = ½·erfc(−x/√2) also inherits the
    /// rounding of x/√2 to f32, which moves erfc(z) by up to ~2z²·u of itself
    /// (z² = 72 at x = −12): its bound grows with z² accordingly.
    #[test]
    fn erfc_and_gelu_are_accurate() {
        const U: f64 = f32::EPSILON as f64 / 2.0;
        let (mut worst_erfc, mut worst_gelu, mut worst_gelu_near) = (0.0f64, 0.0f64, 0.0f64);
        for i in 0..=200_000 {
            let z = (-6.0 + 15.0 * i as f64 / 200_000.0) as f32;
            let want = libm::erfc(z as f64);
            worst_erfc = worst_erfc.max((erfc(z) as f64 - want).abs() / want);
            let x = ((-12.0 + 24.0 * i as f64 / 200_000.0) as f32) as f64;
            let gelu = x * 0.5 * libm::erfc(-x / std::f64::consts::SQRT_2);
            if gelu.abs() > 1e-30 {
                let err = (activate(x as f32, Activation::Gelu) as f64 - gelu).abs() / gelu.abs();
                let z2 = x * x / 2.0;
                assert!(err <= 1e-6 + 4.0 * z2 * U, "gelu({x}): relative error {err:e}");
                worst_gelu = worst_gelu.max(err);
                if x.abs() <= 4.0 {
                    worst_gelu_near = worst_gelu_near.max(err);
                }
            }
        }
        assert!(worst_erfc < 1e-6, "erfc: max relative error {worst_erfc:e}");
        eprintln!("erfc: {worst_erfc:e}; gelu: {worst_gelu:e} on [-12, 12], {worst_gelu_near:e} on [-4, 4]");
    }

    #[test]
    fn activations_have_their_wgsl_names_and_codes() {
        assert_eq!(Activation::LeakyRelu.constant_name(), "LEAKY_RELU");
        let codes: Vec<u32> = Activation::ALL.iter().map(|a| a.code()).collect();
        assert_eq!(codes, (0..Activation::ALL.len() as u32).collect::<Vec<_>>());
    }
}
