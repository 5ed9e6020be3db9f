//! The CPU path's product kernel on AVX-512: c (M, N) = a (M, K) · b (K, N),
//! plus c with `accumulate`, with sgemm's strided operands. Only one operand
//! is packed, the smaller: b into panels of 32 columns (K-major) while a is
//! read where it lies, a value at a time broadcast to 32 lanes; or, where
//! a is the smaller and b's rows lie contiguous, a into panels of 8 rows
//! while b's rows are read where they lie. matrixmultiply packs both, and
//! with a side of 64 (the seed AE) the packing took a fifth of the time.
//! Each element is summed over K in order with fused multiply-adds, so a
//! result does not depend on how rows or columns are split between threads.
//! Without AVX-512 (`available`) the CPU path keeps matrixmultiply.

/// 8 rows x 32 columns of sums: 16 AVX-512 registers.
const MR: usize = 8;
const NR: usize = 32;

/// Whether this CPU runs the kernels (AVX-512F, which brings FMA).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// An operand: its first element and (row stride, column stride).
#[derive(Clone, Copy)]
pub struct Strided {
    pub at: *const f32,
    pub rs: usize,
    pub cs: usize,
}

/// c (M, N, row stride `ldc`) = a·b, plus c with `accumulate`.
#[derive(Clone, Copy)]
pub struct Product {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub a: Strided,
    pub b: Strided,
    pub c: *mut f32,
    pub ldc: usize,
    pub accumulate: bool,
}

/// Computes `p`.
///
/// # Safety
/// `available()` holds; every element (i, kk) of a, (kk, j) of b and (i, j)
/// of c for i < m, kk < k, j < n lies inside its allocation, and c does not
/// overlap a or b.
pub unsafe fn sgemm(p: Product) {
    let Product { m, k, n, b, c, ldc, accumulate, .. } = p;
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for i in (0..m).filter(|_| !accumulate) {
            // SAFETY: row i of c (the caller's contract).
            unsafe { std::slice::from_raw_parts_mut(c.add(i * ldc), n).fill(0.0) };
        }
        return;
    }
    thread_local! {
        static PACKED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    PACKED.with(|packed| {
        let mut packed = packed.borrow_mut();
        // Pack a (rows in panels of MR) when it is the smaller and b's rows are contiguous.
        let pack_a = b.cs == 1 && m * k < k * n;
        let len = if pack_a { m.div_ceil(MR) * MR * k + k * NR } else { n.div_ceil(NR) * NR * k };
        if packed.len() < len {
            packed.resize(len, 0.0);
        }
        // SAFETY: the caller's contract; the buffer has `len` floats.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            if pack_a { stream_b(p, &mut packed[..len]) } else { stream_a(p, &mut packed[..len]) }
        }
    })
}

/// Stores an 8 x 32 block of sums (two registers a row) into c's rows
/// `rows` and columns `cols` (a partial block through a copy).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn store(
    acc: &[std::arch::x86_64::__m512; 2 * MR],
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    accumulate: bool,
) {
    use std::arch::x86_64::*;
    for r in 0..rows {
        // SAFETY: row r < rows of the block, columns < cols, inside c (the caller's contract).
        unsafe {
            let out = c.add(r * ldc);
            if cols == NR {
                let (mut s0, mut s1) = (acc[2 * r], acc[2 * r + 1]);
                if accumulate {
                    s0 = _mm512_add_ps(_mm512_loadu_ps(out), s0);
                    s1 = _mm512_add_ps(_mm512_loadu_ps(out.add(16)), s1);
                }
                _mm512_storeu_ps(out, s0);
                _mm512_storeu_ps(out.add(16), s1);
            } else {
                let mut sums = [0f32; NR];
                _mm512_storeu_ps(sums.as_mut_ptr(), acc[2 * r]);
                _mm512_storeu_ps(sums.as_mut_ptr().add(16), acc[2 * r + 1]);
                for (j, s) in sums.iter().enumerate().take(cols) {
                    let o = out.add(j);
                    *o = if accumulate { *o + s } else { *s };
                }
            }
        }
    }
}

