// Losses, twins of src/cpu/loss.rs. Forward kernels write one partial sum per
// workgroup (args.parts workgroups, a fixed tree order: deterministic, no
// float atomics); loss_finish folds the partials into this step's slot.
// Backward kernels take their scale from the step (recon_scale, kl_scale).
// Parameters: LossParams (n, the width, L for KL; off_x into x, off_target
// into truth (the target), off_out into out; flags ACCUMULATE for kl_backward;
// loss_finish: parts, off_x, which (0 recon, 1 KL)); rows from the step.

var<workgroup> red: array<f32, WG>;

// Sum over the workgroup in a fixed tree; every thread must call it.
fn tree_sum(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) { red[lid] += red[lid + s]; }
        workgroupBarrier();
    }
    return red[0];
}

fn sigmoid(x: f32) -> f32 {
    let e = exp(-abs(x));
    let s = 1.0 / (1.0 + e);
    return select(e * s, s, x >= 0.0);
}

// Partials of Σ max(a,0) - a·t + ln(1 + e^-|a|); a = x (logits), t = truth (the target).
@compute @workgroup_size(WG)
fn bce_with_logits_forward(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let len = st.rows * args.n;
    var s = 0.0;
    for (var i = gid.x; i < len; i += nwg.x * WG) {
        let a = x[args.off_x + i];
        let t = truth[args.off_target + i];
        s += max(a, 0.0) - a * t + log(1.0 + exp(-abs(a)));
    }
    let total = tree_sum(lid, s);
    if (lid == 0u) { out[args.off_out + wg.x] = total; }
}

// dlogits (out) = recon_scale · (sigmoid(x) - truth).
@compute @workgroup_size(WG)
fn bce_with_logits_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let len = st.rows * args.n;
    for (var i = gid.x; i < len; i += nwg.x * WG) {
        out[args.off_out + i] = st.recon_scale * (sigmoid(x[args.off_x + i]) - truth[args.off_target + i]);
    }
}

// Partials of Σ (y - truth)²; y = x.
@compute @workgroup_size(WG)
fn mse_forward(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let len = st.rows * args.n;
    var s = 0.0;
    for (var i = gid.x; i < len; i += nwg.x * WG) {
        let d = x[args.off_x + i] - truth[args.off_target + i];
        s += d * d;
    }
    let total = tree_sum(lid, s);
    if (lid == 0u) { out[args.off_out + wg.x] = total; }
}

// dy (out) = recon_scale · 2 (y - truth); y = x.
@compute @workgroup_size(WG)
fn mse_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let len = st.rows * args.n;
    for (var i = gid.x; i < len; i += nwg.x * WG) {
        out[args.off_out + i] = st.recon_scale * 2.0 * (x[args.off_x + i] - truth[args.off_target + i]);
    }
}

// Partials of -½ Σ (1 + lv - mu² - e^lv); mulv = x (rows, 2L), n = L.
@compute @workgroup_size(WG)
fn kl_forward(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let latent = args.n;
    let len = st.rows * latent;
    var s = 0.0;
    for (var i = gid.x; i < len; i += nwg.x * WG) {
        let base = args.off_x + (i / latent) * 2u * latent + i % latent;
        let mu = x[base];
        let lv = x[base + latent];
        s += -0.5 * (1.0 + lv - mu * mu - exp(lv));
    }
    let total = tree_sum(lid, s);
    if (lid == 0u) { out[args.off_out + wg.x] = total; }
}

// dmulv (out) = [dmulv +] kl_scale · (mu, ½(e^lv - 1)); adds with FLAG_ACCUMULATE.
@compute @workgroup_size(WG)
fn kl_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let latent = args.n;
    let len = st.rows * latent;
    for (var i = gid.x; i < len; i += nwg.x * WG) {
        let rel = (i / latent) * 2u * latent + i % latent;
        let mu = x[args.off_x + rel];
        let lv = x[args.off_x + rel + latent];
        var dmu = st.kl_scale * mu;
        var dlv = st.kl_scale * 0.5 * (exp(lv) - 1.0);
        if ((args.flags & FLAG_ACCUMULATE) != 0u) {
            dmu = out[args.off_out + rel] + dmu;
            dlv = out[args.off_out + rel + latent] + dlv;
        }
        out[args.off_out + rel] = dmu;
        out[args.off_out + rel + latent] = dlv;
    }
}

// slots (out)[2·slot + which] = Σ partials x[off_x .. off_x + parts]. One workgroup.
@compute @workgroup_size(WG)
fn loss_finish(@builtin(local_invocation_index) lid: u32) {
    var s = 0.0;
    for (var i = lid; i < args.parts; i += WG) { s += x[args.off_x + i]; }
    let total = tree_sum(lid, s);
    if (lid == 0u) { out[2u * st.slot + args.which] = total; }
}
