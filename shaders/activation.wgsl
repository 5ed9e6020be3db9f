// Element-wise activations, twins of src/cpu/activation.rs, over a (rows, n)
// block, rows from the step. Backward passes take the forward output.
// Grid-stride loops: any dispatch size covers any length.
// Parameters: ElementwiseParams (n; off_in into inp, off_out into out, the
// in-place operand; act, as in the matmul epilogue).

// y = act(y) in place on out: the unfused twin of the matmul epilogue.
@compute @workgroup_size(WG)
fn activation_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let len = st.rows * args.n;
    for (var i = gid.x; i < len; i += nwg.x * WG) {
        out[args.off_out + i] = activate(out[args.off_out + i], args.act);
    }
}

// y (out) = act(x (inp)): a layer that keeps its pre-activation x.
@compute @workgroup_size(WG)
fn activation_forward_from(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let len = st.rows * args.n;
    for (var i = gid.x; i < len; i += nwg.x * WG) {
        out[args.off_out + i] = activate(inp[args.off_in + i], args.act);
    }
}

// d (out) *= act'(x), from y = act(x) (inp) and x (x; y again for the
// activations that need only y).
@compute @workgroup_size(WG)
fn activation_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let len = st.rows * args.n;
    for (var i = gid.x; i < len; i += nwg.x * WG) {
        out[args.off_out + i] = d_activate(out[args.off_out + i], x[args.off_in + i], inp[args.off_in + i], args.act);
    }
}

// y (out, M x N) += bias (inp at off_a, N) on every row: the unfused twin of
// the matmul epilogue's bias.
@compute @workgroup_size(WG)
fn bias_add(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let len = st.rows * args.n;
    for (var i = gid.x; i < len; i += nwg.x * WG) {
        out[args.off_out + i] += inp[args.off_in + i % args.n];
    }
}

// y (out) = sigmoid(x (inp)).
@compute @workgroup_size(WG)
fn sigmoid_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let len = st.rows * args.n;
    for (var i = gid.x; i < len; i += nwg.x * WG) {
        out[args.off_out + i] = sigmoid(inp[args.off_in + i]);
    }
}

// d (out) *= y (1 - y), y = inp.
@compute @workgroup_size(WG)
fn sigmoid_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let len = st.rows * args.n;
    for (var i = gid.x; i < len; i += nwg.x * WG) {
        out[args.off_out + i] = d_sigmoid(out[args.off_out + i], inp[args.off_in + i]);
    }
}

// out[r, off_out + j] = (out[r, off_out + j] +) inp[r, off_in + j] for
// j < n, rows of width_out and width_in: one slice of a concatenation, or
// of its backward (FLAG_ACCUMULATE adds); twin of src/cpu/concat.rs.
@compute @workgroup_size(WG)
fn copy_columns(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let len = st.rows * args.n;
    for (var i = gid.x; i < len; i += nwg.x * WG) {
        let r = i / args.n;
        let j = i % args.n;
        let o = r * args.width_out + args.off_out + j;
        var v = inp[r * args.width_in + args.off_in + j];
        if (args.flags & FLAG_ACCUMULATE) != 0u {
            v = out[o] + v;
        }
        out[o] = v;
    }
}
