//! `export --format web`: a trained run as a static folder a browser runs
//! on WebGPU, with no build step.
//!
//! The inference programs are the GPU engine's own: each half of the graph
//! (image -> code, code -> pixels) is sliced, lowered and fused by
//! `gpu::lower` and `gpu::fuse`, planned for WebGPU's default limits (8
//! storage buffers per stage, 16 KiB of workgroup memory, 256 invocations),
//! and then written out as data instead of being bound to wgpu objects:
//! every kernel's WGSL (the family modules and the generated kernels), the
//! buffers, each dispatch's bindings, uniform parameters and workgroups.
//! `assets/web/gpu-vae.js` replays that data generically (pipelines, bind
//! groups, one compute pass, a readback); nothing in it knows a model.
//!
//! The decoder half gets the sigmoid that `Inference::decode` applies on
//! the host as one more graph node, so the program's output is the pixels
//! themselves (the fusion pass puts it in the output layer's epilogue).
//!
//! Files: `model.json` (the programs and the model's sizes), `weights.bin`
//! (the flat parameters, little-endian f32), `gpu-vae.js`, `index.html`
//! (the latent explorer), `explorer.json` (test images, their codes, the
//! codes' principal directions, reference values from the CPU path) and
//! the run's `metrics.csv`.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{Value, json};

use crate::engine::Inference;
use crate::error::{Error, Result};
use crate::gpu::fuse::{Env, Fusion, fuse};
use crate::gpu::fused;
use crate::gpu::ir::{Buf, Call, Res, columns_params, conv_params, matmul_params, size};
use crate::gpu::lower::lower;
use crate::gpu::params::{ElementwiseParams, KernelParams, Slot, Step};
use crate::gpu::shaders::{Kernel, conv_groups, grid_1d};
use crate::model::{Activation, Architecture, Graph, ModelKind, Node, Op, TensorId, TensorInfo};

/// The runtime, the explorer page: shipped as they are.
pub const RUNTIME_JS: &str = include_str!("../../assets/web/gpu-vae.js");
pub const INDEX_HTML: &str = include_str!("../../assets/web/index.html");

/// Rows the programs are built for: a call of n rows runs on the smallest
/// bucket that holds it (the tiled kernels compute whole tiles past the
/// last row), and longer calls run in chunks of the largest.
pub const BUCKETS: [usize; 2] = [1, 64];

/// WebGPU's default limits, which every browser adapter grants without
/// asking (`GPUSupportedLimits` defaults); the plan fits them.
pub fn web_limits() -> wgpu::Limits {
    wgpu::Limits {
        max_storage_buffers_per_shader_stage: 8,
        max_compute_workgroup_storage_size: 16384,
        max_compute_invocations_per_workgroup: 256,
        max_compute_workgroups_per_dimension: 65535,
        max_storage_buffer_binding_size: 128 << 20,
        max_buffer_size: 256 << 20,
        ..wgpu::Limits::default()
    }
}

/// One program's buffers and dispatches, as `model.json` holds them.
struct Writer<'a> {
    graph: &'a Graph,
    rows: usize,
    /// Shader sources, shared by all programs (index = module id).
    modules: &'a mut Vec<String>,
    module_ids: &'a mut HashMap<String, usize>,
    buffers: Vec<Value>,
    /// Buffer index by tensor name (the training pool's sharing rule).
    tensors: HashMap<String, usize>,
    dummies: Vec<usize>,
    dispatches: Vec<Value>,
}

