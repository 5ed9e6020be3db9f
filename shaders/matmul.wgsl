// Tiled product: a workgroup computes a TILE_M x TILE_N block of c, staging
// BK-deep slices of a and b in workgroup memory; each thread keeps PER_M x
// PER_N sums in registers. A thread's outputs are strided by the thread grid
// (row ty + i·THREADS_M, column tx + j·THREADS_N) so that neighbouring threads
// read neighbouring words of the tiles and write neighbouring words of c.
// Tile sizes come from the generated prelude (gpu::shaders::MatmulTile).

var<workgroup> tile_a: array<f32, BK * TILE_M>; // [p][i]
var<workgroup> tile_b: array<f32, BK * TILE_N>; // [p][j]

fn matmul_tiled(form: u32, wg: vec3<u32>, lid: u32) {
    let m = size_m();
    let k = size_k();
    let n = args.n;
    let row0 = wg.y * TILE_M;
    let col0 = wg.x * TILE_N;
    let tx = lid % THREADS_N;
    let ty = lid / THREADS_N;
    // This workgroup's K slice: all of K unless split (args.slices > 1), BK-aligned.
    let slices = max(args.slices, 1u);
    let span = ((k + slices - 1u) / slices + BK - 1u) / BK * BK;
    let k_begin = wg.z * span;
    let k_end = min(k, k_begin + span);
    var acc: array<f32, PER_M * PER_N>;
    for (var k0 = k_begin; k0 < k_end; k0 += BK) {
        // Loads walk the operand's contiguous axis across neighbouring threads.
        for (var e = lid; e < BK * TILE_M; e += THREADS) {
            var i = e / BK;
            var p = e % BK;
            if (form == FORM_TN) { i = e % TILE_M; p = e / TILE_M; }
            tile_a[p * TILE_M + i] = load_a(form, row0 + i, k0 + p, m, k, k_end);
        }
        for (var e = lid; e < BK * TILE_N; e += THREADS) {
            var j = e % TILE_N;
            var p = e / TILE_N;
            if (form == FORM_NT) { j = e / BK; p = e % BK; }
            tile_b[p * TILE_N + j] = load_b(form, k0 + p, col0 + j, k, k_end, n);
        }
        workgroupBarrier();
        for (var p = 0u; p < BK; p++) {
            var av: array<f32, PER_M>;
            var bv: array<f32, PER_N>;
            for (var i = 0u; i < PER_M; i++) { av[i] = tile_a[p * TILE_M + ty + i * THREADS_M]; }
            for (var j = 0u; j < PER_N; j++) { bv[j] = tile_b[p * TILE_N + tx + j * THREADS_N]; }
            for (var i = 0u; i < PER_M; i++) {
                for (var j = 0u; j < PER_N; j++) {
                    acc[i * PER_N + j] = fma(av[i], bv[j], acc[i * PER_N + j]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < PER_M; i++) {
        let row = row0 + ty + i * THREADS_M;
        for (var j = 0u; j < PER_N; j++) {
            let col = col0 + tx + j * THREADS_N;
            if (row < m && col < n) {
                if (slices > 1u) {
                    partial[(wg.z * m + row) * n + col] = acc[i * PER_N + j];
                } else {
                    store_c(row, col, n, acc[i * PER_N + j]);
                }
            }
        }
    }
}

@compute @workgroup_size(THREADS)
fn matmul_nt(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    matmul_tiled(FORM_NT, wg, lid);
}

@compute @workgroup_size(THREADS)
fn matmul_tn(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    matmul_tiled(FORM_TN, wg, lid);
}

@compute @workgroup_size(THREADS)
fn matmul_nn(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    matmul_tiled(FORM_NN, wg, lid);
}
