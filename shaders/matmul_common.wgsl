// The three products a dense layer needs, twins of src/cpu/matmul.rs:
//   matmul_nt  c (M,N) = a (M,K) · b (N,K)ᵀ   forward x·Wᵀ
//   matmul_tn  c (M,N) = a (K,M)ᵀ · b (K,N)   weight gradient dYᵀ·X
//   matmul_nn  c (M,N) = a (M,K) · b (K,N)    input gradient dY·W
// Parameters: MatmulParams (m, k, n; off_a, off_b, off_c, off_bias; flags
// ACCUMULATE (c +=), BIAS (+ bias[n]), ROWS_M/ROWS_K; act, the epilogue's
// activation). Split-K (slices = S > 1, tiled variants only): workgroup z sums its slice
// of K into partial[z][M][N]; matmul_split_finish then adds the S slices in
// order and applies the epilogue. Deterministic: no atomics.

// Rows of the batch-shaped operand: this step's rows when FLAG_ROWS_M is set.
fn size_m() -> u32 {
    if ((args.flags & FLAG_ROWS_M) != 0u) { return st.rows; }
    return args.m;
}

fn size_k() -> u32 {
    if ((args.flags & FLAG_ROWS_K) != 0u) { return st.rows; }
    return args.k;
}

fn has(flag: u32) -> bool {
    return (args.flags & flag) != 0u;
}

const FORM_NT: u32 = 0u;
const FORM_TN: u32 = 1u;
const FORM_NN: u32 = 2u;

// A(i, p), zero outside the matrix (and past k_end, the end of this
// workgroup's K slice) so that partial tiles need no special case.
fn load_a(form: u32, i: u32, p: u32, m: u32, k: u32, k_end: u32) -> f32 {
    if (i >= m || p >= k_end) { return 0.0; }
    if (form == FORM_TN) { return a[args.off_a + p * m + i]; }
    return a[args.off_a + i * k + p];
}

// B(p, j).
fn load_b(form: u32, p: u32, j: u32, k: u32, k_end: u32, n: u32) -> f32 {
    if (p >= k_end || j >= n) { return 0.0; }
    if (form == FORM_NT) { return b[args.off_b + j * k + p]; }
    return b[args.off_b + p * n + j];
}

// The fused epilogue, in the CPU's order: (+c) + bias, then the activation.
fn store_c(row: u32, col: u32, n: u32, sum: f32) {
    let idx = args.off_c + row * n + col;
    var v = sum;
    if (has(FLAG_ACCUMULATE)) { v += c[idx]; }
    if (has(FLAG_BIAS)) { v += bias[args.off_bias + col]; }
    v = activate(v, args.act);
    c[idx] = v;
}

// The slices of a split-K product, summed in slice order, then the epilogue.
@compute @workgroup_size(WG)
fn matmul_split_finish(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let n = args.n;
    let total = size_m() * n;
    for (var e = gid.x; e < total; e += nwg.x * WG) {
        var sum = 0.0;
        for (var z = 0u; z < args.slices; z++) { sum += partial[z * total + e]; }
        store_c(e / n, e % n, n, sum);
    }
}