impl Writer<'_> {
    fn module(&mut self, source: String) -> usize {
        if let Some(&id) = self.module_ids.get(&source) {
            return id;
        }
        self.modules.push(source.clone());
        self.module_ids.insert(source, self.modules.len() - 1);
        self.modules.len() - 1
    }

    fn buffer(&mut self, name: &str, bytes: usize, role: &str) -> usize {
        self.buffers.push(json!({ "name": name, "bytes": bytes.max(16).next_multiple_of(4), "role": role }));
        self.buffers.len() - 1
    }

    fn tensor(&mut self, t: TensorId) -> usize {
        let info = &self.graph.tensors[t.0];
        if let Some(&i) = self.tensors.get(&info.name) {
            return i;
        }
        let (name, bytes) = (info.name.clone(), self.rows * info.width * 4);
        let i = self.buffer(&name, bytes, "tensor");
        self.tensors.insert(name, i);
        i
    }

    fn dummy(&mut self, binding: usize) -> usize {
        while self.dummies.len() <= binding {
            let n = self.dummies.len();
            let i = self.buffer(&format!("unbound {n}"), 16, "unbound");
            self.dummies.push(i);
        }
        self.dummies[binding]
    }

    fn resolve(&mut self, b: Buf) -> Result<usize> {
        match b {
            Buf::Tensor(t) => Ok(self.tensor(t)),
            Buf::Params => Ok(0),
            Buf::Grads => {
                Err(Error::Unexportable { format: "WebGPU", what: "a gradient buffer (training only)".into() })
            }
        }
    }

    /// A family kernel's dispatch, bound as `lower::emit` binds it: group 0
    /// = {0: the parameters, 1..: the family's storage bindings by slot,
    /// stand-ins where unbound}.
    fn family<P: KernelParams>(&mut self, kernel: Kernel, params: P, bound: &[(Slot, usize)], groups: [u32; 3]) {
        let family = kernel.family();
        assert_eq!(P::NAME, family.params().0, "{kernel:?} takes {}", family.params().0);
        let module = self.module(family.source());
        let words: Vec<u32> = bytemuck::pod_collect_to_vec(bytemuck::bytes_of(&params));
        let mut bindings = vec![json!({ "binding": 0, "uniform": words })];
        for (j, b) in family.bindings().iter().enumerate() {
            let buffer = match bound.iter().find(|(s, _)| *s == b.slot) {
                Some(&(_, i)) => i,
                None => self.dummy(j),
            };
            let access = if b.read_only { "read" } else { "read_write" };
            bindings.push(json!({ "binding": j + 1, "buffer": buffer, "access": access }));
        }
        self.dispatches.push(json!({
            "label": kernel.entry(),
            "module": module,
            "entry": kernel.entry(),
            "bindings": bindings,
            "groups": groups,
        }));
    }

    /// One dispatch per call, as `lower::emit` makes them, for the calls an
    /// inference program can hold.
    fn call(&mut self, call: &Call) -> Result<()> {
        let rows = self.rows;
        let grid = |width: usize| grid_1d(rows * width);
        let ew = |n: usize, off_in: usize, act: Activation| ElementwiseParams {
            n: n as u32,
            off_in: off_in as u32,
            act: act.code(),
            ..Default::default()
        };
        match call {
            // The caller writes the input and labels.
            Call::Gather { .. } => {}
            Call::Matmul(m) if m.slices <= 1 => {
                let (a, b, c) = (self.resolve(m.a.0)?, self.resolve(m.b.0)?, self.resolve(m.c.0)?);
                let mut bound = vec![(Slot::C, c), (Slot::A, a), (Slot::B, b)];
                if m.bias.is_some() {
                    bound.push((Slot::Bias, 0));
                }
                let [x, y, _] = m.variant.workgroups(size(m.m, rows), m.n);
                self.family(Kernel::Matmul(m.variant, m.form), matmul_params(m), &bound, [x, y, 1]);
            }
            &Call::Columns { dst, dst_at, src, src_at, width, accumulate } => {
                let params = columns_params(self.graph, (dst, dst_at), (src, src_at), width, accumulate);
                let bound = [(Slot::Out, self.tensor(dst)), (Slot::Inp, self.tensor(src))];
                self.family(Kernel::CopyColumns, params, &bound, grid(width));
            }
            &Call::BiasAdd { y, width, bias } => {
                let bound = [(Slot::Out, self.tensor(y)), (Slot::Inp, 0)];
                self.family(Kernel::BiasAdd, ew(width, bias, Activation::Identity), &bound, grid(width));
            }
            &Call::Activation { y, x: None, width, act } => {
                let bound = [(Slot::Out, self.tensor(y))];
                self.family(Kernel::ActivationForward, ew(width, 0, act), &bound, grid(width));
            }
            &Call::Activation { y, x: Some(x), width, act } => {
                let bound = [(Slot::Out, self.tensor(y)), (Slot::Inp, self.tensor(x))];
                self.family(Kernel::ActivationForwardFrom, ew(width, 0, act), &bound, grid(width));
            }
            &Call::Sigmoid { y, x, width } => {
                let bound = [(Slot::Out, self.tensor(y)), (Slot::Inp, self.tensor(x))];
                self.family(Kernel::SigmoidForward, ew(width, 0, Activation::Identity), &bound, grid(width));
            }
            &Call::Conv { kernel, geom: g, a, x, out, out_at, weight, bias, act } => {
                let params = conv_params(&g, weight, bias, act, out_at);
                let mut bound = vec![(Slot::Out, self.resolve(out)?), (Slot::A, self.tensor(a)), (Slot::W, 0)];
                if bias.is_some() {
                    bound.push((Slot::Bias, 0));
                }
                if let Some(x) = x {
                    bound.push((Slot::X, self.tensor(x)));
                }
                self.family(kernel, params, &bound, conv_groups(kernel, &g, rows));
            }
            Call::Fused(tasks) => {
                let generated = fused::generate(tasks, self.graph, rows);
                let module = self.module(generated.source);
                let mut bindings = Vec::new();
                for (i, &(res, written)) in generated.bindings.iter().enumerate() {
                    let buffer = match res {
                        Res::Tensor(t) => self.tensor(t),
                        Res::Params => 0,
                        other => {
                            let what = format!("a generated kernel binding {other:?} (training only)");
                            return Err(Error::Unexportable { format: "WebGPU", what });
                        }
                    };
                    let access = if written { "read_write" } else { "read" };
                    bindings.push(json!({ "binding": i, "buffer": buffer, "access": access }));
                }
                self.dispatches.push(json!({
                    "label": generated.label,
                    "module": module,
                    "entry": "main",
                    "bindings": bindings,
                    "groups": [generated.groups, 1, 1],
                }));
            }
            other => {
                let what = format!("{other:?} has no place in an inference program");
                return Err(Error::Unexportable { format: "WebGPU", what });
            }
        }
        Ok(())
    }
}

