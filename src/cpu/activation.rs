//! Element-wise activations and their backward passes. Backward functions take
//! the forward *output*, which is all ReLU and sigmoid need.

/// y = max(x, 0), in place.
pub fn relu_forward(y: &mut [f32]) {
    for v in y {
        *v = v.max(0.0);
    }
}

/// dx = dy where y > 0, else 0, in place on the gradient.
pub fn relu_backward(d: &mut [f32], y: &[f32]) {
    for (g, &v) in d.iter_mut().zip(y) {
        if v <= 0.0 {
            *g = 0.0;
        }
    }
}

#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + super::fastmath::exp(-x))
}

/// y = 1 / (1 + e^-x).
pub fn sigmoid_forward(y: &mut [f32], x: &[f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o = sigmoid(v);
    }
}

/// dx = dy · y (1 - y), in place on the gradient.
pub fn sigmoid_backward(d: &mut [f32], y: &[f32]) {
    for (g, &v) in d.iter_mut().zip(y) {
        *g *= v * (1.0 - v);
    }
}
