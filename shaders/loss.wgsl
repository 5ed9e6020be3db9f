// Losses, twins of src/cpu/loss.rs. Forward kernels write one partial sum per
// workgroup (args.parts workgroups, a fixed tree order: deterministic, no
// float atomics); loss_finish folds the partials into this step's slot.
// Backward kernels take their scale from the step (recon_scale, kl_scale).
// Parameters: LossParams (n, the width, L for KL; off_x into x, off_target
// into truth (the target), off_out into out; flags ACCUMULATE for kl_backward;
// loss_finish: parts, off_x, which (0 recon, 1 KL)); rows from the step.

// tree_sum's scratch (shaders/tree_sum.wgsl).
var<workgroup> red: array<f32, WG>;

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
        s += bce_with_logits(x[args.off_x + i], truth[args.off_target + i]);
    }
    let total = tree_sum(lid, s);
    if (lid == 0u) { out[args.off_out + wg.x] = total; }
}

// dlogits (out) = recon_scale · (sigmoid(x) - truth).
@compute @workgroup_size(WG)
fn bce_with_logits_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let len = st.rows * args.n;
    for (var i = gid.x; i < len; i += nwg.x * WG) {
        out[args.off_out + i] = d_bce_with_logits(x[args.off_x + i], truth[args.off_target + i], st.recon_scale);
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
        s += mse(x[args.off_x + i], truth[args.off_target + i]);
    }
    let total = tree_sum(lid, s);
    if (lid == 0u) { out[args.off_out + wg.x] = total; }
}

// dy (out) = recon_scale · 2 (y - truth); y = x.
@compute @workgroup_size(WG)
fn mse_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let len = st.rows * args.n;
    for (var i = gid.x; i < len; i += nwg.x * WG) {
        out[args.off_out + i] = d_mse(x[args.off_x + i], truth[args.off_target + i], st.recon_scale);
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
        s += kl(x[base], x[base + latent]);
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
        var g = d_kl(x[args.off_x + rel], x[args.off_x + rel + latent], st.kl_scale);
        if ((args.flags & FLAG_ACCUMULATE) != 0u) {
            g = vec2<f32>(out[args.off_out + rel], out[args.off_out + rel + latent]) + g;
        }
        out[args.off_out + rel] = g.x;
        out[args.off_out + rel + latent] = g.y;
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
