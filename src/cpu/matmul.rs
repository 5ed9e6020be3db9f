//! Matrix products in the three forms the layers need, through our AVX-512
//! kernels (`gemm`, which pack only the smaller operand) where the CPU has
//! them and the `matrixmultiply` crate elsewhere: strides express the
//! transposes, so nothing is copied. Threads come from
//! rayon, over blocks of rows of the result, so every element of a product
//! is summed in the same order whatever the thread count, and callers that
//! run products in parallel themselves (the convolutions) call
//! `matmul_serial` without oversubscribing the cores.

use rayon::prelude::*;

use super::activation::activation_in_place;
use super::gemm::{Product, Strided};
use crate::model::Activation;

/// How the operands of a product are stored: `Nt` is a (M,K) · b (N,K)ᵀ
/// (forward: x·Wᵀ), `Tn` a (K,M)ᵀ · b (K,N) (weight gradient: dYᵀ·X), `Nn`
/// a (M,K) · b (K,N) (input gradient: dY·W).
#[derive(Clone, Copy, Debug)]
pub enum Form {
    Nt,
    Tn,
    Nn,
}

/// Multiply-adds below which a product is not worth splitting across threads.
const PARALLEL_WORK: usize = 1 << 18;

pub fn matmul_nt(c: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize, accumulate: bool) {
    matmul(Form::Nt, c, a, b, m, k, n, accumulate)
}

pub fn matmul_tn(c: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize, accumulate: bool) {
    matmul(Form::Tn, c, a, b, m, k, n, accumulate)
}

pub fn matmul_nn(c: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize, accumulate: bool) {
    matmul(Form::Nn, c, a, b, m, k, n, accumulate)
}

/// c (M,N) = a·b stored as `form` says, plus c when `accumulate`, on
/// rayon's threads. With AVX-512 and enough columns, `gemm` shares out
/// blocks of 32 columns. Otherwise each thread computes a block of c's
/// columns (or of its rows, when c has more rows than columns) and packs
/// all of the operand it shares, so the split goes along the larger one:
/// for x·Wᵀ at batch 128 a row split packed all of W once per thread, and
/// packing was a fifth of the VAE's time.
#[allow(clippy::too_many_arguments)]
pub fn matmul(form: Form, c: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize, accumulate: bool) {
    check(c, a, b, m, k, n);
    let threads = rayon::current_num_threads();
    if threads == 1 || m * k * n < PARALLEL_WORK {
        return product_rows(form, c, a, m, b, m, k, n, accumulate);
    }
    if super::gemm::available() && n.div_ceil(32) >= 2 * threads {
        // Enough blocks of 32 columns for the threads to share out as they
        // come free (a thread that the loader holds up takes fewer).
        let (a_rs, a_cs, b_rs, b_cs) = strides(form, m, k, n);
        let (a, b) = (Strided { at: a.as_ptr(), rs: a_rs, cs: a_cs }, Strided { at: b.as_ptr(), rs: b_rs, cs: b_cs });
        let p = Product { m, k, n, a, b, c: c.as_mut_ptr(), ldc: n, accumulate };
        // SAFETY: `check` proved the shapes and strides in bounds.
        return unsafe { super::gemm::sgemm_parallel(p) };
    }
    if m > n {
        let block = m.div_ceil(threads);
        c.par_chunks_mut(block * n).enumerate().for_each(|(i, c)| {
            let (first, rows) = (i * block, c.len() / n);
            // Rows first.. of a: a row block when a is stored (M,K), a column
            // block (an offset, the same strides) when it is stored (K,M).
            let a = match form {
                Form::Nt | Form::Nn => &a[first * k..][..rows * k],
                Form::Tn => &a[first..],
            };
            product_rows(form, c, a, m, b, rows, k, n, accumulate);
        });
        return;
    }
    // Column blocks, whole multiples of the AVX-512 kernel's 16 columns.
    let width = n.div_ceil(threads).next_multiple_of(16);
    let (a_rs, a_cs, b_rs, b_cs) = strides(form, m, k, n);
    let c_at = SharedMut(c.as_mut_ptr());
    (0..n.div_ceil(width)).into_par_iter().for_each(|i| {
        let (first, cols) = (i * width, width.min(n - i * width));
        // Column first.. of b as (K,N): a row of its storage when it is
        // stored (N,K), else an offset.
        let b_first = if matches!(form, Form::Nt) { first * k } else { first };
        // SAFETY: `check` proved the full shapes and strides in bounds and
        // isize-sized; block i reads columns first..first + cols of b and
        // writes those of c, inside the full matrices, and the blocks'
        // columns are disjoint, so no two threads write the same element.
        unsafe {
            sgemm(
                (m, k, cols),
                (a.as_ptr(), a_rs, a_cs),
                (b.as_ptr().add(b_first), b_rs, b_cs),
                (c_at.get().add(first), n),
                accumulate,
            )
        }
    });
}