/// A half of the model: the slice from `input` to `output`.
struct Half {
    graph: Graph,
    input: TensorId,
    output: TensorId,
    /// The output columns the caller gets: the means of a VAE's [mu | logvar].
    take: usize,
}

/// The encoder (image -> code) and decoder (code -> pixels) halves.
fn halves(arch: &Architecture) -> (Half, Half) {
    let full = Graph::forward(arch, false);
    let latent = arch.config.latent;
    let encoder = Half { graph: full.slice(full.input, full.code), input: full.input, output: full.code, take: latent };
    let mut graph = full.slice(full.latent, full.logits);
    let pixels = TensorId(graph.tensors.len());
    let width = graph.width(full.logits);
    graph.tensors.push(TensorInfo { name: "pixels".into(), width });
    graph.nodes.push(Node { op: Op::Sigmoid, inputs: vec![full.logits], outputs: vec![pixels] });
    let decoder = Half { graph, input: full.latent, output: pixels, take: width };
    (encoder, decoder)
}

/// The calls of the slice `graph` (from `input` to `output`) for at most
/// `rows` rows: lowered and fused for WebGPU's default limits, as
/// `GpuInference` plans a row bucket for its adapter.
pub fn calls(graph: &Graph, input: TensorId, output: TensorId, rows: usize, param_count: usize) -> Vec<Call> {
    let limits = web_limits();
    let env = Env {
        graph,
        max_rows: rows,
        limits: &limits,
        param_count,
        keep: [graph.named(), vec![input, output]].concat(),
    };
    // Direct convolutions: in Chromium without a GPU (SwiftShader, whose JIT
    // divides where LLVM multiplies) the conv VAE decoded 64 rows in 1.9 s
    // with them and in 13.6 s as products, whose loads divide per term
    // (`benches/web_check.py --quick`, A/B); no hardware WebGPU has timed either.
    fuse(lower(graph), Fusion { conv_products: false, ..Fusion::ALL }, &env)
}

