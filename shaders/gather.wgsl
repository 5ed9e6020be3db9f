// Batch assembly on the device, twins of src/data/loader.rs. The data set is
// uploaded once as u8, four pixels per u32 (little end first); the step's rows
// are images order[row_offset ..][.. rows].
// Dims: n = D (pixels per image); off_c output offset.

@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> pixels: array<u32>;
@group(0) @binding(5) var<storage, read> order: array<u32>;

// out (rows, D) = pixels / 255.
@compute @workgroup_size(WG)
fn gather_batch(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let dim = dims.n;
    let len = st.rows * dim;
    for (var i = gid.x; i < len; i += nwg.x * WG) {
        let image = order[st.row_offset + i / dim];
        let byte = image * dim + i % dim;
        let px = (pixels[byte >> 2u] >> ((byte & 3u) * 8u)) & 255u;
        out[dims.off_c + i] = f32(px) / 255.0;
    }
}

// out = clamp(clean + noise_std · N(seed, noise_stream, rng_step, i), 0, 1).
// The clean batch is the first read-only binding, shared with `pixels`: its
// words are read back as f32.
@compute @workgroup_size(WG)
fn add_input_noise(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let len = size_m() * dims.n;
    for (var i = gid.x; i < len; i += nwg.x * WG) {
        let z = normal(st.seed, st.noise_stream, st.rng_step, i);
        out[dims.off_c + i] = clamp(bitcast<f32>(pixels[dims.off_a + i]) + st.noise_std * z, 0.0, 1.0);
    }
}
