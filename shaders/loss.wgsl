// Losses, twins of src/cpu/loss.rs. Forward kernels write one partial sum per
// workgroup (dims.parts workgroups, a fixed tree order: deterministic, no
// float atomics); loss_finish folds the partials into this step's slot.
// Backward kernels take their scale from the step (recon_scale, kl_scale).
// Dims: m (rows, or FLAG_ROWS_M), n (width; L for KL), off_a, off_b inputs,
// off_c output; loss_finish: parts, off_a, which (0 recon, 1 KL).

@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> x0: array<f32>;
@group(0) @binding(5) var<storage, read> x1: array<f32>;

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

// Partials of Σ max(a,0) - a·x + ln(1 + e^-|a|); a = x0 logits, x = x1 target.
@compute @workgroup_size(WG)
fn bce_with_logits_forward(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let len = size_m() * dims.n;
    var s = 0.0;
    for (var i = gid.x; i < len; i += nwg.x * WG) {
        let a = x0[dims.off_a + i];
        let x = x1[dims.off_b + i];
        s += max(a, 0.0) - a * x + log(1.0 + exp(-abs(a)));
    }
    let total = tree_sum(lid, s);
    if (lid == 0u) { out[dims.off_c + wg.x] = total; }
}

// dlogits (out) = recon_scale · (sigmoid(a) - x).
@compute @workgroup_size(WG)
fn bce_with_logits_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let len = size_m() * dims.n;
    for (var i = gid.x; i < len; i += nwg.x * WG) {
        out[dims.off_c + i] = st.recon_scale * (sigmoid(x0[dims.off_a + i]) - x1[dims.off_b + i]);
    }
}

// Partials of Σ (y - x)²; y = x0, x = x1.
@compute @workgroup_size(WG)
fn mse_forward(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let len = size_m() * dims.n;
    var s = 0.0;
    for (var i = gid.x; i < len; i += nwg.x * WG) {
        let d = x0[dims.off_a + i] - x1[dims.off_b + i];
        s += d * d;
    }
    let total = tree_sum(lid, s);
    if (lid == 0u) { out[dims.off_c + wg.x] = total; }
}

// dy (out) = recon_scale · 2 (y - x).
@compute @workgroup_size(WG)
fn mse_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let len = size_m() * dims.n;
    for (var i = gid.x; i < len; i += nwg.x * WG) {
        out[dims.off_c + i] = st.recon_scale * 2.0 * (x0[dims.off_a + i] - x1[dims.off_b + i]);
    }
}

// Partials of -½ Σ (1 + lv - mu² - e^lv); mulv = x0 (M, 2L), n = L.
@compute @workgroup_size(WG)
fn kl_forward(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let latent = dims.n;
    let len = size_m() * latent;
    var s = 0.0;
    for (var i = gid.x; i < len; i += nwg.x * WG) {
        let base = dims.off_a + (i / latent) * 2u * latent + i % latent;
        let mu = x0[base];
        let lv = x0[base + latent];
        s += -0.5 * (1.0 + lv - mu * mu - exp(lv));
    }
    let total = tree_sum(lid, s);
    if (lid == 0u) { out[dims.off_c + wg.x] = total; }
}

// dmulv (out) = [dmulv +] kl_scale · (mu, ½(e^lv - 1)); adds with FLAG_ACCUMULATE.
@compute @workgroup_size(WG)
fn kl_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let latent = dims.n;
    let len = size_m() * latent;
    for (var i = gid.x; i < len; i += nwg.x * WG) {
        let rel = (i / latent) * 2u * latent + i % latent;
        let mu = x0[dims.off_a + rel];
        let lv = x0[dims.off_a + rel + latent];
        var dmu = st.kl_scale * mu;
        var dlv = st.kl_scale * 0.5 * (exp(lv) - 1.0);
        if (has(FLAG_ACCUMULATE)) {
            dmu = out[dims.off_c + rel] + dmu;
            dlv = out[dims.off_c + rel + latent] + dlv;
        }
        out[dims.off_c + rel] = dmu;
        out[dims.off_c + rel + latent] = dlv;
    }
}

// slots (out)[2·slot + which] = Σ partials x0[off_a .. off_a + parts]. One workgroup.
@compute @workgroup_size(WG)
fn loss_finish(@builtin(local_invocation_index) lid: u32) {
    var s = 0.0;
    for (var i = lid; i < dims.parts; i += WG) { s += x0[dims.off_a + i]; }
    let total = tree_sum(lid, s);
    if (lid == 0u) { out[2u * st.slot + dims.which] = total; }
}
