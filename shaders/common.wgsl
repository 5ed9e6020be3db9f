// Shared by every kernel (after the generated constants): the per-dispatch
// sizes (group 0, binding 0) and the per-step values (group 1, dynamic offset).
// Both structs mirror `gpu::program::{Dims, Step}` field for field.

// Sizes and offsets of one dispatch, fixed when the step program is built.
// Offsets are in elements; each family documents which fields it reads.
struct Dims {
    m: u32, k: u32, n: u32, flags: u32,
    off_a: u32, off_b: u32, off_c: u32, off_d: u32,
    parts: u32, which: u32, u0: u32, u1: u32,
    f0: f32, f1: f32, f2: f32, f3: f32,
}

// What changes from one training step to the next.
struct Step {
    rows: u32, row_offset: u32, rng_step: u32, slot: u32,
    seed: u32, reparam_stream: u32, noise_stream: u32, pad0: u32,
    noise_std: f32, c1: f32, c2: f32, recon_scale: f32,
    kl_scale: f32, pad1: f32, pad2: f32, pad3: f32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(1) @binding(0) var<uniform> st: Step;

// Rows of the batch-shaped operand: this step's rows when FLAG_ROWS_M is set.
fn size_m() -> u32 {
    if ((dims.flags & FLAG_ROWS_M) != 0u) { return st.rows; }
    return dims.m;
}

fn size_k() -> u32 {
    if ((dims.flags & FLAG_ROWS_K) != 0u) { return st.rows; }
    return dims.k;
}

fn has(flag: u32) -> bool {
    return (dims.flags & flag) != 0u;
}

// The hidden layers' activations (model::Activation), by ACT_* code.
fn activate(x: f32, act: u32) -> f32 {
    if (act == ACT_RELU) { return max(x, 0.0); }
    if (act == ACT_LEAKY_RELU) { return select(LEAKY_SLOPE * x, x, x > 0.0); }
    if (act == ACT_TANH) { return tanh(x); }
    return x;
}

// d·act'(x) from the output y = act(x), as src/cpu/activation.rs.
fn activate_backward(d: f32, y: f32, act: u32) -> f32 {
    if (act == ACT_RELU) { return select(0.0, d, y > 0.0); }
    if (act == ACT_LEAKY_RELU) { return select(d * LEAKY_SLOPE, d, y > 0.0); }
    if (act == ACT_TANH) { return d * (1.0 - y * y); }
    return d;
}
