// Element-wise activations, twins of src/cpu/activation.rs, over an M x N
// block (M = this step's rows with FLAG_ROWS_M). Backward passes take the
// forward output. Grid-stride loops: any dispatch size covers any length.
// Dims: m, n; off_a (input), off_c (output / in-place operand); u1 the
// activation (ACT_*), as in the matmul epilogue.

@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> inp: array<f32>;

// 1 / (1 + e^-x) without overflowing exp for very negative x.
fn sigmoid(x: f32) -> f32 {
    let e = exp(-abs(x));
    let s = 1.0 / (1.0 + e);
    return select(e * s, s, x >= 0.0);
}

// y = act(y) in place on out: the unfused twin of the matmul epilogue.
@compute @workgroup_size(WG)
fn activation_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let len = size_m() * dims.n;
    for (var i = gid.x; i < len; i += nwg.x * WG) {
        out[dims.off_c + i] = activate(out[dims.off_c + i], dims.u1);
    }
}

// d (out) *= act'(x), from y = act(x) (inp).
@compute @workgroup_size(WG)
fn activation_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let len = size_m() * dims.n;
    for (var i = gid.x; i < len; i += nwg.x * WG) {
        out[dims.off_c + i] = activate_backward(out[dims.off_c + i], inp[dims.off_a + i], dims.u1);
    }
}

// y (out, M x N) += bias (inp at off_a, N) on every row: the unfused twin of
// the matmul epilogue's bias.
@compute @workgroup_size(WG)
fn bias_add(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let len = size_m() * dims.n;
    for (var i = gid.x; i < len; i += nwg.x * WG) {
        out[dims.off_c + i] += inp[dims.off_a + i % dims.n];
    }
}

// y (out) = sigmoid(x (inp)).
@compute @workgroup_size(WG)
fn sigmoid_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let len = size_m() * dims.n;
    for (var i = gid.x; i < len; i += nwg.x * WG) {
        out[dims.off_c + i] = sigmoid(inp[dims.off_a + i]);
    }
}

// d (out) *= y (1 - y), y = inp.
@compute @workgroup_size(WG)
fn sigmoid_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let len = size_m() * dims.n;
    for (var i = gid.x; i < len; i += nwg.x * WG) {
        let y = inp[dims.off_a + i];
        out[dims.off_c + i] *= y * (1.0 - y);
    }
}
