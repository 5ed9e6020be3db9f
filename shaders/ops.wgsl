// The element-wise ops, each written once for the GPU: the twins of
// src/ops.rs (same names, same operation order), included by every module,
// family or generated, after the prelude (constants, `Step`, `st`).
// tests/ops.rs runs each against its Rust twin.

// 1 / (1 + e^-x) without overflowing exp for very negative x.
fn sigmoid(x: f32) -> f32 {
    let e = exp(-abs(x));
    let s = 1.0 / (1.0 + e);
    return select(e * s, s, x >= 0.0);
}

// d·σ'(x) from y = σ(x).
fn d_sigmoid(d: f32, y: f32) -> f32 {
    return d * (y * (1.0 - y));
}

// ln(1 + e^-|x|), which overflows nowhere: the tail of softplus and BCE.
fn ln_1p_exp_neg_abs(x: f32) -> f32 {
    return log(1.0 + exp(-abs(x)));
}

// erfc(z) from the Chebyshev fit of Numerical Recipes' erfcc (fractional
// error below 1.2e-7 for every z in exact arithmetic); e^(-z²) as
// e^(-h²)·e^((h - z)(h + z)), h = z cut to 12 bits, so that no rounding of z²
// costs accuracy (see src/ops.rs).
fn erfc(z: f32) -> f32 {
    let a = abs(z);
    let h = bitcast<f32>(bitcast<u32>(a) & 0xfffff000u);
    let t = 1.0 / (1.0 + 0.5 * a);
    let p = -1.2655122 + t * (1.0000237 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806
        + t * (0.27886807 + t * (-1.135204 + t * (1.4885159 + t * (-0.82215223 + t * 0.17087277))))))));
    let r = t * exp(-h * h) * exp((h - a) * (h + a) + p);
    return select(2.0 - r, r, z >= 0.0);
}

// Φ(x), the standard normal distribution function.
fn normal_cdf(x: f32) -> f32 {
    return 0.5 * erfc(-x * 0.70710678);
}

// The hidden layers' activations (ops::Activation), by ACT_* code.
fn activate(x: f32, act: u32) -> f32 {
    if (act == ACT_RELU) { return max(x, 0.0); }
    if (act == ACT_LEAKY_RELU) { return select(LEAKY_SLOPE * x, x, x > 0.0); }
    if (act == ACT_TANH) { return tanh(x); }
    if (act == ACT_SILU) { return x * sigmoid(x); }
    if (act == ACT_GELU) { return x * normal_cdf(x); }
    if (act == ACT_ELU) { return select(exp(x) - 1.0, x, x > 0.0); }
    if (act == ACT_SOFTPLUS) { return select(max(x, 0.0) + ln_1p_exp_neg_abs(x), x, x > 20.0); }
    return x;
}

// d·act'(x) from the input x and the output y = act(x); activations that
// need only y are handed y (or anything) for x.
fn d_activate(d: f32, x: f32, y: f32, act: u32) -> f32 {
    if (act == ACT_RELU) { return select(d, 0.0, y <= 0.0); }
    if (act == ACT_LEAKY_RELU) { return select(d, d * LEAKY_SLOPE, y <= 0.0); }
    if (act == ACT_TANH) { return d * (1.0 - y * y); }
    if (act == ACT_SILU) {
        let s = sigmoid(x);
        return d * (s * (1.0 + x * (1.0 - s)));
    }
    if (act == ACT_GELU) { return d * (normal_cdf(x) + x * (exp(-0.5 * x * x) * 0.3989423)); }
    if (act == ACT_ELU) { return select(d * (y + 1.0), d, y > 0.0); }
    if (act == ACT_SOFTPLUS) { return select(d * sigmoid(x), d, x > 20.0); }
    return d;
}

// BCE of σ(a) against the target t: max(a,0) - a·t + ln(1 + e^-|a|), stable for any a.
fn bce_with_logits(a: f32, t: f32) -> f32 {
    return max(a, 0.0) - a * t + ln_1p_exp_neg_abs(a);
}

// The gradient of scale·BCE with respect to the logit a.
fn d_bce_with_logits(a: f32, t: f32, scale: f32) -> f32 {
    return scale * (sigmoid(a) - t);
}

// (y - t)².
fn mse(y: f32, t: f32) -> f32 {
    let d = y - t;
    return d * d;
}

// The gradient of scale·(y - t)² with respect to y.
fn d_mse(y: f32, t: f32, scale: f32) -> f32 {
    return scale * 2.0 * (y - t);
}

// KL(N(mu, e^lv) ‖ N(0, 1)) = -½ (1 + lv - mu² - e^lv).
fn kl(mu: f32, lv: f32) -> f32 {
    return -0.5 * (1.0 + lv - mu * mu - exp(lv));
}

// The gradient of scale·KL with respect to (mu, lv).
fn d_kl(mu: f32, lv: f32, scale: f32) -> vec2<f32> {
    return vec2<f32>(scale * mu, scale * 0.5 * (exp(lv) - 1.0));
}

// z = mu + e^(lv/2)·eps.
fn reparameterize(mu: f32, lv: f32, eps: f32) -> f32 {
    return mu + exp(0.5 * lv) * eps;
}

// The gradient of z with respect to (mu, lv), given dz.
fn d_reparameterize(dz: f32, lv: f32, eps: f32) -> vec2<f32> {
    return vec2<f32>(dz, dz * eps * 0.5 * exp(0.5 * lv));
}

// A denoising model's input: clamp(clean + std·n, 0, 1), n a standard normal draw.
fn input_noise(clean: f32, std_dev: f32, n: f32) -> f32 {
    return clamp(clean + std_dev * n, 0.0, 1.0);
}

// x, or 0 below f32's smallest normal (Adam's moments: see ops::adam).
fn normal_or_zero(x: f32) -> f32 {
    return select(x, 0.0, abs(x) < 1.17549435e-38);
}

// One parameter's Adam update in PyTorch's form, with this step's settings
// (lr, betas, eps and the bias corrections c1, c2 from the step's row):
// the new (param, m, v), moments below the smallest normal kept as zero.
fn adam(p: f32, m: f32, v: f32, g: f32) -> vec3<f32> {
    let m1 = normal_or_zero(st.beta1 * m + (1.0 - st.beta1) * g);
    let v1 = normal_or_zero(st.beta2 * v + (1.0 - st.beta2) * g * g);
    return vec3<f32>(p - st.lr * (m1 * st.c1) / (sqrt(v1) * st.c2 + st.eps), m1, v1);
}
