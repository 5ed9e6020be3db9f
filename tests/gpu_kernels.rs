//! Every WGSL entry point against its CPU twin, on random inputs of awkward
//! shapes, in both shader modes (trusted and checked). Tolerances are written
//! as |g − c| ≤ atol + rtol·|c| with the reason next to them.

#[path = "common/gpu.rs"]
mod gpu_common;

use gpu_common::{Mode, assert_close, gpu, random};
use gpu_vae::advanced::cpu::{activation, adam, concat, loss, matmul, reparam};
use gpu_vae::advanced::data::{Images, loader};
use gpu_vae::advanced::engine::AdamConfig;
use gpu_vae::advanced::gpu::ir::{Buf, Call, Epilogue, Matmul, Res, Size, Task};
use gpu_vae::advanced::gpu::ops::{Host, Launch, run_generated, run_once};
use gpu_vae::advanced::gpu::params::{
    AdamParams, ConvParams, ElementwiseParams, GatherParams, KernelParams, LossParams, MatmulParams, RandomParams,
    ReduceParams, ReparamParams, Slot,
};
use gpu_vae::advanced::gpu::program::Step;
use gpu_vae::advanced::gpu::shaders::{
    Kernel, MAX_PARTS, MatmulForm, MatmulVariant, column_sums_groups, conv_groups, flags, grid_1d, loss_parts,
};
use gpu_vae::advanced::model::{Activation, Graph, TensorId, TensorInfo};
use gpu_vae::advanced::rng::{self, Stream};

/// f32 unit roundoff.
const U: f32 = f32::EPSILON / 2.0;

/// Normals: the GPU's log, sqrt and cos may differ from Rust's by a few ulps
/// (Vulkan allows cos an absolute error of 2^-11 but real drivers are far
/// better); the radius is at most 5.8, so 2e-5 absolute covers a few ulps of
/// every factor with margin. Tightened or loosened only with a measurement.
const NORMAL_ATOL: f32 = 2e-5;
const NORMAL_RTOL: f32 = 2e-5;

/// One dispatch on buffers bound by name; every bound buffer's contents
/// come back in the order given.
fn run<P: KernelParams>(
    mode: &Mode,
    kernel: Kernel,
    params: P,
    step: Step,
    bindings: &[(Slot, Host)],
    groups: [u32; 3],
) -> Vec<Vec<f32>> {
    run_once(&mode.ctx, &mode.kernels, Launch { kernel, params, step, groups }, bindings)
        .unwrap_or_else(|e| panic!("{} ({}): {e}", kernel.entry(), mode.name()))
}

fn rows_step(rows: usize) -> Step {
    Step { rows: rows as u32, ..Default::default() }
}

#[test]
fn rng_uniform_bits_are_identical() {
    let Some(gpu) = gpu("rng_uniform_bits_are_identical") else { return };
    for mode in &gpu.modes {
        for (seed, stream, step) in [(0u32, 0u32, 0u32), (7, 3, 12_345), (u32::MAX, 5, u32::MAX - 1)] {
            let n = 4099u32;
            let params = RandomParams { count: n, seed, stream, step };
            let zeros = vec![0u32; 4 * n as usize];
            let words = &run(
                mode,
                Kernel::Pcg4dWords,
                params,
                Step::default(),
                &[(Slot::Words, Host::U32(&zeros))],
                grid_1d(n as usize),
            )[0];
            let uniforms = &run(
                mode,
                Kernel::FillUniform,
                params,
                Step::default(),
                &[(Slot::Words, Host::U32(&zeros[..n as usize]))],
                grid_1d(n as usize),
            )[0];
            for i in 0..n {
                let want = rng::pcg4d([seed, stream, step, i]);
                let got: Vec<u32> = words[4 * i as usize..4 * i as usize + 4].iter().map(|w| w.to_bits()).collect();
                assert_eq!(got, want, "pcg4d({seed}, {stream}, {step}, {i}) ({})", mode.name());
                let u = rng::unit_uniform(want[0]);
                assert_eq!(uniforms[i as usize].to_bits(), u.to_bits(), "unit_uniform at {i} ({})", mode.name());
            }
        }
    }
}

#[test]
fn rng_normals_match_within_tolerance() {
    let Some(gpu) = gpu("rng_normals_match_within_tolerance") else { return };
    for mode in &gpu.modes {
        for (seed, stream, step) in [(1u32, Stream::Reparam, 0u32), (99, Stream::InputNoise, 4_000_000)] {
            let n = 100_003usize;
            let params = RandomParams { count: n as u32, seed, stream: stream as u32, step };
            let zeros = vec![0; n];
            let out = &run(
                mode,
                Kernel::FillNormal,
                params,
                Step::default(),
                &[(Slot::Words, Host::U32(&zeros))],
                grid_1d(n),
            )[0];
            let got: Vec<f32> = out.iter().map(|w| f32::from_bits(w.to_bits())).collect();
            let mut want = vec![0.0; n];
            rng::fill_normal(&mut want, seed, stream, step);
            assert_close(&format!("fill_normal ({})", mode.name()), &got, &want, NORMAL_ATOL, NORMAL_RTOL);
        }
    }
}

const MATMUL_SHAPES: [(usize, usize, usize); 8] =
    [(1, 1, 1), (7, 9, 13), (63, 65, 20), (64, 64, 64), (65, 129, 40), (129, 63, 7), (17, 784, 65), (128, 20, 129)];

#[test]
fn matmul_forms_match_cpu() {
    let Some(gpu) = gpu("matmul_forms_match_cpu") else { return };
    for mode in &gpu.modes {
        for variant in MatmulVariant::ALL {
            // Split-K into 3 slices too (tiled variants), uneven ones included.
            let splits: &[u32] = if variant == MatmulVariant::Naive { &[1] } else { &[1, 3] };
            for (s, &(m, k, n)) in MATMUL_SHAPES.iter().enumerate() {
                for form in ["matmul_nt", "matmul_tn", "matmul_nn"] {
                    for &slices in splits {
                        check_matmul(mode, variant, form, (m, k, n), slices, s as u32);
                    }
                }
            }
        }
    }
}

/// One product with operands at odd offsets inside larger buffers, batch-sized
/// M (or K for the weight gradient) taken from the step, and the epilogue each
/// form uses in training: nt with bias + an activation, tn accumulating, nn plain.
fn check_matmul(
    mode: &Mode,
    variant: MatmulVariant,
    form: &'static str,
    mkn: (usize, usize, usize),
    slices: u32,
    salt: u32,
) {
    let (m, k, n) = mkn;
    let (oa, ob, oc, od) = (3usize, 5usize, 1usize, 2usize);
    let a = random(oa + m * k, 10 + salt, -1.0, 1.0);
    let b = random(ob + k * n, 20 + salt, -1.0, 1.0);
    let bias = random(od + n, 30 + salt, -1.0, 1.0);
    let c0 = random(oc + m * n, 40 + salt, -1.0, 1.0);
    let (a_, b_, bias_) = (&a[oa..], &b[ob..], &bias[od..]);
    let mut want = c0[oc..].to_vec();
    let (mut dims, step) = (MatmulParams { m: m as u32, k: k as u32, n: n as u32, ..Default::default() }, rows_step(m));
    dims.off_a = oa as u32;
    dims.off_b = ob as u32;
    dims.off_c = oc as u32;
    dims.off_bias = od as u32;
    let mut step = step;
    match form {
        "matmul_nt" => {
            matmul::matmul_nt(&mut want, a_, b_, m, k, n, false);
            matmul::bias_add(&mut want, bias_, m, n);
            // Every activation the epilogue knows, in turn.
            let act = [Activation::Relu, Activation::LeakyRelu, Activation::Tanh][salt as usize % 3];
            activation::activation_forward(&mut want, act);
            dims.act = act.code();
            dims.flags = flags::BIAS | flags::ROWS_M;
            dims.m = 100_000; // ignored: M comes from the step
        }
        "matmul_tn" => {
            matmul::matmul_tn(&mut want, a_, b_, m, k, n, true);
            dims.flags = flags::ACCUMULATE | flags::ROWS_K;
            dims.k = 100_000;
            step.rows = k as u32;
        }
        _ => matmul::matmul_nn(&mut want, a_, b_, m, k, n, false),
    }
    let form_id = match form {
        "matmul_nt" => MatmulForm::Nt,
        "matmul_tn" => MatmulForm::Tn,
        _ => MatmulForm::Nn,
    };
    let kernel = Kernel::Matmul(variant, form_id);
    let ro = [(Slot::A, Host::F32(&a)), (Slot::B, Host::F32(&b)), (Slot::Bias, Host::F32(&bias))];
    let [x, y, _] = variant.workgroups(m, n);
    let out = if slices == 1 {
        run(mode, kernel, dims, step, &[&[(Slot::C, Host::F32(&c0))], &ro[..]].concat(), [x, y, 1])
    } else {
        // The slices into scratch, then their ordered sum and the epilogue.
        dims.slices = slices;
        let scratch = vec![0.0f32; slices as usize * m * n];
        let rw = [(Slot::C, Host::F32(&c0)), (Slot::Partial, Host::F32(&scratch))];
        let sliced = run(mode, kernel, dims, step, &[&rw[..], &ro[..]].concat(), [x, y, slices]);
        let finish = Kernel::MatmulSplitFinish(variant);
        let rw = [(Slot::C, Host::F32(&c0)), (Slot::Partial, Host::F32(&sliced[1]))];
        run(mode, finish, dims, step, &[&rw[..], &ro[..]].concat(), grid_1d(m * n))
    };
    assert_eq!(out[0][..oc], c0[..oc], "{form}: wrote before its output");
    // Rounding noise of a length-k f32 dot product in two summation orders
    // (packed FMA blocks on the CPU, one FMA chain on the GPU) grows like
    // k·u for terms in [-1, 1]; 16·k·u leaves a wide margin.
    let atol = 16.0 * k as f32 * U;
    let what = format!("{form} {variant:?} m={m} k={k} n={n} slices={slices} ({})", mode.name());
    assert_close(&what, &out[0][oc..], &want, atol, 1e-5);
}

