//! The CPU path's product kernel on AVX-512: c (M, N) = a (M, K) · b (K, N),
//! plus c with `accumulate`, with sgemm's strided operands. Only one operand
//! is packed: b, a panel of 32 columns (K-major) just before its use, while
//! a is read where it lies, a value at a time broadcast to 32 lanes; or, where
//! b's rows lie contiguous and a is the smaller (or a's rows are not
//! contiguous), a into panels of 8 rows while b's rows are read where they
//! lie. matrixmultiply packs both, and with a side of 64 (the seed AE) the
//! packing took a fifth of the time. K goes in blocks that keep the kernel's
//! re-read operand in L1, and threads take blocks of 32 columns of c.
//! Each element is summed over K in order with fused multiply-adds, so a
//! result does not depend on how rows or columns are split between threads.
//! Without AVX-512 (`available`) the CPU path keeps matrixmultiply.

use std::cell::RefCell;
use std::thread::LocalKey;

use rayon::prelude::*;

/// 8 rows x 32 columns of sums: 16 AVX-512 registers.
const MR: usize = 8;
const NR: usize = 32;
/// Most of K per block (see `depth`).
const DEPTH: usize = 256;

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

impl Strided {
    /// The matrix without its first `first` rows.
    ///
    /// # Safety
    /// Row `first` lies inside the allocation.
    unsafe fn skip_rows(self, first: usize) -> Strided {
        // SAFETY: the caller's contract.
        Strided { at: unsafe { self.at.add(first * self.rs) }, ..self }
    }
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

/// Computes `p` on the calling thread.
///
/// # Safety
/// `available()` holds; every element (i, kk) of a, (kk, j) of b and (i, j)
/// of c for i < m, kk < k, j < n lies inside its allocation, and c does not
/// overlap a or b.
pub unsafe fn sgemm(p: Product) {
    // SAFETY: the caller's contract.
    unsafe { run(p, false) }
}

/// Computes `p` on rayon's threads, in blocks of 32 columns of c: each
/// packs only its own columns of b, or all share one packed copy of a.
///
/// # Safety
/// As `sgemm`.
pub unsafe fn sgemm_parallel(p: Product) {
    // SAFETY: the caller's contract.
    unsafe { run(p, true) }
}

// SAFETY: a Product and its operands are read by the threads of one
// `sgemm_parallel`, which write disjoint blocks of c (the caller's contract
// covers the pointers).
unsafe impl Send for Product {}
unsafe impl Sync for Product {}
unsafe impl Send for Strided {}
unsafe impl Sync for Strided {}

unsafe fn run(p: Product, parallel: bool) {
    let Product { m, k, n, a, b, c, ldc, accumulate } = p;
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
        static SHARED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
        static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    }
    // A block's scratch: a panel of b (stream_a) or a padded copy of b's
    // last columns (stream_b), then the partial sums between blocks of K.
    let scratch = k * NR + m.div_ceil(MR) * MR * NR;
    let columns = |block: &(dyn Fn(usize, &mut [f32]) + Sync)| {
        let each = |j0: usize| with_buffer(&SCRATCH, scratch, |s| block(j0, s));
        if parallel {
            (0..n).into_par_iter().step_by(NR).for_each(each);
        } else {
            (0..n).step_by(NR).for_each(each);
        }
    };
    // Pack a (rows in panels of MR) when b's rows are contiguous and a is
    // the smaller, or a's rows are not (read in place, a stored (K, M)
    // would bring a cache line for every 8 values).
    let pack_a = b.cs == 1 && (m * k < k * n || (a.cs != 1 && n >= NR));
    #[cfg(target_arch = "x86_64")]
    if pack_a {
        with_buffer(&SHARED, m.div_ceil(MR) * MR * k, |panels| {
            // Two panels (16 rows, one transposed tile) at a time.
            let pack_rows = |(g, panels): (usize, &mut [f32])| {
                let first = g * 2 * MR;
                // SAFETY: a's rows first.. (first < m), of k each (the caller's contract).
                unsafe { pack::<MR>(a.skip_rows(first), (m - first).min(2 * MR), k, panels) }
            };
            if parallel {
                panels.par_chunks_mut(2 * MR * k).enumerate().for_each(pack_rows);
            } else {
                panels.chunks_mut(2 * MR * k).enumerate().for_each(pack_rows);
            }
            let panels = &*panels;
            // SAFETY: the caller's contract; blocks write disjoint columns of c.
            columns(&|j0, scratch| unsafe { stream_b(p, panels, j0, scratch) });
        });
    } else {
        // SAFETY: as above.
        columns(&|j0, scratch| unsafe { stream_a(p, j0, scratch) });
    }
}

