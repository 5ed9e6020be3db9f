//! Matrix products in the three forms a dense layer needs, through the
//! `matrixmultiply` crate (packed, SIMD, threaded): strides express the
//! transposes, so nothing is copied.

/// c (M,N) = a (M,K) · b (N,K)ᵀ, plus c when `accumulate`. Forward: x·Wᵀ.
pub fn matmul_nt(c: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize, accumulate: bool) {
    check(c, a, b, m, k, n);
    let k_ = k as isize;
    // SAFETY: `check` proved, without overflow, that the slices hold exactly
    // m·k, n·k and m·n elements and that every dimension fits an isize stride;
    // the strides walk exactly those row-major shapes, so the largest index
    // read or written is (rows - 1)·cols + cols - 1 < len.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            k_,
            1,
            b.as_ptr(),
            1,
            k_,
            beta(accumulate),
            c.as_mut_ptr(),
            n as isize,
            1,
        )
    }
}

/// c (M,N) = a (K,M)ᵀ · b (K,N), plus c when `accumulate`. Weight gradient: dYᵀ·X.
pub fn matmul_tn(c: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize, accumulate: bool) {
    check(c, a, b, m, k, n);
    // SAFETY: as in `matmul_nt`.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            1,
            m as isize,
            b.as_ptr(),
            n as isize,
            1,
            beta(accumulate),
            c.as_mut_ptr(),
            n as isize,
            1,
        )
    }
}

/// c (M,N) = a (M,K) · b (K,N), plus c when `accumulate`. Input gradient: dY·W.
pub fn matmul_nn(c: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize, accumulate: bool) {
    check(c, a, b, m, k, n);
    // SAFETY: as in `matmul_nt`.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            n as isize,
            1,
            beta(accumulate),
            c.as_mut_ptr(),
            n as isize,
            1,
        )
    }
}

/// out (N) += sum over rows of a (M,N). Bias gradient.
pub fn column_sums(out: &mut [f32], a: &[f32], m: usize, n: usize) {
    assert!(out.len() == n && a.len() == m * n);
    for row in a.chunks_exact(n) {
        for (o, &x) in out.iter_mut().zip(row) {
            *o += x;
        }
    }
}

/// y (M,N) += bias (N) broadcast over rows.
pub fn bias_add(y: &mut [f32], bias: &[f32], m: usize, n: usize) {
    assert!(bias.len() == n && y.len() == m * n);
    for row in y.chunks_exact_mut(n) {
        for (o, &b) in row.iter_mut().zip(bias) {
            *o += b;
        }
    }
}

fn beta(accumulate: bool) -> f32 {
    if accumulate { 1.0 } else { 0.0 }
}

/// The precondition of the unsafe `sgemm` calls. The products are checked:
/// wrapping ones let m = 2^62 give m·k = 0, which empty slices match, and
/// sgemm would then walk far outside them.
fn check(c: &[f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize) {
    let holds = |len: usize, rows: usize, cols: usize| rows.checked_mul(cols) == Some(len);
    let strides_fit = [m, k, n].iter().all(|&d| isize::try_from(d).is_ok());
    assert!(
        strides_fit && holds(a.len(), m, k) && holds(b.len(), k, n) && holds(c.len(), m, n),
        "matmul shapes: a {} b {} c {} for m={m} k={k} n={n}",
        a.len(),
        b.len(),
        c.len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The obvious triple loop, the reference for the strided calls.
    fn naive(
        a: impl Fn(usize, usize) -> f32,
        b: impl Fn(usize, usize) -> f32,
        m: usize,
        k: usize,
        n: usize,
    ) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a(i, p) * b(p, j)).sum();
            }
        }
        c
    }

    fn data(len: usize, salt: u32) -> Vec<f32> {
        (0..len as u32).map(|i| crate::rng::uniform(salt, crate::rng::Stream::Init, 0, i) - 0.5).collect()
    }

    fn close(x: &[f32], y: &[f32]) {
        for (i, (a, b)) in x.iter().zip(y).enumerate() {
            assert!((a - b).abs() <= 1e-4 + 1e-4 * b.abs(), "index {i}: {a} vs {b}");
        }
    }

    #[test]
    fn the_three_forms_match_the_triple_loop() {
        let (m, k, n) = (7, 65, 13);
        let mut c = vec![0.0; m * n];
        let a = data(m * k, 1);
        let bt = data(n * k, 2);
        matmul_nt(&mut c, &a, &bt, m, k, n, false);
        close(&c, &naive(|i, p| a[i * k + p], |p, j| bt[j * k + p], m, k, n));

        let at = data(k * m, 3);
        let b = data(k * n, 4);
        matmul_tn(&mut c, &at, &b, m, k, n, false);
        close(&c, &naive(|i, p| at[p * m + i], |p, j| b[p * n + j], m, k, n));

        let before = c.clone();
        matmul_nn(&mut c, &a, &b, m, k, n, true);
        let mut want = naive(|i, p| a[i * k + p], |p, j| b[p * n + j], m, k, n);
        want.iter_mut().zip(&before).for_each(|(w, b)| *w += b);
        close(&c, &want);
    }

    /// m = 2^62 wraps m·k to 0 in unchecked arithmetic; the check must not.
    #[test]
    #[should_panic(expected = "matmul shapes")]
    fn wrapping_shapes_are_refused() {
        matmul_nt(&mut [], &[], &[], 1 << 62, 4, 0, false);
    }
}