#[test]
fn column_sums_match_cpu() {
    let Some(gpu) = gpu("column_sums_match_cpu") else { return };
    for mode in &gpu.modes {
        for (m, n) in [(1, 1), (7, 63), (129, 65), (17, 784), (300, 20), (1024, 33)] {
            let a = random(2 + m * n, 1, -1.0, 1.0);
            let out0 = random(n + 1, 2, -1.0, 1.0);
            // The kernel adds to its output (FLAG_ACCUMULATE); the CPU twin writes.
            let mut sums = vec![0.0; n];
            matmul::column_sums(&mut sums, &a[2..], m, n);
            let want: Vec<f32> = out0[1..].iter().zip(&sums).map(|(o, s)| o + s).collect();
            let params = ReduceParams { n: n as u32, off_in: 2, off_out: 1, flags: flags::ACCUMULATE };
            let kernel = Kernel::ColumnSums;
            let groups = column_sums_groups(n);
            let b = [(Slot::Out, Host::F32(&out0)), (Slot::A, Host::F32(&a))];
            let out = run(mode, kernel, params, rows_step(m), &b, groups);
            // The same m additions as the CPU's, grouped differently (8
            // strided partial sums): rounding differences of at most a few
            // ulps of partial sums bounded by m for terms in [-1, 1].
            let what = format!("column_sums m={m} n={n} ({})", mode.name());
            assert_close(&what, &out[0][1..], &want, 4.0 * m as f32 * U, 4.0 * U);
        }
    }
}

const ELEMENTWISE_SHAPES: [(usize, usize); 5] = [(1, 1), (7, 63), (65, 129), (17, 784), (128, 20)];

#[test]
fn activations_match_cpu() {
    let Some(gpu) = gpu("activations_match_cpu") else { return };
    for mode in &gpu.modes {
        for (m, n) in ELEMENTWISE_SHAPES {
            let len = m * n;
            let dims = ElementwiseParams { n: n as u32, off_in: 1, off_out: 2, ..Default::default() };
            let x = random(len + 1, 5, -6.0, 6.0);
            let d0 = random(len + 2, 6, -1.0, 1.0);
            let step = rows_step(m);
            let g = grid_1d(len);
            let name = |e: &str| format!("{e} m={m} n={n} ({})", mode.name());

            for act in Activation::ALL {
                let dims = ElementwiseParams { act: act.code(), ..dims };
                // ReLU, leaky ReLU and the identity are exact. The others go
                // through tanh, exp and (GELU) the erfc fit, whose GPU results
                // may differ from the CPU's by a few ulps each (Vulkan allows
                // exp 3 + 2|x| ulps, 15 at |x| = 6), and the GPU may fuse a
                // multiply-add: 2e-5 relative is over 10x what that gives,
                // 1e-6 absolute covers values that cancel towards 0.
                let exact = matches!(act, Activation::Identity | Activation::Relu | Activation::LeakyRelu);
                let (atol, rtol) = if exact { (0.0, 0.0) } else { (1e-6, 2e-5) };
                let mut want = x[1..].to_vec();
                activation::activation_forward(&mut want, act);
                let mut y0 = vec![0.0; 2];
                y0.extend_from_slice(&x[1..]);
                let out = run(mode, Kernel::ActivationForward, dims, step, &[(Slot::Out, Host::F32(&y0))], g);
                assert_close(&name(&format!("{act:?} forward")), &out[0][2..], &want, atol, rtol);
                // Out of place, from a kept pre-activation.
                let b = [(Slot::Out, Host::F32(&d0)), (Slot::Inp, Host::F32(&x))];
                let out = run(mode, Kernel::ActivationForwardFrom, dims, step, &b, g);
                assert_close(&name(&format!("{act:?} forward from x")), &out[0][2..], &want, atol, rtol);

                let mut y = vec![0.0; 1];
                y.extend_from_slice(&want);
                let mut want = d0[2..].to_vec();
                activation::activation_backward(&mut want, Some(&x[1..]), &y[1..], act);
                let b = [(Slot::Out, Host::F32(&d0)), (Slot::Inp, Host::F32(&y)), (Slot::X, Host::F32(&x))];
                let out = run(mode, Kernel::ActivationBackward, dims, step, &b, g);
                assert_close(&name(&format!("{act:?} backward")), &out[0][2..], &want, atol, rtol);
            }

            // bias_add: the bias at off_in of a parameter-like buffer.
            let bias = random(1 + n, 9, -1.0, 1.0);
            let mut want = d0[2..].to_vec();
            matmul::bias_add(&mut want, &bias[1..], m, n);
            let b = [(Slot::Out, Host::F32(&d0)), (Slot::Inp, Host::F32(&bias))];
            let out = run(mode, Kernel::BiasAdd, dims, step, &b, g);
            assert_close(&name("bias_add"), &out[0][2..], &want, 0.0, 0.0);

            // exp differs by a few ulps between GPU and CPU, and the GPU
            // form avoids overflow for very negative x.
            let mut want = vec![0.0; len];
            activation::sigmoid_forward(&mut want, &x[1..]);
            let b = [(Slot::Out, Host::F32(&d0)), (Slot::Inp, Host::F32(&x))];
            let out = run(mode, Kernel::SigmoidForward, dims, step, &b, g);
            assert_close(&name("sigmoid_forward"), &out[0][2..], &want, 1e-7, 8.0 * U);

            let y: Vec<f32> = x.iter().map(|&v| activation::sigmoid(v)).collect();
            let mut want = d0[2..].to_vec();
            activation::sigmoid_backward(&mut want, &y[1..]);
            let b = [(Slot::Out, Host::F32(&d0)), (Slot::Inp, Host::F32(&y))];
            let out = run(mode, Kernel::SigmoidBackward, dims, step, &b, g);
            assert_close(&name("sigmoid_backward"), &out[0][2..], &want, 1e-8, 4.0 * U);
        }
    }
}

/// A forward loss kernel and `loss_finish`: the reduced sum, read from slot `which`.
fn loss_sum(mode: &Mode, entry: Kernel, dims: LossParams, step: Step, inputs: &[(Slot, Host)], len: usize) -> f32 {
    let parts = loss_parts(len);
    let zeros = vec![0.0; parts as usize + 1];
    let bound = [&[(Slot::Out, Host::F32(&zeros))], inputs].concat();
    let partials = run(mode, entry, LossParams { off_out: 1, ..dims }, step, &bound, [parts, 1, 1]);
    let finish = LossParams { parts, off_x: 1, which: 1, ..Default::default() };
    let bound = [(Slot::Out, Host::F32(&[9.0; 4])), (Slot::X, Host::F32(&partials[0]))];
    let slots = run(mode, Kernel::LossFinish, finish, Step { slot: 1, ..step }, &bound, [1, 1, 1]);
    assert_eq!([slots[0][0], slots[0][1], slots[0][2]], [9.0; 3], "{entry:?}: wrote outside its slot");
    slots[0][3]
}

