// Variant 1: one thread per output, no workgroup memory. The baseline and the
// fallback; kept forever.

fn matmul_naive(form: u32, gid: vec3<u32>) {
    let m = size_m();
    let k = size_k();
    let n = args.n;
    let row = gid.y;
    let col = gid.x;
    if (row >= m || col >= n) { return; }
    var sum = 0.0;
    for (var p = 0u; p < k; p++) {
        sum = fma(load_a(form, row, p, m, k, k), load_b(form, p, col, k, k, n), sum);
    }
    store_c(row, col, n, sum);
}

@compute @workgroup_size(NAIVE_X, NAIVE_Y)
fn matmul_nt(@builtin(global_invocation_id) gid: vec3<u32>) { matmul_naive(FORM_NT, gid); }

@compute @workgroup_size(NAIVE_X, NAIVE_Y)
fn matmul_tn(@builtin(global_invocation_id) gid: vec3<u32>) { matmul_naive(FORM_TN, gid); }

@compute @workgroup_size(NAIVE_X, NAIVE_Y)
fn matmul_nn(@builtin(global_invocation_id) gid: vec3<u32>) { matmul_naive(FORM_NN, gid); }
