//! Element-wise activations and their backward passes. Backward functions take
//! the forward *output*, which is all of ReLU, leaky ReLU, tanh and sigmoid need.

use super::{par_apply, par_map};
pub use crate::fastmath::sigmoid;
use crate::model::Activation;

/// y = act(y), in place.
pub fn activation_forward(y: &mut [f32], act: Activation) {
    par_apply(y, |y| activation_in_place(y, act))
}

/// `activation_forward` on the calling thread.
pub fn activation_in_place(y: &mut [f32], act: Activation) {
    match act {
        Activation::Identity => {}
        Activation::Relu => relu_forward(y),
        Activation::LeakyRelu => y.iter_mut().for_each(|v| *v = leaky_relu(*v)),
        Activation::Tanh => y.iter_mut().for_each(|v| *v = v.tanh()),
    }
}

/// d *= act'(x) given y = act(x), in place on the gradient.
pub fn activation_backward(d: &mut [f32], y: &[f32], act: Activation) {
    par_map(d, y, |d, y| activation_backward_serial(d, y, act))
}

fn activation_backward_serial(d: &mut [f32], y: &[f32], act: Activation) {
    match act {
        Activation::Identity => {}
        Activation::Relu => relu_backward(d, y),
        Activation::LeakyRelu => {
            // Positive slope: y > 0 exactly where x > 0.
            for (g, &v) in d.iter_mut().zip(y) {
                *g = if v <= 0.0 { *g * Activation::LEAKY_SLOPE } else { *g };
            }
        }
        Activation::Tanh => d.iter_mut().zip(y).for_each(|(g, &v)| *g *= 1.0 - v * v),
    }
}

#[inline(always)]
fn leaky_relu(x: f32) -> f32 {
    if x > 0.0 { x } else { Activation::LEAKY_SLOPE * x }
}

/// y = max(x, 0), in place.
pub fn relu_forward(y: &mut [f32]) {
    for v in y {
        *v = v.max(0.0);
    }
}

/// dx = dy where y > 0, else 0, in place on the gradient. A select rather
/// than a conditional store, so that it vectorizes.
pub fn relu_backward(d: &mut [f32], y: &[f32]) {
    for (g, &v) in d.iter_mut().zip(y) {
        *g = if v <= 0.0 { 0.0 } else { *g };
    }
}

/// y = 1 / (1 + e^-x).
pub fn sigmoid_forward(y: &mut [f32], x: &[f32]) {
    par_map(y, x, |y, x| {
        for (o, &v) in y.iter_mut().zip(x) {
            *o = sigmoid(v);
        }
    })
}

/// dx = dy · y (1 - y), in place on the gradient.
pub fn sigmoid_backward(d: &mut [f32], y: &[f32]) {
    par_map(d, y, |d, y| {
        for (g, &v) in d.iter_mut().zip(y) {
            *g *= v * (1.0 - v);
        }
    })
}
