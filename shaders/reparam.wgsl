// The reparameterization trick, twin of src/cpu/reparam.rs: z = mu + e^(lv/2)·eps,
// with eps drawn here from (seed, reparam_stream, rng_step, i), i the flat
// index in (M, L), exactly as rng::fill_normal does on the CPU.
// Dims: m (or FLAG_ROWS_M), n = L; mulv (M, 2L) at off_a; z, eps at off_c.

@group(0) @binding(1) var<storage, read_write> out0: array<f32>;
@group(0) @binding(2) var<storage, read_write> out1: array<f32>;
@group(0) @binding(4) var<storage, read> in0: array<f32>;
@group(0) @binding(5) var<storage, read> in1: array<f32>;
@group(0) @binding(6) var<storage, read> in2: array<f32>;

// z (out0), eps (out1) from mulv (in0).
@compute @workgroup_size(WG)
fn reparameterize_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let latent = dims.n;
    let len = size_m() * latent;
    for (var i = gid.x; i < len; i += nwg.x * WG) {
        let base = dims.off_a + (i / latent) * 2u * latent + i % latent;
        let e = normal(st.seed, st.reparam_stream, st.rng_step, i);
        out1[dims.off_c + i] = e;
        out0[dims.off_c + i] = in0[base] + exp(0.5 * in0[base + latent]) * e;
    }
}

// dmulv (out0, at off_c) from dz (in0, at off_b), mulv (in1, at off_a), eps
// (in2, at off_b). Writes, or adds with FLAG_ACCUMULATE (the CPU twin adds).
@compute @workgroup_size(WG)
fn reparameterize_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let latent = dims.n;
    let len = size_m() * latent;
    let acc = has(FLAG_ACCUMULATE);
    for (var i = gid.x; i < len; i += nwg.x * WG) {
        let rel = (i / latent) * 2u * latent + i % latent;
        let dz = in0[dims.off_b + i];
        var dmu = dz;
        var dlv = dz * in2[dims.off_b + i] * 0.5 * exp(0.5 * in1[dims.off_a + rel + latent]);
        if (acc) {
            dmu += out0[dims.off_c + rel];
            dlv += out0[dims.off_c + rel + latent];
        }
        out0[dims.off_c + rel] = dmu;
        out0[dims.off_c + rel + latent] = dlv;
    }
}