/// b packed into panels of NR columns (K-major, zero past N); a read in place.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn stream_a(Product { m, k, n, a, b, c, ldc, accumulate }: Product, panels: &mut [f32]) {
    use std::arch::x86_64::*;
    for (p, panel) in panels.chunks_exact_mut(k * NR).enumerate() {
        for (kk, row) in panel.chunks_exact_mut(NR).enumerate() {
            for (jj, v) in row.iter_mut().enumerate() {
                let j = p * NR + jj;
                // SAFETY: (kk, j) of b for j < n (the caller's contract).
                *v = if j < n { unsafe { *b.at.add(kk * b.rs + j * b.cs) } } else { 0.0 };
            }
        }
    }
    for (p, panel) in panels.chunks_exact(k * NR).enumerate() {
        let cols = NR.min(n - p * NR);
        for i0 in (0..m).step_by(MR) {
            let rows = MR.min(m - i0);
            // Rows past M read the last row again: in bounds, and not stored.
            let row_at: [*const f32; MR] = std::array::from_fn(|r| unsafe { a.at.add((i0 + r.min(rows - 1)) * a.rs) });
            let mut acc = [_mm512_setzero_ps(); 2 * MR];
            for kk in 0..k {
                // SAFETY: the panel holds NR values per k; a's rows are in bounds.
                unsafe {
                    let bp = panel.as_ptr().add(kk * NR);
                    let (b0, b1) = (_mm512_loadu_ps(bp), _mm512_loadu_ps(bp.add(16)));
                    for r in 0..MR {
                        let av = _mm512_set1_ps(*row_at[r].add(kk * a.cs));
                        acc[2 * r] = _mm512_fmadd_ps(av, b0, acc[2 * r]);
                        acc[2 * r + 1] = _mm512_fmadd_ps(av, b1, acc[2 * r + 1]);
                    }
                }
            }
            // SAFETY: rows i0.. and columns p·NR.. of c, inside it.
            unsafe { store(&acc, c.add(i0 * ldc + p * NR), ldc, rows, cols, accumulate) };
        }
    }
}

/// a packed into panels of MR rows (K-major, zero past M); b's rows
/// (contiguous) read in place, NR columns at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn stream_b(Product { m, k, n, a, b, c, ldc, accumulate }: Product, packed: &mut [f32]) {
    use std::arch::x86_64::*;
    let (panels, tail) = packed.split_at_mut(m.div_ceil(MR) * MR * k);
    for (p, panel) in panels.chunks_exact_mut(k * MR).enumerate() {
        for (kk, column) in panel.chunks_exact_mut(MR).enumerate() {
            for (r, v) in column.iter_mut().enumerate() {
                let i = p * MR + r;
                // SAFETY: (i, kk) of a for i < m (the caller's contract).
                *v = if i < m { unsafe { *a.at.add(i * a.rs + kk * a.cs) } } else { 0.0 };
            }
        }
    }
    for j0 in (0..n).step_by(NR) {
        let cols = NR.min(n - j0);
        // A partial block of columns goes through a copy padded with zeros.
        let (block, stride) = if cols == NR {
            // SAFETY: column j0 of b's rows.
            (unsafe { b.at.add(j0) }, b.rs)
        } else {
            for (kk, row) in tail.chunks_exact_mut(NR).enumerate() {
                for (jj, v) in row.iter_mut().enumerate() {
                    // SAFETY: (kk, j0 + jj) of b for j0 + jj < n.
                    *v = if jj < cols { unsafe { *b.at.add(kk * b.rs + j0 + jj) } } else { 0.0 };
                }
            }
            (tail.as_ptr(), NR)
        };
        for (p, panel) in panels.chunks_exact(k * MR).enumerate() {
            let mut acc = [_mm512_setzero_ps(); 2 * MR];
            for kk in 0..k {
                // SAFETY: NR values of row kk of the block; MR of the panel per k.
                unsafe {
                    let row = block.add(kk * stride);
                    let (b0, b1) = (_mm512_loadu_ps(row), _mm512_loadu_ps(row.add(16)));
                    let col = panel.as_ptr().add(kk * MR);
                    for r in 0..MR {
                        let av = _mm512_set1_ps(*col.add(r));
                        acc[2 * r] = _mm512_fmadd_ps(av, b0, acc[2 * r]);
                        acc[2 * r + 1] = _mm512_fmadd_ps(av, b1, acc[2 * r + 1]);
                    }
                }
            }
            let rows = MR.min(m - p * MR);
            // SAFETY: rows p·MR.. and columns j0.. of c, inside it.
            unsafe { store(&acc, c.add(p * MR * ldc + j0), ldc, rows, cols, accumulate) };
        }
    }
}
