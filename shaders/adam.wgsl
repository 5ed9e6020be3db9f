// Adam over the whole flat parameter buffer, twin of src/cpu/adam.rs, in
// PyTorch's form. Bias corrections c1, c2 come from the step (computed on the
// host in f64). Dims: m = P; f0 lr, f1 beta1, f2 beta2, f3 eps.

@group(0) @binding(1) var<storage, read_write> params: array<f32>;
@group(0) @binding(2) var<storage, read_write> adam_m: array<f32>;
@group(0) @binding(3) var<storage, read_write> adam_v: array<f32>;
@group(0) @binding(4) var<storage, read> grads: array<f32>;

@compute @workgroup_size(WG)
fn adam_update(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let b1 = dims.f1;
    let b2 = dims.f2;
    for (var i = gid.x; i < dims.m; i += nwg.x * WG) {
        let g = grads[i];
        let m = b1 * adam_m[i] + (1.0 - b1) * g;
        let v = b2 * adam_v[i] + (1.0 - b2) * g * g;
        adam_m[i] = m;
        adam_v[i] = v;
        params[i] -= dims.f0 * (m * st.c1) / (sqrt(v) * st.c2 + dims.f3);
    }
}