/// `f` on `len` floats of this thread's buffer, or of a new one while the
/// buffer is in use (a thread that waits for its blocks may run another
/// product's).
fn with_buffer<R>(buffer: &'static LocalKey<RefCell<Vec<f32>>>, len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    buffer.with(|cell| match cell.try_borrow_mut() {
        Ok(mut v) => {
            if v.len() < len {
                v.resize(len, 0.0);
            }
            f(&mut v[..len])
        }
        Err(_) => f(&mut vec![0.0; len]),
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

/// Columns j0.. of c (a block of NR), b's packed into a panel (K-major,
/// zero past N) just before its use; a read in place.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn stream_a(Product { m, k, n, a, b, c, ldc, accumulate }: Product, j0: usize, scratch: &mut [f32]) {
    use std::arch::x86_64::*;
    let (panel, partial) = scratch.split_at_mut(k * NR);
    let cols = NR.min(n - j0);
    // Column j of b is row j of bᵀ: (j, kk) at b.at + j·cs + kk·rs.
    unsafe { pack::<NR>(Strided { at: b.at.add(j0 * b.cs), rs: b.cs, cs: b.rs }, cols, k, panel) };
    let depth = depth(k);
    for k0 in (0..k).step_by(depth) {
        let k1 = k.min(k0 + depth);
        for i0 in (0..m).step_by(MR) {
            let rows = MR.min(m - i0);
            // Rows past M read the last row again: in bounds, and not stored.
            let row_at: [*const f32; MR] = std::array::from_fn(|r| unsafe { a.at.add((i0 + r.min(rows - 1)) * a.rs) });
            let sums = &mut partial[i0 * NR..][..MR * NR];
            let mut acc = if k0 == 0 { [_mm512_setzero_ps(); 2 * MR] } else { unsafe { load(sums) } };
            for kk in k0..k1 {
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
            if k1 < k {
                unsafe { save(&acc, sums) };
            } else {
                // SAFETY: rows i0.. and columns j0.. of c, inside it.
                unsafe { store(&acc, c.add(i0 * ldc + j0), ldc, rows, cols, accumulate) };
            }
        }
    }
}

/// Columns j0.. of c (a block of NR) from a packed into panels of MR rows
/// (K-major, zero past M) and b's rows (contiguous) read in place.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn stream_b(
    Product { m, k, n, b, c, ldc, accumulate, .. }: Product,
    panels: &[f32],
    j0: usize,
    scratch: &mut [f32],
) {
    use std::arch::x86_64::*;
    let (tail, partial) = scratch.split_at_mut(k * NR);
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
    let depth = depth(k);
    for k0 in (0..k).step_by(depth) {
        let k1 = k.min(k0 + depth);
        for (p, panel) in panels.chunks_exact(k * MR).enumerate() {
            let sums = &mut partial[p * MR * NR..][..MR * NR];
            let mut acc = if k0 == 0 { [_mm512_setzero_ps(); 2 * MR] } else { unsafe { load(sums) } };
            for kk in k0..k1 {
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
            if k1 < k {
                unsafe { save(&acc, sums) };
            } else {
                let rows = MR.min(m - p * MR);
                // SAFETY: rows p·MR.. and columns j0.. of c, inside it.
                unsafe { store(&acc, c.add(p * MR * ldc + j0), ldc, rows, cols, accumulate) };
            }
        }
    }
}

/// The depth of a block of K: its NR columns of the operand that the
/// kernel re-reads for every block of rows (32 KiB at 256) stay in L1.
/// Blocks split K evenly; a partial sum waits in `partial` between them,
/// and resuming it continues the same chain of multiply-adds: the same bits.
fn depth(k: usize) -> usize {
    k.div_ceil(k.div_ceil(DEPTH))
}

/// An 8 x 32 block of partial sums, to resume.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn load(sums: &[f32]) -> [std::arch::x86_64::__m512; 2 * MR] {
    // SAFETY: `sums` holds MR·NR floats.
    std::array::from_fn(|i| unsafe { std::arch::x86_64::_mm512_loadu_ps(sums.as_ptr().add(16 * i)) })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn save(acc: &[std::arch::x86_64::__m512; 2 * MR], sums: &mut [f32]) {
    for (i, v) in acc.iter().enumerate() {
        // SAFETY: `sums` holds MR·NR floats.
        unsafe { std::arch::x86_64::_mm512_storeu_ps(sums.as_mut_ptr().add(16 * i), *v) };
    }
}

/// Packs x (`rows` x k) into panels of `width` rows, K-major: panel p holds
/// x(p·width + w, kk) at [kk·width + w], zero for rows past `rows`. Rows
/// contiguous along k go through 16 x 16 register transposes and columns
/// contiguous along the rows through masked copies: the scalar loop (kept
/// for other strides) cost a product with 128 rows as much as half its
/// multiply-adds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn pack<const WIDTH: usize>(x: Strided, rows: usize, k: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    // A constant, so that the divisions below are shifts (at run time they cost more than the copies).
    let width = WIDTH;
    let padded = rows.div_ceil(width) * width;
    debug_assert!(out.len() >= padded * k && width.is_multiple_of(8));
    let at = |r: usize, kk: usize| (r / width) * width * k + kk * width + r % width;
    let lanes = |count: usize| if count >= 16 { 0xffff } else { (1u16 << count) - 1 };
    if x.cs == 1 {
        for r0 in (0..padded).step_by(16) {
            for kk0 in (0..k).step_by(16) {
                let along = lanes(k - kk0);
                // SAFETY: row r < rows, columns kk0.. below k (masked).
                let tile: [__m512; 16] = std::array::from_fn(|i| {
                    let r = r0 + i;
                    if r < rows {
                        unsafe { _mm512_maskz_loadu_ps(along, x.at.add(r * x.rs + kk0)) }
                    } else {
                        _mm512_setzero_ps()
                    }
                });
                let columns = transpose16(tile);
                for (t, column) in columns.iter().enumerate().take(16.min(k - kk0)) {
                    // 16 rows of column kk0 + t: one panel's 16 (width 32) or two panels' 8.
                    for half in (0..16).step_by(width.min(16)) {
                        let r = r0 + half;
                        if r >= padded {
                            break;
                        }
                        let v = if half == 0 { *column } else { _mm512_shuffle_f32x4(*column, *column, 0b11_10_11_10) };
                        // SAFETY: r < padded, kk0 + t < k: inside `out`.
                        unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr().add(at(r, kk0 + t)), lanes(width.min(16)), v) };
                    }
                }
            }
        }
    } else if x.rs == 1 {
        for (p, panel) in out[..padded * k].chunks_exact_mut(width * k).enumerate() {
            for (kk, column) in panel.chunks_exact_mut(width).enumerate() {
                for w0 in (0..width).step_by(16) {
                    let r = p * width + w0;
                    let count = rows.saturating_sub(r).min(16).min(width - w0);
                    // SAFETY: rows r..r + count of column kk, inside x.
                    let v = unsafe { _mm512_maskz_loadu_ps(lanes(count), x.at.add(kk * x.cs + r)) };
                    // SAFETY: w0 + 16 lanes masked to the panel's width.
                    unsafe { _mm512_mask_storeu_ps(column.as_mut_ptr().add(w0), lanes(width.min(16)), v) };
                }
            }
        }
    } else {
        for r in 0..padded {
            for kk in 0..k {
                // SAFETY: (r, kk) of x for r < rows.
                out[at(r, kk)] = if r < rows { unsafe { *x.at.add(r * x.rs + kk * x.cs) } } else { 0.0 };
            }
        }
    }
}