/// One program `model.json` holds, before it is written out.
pub struct Plan {
    /// `encoder` or `decoder`.
    pub half: &'static str,
    pub graph: Graph,
    pub input: TensorId,
    pub output: TensorId,
    pub rows: usize,
    pub calls: Vec<Call>,
}

/// Every program `model.json` holds (for tests that emit them natively).
pub fn plans(arch: &Architecture) -> Vec<Plan> {
    let (encoder, decoder) = halves(arch);
    let mut out = Vec::new();
    for (name, half) in [("encoder", encoder), ("decoder", decoder)] {
        for rows in BUCKETS {
            let calls = calls(&half.graph, half.input, half.output, rows, arch.param_count);
            let (graph, input, output) = (half.graph.clone(), half.input, half.output);
            out.push(Plan { half: name, graph, input, output, rows, calls });
        }
    }
    out
}

/// The program of `half` for at most `rows` rows, written out.
fn program(
    half: &Half,
    rows: usize,
    param_count: usize,
    modules: &mut Vec<String>,
    module_ids: &mut HashMap<String, usize>,
) -> Result<Value> {
    let graph = &half.graph;
    let calls = calls(graph, half.input, half.output, rows, param_count);
    let mut w = Writer {
        graph,
        rows,
        modules,
        module_ids,
        buffers: Vec::new(),
        tensors: HashMap::new(),
        dummies: Vec::new(),
        dispatches: Vec::new(),
    };
    w.buffer("params", param_count * 4, "weights");
    let input = w.tensor(half.input);
    // A conditional model's one-hot labels: both halves read them.
    let labels = graph.labels.map(|l| json!({ "buffer": w.tensor(l), "width": graph.width(l) }));
    for call in &calls {
        w.call(call)?;
    }
    let output = w.tensor(half.output);
    // A browser binds at most this much without asking for more.
    let limit = web_limits().max_storage_buffer_binding_size;
    for b in &w.buffers {
        let bytes = b["bytes"].as_u64().unwrap_or(0);
        if bytes > limit {
            let name = b["name"].as_str().unwrap_or("?");
            let what = format!("buffer {name:?} has {bytes} bytes, more than the {limit} WebGPU binds by default");
            return Err(Error::Unexportable { format: "WebGPU", what });
        }
    }
    Ok(json!({
        "rows": rows,
        "buffers": w.buffers,
        "input": { "buffer": input, "width": graph.width(half.input) },
        "labels": labels,
        "output": { "buffer": output, "width": graph.width(half.output), "take": half.take },
        "dispatches": w.dispatches,
    }))
}

