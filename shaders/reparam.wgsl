// The reparameterization trick, twin of src/cpu/reparam.rs: z = mu + e^(lv/2)·eps,
// with eps drawn here from (seed, reparam_stream, rng_step, i), i the flat
// index in (M, L), exactly as rng::fill_normal does on the CPU.
// Parameters: ReparamParams (latent L; mulv (rows, 2L) at off_mulv, the
// (rows, L) tensors at off_rows; flags ACCUMULATE); rows from the step.

// z, eps from mulv.
@compute @workgroup_size(WG)
fn reparameterize_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let latent = args.latent;
    let len = st.rows * latent;
    for (var i = gid.x; i < len; i += nwg.x * WG) {
        let base = args.off_mulv + (i / latent) * 2u * latent + i % latent;
        let e = normal(st.seed, st.reparam_stream, st.rng_step, i);
        eps[args.off_rows + i] = e;
        z[args.off_rows + i] = reparameterize(mulv[base], mulv[base + latent], e);
    }
}

// dmulv (at off_mulv) from dz and noise (the forward's eps, both at
// off_rows) and mulv (at off_mulv). Writes, or adds with FLAG_ACCUMULATE
// (the CPU twin adds).
@compute @workgroup_size(WG)
fn reparameterize_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let latent = args.latent;
    let len = st.rows * latent;
    let acc = (args.flags & FLAG_ACCUMULATE) != 0u;
    for (var i = gid.x; i < len; i += nwg.x * WG) {
        let rel = (i / latent) * 2u * latent + i % latent;
        var g = d_reparameterize(dz[args.off_rows + i], mulv[args.off_mulv + rel + latent], noise[args.off_rows + i]);
        if (acc) {
            g += vec2<f32>(dmulv[args.off_mulv + rel], dmulv[args.off_mulv + rel + latent]);
        }
        dmulv[args.off_mulv + rel] = g.x;
        dmulv[args.off_mulv + rel + latent] = g.y;
    }
}
