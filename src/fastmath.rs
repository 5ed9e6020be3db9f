//! exp and ln(1 + x) in plain f32 arithmetic without branches, so that loops
//! over whole batches vectorize (libm's scalar calls were 10% of a VAE step).
//! Accuracy: a few ulps, checked against f64 in the tests below.

use rayon::prelude::*;

const LOG2_E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;

/// e^x for x in [-87, 88] (clamped outside, where f32 under- or overflows anyway).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // x = n·ln2 + r with |r| ≤ ln2/2. Adding 1.5·2²³ rounds x·log2(e) to the
    // integer n and leaves n in the low mantissa bits, so 2ⁿ comes from
    // integer arithmetic that vectorizes (a float-to-int cast does not, well).
    const SHIFT: f32 = 12_582_912.0;
    let shifted = x * LOG2_E + SHIFT;
    let n = shifted - SHIFT;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // Taylor to r⁷: truncation error (ln2/2)⁸/8! < 5e-9.
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    let two_n = (shifted.to_bits().wrapping_sub(SHIFT.to_bits()).wrapping_add(127)) << 23;
    p * f32::from_bits(two_n)
}

/// ln(1 + x) for x in [0, 1]: 2·atanh(x / (2 + x)) as an odd series in
/// t = x/(2+x) ≤ 1/3, accurate for tiny x too (no 1 + x rounding).
#[inline(always)]
pub fn ln_1p_unit(x: f32) -> f32 {
    let t = x / (2.0 + x);
    let t2 = t * t;
    // Terms to t¹⁵: the first dropped one is 2·(1/3)¹⁷/17 < 1e-9.
    let s = 1.0
        + t2 * (1.0 / 3.0
            + t2 * (1.0 / 5.0
                + t2 * (1.0 / 7.0 + t2 * (1.0 / 9.0 + t2 * (1.0 / 11.0 + t2 * (1.0 / 13.0 + t2 * (1.0 / 15.0)))))));
    2.0 * t * s
}

/// Runs `f` compiled for the widest vector unit this x86-64 CPU has
/// (AVX-512, then AVX2; the build targets baseline x86-64, SSE2 only), so
/// that the element-wise loops it inlines use 2-4x wider vectors. Rust does
/// not contract a·b + c into FMAs, so the results are the same bits on
/// every path. Wrap the innermost loop: work handed to other threads runs
/// outside it.
#[inline(always)]
pub fn widest<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked above).
            return unsafe { with_avx512(f) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked above).
            return unsafe { with_avx2(f) };
        }
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn with_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Σ f(a[i], b[i]) in 16 f32 lanes that stay in vector registers, blocks of
/// 1024 adding up in f64 so that no f32 partial sum grows long.
pub fn sum_zip(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> f64 {
    const PIECE: usize = 1024;
    assert_eq!(a.len(), b.len());
    let piece = |(a, b): (&[f32], &[f32])| widest(|| sum_piece(a, b, &f));
    // The pieces' sums are added in order either way: the same result,
    // bit for bit, on one thread or many.
    if a.len() <= 32 * PIECE {
        return a.chunks(PIECE).zip(b.chunks(PIECE)).map(piece).sum();
    }
    let sums: Vec<f64> = a.par_chunks(PIECE).zip(b.par_chunks(PIECE)).map(piece).collect();
    sums.iter().sum()
}

/// `sum_zip(a, b, f)`, and out[i] = g(a[i], b[i]) in the same pass.
pub fn sum_zip_writing(
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    f: impl Fn(f32, f32) -> f32 + Sync,
    g: impl Fn(f32, f32) -> f32 + Sync,
) -> f64 {
    const PIECE: usize = 1024;
    assert!(a.len() == b.len() && out.len() == a.len());
    let piece = |((out, a), b): ((&mut [f32], &[f32]), &[f32])| {
        widest(
            #[inline(always)]
            || write_and_sum_piece(out, a, b, &f, &g),
        )
    };
    if a.len() <= 32 * PIECE {
        return out.chunks_mut(PIECE).zip(a.chunks(PIECE)).zip(b.chunks(PIECE)).map(piece).sum();
    }
    let sums: Vec<f64> =
        out.par_chunks_mut(PIECE).zip(a.par_chunks(PIECE)).zip(b.par_chunks(PIECE)).map(piece).collect();
    sums.iter().sum()
}

#[inline(always)]
fn write_and_sum_piece(
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    f: &impl Fn(f32, f32) -> f32,
    g: &impl Fn(f32, f32) -> f32,
) -> f64 {
    const LANES: usize = 16;
    let mut o = out.chunks_exact_mut(LANES);
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for ((o, a), b) in (&mut o).zip(ca).zip(cb) {
        for l in 0..LANES {
            o[l] = g(a[l], b[l]);
        }
    }
    for ((o, &x), &y) in o.into_remainder().iter_mut().zip(ra).zip(rb) {
        *o = g(x, y);
    }
    sum_piece(a, b, f)
}

#[inline(always)]
fn sum_piece(a: &[f32], b: &[f32], f: &impl Fn(f32, f32) -> f32) -> f64 {
    const LANES: usize = 16;
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (a, b) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += f(a[l], b[l]);
        }
    }
    for (&x, &y) in ra.iter().zip(rb) {
        acc[0] += f(x, y);
    }
    acc.iter().map(|&v| v as f64).sum::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_a_few_ulps() {
        let mut worst = 0.0f64;
        for i in 0..=200_000 {
            let x = -87.0 + 175.0 * i as f32 / 200_000.0;
            let want = (x as f64).exp();
            worst = worst.max(((exp(x) as f64) - want).abs() / want);
        }
        assert!(worst < 4e-7, "max relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1e4) >= 0.0 && exp(-1e4) < 1e-37);
    }

    #[test]
    fn ln_1p_is_within_a_few_ulps() {
        let mut worst = 0.0f64;
        for i in 0..=100_000 {
            let x = (i as f32 / 100_000.0).powi(3);
            let want = (x as f64).ln_1p();
            let err = ((ln_1p_unit(x) as f64) - want).abs();
            worst = worst.max(if want > 0.0 { err / want } else { err });
        }
        assert!(worst < 4e-7, "max relative error {worst}");
    }

    #[test]
    fn lane_sum_matches_f64() {
        let v: Vec<f32> = (0..100_003).map(|i| ((i * 7919) % 1000) as f32 / 997.0).collect();
        let want: f64 = v.iter().map(|&x| x as f64).sum();
        assert!((sum_zip(&v, &v, |x, _| x) - want).abs() < 1e-6 * want);
    }
}