/// `model.json`: the model's sizes and both halves' programs per bucket.
pub fn model_json(arch: &Architecture, class_names: &[String]) -> Result<Value> {
    let cfg = &arch.config;
    let (encoder, decoder) = halves(arch);
    let (mut modules, mut ids) = (Vec::new(), HashMap::new());
    let mut programs = serde_json::Map::new();
    for (name, half) in [("encoder", &encoder), ("decoder", &decoder)] {
        let list = BUCKETS
            .iter()
            .map(|&rows| program(half, rows, arch.param_count, &mut modules, &mut ids))
            .collect::<Result<Vec<_>>>()?;
        programs.insert(name.into(), Value::Array(list));
    }
    let classes: Vec<String> =
        (0..cfg.classes).map(|c| class_names.get(c).cloned().unwrap_or_else(|| c.to_string())).collect();
    Ok(json!({
        "format": "gpu-vae web",
        "version": 1,
        "kind": match cfg.kind { ModelKind::Vae => "vae", ModelKind::Ae => "ae" },
        "latent": cfg.latent,
        "channels": cfg.channels,
        "height": cfg.image_rows,
        "width": cfg.image_cols,
        "classes": classes,
        "weights": { "file": "weights.bin", "floats": arch.param_count },
        "step": { "bytes": std::mem::size_of::<Step>(), "rows_word": std::mem::offset_of!(Step, rows) / 4 },
        "limits": {
            "maxStorageBuffersPerShaderStage": web_limits().max_storage_buffers_per_shader_stage,
            "maxComputeWorkgroupStorageSize": web_limits().max_compute_workgroup_storage_size,
            "maxComputeInvocationsPerWorkgroup": web_limits().max_compute_invocations_per_workgroup,
        },
        "modules": modules,
        "programs": programs,
    }))
}

/// Fixed codes a check decodes: deterministic values in about ±1.5.
pub fn check_codes(n: usize, latent: usize) -> Vec<f32> {
    (0..n * latent).map(|i| 1.5 * ((i as f32) * 0.7 + (i / latent) as f32 * 1.3).sin()).collect()
}

/// Reference values from the CPU path for the runtime's checks: fixed
/// codes decoded, test images encoded (their latent means).
fn check_json(
    arch: &Architecture,
    params: &[f32],
    (images, n_images, image_labels): (Vec<f32>, usize, Option<Vec<u8>>),
) -> Result<Value> {
    let cfg = &arch.config;
    let mut cpu = crate::cpu::CpuModel::for_inference(arch.clone(), params.to_vec());
    let n = 4;
    let z = check_codes(n, cfg.latent);
    let labels: Option<Vec<u8>> = (cfg.classes > 0).then(|| (0..n).map(|i| (i % cfg.classes) as u8).collect());
    let pixels = cpu.decode(&z, labels.as_deref(), n)?;
    let code = cpu.encode(&images, image_labels.as_deref(), n_images)?;
    let width = code.len() / n_images.max(1);
    let means: Vec<f32> = code.chunks(width).flat_map(|r| r[..cfg.latent].to_vec()).collect();
    Ok(json!({
        "n": n,
        "z": z,
        "labels": labels,
        "pixels": pixels,
        "images_n": n_images,
        "images": images,
        "image_labels": image_labels,
        "means": means,
    }))
}

/// Writes the web folder of the model `arch` with `params` into `dir`
/// (created when missing); with the `run` it came from, the explorer also
/// gets test images, their codes' principal directions and the loss curve.
pub fn export(
    arch: &Architecture,
    params: &[f32],
    run: Option<&crate::train::run_dir::RunDir>,
    dir: &Path,
) -> Result<super::Exported> {
    if params.len() != arch.param_count {
        let why = format!("{} values for {} parameters", params.len(), arch.param_count);
        return Err(Error::invalid("params", why));
    }
    let names = run.map(|r| r.config().class_names.clone()).unwrap_or_default();
    let model = model_json(arch, &names)?;
    let weights: Vec<u8> = params.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut explorer = super::web_explorer::explorer_json(arch, params, run)?;
    explorer["check"] = check_json(arch, params, super::web_explorer::check_images(&explorer, arch))?;
    let metrics = run.and_then(|r| std::fs::read(r.path().join("metrics.csv")).ok()).unwrap_or_default();
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("model.json", serde_json::to_vec(&model).expect("JSON of plain values")),
        ("weights.bin", weights),
        ("explorer.json", serde_json::to_vec(&explorer).expect("JSON of plain values")),
        ("metrics.csv", metrics),
        ("gpu-vae.js", RUNTIME_JS.as_bytes().to_vec()),
        ("index.html", INDEX_HTML.as_bytes().to_vec()),
    ];
    super::write_files(dir, files)
}
