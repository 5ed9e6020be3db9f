// Column sums, the bias gradient: out (N) = [out +] Σ_rows a (M, N). One thread
// per column, rows in order: the same additions as the CPU twin, so with a
// zero start the bits agree. Dims: m, n, off_a, off_c; flags ACCUMULATE, ROWS_M.

@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> a: array<f32>;

@compute @workgroup_size(WG)
fn column_sums(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let m = size_m();
    let n = dims.n;
    for (var j = gid.x; j < n; j += nwg.x * WG) {
        var s = 0.0;
        if (has(FLAG_ACCUMULATE)) { s = out[dims.off_c + j]; }
        for (var r = 0u; r < m; r++) { s += a[dims.off_a + r * n + j]; }
        out[dims.off_c + j] = s;
    }
}