/// c's storage, written by threads in disjoint column blocks.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);

// SAFETY: only `matmul` makes one, and its threads write disjoint elements.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// (row stride, column stride) of a as (M,K) and of b as (K,N), where a stored (K,M) has row stride `a_m`.
fn strides(form: Form, a_m: usize, k: usize, n: usize) -> (usize, usize, usize, usize) {
    let (a_rs, a_cs) = match form {
        Form::Nt | Form::Nn => (k, 1),
        Form::Tn => (1, a_m),
    };
    let (b_rs, b_cs) = match form {
        Form::Nt => (1, k),
        Form::Tn | Form::Nn => (n, 1),
    };
    (a_rs, a_cs, b_rs, b_cs)
}

/// `matmul` on the calling thread alone.
#[allow(clippy::too_many_arguments)]
pub fn matmul_serial(form: Form, c: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize, accumulate: bool) {
    check(c, a, b, m, k, n);
    product_rows(form, c, a, m, b, m, k, n, accumulate)
}

/// c (rows, N) = the first `rows` rows of a·b, where a stored (K,M) has row
/// stride `a_m` (its full M). Callers have run `check` on the full shapes.
#[allow(clippy::too_many_arguments)]
fn product_rows(
    form: Form,
    c: &mut [f32],
    a: &[f32],
    a_m: usize,
    b: &[f32],
    rows: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    let (a_rs, a_cs, b_rs, b_cs) = strides(form, a_m, k, n);
    assert!(
        reach(rows, k, a_rs, a_cs) <= a.len() && reach(k, n, b_rs, b_cs) <= b.len() && rows * n == c.len(),
        "matmul blocks: a {} b {} c {} for rows={rows} k={k} n={n}",
        a.len(),
        b.len(),
        c.len()
    );
    // SAFETY: `check` proved that the full shapes fit an isize without
    // overflow, and the assertion that the largest index each stride
    // pattern reaches lies inside its slice.
    unsafe { sgemm((rows, k, n), (a.as_ptr(), a_rs, a_cs), (b.as_ptr(), b_rs, b_cs), (c.as_mut_ptr(), n), accumulate) }
}

/// c (M, N; row stride ldc) = a·b (+ c): `gemm`'s kernels where the CPU has
/// AVX-512, else matrixmultiply.
///
/// # Safety
/// As `gemm::sgemm`: every element of the three strided matrices in bounds.
unsafe fn sgemm(
    (m, k, n): (usize, usize, usize),
    (a, a_rs, a_cs): (*const f32, usize, usize),
    (b, b_rs, b_cs): (*const f32, usize, usize),
    (c, ldc): (*mut f32, usize),
    accumulate: bool,
) {
    if super::gemm::available() {
        let (a, b) = (Strided { at: a, rs: a_rs, cs: a_cs }, Strided { at: b, rs: b_rs, cs: b_cs });
        // SAFETY: the caller's contract, and AVX-512 checked.
        return unsafe { super::gemm::sgemm(Product { m, k, n, a, b, c, ldc, accumulate }) };
    }
    // SAFETY: the caller's contract.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a,
            a_rs as isize,
            a_cs as isize,
            b,
            b_rs as isize,
            b_cs as isize,
            beta(accumulate),
            c,
            ldc as isize,
            1,
        )
    }
}