/// Reduced sums: f32 tree sums of up to 1e5 terms against the CPU's f64 sum,
/// plus GPU log/exp ulps per term: 1e-5 of the total (and 1e-4 absolute for
/// sums near 0).
const SUM_ATOL: f32 = 1e-4;
const SUM_RTOL: f32 = 1e-5;

#[test]
fn reconstruction_losses_match_cpu() {
    let Some(gpu) = gpu("reconstruction_losses_match_cpu") else { return };
    for mode in &gpu.modes {
        for (m, n) in ELEMENTWISE_SHAPES {
            let len = m * n;
            let logits = random(len + 1, 7, -8.0, 8.0);
            let target = random(len + 2, 8, 0.0, 1.0);
            let (a, x) = (&logits[1..], &target[2..]);
            let scale = 0.37;
            let step = Step { recon_scale: scale, ..rows_step(m) };
            let dims = LossParams { n: n as u32, off_x: 1, off_target: 2, ..Default::default() };
            let inputs = [(Slot::X, Host::F32(&logits)), (Slot::Target, Host::F32(&target))];
            let name = |e: &str| format!("{e} m={m} n={n} ({})", mode.name());

            let got = loss_sum(mode, Kernel::BceWithLogitsForward, dims, step, &inputs, len);
            let want = loss::bce_with_logits_forward(a, x) as f32;
            assert_close(&name("bce_with_logits_forward"), &[got], &[want], SUM_ATOL, SUM_RTOL);

            let mut want = vec![0.0; len];
            loss::bce_with_logits_backward(&mut want, a, x, scale);
            let k = Kernel::BceWithLogitsBackward;
            let zeros = vec![0.0; len + 3];
            let bound = [&[(Slot::Out, Host::F32(&zeros))], &inputs[..]].concat();
            let out = run(mode, k, LossParams { off_out: 3, ..dims }, step, &bound, grid_1d(len));
            // sigmoid through exp: a few ulps of a value scaled by 0.37.
            assert_close(&name("bce_with_logits_backward"), &out[0][3..], &want, 1e-7, 8.0 * U);

            let y: Vec<f32> = logits.iter().map(|&v| activation::sigmoid(v)).collect();
            let inputs = [(Slot::X, Host::F32(&y)), (Slot::Target, Host::F32(&target))];
            let got = loss_sum(mode, Kernel::MseForward, dims, step, &inputs, len);
            let want = loss::mse_forward(&y[1..], x) as f32;
            assert_close(&name("mse_forward"), &[got], &[want], SUM_ATOL, SUM_RTOL);

            let mut want = vec![0.0; len];
            loss::mse_backward(&mut want, &y[1..], x, scale);
            let k = Kernel::MseBackward;
            let bound = [&[(Slot::Out, Host::F32(&zeros))], &inputs[..]].concat();
            let out = run(mode, k, LossParams { off_out: 3, ..dims }, step, &bound, grid_1d(len));
            assert_close(&name("mse_backward"), &out[0][3..], &want, 0.0, 2.0 * U);
        }
    }
}

#[test]
fn kl_matches_cpu() {
    let Some(gpu) = gpu("kl_matches_cpu") else { return };
    for mode in &gpu.modes {
        for (m, latent) in [(1, 1), (7, 5), (65, 20), (129, 63)] {
            let len = m * latent;
            let mut mulv = random(1 + 2 * len, 9, -2.0, 2.0);
            mulv[1..].chunks_exact_mut(2 * latent).for_each(|r| r[latent..].iter_mut().for_each(|v| *v *= 1.5));
            let step = Step { kl_scale: 0.8, ..rows_step(m) };
            let dims = LossParams { n: latent as u32, off_x: 1, ..Default::default() };
            let name = |e: &str| format!("{e} m={m} L={latent} ({})", mode.name());

            let got = loss_sum(mode, Kernel::KlForward, dims, step, &[(Slot::X, Host::F32(&mulv))], len);
            let want = loss::kl_forward(&mulv[1..], latent) as f32;
            assert_close(&name("kl_forward"), &[got], &[want], SUM_ATOL, SUM_RTOL);

            let d0 = random(2 + 2 * len, 10, -1.0, 1.0);
            let mut want = d0[2..].to_vec();
            loss::kl_backward(&mut want, &mulv[1..], latent, 0.8);
            let k = Kernel::KlBackward;
            let acc = LossParams { off_out: 2, flags: flags::ACCUMULATE, ..dims };
            let bound = [(Slot::Out, Host::F32(&d0)), (Slot::X, Host::F32(&mulv))];
            let out = run(mode, k, acc, step, &bound, grid_1d(len));
            // exp(lv) to a few ulps, scaled and added to d.
            assert_close(&name("kl_backward"), &out[0][2..], &want, 1e-6, 8.0 * U);
            // Without ACCUMULATE it writes: the CPU twin on a zeroed gradient.
            let mut want = vec![0.0; 2 * len];
            loss::kl_backward(&mut want, &mulv[1..], latent, 0.8);
            let out = run(mode, k, LossParams { off_out: 2, ..dims }, step, &bound, grid_1d(len));
            assert_close(&name("kl_backward (write)"), &out[0][2..], &want, 1e-6, 8.0 * U);
        }
    }
}

#[test]
fn reparameterization_matches_cpu() {
    let Some(gpu) = gpu("reparameterization_matches_cpu") else { return };
    for mode in &gpu.modes {
        for (m, latent) in [(1, 1), (7, 5), (65, 20), (129, 63)] {
            let len = m * latent;
            let mulv = random(1 + 2 * len, 11, -2.0, 2.0);
            let step = Step { seed: 42, reparam_stream: Stream::Reparam as u32, rng_step: 1234, ..rows_step(m) };
            let dims = ReparamParams { latent: latent as u32, flags: 0, off_mulv: 1, off_rows: 2 };
            let name = |e: &str| format!("{e} m={m} L={latent} ({})", mode.name());

            let mut eps = vec![0.0; len];
            rng::fill_normal(&mut eps, 42, Stream::Reparam, 1234);
            let mut z = vec![0.0; len];
            reparam::reparameterize_forward(&mut z, &mulv[1..], &eps, latent);
            let zeros = vec![0.0; len + 2];
            let k = Kernel::ReparameterizeForward;
            let bound = [(Slot::Z, Host::F32(&zeros)), (Slot::Eps, Host::F32(&zeros)), (Slot::Mulv, Host::F32(&mulv))];
            let out = run(mode, k, dims, step, &bound, grid_1d(len));
            assert_close(&name("eps"), &out[1][2..], &eps, NORMAL_ATOL, NORMAL_RTOL);
            // z = mu + e^(lv/2)·eps with e^(lv/2) ≤ 2.7: eps's tolerance scaled.
            assert_close(&name("reparameterize_forward"), &out[0][2..], &z, 3.0 * NORMAL_ATOL, NORMAL_RTOL);

            // Backward from the CPU's eps, both writing and accumulating; dz
            // and eps at off_rows, dmulv and mulv at off_mulv.
            let mut eps_buf = vec![0.0; 3];
            eps_buf.extend_from_slice(&eps);
            let dz = random(3 + len, 12, -1.0, 1.0);
            let mut d0 = random(1 + 2 * len, 13, -1.0, 1.0);
            d0[0] = 7.0;
            let k = Kernel::ReparameterizeBackward;
            for accumulate in [false, true] {
                let mut want = if accumulate { d0[1..].to_vec() } else { vec![0.0; 2 * len] };
                reparam::reparameterize_backward(&mut want, &dz[3..], &mulv[1..], &eps, latent);
                let flags = if accumulate { flags::ACCUMULATE } else { 0 };
                let d = ReparamParams { off_rows: 3, flags, ..dims };
                let bound = [
                    (Slot::Dmulv, Host::F32(&d0)),
                    (Slot::Dz, Host::F32(&dz)),
                    (Slot::Mulv, Host::F32(&mulv)),
                    (Slot::Noise, Host::F32(&eps_buf)),
                ];
                let out = run(mode, k, d, step, &bound, grid_1d(len));
                let what = name(&format!("reparameterize_backward accumulate={accumulate}"));
                assert_eq!(out[0][0], 7.0, "{what}: wrote before its output");
                // Terms up to |dz·eps·½e^(lv/2)| ≈ 5, so a few ulps of 5 absolute.
                assert_close(&what, &out[0][1..], &want, 2e-6, 8.0 * U);
            }
        }
    }
}