/// The 16 x 16 transpose of `rows`: element j of result i is element i of rows[j].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn transpose16(r: [std::arch::x86_64::__m512; 16]) -> [std::arch::x86_64::__m512; 16] {
    use std::arch::x86_64::*;
    // Pairs of rows interleaved, then pairs of pairs (as 64-bit elements):
    // q[4g + c] holds rows 4g..4g+4 of columns c, c+4, c+8, c+12 in its four 128-bit lanes.
    let t: [__m512; 16] = std::array::from_fn(|i| {
        let (a, b) = (r[i & !1], r[i | 1]);
        if i % 2 == 0 { _mm512_unpacklo_ps(a, b) } else { _mm512_unpackhi_ps(a, b) }
    });
    let q: [__m512; 16] = std::array::from_fn(|i| {
        let (g, c) = (i / 4, i % 4);
        let (a, b) = (_mm512_castps_pd(t[4 * g + c / 2]), _mm512_castps_pd(t[4 * g + c / 2 + 2]));
        _mm512_castpd_ps(if c % 2 == 0 { _mm512_unpacklo_pd(a, b) } else { _mm512_unpackhi_pd(a, b) })
    });
    // 128-bit lanes gathered across the four groups: columns c and c+8 from
    // groups (0, 1) and (2, 3), then column c of all four.
    let s: [__m512; 16] = std::array::from_fn(|i| {
        let (pair, c) = (i / 8, i % 8);
        let (col, odd) = (c % 4, c / 4 == 1);
        let (a, b) = (q[8 * pair + col], q[8 * pair + 4 + col]);
        if odd { _mm512_shuffle_f32x4(a, b, 0xdd) } else { _mm512_shuffle_f32x4(a, b, 0x88) }
    });
    std::array::from_fn(|i| {
        let (c, high) = (i % 8, i / 8 == 1);
        let (a, b) = (s[c], s[8 + c]);
        if high { _mm512_shuffle_f32x4(a, b, 0xdd) } else { _mm512_shuffle_f32x4(a, b, 0x88) }
    })
}
