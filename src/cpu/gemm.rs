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

/// How a kernel reads an operand in place: each row a sequence of runs of
/// values at a constant stride.
pub trait Operand: Copy + Send + Sync {
    /// Where element (r, col) lies, the stride to (r, col + 1), and the
    /// column where that run ends (the same for every row).
    ///
    /// # Safety
    /// (r, col) lies inside the operand.
    unsafe fn run(&self, r: usize, col: usize) -> (*const f32, usize, usize);
}

impl Operand for Strided {
    #[inline(always)]
    unsafe fn run(&self, r: usize, col: usize) -> (*const f32, usize, usize) {
        // SAFETY: the caller's contract.
        (unsafe { self.at.add(r * self.rs + col * self.cs) }, self.cs, usize::MAX)
    }
}

/// A matrix whose rows are gathered: row r is `per_row` runs of `len`
/// contiguous values, run s at `runs[r·per_row + s]` (a convolution's
/// patches read straight from the image, zeros from a zeroed buffer).
#[derive(Clone, Copy)]
pub struct Gathered {
    pub runs: *const *const f32,
    pub per_row: usize,
    pub len: usize,
}

impl Operand for Gathered {
    #[inline(always)]
    unsafe fn run(&self, r: usize, col: usize) -> (*const f32, usize, usize) {
        let s = col / self.len;
        // SAFETY: the caller's contract: run s of row r exists and holds `len` values.
        (unsafe { (*self.runs.add(r * self.per_row + s)).add(col % self.len) }, 1, (s + 1) * self.len)
    }
}

// SAFETY: as for Product: the pointers are only read, by the threads of one product.
unsafe impl Send for Gathered {}
unsafe impl Sync for Gathered {}

/// c (M, N, row stride `ldc`) = a·b, plus c with `accumulate`.
#[derive(Clone, Copy)]
pub struct Product<A = Strided, B = Strided> {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub a: A,
    pub b: B,
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

/// c = a·b on the calling thread with a's rows gathered (b packed a panel
/// at a time, as `sgemm` does for a read in place); row r of c at
/// `c + c_rows[r]` when given (scattered to the pixels of a phase), else at
/// c + r·ldc.
///
/// # Safety
/// As `sgemm`: every element of a (its runs), of b and of c in bounds, and
/// c_rows (M offsets) gives distinct rows of N values.
#[cfg(target_arch = "x86_64")]
pub unsafe fn sgemm_gathered_a(p: Product<Gathered, Strided>, c_rows: Option<&[usize]>) {
    let Product { m, k, n, .. } = p;
    assert!(c_rows.is_none_or(|at| at.len() >= m), "a row offset for each of {m} rows");
    // SAFETY: the caller's contract.
    if unsafe { trivial(&p, c_rows) } {
        return;
    }
    let scratch = k * NR + m.div_ceil(MR) * MR * NR;
    // SAFETY: the caller's contract.
    with_buffer(&SCRATCH, scratch, |s| (0..n).step_by(NR).for_each(|j0| unsafe { stream_a(p, c_rows, j0, s) }));
}

/// c = a·b on the calling thread with b's rows gathered (a packed into
/// panels, b's blocks of 32 columns read in place where they lie in one run).
///
/// # Safety
/// As `sgemm_gathered_a`.
#[cfg(target_arch = "x86_64")]
pub unsafe fn sgemm_gathered_b(p: Product<Strided, Gathered>) {
    let Product { m, k, n, a, .. } = p;
    // SAFETY: the caller's contract.
    if unsafe { trivial(&p, None) } {
        return;
    }
    with_buffer(&SHARED, m.div_ceil(MR) * MR * k, |panels| {
        for (g, panels) in panels.chunks_mut(2 * MR * k).enumerate() {
            // SAFETY: the caller's contract.
            unsafe { pack_pair(a, m, k, g, panels) }
        }
        let scratch = k * NR + m.div_ceil(MR) * MR * NR;
        // SAFETY: the caller's contract.
        with_buffer(&SCRATCH, scratch, |s| (0..n).step_by(NR).for_each(|j0| unsafe { stream_b(p, panels, j0, s) }));
    });
}

thread_local! {
    static SHARED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

// SAFETY: a Product and its operands are read by the threads of one
// `sgemm_parallel`, which write disjoint blocks of c (the caller's contract
// covers the pointers).
unsafe impl<A, B> Send for Product<A, B> {}
unsafe impl<A, B> Sync for Product<A, B> {}
unsafe impl Send for Strided {}
unsafe impl Sync for Strided {}

unsafe fn run(p: Product, parallel: bool) {
    let Product { m, k, n, a, b, .. } = p;
    // SAFETY: the caller's contract.
    if unsafe { trivial(&p, None) } {
        return;
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
            // SAFETY: the caller's contract.
            let pack_rows = |(g, panels): (usize, &mut [f32])| unsafe { pack_pair(a, m, k, g, panels) };
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
        columns(&|j0, scratch| unsafe { stream_a(p, None, j0, scratch) });
    }
}

/// Packs a's panels 2g and 2g + 1 (16 rows, one transposed tile) into `panels`.
///
/// # Safety
/// `available()`; a holds m rows of k values, and 2g·MR < m.
#[cfg(target_arch = "x86_64")]
unsafe fn pack_pair(a: Strided, m: usize, k: usize, g: usize, panels: &mut [f32]) {
    let first = g * 2 * MR;
    // SAFETY: a's rows first.. (first < m), of k each (the caller's contract).
    unsafe { pack::<MR>(a.skip_rows(first), (m - first).min(2 * MR), k, panels) }
}

/// Whether the product has nothing to sum (c is zeroed for K = 0, unless
/// accumulated); row i of c at c + c_rows[i] when given, else c + i·ldc.
///
/// # Safety
/// Rows of c of n values each.
unsafe fn trivial<X, Y>(p: &Product<X, Y>, c_rows: Option<&[usize]>) -> bool {
    let Product { m, k, n, c, ldc, accumulate, .. } = *p;
    if k == 0 && n > 0 {
        for i in (0..m).filter(|_| !accumulate) {
            let at = c_rows.map_or(i * ldc, |at| at[i]);
            // SAFETY: row i of c (the caller's contract).
            unsafe { std::slice::from_raw_parts_mut(c.add(at), n).fill(0.0) };
        }
    }
    m == 0 || n == 0 || k == 0
}

/// `f` on `len` floats of this thread's buffer, or of a new one while the
/// buffer is in use (a thread that waits for its blocks may run another
/// product's).
fn with_buffer<R>(buffer: &'static LocalKey<RefCell<Vec<f32>>>, len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    buffer.with(|cell| match cell.try_borrow_mut() {
        Ok(mut v) => f(aligned(&mut v, len)),
        Err(_) => f(aligned(&mut Vec::new(), len)),
    })
}