#[test]
fn gather_and_noise_match_cpu() {
    let Some(gpu) = gpu("gather_and_noise_match_cpu") else { return };
    for mode in &gpu.modes {
        // 11 images of 7x9: neither the image nor the data set is a whole number of u32 words.
        let (count, rows, cols) = (11usize, 7usize, 9usize);
        let dim = rows * cols;
        let pixels: Vec<u8> = (0..count * dim).map(|i| (rng::pcg4d([5, 6, 7, i as u32])[0] >> 24) as u8).collect();
        let mut words = vec![0u32; (count * dim).div_ceil(4)];
        for (i, &p) in pixels.iter().enumerate() {
            words[i / 4] |= (p as u32) << (8 * (i % 4));
        }
        // Labels of 7 classes, packed as the pixels are (11 bytes: not whole words either).
        let classes = 7;
        let labels: Vec<u8> = (0..count).map(|i| (rng::pcg4d([8, 9, 1, i as u32])[0] % classes) as u8).collect();
        let mut label_words = vec![0u32; count.div_ceil(4)];
        for (i, &l) in labels.iter().enumerate() {
            label_words[i / 4] |= (l as u32) << (8 * (i % 4));
        }
        let labels = Some(labels);
        let images = Images { pixels, count, channels: 1, rows, cols, labels, class_names: None };
        let order: Vec<u32> = rng::permutation(count, 3, 1);
        let (offset, batch) = (3usize, 5usize);
        let mut want = vec![0.0; batch * dim];
        loader::gather_batch(&images, &order[offset..offset + batch], &mut want);
        let step = Step {
            row_offset: offset as u32,
            seed: 17,
            noise_std: 0.3,
            noise_stream: Stream::InputNoise as u32,
            rng_step: 9,
            ..rows_step(batch)
        };
        let params = GatherParams { n: dim as u32, off_out: 1, off_in: 0, classes };
        let k = Kernel::GatherBatch;
        let zeros = vec![0.0; 1 + batch * dim];
        let marks = vec![0.5; batch * classes as usize];
        let bound = [
            (Slot::Out, Host::F32(&zeros)),
            (Slot::Pixels, Host::U32(&words)),
            (Slot::Order, Host::U32(&order)),
            (Slot::Labels, Host::U32(&label_words)),
            (Slot::Onehot, Host::F32(&marks)),
        ];
        let out = run(mode, k, params, step, &bound, grid_1d(batch * dim));
        // p / 255 in f32; a GPU division may be off by an ulp or two.
        assert_close(&format!("gather_batch ({})", mode.name()), &out[0][1..], &want, 0.0, 4.0 * U);
        let onehot = loader::one_hot(&images, &order[offset..offset + batch], classes as usize);
        assert_eq!(out[4][..onehot.len()], onehot, "gather_batch's one-hot labels ({})", mode.name());

        let mut noisy = vec![0.0; want.len()];
        loader::add_input_noise(&want, &mut noisy, 0.3, 17, Stream::InputNoise, 9);
        let d = GatherParams { n: dim as u32, off_in: 1, ..Default::default() };
        let k = Kernel::AddInputNoise;
        let zeros = vec![0.0; batch * dim];
        let bound = [(Slot::Out, Host::F32(&zeros)), (Slot::Clean, Host::F32(&out[0]))];
        let out = run(mode, k, d, step, &bound, grid_1d(batch * dim));
        // Normals scaled by 0.3, then clamped.
        assert_close(&format!("add_input_noise ({})", mode.name()), &out[0], &noisy, NORMAL_ATOL, NORMAL_RTOL);
    }
}

#[test]
fn copy_columns_match_concat() {
    // A concatenation [a | b] as two copies, and its backward's slices
    // (written, and added to what is there), against src/cpu/concat.rs.
    let Some(gpu) = gpu("copy_columns_match_concat") else { return };
    let k = Kernel::CopyColumns;
    for mode in &gpu.modes {
        for (rows, wa, wb) in [(1, 1, 1), (7, 63, 10), (65, 784, 10), (128, 20, 3), (17, 5, 100)] {
            let (a, b) = (random(rows * wa, 1, -1.0, 1.0), random(rows * wb, 2, -1.0, 1.0));
            let width = wa + wb;
            let name = |e: &str| format!("{e} rows={rows} [{wa} | {wb}] ({})", mode.name());
            let mut want = vec![0.0; rows * width];
            concat::concat_forward(&mut want, &a, &b, rows);
            let mut y = vec![f32::NAN; rows * width];
            for (src, at, w) in [(&a, 0, wa), (&b, wa, wb)] {
                let params = ElementwiseParams {
                    n: w as u32,
                    off_out: at as u32,
                    width_in: w as u32,
                    width_out: width as u32,
                    ..Default::default()
                };
                let bound = [(Slot::Out, Host::F32(&y)), (Slot::Inp, Host::F32(src))];
                y = run(mode, k, params, rows_step(rows), &bound, grid_1d(rows * w))[0][..rows * width].to_vec();
            }
            // Copies: exact.
            assert_eq!(y, want, "{}", name("concat"));

            let dy = random(rows * width, 3, -1.0, 1.0);
            let d0 = random(rows * wb, 4, -1.0, 1.0);
            for accumulate in [false, true] {
                let mut want = d0.clone();
                concat::concat_backward(&mut want, &dy, wa, rows, accumulate);
                let params = ElementwiseParams {
                    n: wb as u32,
                    off_in: wa as u32,
                    width_in: width as u32,
                    width_out: wb as u32,
                    flags: if accumulate { flags::ACCUMULATE } else { 0 },
                    ..Default::default()
                };
                let bound = [(Slot::Out, Host::F32(&d0)), (Slot::Inp, Host::F32(&dy))];
                let out = run(mode, k, params, rows_step(rows), &bound, grid_1d(rows * wb));
                // One addition, in the same order: exact.
                assert_eq!(out[0][..rows * wb], want, "{}", name(&format!("backward accumulate={accumulate}")));
            }
        }
    }
}

#[test]
fn adam_matches_cpu() {
    let Some(gpu) = gpu("adam_matches_cpu") else { return };
    let cfg = gpu_vae::advanced::engine::AdamConfig { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8 };
    for mode in &gpu.modes {
        for (p, t) in [(1usize, 1u64), (1031, 1), (70_001, 57)] {
            let params = random(p, 14, -1.0, 1.0);
            let m = random(p, 15, -0.1, 0.1);
            let v = random(p, 16, 0.0, 0.01);
            let g = random(p, 17, -1.0, 1.0);
            let (mut wp, mut wm, mut wv) = (params.clone(), m.clone(), v.clone());
            let s = cfg.step(t, cfg.lr);
            adam::adam_update(&mut wp, &mut wm, &mut wv, &g, &s);
            let dims = AdamParams { count: p as u32 };
            let step = Step::default().with_adam(&s);
            let k = Kernel::AdamUpdate;
            let bound = [
                (Slot::Params, Host::F32(&params)),
                (Slot::AdamM, Host::F32(&m)),
                (Slot::AdamV, Host::F32(&v)),
                (Slot::Grads, Host::F32(&g)),
            ];
            let out = run(mode, k, dims, step, &bound, grid_1d(p));
            let name = |e: &str| format!("{e} P={p} t={t} ({})", mode.name());
            // Moments: b·m + (1-b)·g may cancel, and a GPU contracts it into
            // an FMA, so the error is a couple of ulps of the terms (|terms| ≤
            // 0.1 for m, ≤ 0.01 for v), not of the result. The update then
            // adds a few ulps of itself (sqrt and division: up to 2.5 ulp in
            // Vulkan), well under an ulp of the parameter.
            assert_close(&name("adam m"), &out[1], &wm, 2.0 * 0.1 * 2.0 * U, 4.0 * U);
            assert_close(&name("adam v"), &out[2], &wv, 2.0 * 0.01 * 2.0 * U, 4.0 * U);
            assert_close(&name("adam params"), &out[0], &wp, 1e-8, 4.0 * U);
        }
        // Moments that decay below the smallest normal are zero on both
        // engines (ops::adam), bit for bit; normal ones stay.
        let tiny = f32::MIN_POSITIVE;
        let (params, g) = (vec![0.5; 4], vec![0.0; 4]);
        let m = vec![tiny, -tiny, 4.0 * tiny, 0.0];
        let v: Vec<f32> = m.iter().map(|m| m.abs()).collect();
        let (mut wp, mut wm, mut wv) = (params.clone(), m.clone(), v.clone());
        let s = cfg.step(3, cfg.lr);
        adam::adam_update(&mut wp, &mut wm, &mut wv, &g, &s);
        assert_eq!((&wm[..2], &wv[..2]), (&[0.0, 0.0][..], &[0.0, 0.0][..]), "the CPU's moments");
        let step = Step::default().with_adam(&s);
        let bound = [
            (Slot::Params, Host::F32(&params)),
            (Slot::AdamM, Host::F32(&m)),
            (Slot::AdamV, Host::F32(&v)),
            (Slot::Grads, Host::F32(&g)),
        ];
        let out = run(mode, Kernel::AdamUpdate, AdamParams { count: 4 }, step, &bound, grid_1d(4));
        assert_eq!(out[1], wm, "adam m of subnormal-bound moments ({})", mode.name());
        assert_eq!(out[2], wv, "adam v of subnormal-bound moments ({})", mode.name());
        assert_eq!(out[0], wp, "adam params of subnormal-bound moments ({})", mode.name());
    }
}

