//! The element-wise ops of generated kernels, printed from one table: a
//! row-chain stage (`fused::Chain`, a loop over its rows' elements) and a
//! product's epilogue (`fused`, each thread on its output element) both
//! write an op's WGSL from `print`, and differ only in where an operand
//! lives (`Place`). The op's math is a function of `shaders/ops.wgsl`
//! (sigmoid, d_activate, bce_with_logits, kl, adam, ...), the twin of
//! `crate::ops`; this table only says which function reads which operand.

use super::ir::{Call, Res, access};
use super::shaders::Kernel;
use crate::model::{Graph, TensorId};

/// Where an op's operands are, at element (row, e + shift) of the place's
/// current element (row, e).
pub trait Place {
    /// An expression for the element of `t`.
    fn read(&mut self, t: TensorId, shift: usize) -> String;
    /// The element of `t`, to be written in full by this op.
    fn write(&mut self, t: TensorId, shift: usize) -> String;
    /// The element of `t`, read and then written in place.
    fn update(&mut self, t: TensorId, shift: usize) -> String;
    /// Parameter `at + e`.
    fn param(&mut self, at: usize) -> String;
    /// The element's index in a (rows, width) grid: where random streams draw.
    fn flat(&self, width: usize) -> String;
}

/// An op at one element: statements, or a term of loss `which`'s sum.
pub enum Printed {
    Body(String),
    Loss { which: u32, term: String },
}

/// The op's elements per row: its loop's width.
pub fn width(call: &Call) -> Option<usize> {
    match *call {
        Call::InputNoise { width, .. }
        | Call::BiasAdd { width, .. }
        | Call::Activation { width, .. }
        | Call::ActivationBackward { width, .. }
        | Call::Sigmoid { width, .. }
        | Call::SigmoidBackward { width, .. }
        | Call::LossPartials { width, .. }
        | Call::LossBackward { width, .. }
        | Call::Columns { width, .. } => Some(width),
        Call::Reparameterize { latent, .. }
        | Call::ReparameterizeBackward { latent, .. }
        | Call::KlBackward { latent, .. } => Some(latent),
        _ => None,
    }
}

/// Whether `call` is an op of this table whose every tensor has its width:
/// then element (row, e) of its outputs reads only element (row, e) of its
/// inputs, and it can run in a product's epilogue on the product's elements.
pub fn pointwise(call: &Call, graph: &Graph) -> bool {
    let Some(w) = width(call) else { return false };
    let (reads, writes) = access(call);
    reads.iter().chain(&writes).all(|r| match r {
        Res::Tensor(t) => graph.width(*t) == w,
        Res::Params => matches!(call, Call::BiasAdd { .. }),
        Res::Part(_) => true,
        _ => false,
    })
}

/// The WGSL of `call` at the current element of `at`.
pub fn print(call: &Call, at: &mut dyn Place) -> Printed {
    let body = match *call {
        Call::Activation { y, x, act, .. } => {
            let (xv, yv) = match x {
                Some(x) => (at.read(x, 0), at.write(y, 0)),
                None => {
                    let v = at.update(y, 0);
                    (v.clone(), v)
                }
            };
            format!("{yv} = activate({xv}, {}u);", act.code())
        }
        Call::BiasAdd { y, bias, .. } => {
            let v = at.update(y, 0);
            format!("{v} = {v} + {};", at.param(bias))
        }
        Call::ActivationBackward { d, y, x, act, .. } => {
            let v = at.update(d, 0);
            let yv = at.read(y, 0);
            let xv = x.map(|x| at.read(x, 0)).unwrap_or_else(|| yv.clone());
            format!("{v} = d_activate({v}, {xv}, {yv}, {}u);", act.code())
        }
        Call::Sigmoid { y, x, .. } => {
            let xv = at.read(x, 0);
            format!("{} = sigmoid({xv});", at.write(y, 0))
        }
        Call::SigmoidBackward { d, y, .. } => {
            let v = at.update(d, 0);
            format!("{v} = d_sigmoid({v}, {});", at.read(y, 0))
        }
        Call::LossBackward { kernel, out, inputs: [x, target], .. } => {
            let (xv, tv) = (at.read(x, 0), at.read(target, 0));
            let f = match kernel {
                Kernel::BceWithLogitsBackward => "d_bce_with_logits",
                Kernel::MseBackward => "d_mse",
                other => unreachable!("{other:?} is not a loss gradient"),
            };
            format!("{} = {f}({xv}, {tv}, st.recon_scale);", at.write(out, 0))
        }
        Call::LossPartials { kernel, ref inputs, width, which } => {
            let term = match kernel {
                Kernel::BceWithLogitsForward => {
                    format!("bce_with_logits({}, {})", at.read(inputs[0], 0), at.read(inputs[1], 0))
                }
                Kernel::MseForward => format!("mse({}, {})", at.read(inputs[0], 0), at.read(inputs[1], 0)),
                Kernel::KlForward => format!("kl({}, {})", at.read(inputs[0], 0), at.read(inputs[0], width)),
                other => unreachable!("{other:?} is not a loss"),
            };
            return Printed::Loss { which, term };
        }
        Call::Reparameterize { z, eps, mulv, latent } => {
            let (mu, lv) = (at.read(mulv, 0), at.read(mulv, latent));
            let (zv, ev) = (at.write(z, 0), at.write(eps, 0));
            let n = format!("normal(st.seed, st.reparam_stream, st.rng_step, {})", at.flat(latent));
            format!("let n = {n};\n        {ev} = n;\n        {zv} = reparameterize({mu}, {lv}, n);")
        }
        Call::ReparameterizeBackward { d, dz, mulv, eps, latent, accumulate } => {
            let (g, n, lv) = (at.read(dz, 0), at.read(eps, 0), at.read(mulv, latent));
            let grad = format!("d_reparameterize({g}, {lv}, {n})");
            pair_into(at, d, latent, accumulate, &grad)
        }
        Call::KlBackward { d, mulv, latent, accumulate } => {
            let (mu, lv) = (at.read(mulv, 0), at.read(mulv, latent));
            pair_into(at, d, latent, accumulate, &format!("d_kl({mu}, {lv}, st.kl_scale)"))
        }
        Call::Columns { dst, dst_at, src, src_at, accumulate, .. } => {
            let v = at.read(src, src_at);
            if accumulate {
                let d = at.update(dst, dst_at);
                format!("{d} = {d} + {v};")
            } else {
                format!("{} = {v};", at.write(dst, dst_at))
            }
        }
        Call::InputNoise { out, clean, width } => {
            let c = at.read(clean, 0);
            let n = format!("normal(st.seed, st.noise_stream, st.rng_step, {})", at.flat(width));
            format!("{} = input_noise({c}, st.noise_std, {n});", at.write(out, 0))
        }
        ref other => unreachable!("{other:?} is not element-wise"),
    };
    Printed::Body(body)
}

/// A (d mu, d logvar) gradient `grad` into d's halves, added to them with `accumulate`.
fn pair_into(at: &mut dyn Place, d: TensorId, latent: usize, accumulate: bool, grad: &str) -> String {
    let (dmu, dlv) =
        if accumulate { (at.update(d, 0), at.update(d, latent)) } else { (at.write(d, 0), at.write(d, latent)) };
    let acc = if accumulate { format!("\n        g += vec2<f32>({dmu}, {dlv});") } else { String::new() };
    format!("var g = {grad};{acc}\n        {dmu} = g.x;\n        {dlv} = g.y;")
}
