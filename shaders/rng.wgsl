// Twin of src/rng.rs: pcg4d (Jarzynski & Olano 2020), only wrapping u32
// multiply, add, xor and shift, so the bits agree with Rust exactly.

fn pcg4d_mix(v: vec4<u32>) -> vec4<u32> {
    var w = v;
    w.x += w.y * w.w;
    w.y += w.z * w.x;
    w.z += w.x * w.y;
    w.w += w.y * w.z;
    return w;
}

fn pcg4d(v_in: vec4<u32>) -> vec4<u32> {
    var v = v_in * 1664525u + vec4<u32>(1013904223u);
    v = pcg4d_mix(v);
    v ^= v >> vec4<u32>(16u);
    return pcg4d_mix(v);
}

// 24 random bits to (0, 1]: never 0, so log is finite. Exact in f32.
fn unit_uniform(bits: u32) -> f32 {
    return f32((bits >> 8u) + 1u) * (1.0 / 16777216.0);
}

// Box-Muller, cosine branch, as rng::normal. cos(x) is taken as -cos(x - pi)
// so that the argument stays in [-pi, pi], where GPU cosines are accurate.
fn normal(seed: u32, stream: u32, step: u32, index: u32) -> f32 {
    let h = pcg4d(vec4<u32>(seed, stream, step, index));
    let radius = sqrt(-2.0 * log(unit_uniform(h.x)));
    let angle = 6.2831855 * unit_uniform(h.y);
    return -radius * cos(angle - 3.1415927);
}