/// (channels in, height, width, channels out, kernel, stride, padding, rows)
type ConvShape = (usize, usize, usize, usize, usize, usize, usize, usize);
const CONV_SHAPES: [ConvShape; 5] = [
    (1, 7, 5, 3, 3, 1, 1, 1),
    (3, 9, 8, 7, 3, 2, 1, 3),
    (7, 6, 7, 1, 3, 2, 0, 2),
    (3, 5, 5, 2, 1, 1, 0, 1),
    (2, 11, 6, 4, 2, 2, 0, 2),
];

#[test]
fn conv_kernels_match_cpu() {
    use gpu_vae::advanced::cpu::conv::{conv2d_backward, conv2d_forward};
    use gpu_vae::advanced::model::ConvGeom;
    let Some(gpu) = gpu("conv_kernels_match_cpu") else { return };
    for mode in &gpu.modes {
        for (s, &(c, h, w, o, k, stride, pad, rows)) in CONV_SHAPES.iter().enumerate() {
            let g = ConvGeom::conv(c, h, w, o, k, stride, pad).unwrap();
            let salt = 50 + 10 * s as u32;
            let x = random(rows * g.in_len(), salt, -1.0, 1.0);
            let dy = random(rows * g.out_len(), salt + 1, -1.0, 1.0);
            // Weights and bias at offsets 2 and 2 + weights, as in the flat parameters.
            let params = random(2 + o * c * k * k + o, salt + 2, -1.0, 1.0);
            let (wt, b) = (&params[2..2 + o * c * k * k], &params[2 + o * c * k * k..]);
            let step = rows_step(rows);
            let base = ConvParams {
                in_c: c as u32,
                in_h: h as u32,
                in_w: w as u32,
                out_c: o as u32,
                out_h: g.out_h as u32,
                out_w: g.out_w as u32,
                kernel: k as u32,
                stride: stride as u32,
                padding: pad as u32,
                off_w: 2,
                off_bias: (2 + o * c * k * k) as u32,
                ..Default::default()
            };
            let name = |e: &str| format!("{e} {g:?} rows {rows} ({})", mode.name());
            // Dot products of c·k·k (forward, input gradient: up to o·k·k)
            // terms in [-1, 1], summed in another order than the CPU's GEMM.
            let dot_atol = |n: usize| 16.0 * n as f32 * U;

            let mut want = vec![0.0; rows * g.out_len()];
            conv2d_forward(&mut want, &x, wt, b, &g, rows);
            activation::activation_forward(&mut want, Activation::LeakyRelu);
            let p = ConvParams { flags: flags::BIAS, act: Activation::LeakyRelu.code(), ..base };
            let zeros = vec![0.0; rows * g.out_len()];
            let bound = [
                (Slot::Out, Host::F32(&zeros)),
                (Slot::A, Host::F32(&x)),
                (Slot::W, Host::F32(&params)),
                (Slot::Bias, Host::F32(&params)),
            ];
            let out = run(mode, Kernel::Conv2dForward, p, step, &bound, grid_1d(rows * g.out_len()));
            assert_close(&name("conv2d_forward"), &out[0], &want, dot_atol(c * k * k + 1), 1e-5);

            let (mut dx, mut dw, mut db) = (vec![0.0; x.len()], vec![0.0; wt.len()], vec![0.0; o]);
            conv2d_backward(Some(&mut dx), &mut dw, &mut db, &dy, &x, wt, &g, rows);
            let zeros = vec![0.0; rows * g.in_len()];
            let bound = [(Slot::Out, Host::F32(&zeros)), (Slot::A, Host::F32(&dy)), (Slot::W, Host::F32(&params))];
            let out = run(mode, Kernel::Conv2dBackwardData, base, step, &bound, grid_1d(rows * g.in_len()));
            assert_close(&name("conv2d_backward_data"), &out[0], &dx, dot_atol(o * k * k), 1e-5);

            // Weight and bias gradients, added to what the gradient buffer held.
            let grads0 = random(1 + wt.len(), salt + 3, -1.0, 1.0);
            let p = ConvParams { flags: flags::ACCUMULATE, off_out: 1, ..base };
            let bound = [
                (Slot::Out, Host::F32(&grads0)),
                (Slot::A, Host::F32(&dy)),
                (Slot::X, Host::F32(&x)),
                (Slot::W, Host::F32(&params)),
            ];
            let out = run(
                mode,
                Kernel::Conv2dBackwardWeight,
                p,
                step,
                &bound,
                conv_groups(Kernel::Conv2dBackwardWeight, &g, rows),
            );
            let want: Vec<f32> = dw.iter().zip(&grads0[1..]).map(|(d, g)| d + g).collect();
            assert_close(
                &name("conv2d_backward_weight"),
                &out[0][1..],
                &want,
                dot_atol(rows * g.out_h * g.out_w),
                1e-5,
            );

            let bound = [(Slot::Out, Host::F32(&grads0[..o + 1])), (Slot::A, Host::F32(&dy))];
            let out = run(mode, Kernel::ChannelSums, p, step, &bound, conv_groups(Kernel::ChannelSums, &g, rows));
            let want: Vec<f32> = db.iter().zip(&grads0[1..]).map(|(d, g)| d + g).collect();
            assert_close(&name("channel_sums"), &out[0][1..], &want, dot_atol(rows * g.out_h * g.out_w), 1e-5);
        }
    }
}

