// 2-D convolutions, NCHW, twins of src/cpu/conv.rs, variant 1: a thread per
// output value, reading its inputs straight from the tensors (no im2col, no
// workgroup memory). The geometry is that of a convolution from `in` (C x H x W)
// to `out` (O x Ho x Wo) with weights [O, C, k, k]; a transposed convolution
// runs as the adjoint of the convolution from its output shape to its input
// shape, so these four kernels serve both layers:
//   conv2d_forward          out-space y = W ⋆ x (+ bias, act)     conv forward; convT input gradient
//   conv2d_backward_data    in-space  y = Wᵀ ⋆ a (+ bias, act)    conv input gradient; convT forward
//   conv2d_backward_weight  dW = Σ a (out-space) ⊗ x (in-space)   both weight gradients
//   channel_sums            db[c] = Σ a over rows and pixels      both bias gradients
// The last two own an output per workgroup (see below).
// Rows come from the step. Parameters: ConvParams.

fn in_len() -> u32 { return args.in_c * args.in_h * args.in_w; }
fn out_len() -> u32 { return args.out_c * args.out_h * args.out_w; }

fn epilogue(v: f32, channel: u32) -> f32 {
    var r = v;
    if ((args.flags & FLAG_BIAS) != 0u) { r += bias[args.off_bias + channel]; }
    return activate(r, args.act);
}

// y[b, o, oy, ox] = Σ_{c, ki, kj} w[o, c, ki, kj] · x[b, c, oy·s + ki - p, ox·s + kj - p].
@compute @workgroup_size(WG)
fn conv2d_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let k = args.kernel;
    let total = st.rows * out_len();
    for (var e = gid.x; e < total; e += nwg.x * WG) {
        let b = e / out_len();
        let r = e % out_len();
        let o = r / (args.out_h * args.out_w);
        let oy = (r / args.out_w) % args.out_h;
        let ox = r % args.out_w;
        var sum = 0.0;
        for (var c = 0u; c < args.in_c; c++) {
            for (var ki = 0u; ki < k; ki++) {
                let yy = i32(oy * args.stride + ki) - i32(args.padding);
                if (yy < 0 || yy >= i32(args.in_h)) { continue; }
                for (var kj = 0u; kj < k; kj++) {
                    let xx = i32(ox * args.stride + kj) - i32(args.padding);
                    if (xx < 0 || xx >= i32(args.in_w)) { continue; }
                    let wi = args.off_w + ((o * args.in_c + c) * k + ki) * k + kj;
                    let xi = args.off_a + b * in_len() + (c * args.in_h + u32(yy)) * args.in_w + u32(xx);
                    sum = fma(w[wi], a[xi], sum);
                }
            }
        }
        out[args.off_out + e] = epilogue(sum, o);
    }
}

// y[b, c, y, x] = Σ over (o, ki, kj) with y = oy·s + ki - p, x = ox·s + kj - p of
// w[o, c, ki, kj] · a[b, o, oy, ox]: what col2im(Wᵀ·a) sums, gathered.
@compute @workgroup_size(WG)
fn conv2d_backward_data(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let k = args.kernel;
    let s = args.stride;
    let total = st.rows * in_len();
    for (var e = gid.x; e < total; e += nwg.x * WG) {
        let b = e / in_len();
        let r = e % in_len();
        let c = r / (args.in_h * args.in_w);
        let y = (r / args.in_w) % args.in_h;
        let x = r % args.in_w;
        var sum = 0.0;
        for (var ki = 0u; ki < k; ki++) {
            let ty = i32(y + args.padding) - i32(ki);
            if (ty < 0 || u32(ty) % s != 0u) { continue; }
            let oy = u32(ty) / s;
            if (oy >= args.out_h) { continue; }
            for (var kj = 0u; kj < k; kj++) {
                let tx = i32(x + args.padding) - i32(kj);
                if (tx < 0 || u32(tx) % s != 0u) { continue; }
                let ox = u32(tx) / s;
                if (ox >= args.out_w) { continue; }
                for (var o = 0u; o < args.out_c; o++) {
                    let wi = args.off_w + ((o * args.in_c + c) * k + ki) * k + kj;
                    let ai = args.off_a + b * out_len() + (o * args.out_h + oy) * args.out_w + ox;
                    sum = fma(w[wi], a[ai], sum);
                }
            }
        }
        out[args.off_out + e] = epilogue(sum, c);
    }
}

var<workgroup> partial: array<f32, WG>;

// The sum of every thread's `v`, added in a fixed tree order (so results are
// deterministic), for every thread of the workgroup. Called in uniform control flow.
fn workgroup_sum(v: f32, lid: u32) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half /= 2u) {
        if (lid < half) { partial[lid] += partial[lid + half]; }
        workgroupBarrier();
    }
    let sum = partial[0];
    workgroupBarrier();
    return sum;
}

// dw[o, c, ki, kj] = Σ_b Σ_{oy, ox} a[b, o, oy, ox] · x[b, c, oy·s + ki - p, ox·s + kj - p],
// a in out-space at off_a, x in in-space at off_x (the `x` binding). Writes,
// or adds with FLAG_ACCUMULATE. A workgroup per weight: its threads split the
// rows·pixels terms (a thread per weight walking them all had a few hundred
// threads for the first and last layers' weights, each summing 10^5 terms).
@compute @workgroup_size(WG)
fn conv2d_backward_weight(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let k = args.kernel;
    let weights = args.out_c * args.in_c * k * k;
    let pixels = args.out_h * args.out_w;
    for (var e = wg.x; e < weights; e += nwg.x) {
        let o = e / (args.in_c * k * k);
        let c = (e / (k * k)) % args.in_c;
        let ki = (e / k) % k;
        let kj = e % k;
        var sum = 0.0;
        for (var t = lid; t < st.rows * pixels; t += WG) {
            let b = t / pixels;
            let oy = (t % pixels) / args.out_w;
            let ox = t % args.out_w;
            let yy = i32(oy * args.stride + ki) - i32(args.padding);
            let xx = i32(ox * args.stride + kj) - i32(args.padding);
            if (yy < 0 || yy >= i32(args.in_h) || xx < 0 || xx >= i32(args.in_w)) { continue; }
            let ai = args.off_a + b * out_len() + o * pixels + t % pixels;
            let xi = args.off_x + b * in_len() + (c * args.in_h + u32(yy)) * args.in_w + u32(xx);
            sum = fma(a[ai], x[xi], sum);
        }
        sum = workgroup_sum(sum, lid);
        if (lid == 0u) {
            if ((args.flags & FLAG_ACCUMULATE) != 0u) { sum += out[args.off_out + e]; }
            out[args.off_out + e] = sum;
        }
    }
}

// db[c] = Σ_b Σ_pixels a[b, c, ·], with out_c channels of out_h·out_w pixels
// per row (the geometry's out-space; a transposed layer passes its own). Writes,
// or adds with FLAG_ACCUMULATE. A workgroup per channel, as above.
@compute @workgroup_size(WG)
fn channel_sums(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let pixels = args.out_h * args.out_w;
    for (var c = wg.x; c < args.out_c; c += nwg.x) {
        var sum = 0.0;
        for (var t = lid; t < st.rows * pixels; t += WG) {
            sum += a[args.off_a + (t / pixels) * out_len() + c * pixels + t % pixels];
        }
        sum = workgroup_sum(sum, lid);
        if (lid == 0u) {
            if ((args.flags & FLAG_ACCUMULATE) != 0u) { sum += out[args.off_out + c]; }
            out[args.off_out + c] = sum;
        }
    }
}