/// `len` floats of `v` from a 64-byte boundary (grown as needed): a
/// 32-float row of an unaligned buffer spans three cache lines, and each of
/// its vector loads splits across two.
pub fn aligned(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    const LINE: usize = 64 / std::mem::size_of::<f32>();
    if v.len() < len + LINE {
        v.resize(len + LINE, 0.0);
    }
    let skip = v.as_ptr().align_offset(64).min(LINE);
    &mut v[skip..skip + len]
}

/// Stores an 8 x 32 block of sums (two registers a row) into the first
/// `cols` columns of rows `out[..rows]` of c (a partial block through a
/// copy). Not generic, so that it inlines: the sums stay in registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn store(
    acc: &[std::arch::x86_64::__m512; 2 * MR],
    out: [*mut f32; MR],
    rows: usize,
    cols: usize,
    accumulate: bool,
) {
    use std::arch::x86_64::*;
    for r in 0..rows {
        // SAFETY: row r < rows of the block, columns < cols, inside c (the caller's contract).
        unsafe {
            let out = out[r];
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
/// zero past N) just before its use; a read in place, run by run.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn stream_a<A: Operand>(
    Product { m, k, n, a, b, c, ldc, accumulate }: Product<A, Strided>,
    c_rows: Option<&[usize]>,
    j0: usize,
    scratch: &mut [f32],
) {
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
            let sums = &mut partial[i0 * NR..][..MR * NR];
            let mut acc = if k0 == 0 { [_mm512_setzero_ps(); 2 * MR] } else { unsafe { load(sums) } };
            let mut start = k0;
            while start < k1 {
                // SAFETY: (i0, start) of a, inside it.
                let (_, step, end) = unsafe { a.run(i0, start) };
                let end = end.min(k1);
                // Rows past M read the last row again: in bounds, and not stored.
                let row_at: [*const f32; MR] = std::array::from_fn(|r| unsafe { a.run(i0 + r.min(rows - 1), start).0 });
                for q in 0..end - start {
                    // SAFETY: the panel holds NR values per k; the run holds a's values to `end`.
                    unsafe {
                        let bp = panel.as_ptr().add((start + q) * NR);
                        let (b0, b1) = (_mm512_loadu_ps(bp), _mm512_loadu_ps(bp.add(16)));
                        for r in 0..MR {
                            let av = _mm512_set1_ps(*row_at[r].add(q * step));
                            acc[2 * r] = _mm512_fmadd_ps(av, b0, acc[2 * r]);
                            acc[2 * r + 1] = _mm512_fmadd_ps(av, b1, acc[2 * r + 1]);
                        }
                    }
                }
                start = end;
            }
            if k1 < k {
                unsafe { save(&acc, sums) };
            } else {
                // SAFETY: rows i0.. and columns j0.. of c, inside it.
                unsafe {
                    let out = std::array::from_fn(|r| match c_rows {
                        Some(at) => c.add(at[i0 + r.min(rows - 1)] + j0),
                        None => c.add((i0 + r.min(rows - 1)) * ldc + j0),
                    });
                    store(&acc, out, rows, cols, accumulate)
                };
            }
        }
    }
}

