// Adam over the whole flat parameter buffer, the stand-alone form of `adam`
// (ops.wgsl), with the step's settings (lr, betas, eps, bias corrections)
// from its row of the step table. Parameters: AdamParams.

@compute @workgroup_size(WG)
fn adam_update(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var i = gid.x; i < args.count; i += nwg.x * WG) {
        let u = adam(params[i], adam_m[i], adam_v[i], grads[i]);
        params[i] = u.x;
        adam_m[i] = u.y;
        adam_v[i] = u.z;
    }
}
