//! Element-wise activations and their backward passes over whole tensors,
//! the loops around `ops::activate` and friends. Backward functions take the
//! forward output, and the input where the activation needs it.

use super::{par_apply, par_map, par_map2};
use crate::model::Activation;
pub use crate::ops::sigmoid;
use crate::ops::{activate, activate_slice, d_activate_slice};

/// y = act(y), in place.
pub fn activation_forward(y: &mut [f32], act: Activation) {
    par_apply(y, |y| activation_in_place(y, act))
}

/// `activation_forward` on the calling thread.
pub fn activation_in_place(y: &mut [f32], act: Activation) {
    activate_slice(y, act);
}

/// y = act(x), out of place: the layer keeps x, its pre-activation.
pub fn activation_forward_from(y: &mut [f32], x: &[f32], act: Activation) {
    par_map(y, x, |y, x| y.iter_mut().zip(x).for_each(|(o, &v)| *o = activate(v, act)))
}

/// d *= act'(x) given y = act(x), in place on the gradient; `x` is needed
/// only by activations whose derivative reads it (`Activation::needs_input`).
pub fn activation_backward(d: &mut [f32], x: Option<&[f32]>, y: &[f32], act: Activation) {
    match x {
        Some(x) => par_map2(d, x, y, |d, x, y| d_activate_slice(d, x, y, act)),
        None => par_map(d, y, |d, y| d_activate_slice(d, y, y, act)),
    }
}

/// y = 1 / (1 + e^-x).
pub fn sigmoid_forward(y: &mut [f32], x: &[f32]) {
    par_map(y, x, |y, x| y.iter_mut().zip(x).for_each(|(o, &v)| *o = sigmoid(v)))
}

/// dx = dy · y (1 - y), in place on the gradient.
pub fn sigmoid_backward(d: &mut [f32], y: &[f32]) {
    par_map(d, y, |d, y| d.iter_mut().zip(y).for_each(|(g, &y)| *g = crate::ops::d_sigmoid(*g, y)))
}