/// The convolution products (`ConvMap`: implicit GEMM in generated
/// kernels) on the direct kernels' awkward shapes and one that takes several
/// tiles and K rounds, against the CPU functions: the forward with bias and
/// an activation, and with an activation backward in its epilogue (a
/// transposed layer's input gradient); the input gradient as a transposed
/// layer's forward with bias and an activation; the weight gradient with the
/// bias gradient as its column of ones; channel sums alone.
#[test]
fn generated_conv_products_match_cpu() {
    use gpu_vae::advanced::cpu::conv::{conv2d_backward, conv2d_forward};
    use gpu_vae::advanced::gpu::fuse::own_epilogue;
    use gpu_vae::advanced::gpu::ir::ConvMap;
    use gpu_vae::advanced::model::ConvGeom;
    let Some(gpu) = gpu("generated_conv_products_match_cpu") else { return };
    let shapes = [&CONV_SHAPES[..], &[(33, 9, 10, 40, 3, 2, 1, 4), (3, 7, 6, 5, 1, 2, 0, 2)]].concat();
    for mode in &gpu.modes {
        for (s, &(c, h, w, o, k, stride, pad, rows)) in shapes.iter().enumerate() {
            let g = ConvGeom::conv(c, h, w, o, k, stride, pad).unwrap();
            let salt = 150 + 10 * s as u32;
            let (x, dy) = (random(rows * g.in_len(), salt, -1.0, 1.0), random(rows * g.out_len(), salt + 1, -1.0, 1.0));
            let y = random(rows * g.out_len(), salt + 2, -1.0, 1.0);
            let wlen = o * g.patch();
            let (w_at, bias_at) = (2, 2 + wlen);
            let params = random(bias_at + o.max(c) + 3, salt + 3, -1.0, 1.0);
            let (wt, bias) = (&params[w_at..bias_at], &params[bias_at..]);
            // t0 x (in-space), t1 an out-space output, t2 dy, t3 an in-space output, t4 y.
            let graph = tensor_graph(&[g.in_len(), g.out_len(), g.out_len(), g.in_len(), g.out_len()]);
            let [t0, t1, t2, t3] = [0, 1, 2, 3].map(|i| Buf::Tensor(TensorId(i)));
            let (out_zeros, in_zeros, grads0) =
                (vec![0.0; rows * g.out_len()], vec![0.0; rows * g.in_len()], vec![0.0; params.len()]);
            let bound = [
                (Res::Tensor(TensorId(0)), Host::F32(&x)),
                (Res::Tensor(TensorId(1)), Host::F32(&out_zeros)),
                (Res::Tensor(TensorId(2)), Host::F32(&dy)),
                (Res::Tensor(TensorId(3)), Host::F32(&in_zeros)),
                (Res::Tensor(TensorId(4)), Host::F32(&y)),
                (Res::Params, Host::F32(&params)),
                (Res::Grads, Host::F32(&grads0)),
            ];
            // A product with its own epilogue, then `ops`; `ones` for a weight gradient's bias.
            let run_with = |mm: Matmul, ops: Vec<Call>, ones: Option<usize>| {
                let own = own_epilogue(&mm);
                let task = Task::Product { epilogue: Epilogue { ops, ones: ones.or(own.ones) }, mm };
                run_generated(&mode.ctx, &mode.kernels, &[task], &graph, rows, rows_step(rows), &bound)
                    .unwrap_or_else(|e| panic!("{g:?} ({}): {e}", mode.name()))
            };
            let run = |mm: Matmul, ops: Vec<Call>| run_with(mm, ops, None);
            let name = |e: &str| format!("{e} {g:?} rows {rows} ({})", mode.name());
            let dot_atol = |n: usize| 16.0 * n as f32 * U;
            let (mut dx, mut dw, mut db) = (vec![0.0; x.len()], vec![0.0; wlen], vec![0.0; o]);
            conv2d_backward(Some(&mut dx), &mut dw, &mut db, &dy, &x, wt, &g, rows);

            let mut want = vec![0.0; rows * g.out_len()];
            conv2d_forward(&mut want, &x, wt, &bias[..o], &g, rows);
            activation::activation_forward(&mut want, Activation::LeakyRelu);
            let mm = Matmul::conv(
                ConvMap::Forward(g),
                [(t0, 0), (Buf::Params, w_at), (t1, 0)],
                Some(bias_at),
                Activation::LeakyRelu,
            );
            let out = run(mm, vec![]);
            assert_close(&name("forward +bias+leaky_relu"), &out[1], &want, dot_atol(g.patch() + 1), 1e-5);

            let mut want = vec![0.0; rows * g.out_len()];
            conv2d_forward(&mut want, &x, wt, &vec![0.0; o], &g, rows);
            activation::activation_backward(&mut want, None, &y, Activation::Relu);
            let mm =
                Matmul::conv(ConvMap::Forward(g), [(t0, 0), (Buf::Params, w_at), (t1, 0)], None, Activation::Identity);
            let relu_backward = Call::ActivationBackward {
                d: TensorId(1),
                y: TensorId(4),
                x: None,
                width: g.out_len(),
                act: Activation::Relu,
            };
            let out = run(mm, vec![relu_backward]);
            assert_close(&name("forward +relu backward"), &out[1], &want, dot_atol(g.patch()), 1e-5);

            let mut want = dx.clone();
            for (i, plane) in want.chunks_exact_mut(h * w).enumerate() {
                plane.iter_mut().for_each(|v| *v += bias[i % c]);
            }
            activation::activation_forward(&mut want, Activation::Tanh);
            let mm = Matmul::conv(
                ConvMap::BackwardData(g),
                [(t2, 0), (Buf::Params, w_at), (t3, 0)],
                Some(bias_at),
                Activation::Tanh,
            );
            let out = run(mm, vec![]);
            assert_close(&name("backward data +bias+tanh"), &out[3], &want, dot_atol(o * k * k + 1) + 1e-6, 1e-5);

            let mm = Matmul::conv(
                ConvMap::BackwardWeight(g),
                [(t2, 0), (t0, 0), (Buf::Grads, w_at)],
                None,
                Activation::Identity,
            );
            let out = run_with(mm, vec![], Some(bias_at));
            let terms = rows * g.out_pixels();
            assert_close(&name("backward weight"), &out[6][w_at..bias_at], &dw, dot_atol(terms), 1e-5);
            assert_close(&name("bias gradient (ones)"), &out[6][bias_at..bias_at + o], &db, dot_atol(terms), 1e-5);

            // An in-space tensor's channel sums (a transposed layer's bias gradient).
            let planes = ConvGeom { out_c: c, out_h: h, out_w: w, ..g };
            let mm = Matmul::conv(
                ConvMap::ChannelSums(planes),
                [(t0, 0), (t0, 0), (Buf::Grads, bias_at)],
                None,
                Activation::Identity,
            );
            let out = run(mm, vec![]);
            let mut want = vec![0.0f32; c];
            for (i, plane) in x.chunks_exact(h * w).enumerate() {
                want[i % c] += plane.iter().sum::<f32>();
            }
            assert_close(&name("channel sums"), &out[6][bias_at..bias_at + c], &want, dot_atol(rows * h * w), 1e-5);
            assert!(out[6][..bias_at].iter().all(|&v| v == 0.0), "{}: wrote outside its sums", name("channel sums"));
        }
    }
}

/// Convolutions as stages of a row chain (`Task::Rows`, a thread per output
/// value, images owned by workgroups of 1 or 2 rows, the last part-full):
/// a forward +bias+LeakyReLU whose output stays in workgroup memory for the
/// next stage, the input gradient (a transposed layer's forward) +bias+tanh
/// reading it there and writing its buffer; and a forward with a ReLU
/// backward among its epilogue ops, in place in its buffer.
#[test]
fn generated_conv_row_stages_match_cpu() {
    use gpu_vae::advanced::cpu::conv::{conv2d_backward, conv2d_forward};
    use gpu_vae::advanced::gpu::ir::ConvMap;
    use gpu_vae::advanced::model::ConvGeom;
    let Some(gpu) = gpu("generated_conv_row_stages_match_cpu") else { return };
    let shapes = [&CONV_SHAPES[..], &[(33, 9, 10, 40, 3, 2, 1, 3), (3, 7, 6, 5, 1, 2, 0, 2)]].concat();
    for mode in &gpu.modes {
        for (s, &(c, h, w, o, k, stride, pad, rows)) in shapes.iter().enumerate() {
            let g = ConvGeom::conv(c, h, w, o, k, stride, pad).unwrap();
            let salt = 450 + 10 * s as u32;
            let x = random(rows * g.in_len(), salt, -1.0, 1.0);
            let y = random(rows * g.out_len(), salt + 2, -1.0, 1.0);
            let wlen = o * g.patch();
            let (w_at, bias_at) = (2, 2 + wlen);
            let params = random(bias_at + o.max(c) + 3, salt + 3, -1.0, 1.0);
            let (wt, bias) = (&params[w_at..bias_at], &params[bias_at..]);
            // t0 x (in-space), t1 out-space, t2 in-space, t3 y (out-space).
            let graph = tensor_graph(&[g.in_len(), g.out_len(), g.in_len(), g.out_len()]);
            let [t0, t1, t2] = [0, 1, 2].map(|i| Buf::Tensor(TensorId(i)));
            let (out_zeros, in_zeros) = (vec![0.0; rows * g.out_len()], vec![0.0; rows * g.in_len()]);
            let bound = [
                (Res::Tensor(TensorId(0)), Host::F32(&x)),
                (Res::Tensor(TensorId(1)), Host::F32(&out_zeros)),
                (Res::Tensor(TensorId(2)), Host::F32(&in_zeros)),
                (Res::Tensor(TensorId(3)), Host::F32(&y)),
                (Res::Params, Host::F32(&params)),
            ];
            let forward = |b, act| Matmul::conv(ConvMap::Forward(g), [(t0, 0), (Buf::Params, w_at), (t1, 0)], b, act);
            let mut first = vec![0.0; rows * g.out_len()];
            conv2d_forward(&mut first, &x, wt, &bias[..o], &g, rows);
            activation::activation_forward(&mut first, Activation::LeakyRelu);
            let (mut second, mut dw, mut db) = (vec![0.0; x.len()], vec![0.0; wlen], vec![0.0; o]);
            conv2d_backward(Some(&mut second), &mut dw, &mut db, &first, &x, wt, &g, rows);
            for (i, plane) in second.chunks_exact_mut(h * w).enumerate() {
                plane.iter_mut().for_each(|v| *v += bias[i % c]);
            }
            activation::activation_forward(&mut second, Activation::Tanh);
            let mut relu_backward = vec![0.0; rows * g.out_len()];
            conv2d_forward(&mut relu_backward, &x, wt, &vec![0.0; o], &g, rows);
            activation::activation_backward(&mut relu_backward, None, &y, Activation::Relu);
            for per_group in [1, 2] {
                let name = |e: &str| format!("{e} {g:?} rows {rows}, {per_group} per group ({})", mode.name());
                let run = |stages: Vec<Call>, store: Vec<TensorId>| {
                    let task = Task::Rows { stages, per_group, store };
                    run_generated(&mode.ctx, &mode.kernels, &[task], &graph, rows, rows_step(rows), &bound)
                        .unwrap_or_else(|e| panic!("{}: {e}", name("chain")))
                };
                let back = Matmul::conv(
                    ConvMap::BackwardData(g),
                    [(t1, 0), (Buf::Params, w_at), (t2, 0)],
                    Some(bias_at),
                    Activation::Tanh,
                );
                let stages = vec![Call::Matmul(forward(Some(bias_at), Activation::LeakyRelu)), Call::Matmul(back)];
                let out = run(stages, vec![TensorId(1), TensorId(2)]);
                // Terms of at most 1 (x, w in [-1, 1]) for the first layer;
                // the second's are its outputs (up to patch + 1) times weights,
                // plus the first's error carried through O·k² weights.
                let first_atol = 16.0 * (g.patch() + 1) as f32 * U;
                assert_close(&name("forward +bias+leaky_relu, kept"), &out[1], &first, first_atol, 1e-5);
                let second_atol = 2.0 * (o * k * k + 1) as f32 * first_atol * (g.patch() + 1) as f32;
                assert_close(&name("input gradient +bias+tanh, from the kept"), &out[2], &second, second_atol, 1e-5);

                let ops = vec![Call::ActivationBackward {
                    d: TensorId(1),
                    y: TensorId(3),
                    x: None,
                    width: g.out_len(),
                    act: Activation::Relu,
                }];
                let stage = Task::Product { mm: forward(None, Activation::Identity), epilogue: Epilogue::of(ops) };
                let out = run(vec![Call::Fused(vec![stage])], vec![TensorId(1)]);
                assert_close(&name("forward +relu backward"), &out[1], &relu_backward, first_atol, 1e-5);
            }
        }
    }
}