/// Elements a (rows, cols) matrix with these strides spans: its last index + 1.
fn reach(rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> usize {
    if rows == 0 || cols == 0 { 0 } else { (rows - 1) * row_stride + (cols - 1) * col_stride + 1 }
}

/// out (N) = sum over rows of a (M,N), as the `column_sums` kernel: the bias gradient.
/// Blocks of columns go to different threads; each column adds its rows in
/// order, so the result is the same for any thread count.
pub fn column_sums(out: &mut [f32], a: &[f32], m: usize, n: usize) {
    assert!(out.len() == n && a.len() == m * n);
    let sum = |(j, out): (usize, &mut [f32])| {
        crate::fastmath::widest(
            #[inline(always)]
            || {
                out.fill(0.0);
                let cols = j..j + out.len();
                for row in a.chunks_exact(n.max(1)) {
                    for (o, &x) in out.iter_mut().zip(&row[cols.clone()]) {
                        *o += x;
                    }
                }
            },
        )
    };
    // Blocks of 64 columns (a few cache lines per row), when there is enough work.
    const COLUMNS: usize = 64;
    if m * n < 1 << 15 || n <= COLUMNS {
        return sum((0, out));
    }
    out.par_chunks_mut(COLUMNS).enumerate().for_each(|(b, out)| sum((b * COLUMNS, out)));
}

/// y (M,N) += bias (N) broadcast over rows: the `bias_add` kernel's twin.
pub fn bias_add(y: &mut [f32], bias: &[f32], m: usize, n: usize) {
    bias_activation(y, bias, m, n, Activation::Identity)
}

/// y (M,N) = act(y + bias (N) broadcast over rows), one pass over y.
pub fn bias_activation(y: &mut [f32], bias: &[f32], m: usize, n: usize, act: Activation) {
    assert!(bias.len() == n && y.len() == m * n);
    let apply = |y: &mut [f32]| {
        crate::fastmath::widest(|| {
            for row in y.chunks_exact_mut(n.max(1)) {
                for (o, &b) in row.iter_mut().zip(bias) {
                    *o += b;
                }
                activation_in_place(row, act);
            }
        })
    };
    let rows_per_task = (1 << 15) / n.max(1);
    if rows_per_task >= m || rows_per_task == 0 {
        return apply(y);
    }
    y.par_chunks_mut(rows_per_task * n).for_each(apply);
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
        // Both of `gemm`'s kernels (a packed where it is the smaller, b
        // otherwise), with partial blocks of rows and columns, and K in
        // several blocks (the last one short).
        for (m, k, n) in [(7, 65, 13), (41, 9, 37), (70, 33, 5), (1, 1, 1), (16, 3, 64), (37, 601, 70), (70, 530, 45)] {
            three_forms(m, k, n);
        }
    }

    fn three_forms(m: usize, k: usize, n: usize) {
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

    /// Blocks of columns (m < n) or rows (m > n) on 3 threads, the last one
    /// short, give the product computed in one piece, accumulating or not.
    #[test]
    fn a_product_split_across_threads_is_the_serial_one() {
        for (m, k, n) in [(67, 65, 70), (70, 65, 67), (5, 301, 200)] {
            assert!(m * k * n >= PARALLEL_WORK);
            split_matches_serial(m, k, n);
        }
    }

    fn split_matches_serial(m: usize, k: usize, n: usize) {
        let (a, at, b, bt) = (data(m * k, 5), data(k * m, 6), data(k * n, 7), data(n * k, 8));
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        for (form, a, b) in [(Form::Nt, &a, &bt), (Form::Tn, &at, &b), (Form::Nn, &a, &b)] {
            for accumulate in [false, true] {
                let start = data(m * n, 9);
                let (mut split, mut serial) = (start.clone(), start);
                pool.install(|| matmul(form, &mut split, a, b, m, k, n, accumulate));
                matmul_serial(form, &mut serial, a, b, m, k, n, accumulate);
                close(&split, &serial);
            }
        }
    }

    /// m = 2^62 wraps m·k to 0 in unchecked arithmetic; the check must not.
    #[test]
    #[should_panic(expected = "matmul shapes")]
    fn wrapping_shapes_are_refused() {
        matmul_nt(&mut [], &[], &[], 1 << 62, 4, 0, false);
    }
}
