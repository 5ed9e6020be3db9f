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
        z[args.off_rows + i] = mulv[base] + exp(0.5 * mulv[base + latent]) * e;
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
        let g = dz[args.off_rows + i];
        var dmu = g;
        var dlv = g * noise[args.off_rows + i] * 0.5 * exp(0.5 * mulv[args.off_mulv + rel + latent]);
        if (acc) {
            dmu += dmulv[args.off_mulv + rel];
            dlv += dmulv[args.off_mulv + rel + latent];
        }
        dmulv[args.off_mulv + rel] = dmu;
        dmulv[args.off_mulv + rel + latent] = dlv;
    }
}
