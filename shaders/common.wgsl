// Shared by every kernel (after the generated constants and the generated
// `Step` struct): the per-step values (group 1, dynamic offset) and the
// activations. Each family's parameters `args` (group 0,
// binding 0) and storage bindings are generated from gpu::params.

@group(1) @binding(0) var<uniform> st: Step;

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
