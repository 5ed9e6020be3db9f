// Adam over the whole flat parameter buffer, twin of src/cpu/adam.rs, in
// PyTorch's form. Bias corrections c1, c2 come from the step (computed on the
// host in f64). Parameters: AdamParams.

@compute @workgroup_size(WG)
fn adam_update(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let b1 = args.beta1;
    let b2 = args.beta2;
    for (var i = gid.x; i < args.count; i += nwg.x * WG) {
        let g = grads[i];
        let m = b1 * adam_m[i] + (1.0 - b1) * g;
        let v = b2 * adam_v[i] + (1.0 - b2) * g * g;
        adam_m[i] = m;
        adam_v[i] = v;
        params[i] -= args.lr * (m * st.c1) / (sqrt(v) * st.c2 + args.eps);
    }
}