/// Columns j0.. of c (a block of NR) from a packed into panels of MR rows
/// (K-major, zero past M) and b's rows read in place where the block's
/// columns lie in one contiguous run of b, else through a copy padded with zeros.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn stream_b<B: Operand>(p: Product<Strided, B>, panels: &[f32], j0: usize, scratch: &mut [f32]) {
    let (tail, partial) = scratch.split_at_mut(p.k * NR);
    let cols = NR.min(p.n - j0);
    // SAFETY: (0, j0) of b.
    let (first, step, end) = unsafe { p.b.run(0, j0) };
    let whole = cols == NR && step == 1 && end >= j0 + NR;
    // Rows read in place when they start on cache lines (the first two
    // tell): an unaligned row spans three lines and each of its loads
    // splits, read again for every panel of a, so it is copied once instead.
    let on_lines = |at: *const f32| (at as usize).is_multiple_of(64);
    if whole && on_lines(first) && (p.k < 2 || on_lines(unsafe { p.b.run(1, j0).0 })) {
        // SAFETY: the caller's contract.
        return unsafe { stream_rows(p, panels, j0, j0, partial) };
    }
    for (kk, row) in tail.chunks_exact_mut(NR).enumerate() {
        if whole {
            use std::arch::x86_64::*;
            // SAFETY: NR values of row kk from column j0 (one run); the tail row holds NR.
            unsafe {
                let from = p.b.run(kk, j0).0;
                _mm512_storeu_ps(row.as_mut_ptr(), _mm512_loadu_ps(from));
                _mm512_storeu_ps(row.as_mut_ptr().add(16), _mm512_loadu_ps(from.add(16)));
            }
            continue;
        }
        for (jj, v) in row.iter_mut().enumerate() {
            // SAFETY: (kk, j0 + jj) of b for j0 + jj < n.
            *v = if jj < cols { unsafe { *p.b.run(kk, j0 + jj).0 } } else { 0.0 };
        }
    }
    let copy = Strided { at: tail.as_ptr(), rs: NR, cs: 1 };
    // SAFETY: the copy holds NR columns of every row.
    let Product { m, k, n, a, c, ldc, accumulate, .. } = p;
    unsafe { stream_rows(Product { m, k, n, a, b: copy, c, ldc, accumulate }, panels, j0, 0, partial) }
}

/// The kernel of `stream_b`: c's columns j0.. from b's rows at column `col`,
/// NR contiguous values each.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn stream_rows<B: Operand>(
    Product { m, k, n, b, c, ldc, accumulate, .. }: Product<Strided, B>,
    panels: &[f32],
    j0: usize,
    col: usize,
    partial: &mut [f32],
) {
    use std::arch::x86_64::*;
    let cols = NR.min(n - j0);
    let depth = depth(k);
    for k0 in (0..k).step_by(depth) {
        let k1 = k.min(k0 + depth);
        for (p, panel) in panels.chunks_exact(k * MR).enumerate() {
            let sums = &mut partial[p * MR * NR..][..MR * NR];
            let mut acc = if k0 == 0 { [_mm512_setzero_ps(); 2 * MR] } else { unsafe { load(sums) } };
            for kk in k0..k1 {
                // SAFETY: NR values of row kk from `col`; MR of the panel per k.
                unsafe {
                    let row = b.run(kk, col).0;
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
                unsafe {
                    let out = std::array::from_fn(|r| c.add((p * MR + r.min(rows - 1)) * ldc + j0));
                    store(&acc, out, rows, cols, accumulate)
                };
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

/// dst (cols x rows) = the transpose of src (rows x cols), both row-major:
/// through 16 x 16 register transposes with AVX-512, else element by element.
pub fn transpose(dst: &mut [f32], src: &[f32], rows: usize, cols: usize) {
    assert!(src.len() >= rows * cols && dst.len() >= rows * cols, "transpose of {rows} x {cols}");
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: AVX-512F is present; both slices hold rows x cols values.
        return unsafe { transpose_tiles(dst, src, rows, cols) };
    }
    for (r, row) in src.chunks_exact(cols).take(rows).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            dst[c * rows + r] = v;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose_tiles(dst: &mut [f32], src: &[f32], rows: usize, cols: usize) {
    use std::arch::x86_64::*;
    let lanes = |count: usize| if count >= 16 { 0xffff } else { (1u16 << count) - 1 };
    for r0 in (0..rows).step_by(16) {
        let height = (rows - r0).min(16);
        for c0 in (0..cols).step_by(16) {
            let width = (cols - c0).min(16);
            // SAFETY: rows r0..r0 + height, columns c0..c0 + width (masked) of src.
            let tile: [__m512; 16] = std::array::from_fn(|i| {
                if i < height {
                    unsafe { _mm512_maskz_loadu_ps(lanes(width), src.as_ptr().add((r0 + i) * cols + c0)) }
                } else {
                    _mm512_setzero_ps()
                }
            });
            for (j, column) in transpose16(tile).iter().enumerate().take(width) {
                // SAFETY: row c0 + j of dst, its columns r0..r0 + height (masked).
                unsafe { _mm512_mask_storeu_ps(dst.as_mut_ptr().add((c0 + j) * rows + r0), lanes(height), *column) };
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