/// Tensors t0..t5 of the given widths, for generated kernels (which read
/// only the widths).
fn tensor_graph(widths: &[usize]) -> Graph {
    let tensors = widths.iter().enumerate().map(|(i, &w)| TensorInfo { name: format!("t{i}"), width: w }).collect();
    let t = TensorId(0);
    Graph { tensors, nodes: Vec::new(), clean: t, input: t, code: t, latent: t, logits: t, labels: None }
}

/// The generated products (`gpu::fused`) on awkward shapes, each form with
/// the epilogues the fusion pass gives it, against the CPU functions they
/// replace: nt with bias, an activation and (or) the activation backward or
/// BCE; nn accumulating, with the activation backward; tn as a weight
/// gradient with the bias gradient as a column of ones, with and without
/// Adam. The step has fewer rows than the kernel was made for.
#[test]
fn generated_products_match_cpu() {
    let Some(gpu) = gpu("generated_products_match_cpu") else { return };
    let adam_cfg = AdamConfig { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8 };
    let adam_step = adam_cfg.step(3, adam_cfg.lr);
    for mode in &gpu.modes {
        for (s, &(m, k, n)) in MATMUL_SHAPES.iter().enumerate() {
            let salt = s as u32;
            let max_rows = m + 3;
            let step = Step { rows: m as u32, recon_scale: 0.7, ..Default::default() }.with_adam(&adam_step);
            // t0: a (rows, k); t1: c (rows, n); t2: y (rows, n); t3: target; t4: dlogits;
            // t5: an activation's input x; t6: a kept pre-activation.
            let graph = tensor_graph(&[k, n, n, n, n, n, n]);
            let (t0, t1, t2, t3, t4) = (TensorId(0), TensorId(1), TensorId(2), TensorId(3), TensorId(4));
            let (t5, t6) = (TensorId(5), TensorId(6));
            let xs = random(max_rows * n, 55 + salt, -3.0, 3.0);
            let a = random(max_rows * k, 50 + salt, -1.0, 1.0);
            let c0 = random(max_rows * n, 51 + salt, -1.0, 1.0);
            let y = random(max_rows * n, 52 + salt, -1.0, 1.0);
            let target = random(max_rows * n, 53 + salt, 0.0, 1.0);
            // Parameters: 5 spare, W (n, k) or (k, n), the bias (n), spare.
            let (w_at, bias_at) = (5, 5 + n * k);
            let params = random(bias_at + n + 3, 54 + salt, -1.0, 1.0);
            let (w, bias) = (&params[w_at..w_at + n * k], &params[bias_at..bias_at + n]);
            let act = Activation::ALL[1 + s % (Activation::ALL.len() - 1)];
            let what = |e: &str| format!("generated {e} m={m} k={k} n={n} ({})", mode.name());
            let atol = 16.0 * k as f32 * U;
            let run = |task: Task, bindings: &[(Res, Host)]| {
                run_generated(&mode.ctx, &mode.kernels, &[task], &graph, max_rows, step, bindings)
                    .unwrap_or_else(|e| panic!("{}: {e}", what("kernel")))
            };
            let product = |form, k_size, (a, b, c): ((Buf, usize), (Buf, usize), (Buf, usize))| Matmul {
                form,
                variant: MatmulVariant::Naive,
                m: Size::Rows,
                k: k_size,
                n,
                a,
                b,
                c,
                bias: None,
                act: Activation::Identity,
                pre: None,
                accumulate: false,
                slices: 1,
                conv: None,
            };

            // nt: act(a·Wᵀ + bias), then d·act'(y) with another activation.
            let mut mm = product(
                MatmulForm::Nt,
                Size::Fixed(k),
                ((Buf::Tensor(t0), 0), (Buf::Params, w_at), (Buf::Tensor(t1), 0)),
            );
            mm.bias = Some(bias_at);
            mm.act = act;
            // An activation that needs its input keeps the pre-activation (t6)
            // and has its backward read one (t5).
            mm.pre = act.needs_input().then_some(t6);
            let back = Activation::ALL[1 + (s + 2) % (Activation::ALL.len() - 1)];
            let back_x = back.needs_input().then_some(t5);
            let mut pre = vec![0.0; m * n];
            matmul::matmul_nt(&mut pre, &a[..m * k], w, m, k, n, false);
            matmul::bias_add(&mut pre, bias, m, n);
            let mut want = pre.clone();
            activation::activation_forward(&mut want, act);
            activation::activation_backward(&mut want, back_x.map(|_| &xs[..m * n]), &y[..m * n], back);
            let backward = Call::ActivationBackward { d: t1, y: t2, x: back_x, width: n, act: back };
            let task = Task::Product { mm, epilogue: Epilogue::of(vec![backward]) };
            let bound = [
                (Res::Tensor(t0), Host::F32(&a)),
                (Res::Params, Host::F32(&params)),
                (Res::Tensor(t1), Host::F32(&c0)),
                (Res::Tensor(t2), Host::F32(&y)),
                (Res::Tensor(t5), Host::F32(&xs)),
                (Res::Tensor(t6), Host::F32(&c0)),
            ];
            let out = run(task, &bound);
            // Through exp and erfc the epilogue adds a few ulps of values up to ~k.
            let atol_act = if back.needs_input() || act.needs_input() { atol + 1e-5 } else { atol };
            let what_nt = what(&format!("nt +bias+{act:?}+{back:?} backward"));
            assert_close(&what_nt, &out[2][..m * n], &want, atol_act, 1e-5);
            assert_eq!(out[2][m * n..], c0[m * n..], "{}: wrote past the step's rows", what("nt"));
            if act.needs_input() {
                assert_close(&what("nt pre-activation"), &out[5][..m * n], &pre, atol, 1e-5);
            }
            mm.pre = None;

            // nt + BCE: the logits, their gradient and the loss partials.
            mm.act = Activation::Identity;
            let mut logits = vec![0.0; m * n];
            matmul::matmul_nt(&mut logits, &a[..m * k], w, m, k, n, false);
            matmul::bias_add(&mut logits, bias, m, n);
            let mut dlogits = vec![0.0; m * n];
            loss::bce_with_logits_backward(&mut dlogits, &logits, &target[..m * n], 0.7);
            let bce = loss::bce_with_logits_forward(&logits, &target[..m * n]);
            let partials = vec![0.0f32; 2 * MAX_PARTS as usize];
            let bce_ops = [
                Call::LossPartials { kernel: Kernel::BceWithLogitsForward, inputs: vec![t1, t3], width: n, which: 1 },
                Call::LossBackward { kernel: Kernel::BceWithLogitsBackward, out: t4, inputs: [t1, t3], width: n },
            ];
            let task = Task::Product { mm, epilogue: Epilogue::of(bce_ops.to_vec()) };
            let groups = task.groups(max_rows) as usize;
            let bound = [
                (Res::Tensor(t0), Host::F32(&a)),
                (Res::Params, Host::F32(&params)),
                (Res::Tensor(t1), Host::F32(&c0)),
                (Res::Tensor(t3), Host::F32(&target)),
                (Res::Tensor(t4), Host::F32(&c0)),
                (Res::Partials, Host::F32(&partials)),
            ];
            let out = run(task, &bound);
            assert_close(&what("nt +bce logits"), &out[2][..m * n], &logits, atol, 1e-5);
            // σ and the scale add a few ulps to the logits' error.
            assert_close(&what("nt +bce dlogits"), &out[4][..m * n], &dlogits, atol + 8.0 * U, 1e-5);
            let parts = &out[5][MAX_PARTS as usize..];
            let got: f64 = parts[..groups].iter().map(|&p| p as f64).sum();
            // f32 tree sums of m·n terms of at most ~k + 1 each.
            let tol = 1e-5 * (m * n) as f64 * (k as f64 + 1.0) + 1e-4 * bce.abs();
            assert!((got - bce).abs() <= tol, "{}: BCE {got} against {bce}", what("nt +bce"));
            assert!(
                parts[groups..].iter().all(|&p| p == 0.0) && out[5][..MAX_PARTS as usize].iter().all(|&p| p == 0.0)
            );

            // nt + any sequence of element-wise ops (the MSE output layer's):
            // y = σ(logits) into t2, the MSE partials, d = d_mse into t4, d·σ'.
            let mut y_want = vec![0.0; m * n];
            activation::sigmoid_forward(&mut y_want, &logits);
            let mse = loss::mse_forward(&y_want, &target[..m * n]);
            let mut d_want = vec![0.0; m * n];
            loss::mse_backward(&mut d_want, &y_want, &target[..m * n], 0.7);
            activation::sigmoid_backward(&mut d_want, &y_want);
            let mse_ops = vec![
                Call::Sigmoid { y: t2, x: t1, width: n },
                Call::LossPartials { kernel: Kernel::MseForward, inputs: vec![t2, t3], width: n, which: 0 },
                Call::LossBackward { kernel: Kernel::MseBackward, out: t4, inputs: [t2, t3], width: n },
                Call::SigmoidBackward { d: t4, y: t2, width: n },
            ];
            let bound = [
                (Res::Tensor(t0), Host::F32(&a)),
                (Res::Params, Host::F32(&params)),
                (Res::Tensor(t1), Host::F32(&c0)),
                (Res::Tensor(t2), Host::F32(&y)),
                (Res::Tensor(t3), Host::F32(&target)),
                (Res::Tensor(t4), Host::F32(&c0)),
                (Res::Partials, Host::F32(&partials)),
            ];
            let out = run(Task::Product { mm, epilogue: Epilogue::of(mse_ops) }, &bound);
            assert_close(&what("nt +sigmoid+mse logits"), &out[2][..m * n], &logits, atol, 1e-5);
            // σ is 1/4-Lipschitz: y's error is a quarter of the logits' and a few ulps.
            assert_close(&what("nt +sigmoid+mse y"), &out[3][..m * n], &y_want, atol / 4.0 + 4.0 * U, 1e-5);
            assert_close(&what("nt +sigmoid+mse d"), &out[5][..m * n], &d_want, atol + 8.0 * U, 1e-5);
            let got: f64 = out[6][..groups].iter().map(|&p| p as f64).sum();
            let tol = 1e-5 * (m * n) as f64 + 1e-4 * mse.abs();
            assert!((got - mse).abs() <= tol, "{}: MSE {got} against {mse}", what("nt +sigmoid+mse"));

            // nn: c += a·W (W as (k, n)), then d·act'(y).
            let mut mm = product(
                MatmulForm::Nn,
                Size::Fixed(k),
                ((Buf::Tensor(t0), 0), (Buf::Params, w_at), (Buf::Tensor(t1), 0)),
            );
            mm.accumulate = true;
            let mut want = c0[..m * n].to_vec();
            matmul::matmul_nn(&mut want, &a[..m * k], w, m, k, n, true);
            activation::activation_backward(&mut want, back_x.map(|_| &xs[..m * n]), &y[..m * n], back);
            let backward = Call::ActivationBackward { d: t1, y: t2, x: back_x, width: n, act: back };
            let task = Task::Product { mm, epilogue: Epilogue::of(vec![backward]) };
            let bound = [
                (Res::Tensor(t0), Host::F32(&a)),
                (Res::Params, Host::F32(&params)),
                (Res::Tensor(t1), Host::F32(&c0)),
                (Res::Tensor(t2), Host::F32(&y)),
                (Res::Tensor(t5), Host::F32(&xs)),
            ];
            let out = run(task, &bound);
            let atol_back = if back.needs_input() { atol + 1e-5 } else { atol + 4.0 * U };
            assert_close(&what("nn +accumulate+activation_backward"), &out[2][..m * n], &want, atol_back, 1e-5);

            // tn: dW (k, n) = dyᵀ·x over the step's m rows, db = Σ dy, then Adam.
            // dy is t0 read as (rows, k); x is t1 as (rows, n).
            let (dw_at, db_at) = (3, 3 + k * n + 1);
            let count = db_at + k + 2;
            let mut mm =
                product(MatmulForm::Tn, Size::Rows, ((Buf::Tensor(t0), 0), (Buf::Tensor(t1), 0), (Buf::Grads, dw_at)));
            mm.m = Size::Fixed(k);
            let mut dw = vec![0.0; k * n];
            matmul::matmul_tn(&mut dw, &a[..m * k], &c0[..m * n], k, m, n, false);
            let mut db = vec![0.0; k];
            matmul::column_sums(&mut db, &a[..m * k], m, k);
            let grads0 = random(count, 55 + salt, -1.0, 1.0);
            let (p0, m0) = (random(count, 56 + salt, -1.0, 1.0), random(count, 57 + salt, -0.1, 0.1));
            let v0 = random(count, 58 + salt, 0.5, 1.0);
            for with_adam in [false, true] {
                let ops = if with_adam { vec![Call::Adam] } else { Vec::new() };
                let task = Task::Product { mm, epilogue: Epilogue { ops, ones: Some(db_at) } };
                let bound = [
                    (Res::Tensor(t0), Host::F32(&a)),
                    (Res::Tensor(t1), Host::F32(&c0)),
                    (Res::Grads, Host::F32(&grads0)),
                    (Res::Params, Host::F32(&p0)),
                    (Res::AdamM, Host::F32(&m0)),
                    (Res::AdamV, Host::F32(&v0)),
                ];
                let out = run(task, &bound);
                let e = |s: &str| what(&format!("tn {s} (adam: {with_adam})"));
                let atol_tn = 16.0 * m as f32 * U;
                assert_close(&e("dW"), &out[2][dw_at..dw_at + k * n], &dw, atol_tn, 1e-5);
                assert_close(&e("db"), &out[2][db_at..db_at + k], &db, atol_tn, 1e-5);
                assert_eq!(out[2][dw_at + k * n], grads0[dw_at + k * n], "{}: the gap", e("grads"));
                // Adam on exactly the covered parameters, from the GPU's gradients.
                let (mut p, mut am, mut av) = (p0.clone(), m0.clone(), v0.clone());
                if with_adam {
                    for range in [dw_at..dw_at + k * n, db_at..db_at + k] {
                        let g = &out[2][range.clone()];
                        let (pr, mr, vr) = (&mut p[range.clone()], &mut am[range.clone()], &mut av[range]);
                        adam::adam_update(pr, mr, vr, g, &adam_step);
                    }
                }
                // The same f32 formula on the same gradients: a few ulps.
                assert_close(&e("params"), &out[3], &p, 4.0 * U, 4.0 * U);
                assert_close(&e("adam m"), &out[4], &am, 4.0 * U, 4.0 * U);
                assert_close(&e("adam v"), &out[5], &av, 4.0 * U, 4.0 * U);
            }
        }
    }
}
