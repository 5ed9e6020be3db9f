//! Counter-based random numbers, written so that `shaders/rng.wgsl` computes the
//! same bits: every draw is a pure function of (seed, stream, step, index).
//!
//! The hash is pcg4d (Jarzynski & Olano, "Hash Functions for GPU Rendering",
//! JCGT 2020): only wrapping u32 multiply, add, xor and shift, so WGSL and Rust
//! agree bit for bit. Uniforms are exact; normals go through `ln`, `sqrt` and
//! `cos`, whose GPU versions differ from Rust's by a few ulps.

/// Which consumer a draw belongs to, so that streams never overlap.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Init = 1,
    Shuffle = 2,
    Reparam = 3,
    InputNoise = 4,
    EvalReparam = 5,
    Sample = 6,
    EvalNoise = 7,
}

#[inline]
pub fn pcg4d(mut v: [u32; 4]) -> [u32; 4] {
    for x in v.iter_mut() {
        *x = x.wrapping_mul(1664525).wrapping_add(1013904223);
    }
    mix(&mut v);
    for x in v.iter_mut() {
        *x ^= *x >> 16;
    }
    mix(&mut v);
    v
}

#[inline]
fn mix(v: &mut [u32; 4]) {
    v[0] = v[0].wrapping_add(v[1].wrapping_mul(v[3]));
    v[1] = v[1].wrapping_add(v[2].wrapping_mul(v[0]));
    v[2] = v[2].wrapping_add(v[0].wrapping_mul(v[1]));
    v[3] = v[3].wrapping_add(v[1].wrapping_mul(v[2]));
}

/// Maps 24 random bits to (0, 1]: never 0, so `ln` is always finite.
#[inline]
pub fn unit_uniform(bits: u32) -> f32 {
    ((bits >> 8) + 1) as f32 * (1.0 / 16_777_216.0)
}

/// One uniform in (0, 1].
#[inline]
pub fn uniform(seed: u32, stream: Stream, step: u32, index: u32) -> f32 {
    unit_uniform(pcg4d([seed, stream as u32, step, index])[0])
}

/// One standard normal by Box-Muller (cosine branch) from the hash's first two words.
#[inline]
pub fn normal(seed: u32, stream: Stream, step: u32, index: u32) -> f32 {
    let h = pcg4d([seed, stream as u32, step, index]);
    let radius = (-2.0 * unit_uniform(h[0]).ln()).sqrt();
    radius * (std::f32::consts::TAU * unit_uniform(h[1])).cos()
}

/// Fills `out` with normals for counters `(seed, stream, step, 0..len)`.
pub fn fill_normal(out: &mut [f32], seed: u32, stream: Stream, step: u32) {
    for (i, x) in out.iter_mut().enumerate() {
        *x = normal(seed, stream, step, i as u32);
    }
}

/// A seeded permutation of `0..n` (Fisher-Yates), the data order of one epoch.
pub fn permutation(n: usize, seed: u32, epoch: u32) -> Vec<u32> {
    let mut order: Vec<u32> = (0..n as u32).collect();
    for i in (1..n).rev() {
        let bits = pcg4d([seed, Stream::Shuffle as u32, epoch, i as u32])[0];
        // Multiply-shift maps 32 bits onto 0..=i without the modulo's bias.
        let j = ((bits as u64 * (i as u64 + 1)) >> 32) as usize;
        order.swap(i, j);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normals_have_unit_moments() {
        let mut xs = vec![0.0f32; 200_000];
        fill_normal(&mut xs, 7, Stream::Reparam, 3);
        let n = xs.len() as f64;
        let mean = xs.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = xs.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        // Standard errors: mean 1/sqrt(n) = 0.0022, variance sqrt(2/n) = 0.0032.
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.015, "variance {var}");
    }

    #[test]
    fn uniforms_stay_in_half_open_unit_interval() {
        assert_eq!(unit_uniform(0), 1.0 / 16_777_216.0);
        assert_eq!(unit_uniform(u32::MAX), 1.0);
    }

    #[test]
    fn streams_and_steps_differ() {
        let a = normal(1, Stream::Reparam, 0, 5);
        assert_ne!(a, normal(1, Stream::InputNoise, 0, 5));
        assert_ne!(a, normal(1, Stream::Reparam, 1, 5));
        assert_ne!(a, normal(2, Stream::Reparam, 0, 5));
        assert_eq!(a, normal(1, Stream::Reparam, 0, 5));
    }

    #[test]
    fn permutation_is_a_permutation() {
        let mut p = permutation(1000, 3, 1);
        assert_ne!(p, permutation(1000, 3, 2));
        p.sort_unstable();
        assert!(p.iter().enumerate().all(|(i, &x)| i as u32 == x));
    }
}
