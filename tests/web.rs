//! `gpu-vae export --format web`: the exported programs as data.
//!
//! - Every kernel of every program of five models (dense and conv, grey and
//!   colour, AE and VAE, conditional) parses and validates with naga, fits
//!   WebGPU's default limits (8 storage buffers, 16 KiB of workgroup memory,
//!   256 invocations), and each dispatch binds every resource its entry
//!   point uses, with the access the shader declares.
//! - `replay`, a Rust twin of assets/web/gpu-vae.js (JSON in, wgpu out,
//!   nothing model-specific), runs the programs on a device opened with
//!   WebGPU's default limits (lavapipe in CI) and decodes and encodes within
//!   1e-4 of the CPU path, the tolerance of tests/onnx.rs for the same
//!   reason: f32 sums in another order and another exp.
//! - The exported dispatches are those `gpu::lower::emit` makes of the same
//!   calls for the engine: the same kernels and workgroups.
//! - The CLI writes the folder from a trained run with test images, their
//!   codes and the loss curve; the browser check is benches/web_check.py.

#[path = "common/gpu.rs"]
mod gpu_common;

use std::path::PathBuf;

use assert_cmd::Command;
use gpu_vae::advanced::apps::Inference;
use gpu_vae::advanced::cpu::CpuModel;
use gpu_vae::advanced::export::{self, Format, web};
use gpu_vae::advanced::gpu::buffers::ParamBuffers;
use gpu_vae::advanced::gpu::lower::{Bindings, TensorPool, emit};
use gpu_vae::advanced::model::{
    Activation, Arch, Architecture, InitScheme, ModelConfig, ModelKind, ReconLoss, init_params,
};
use naga::valid::{Capabilities, ValidationFlags, Validator};
use serde_json::Value;

const TOLERANCE: f32 = 1e-4;

fn config(kind: ModelKind, arch: Arch, channels: usize, classes: usize, activation: Activation) -> ModelConfig {
    let (conv, hidden) = match arch {
        Arch::Conv => (vec![4, 8], vec![12]),
        Arch::Mlp => (vec![], vec![40]),
    };
    ModelConfig {
        kind,
        image_rows: 8,
        image_cols: 8,
        channels,
        hidden,
        latent: 3,
        loss: ReconLoss::Bce,
        activation,
        arch,
        conv,
        classes,
    }
}

fn models() -> Vec<(String, Architecture, Vec<f32>)> {
    let cases = [
        (ModelKind::Vae, Arch::Mlp, 1, 0, Activation::Relu),
        (ModelKind::Vae, Arch::Conv, 1, 0, Activation::Gelu),
        (ModelKind::Vae, Arch::Conv, 3, 0, Activation::Silu),
        (ModelKind::Ae, Arch::Mlp, 3, 0, Activation::Elu),
        (ModelKind::Vae, Arch::Mlp, 1, 4, Activation::Tanh),
    ];
    cases
        .iter()
        .enumerate()
        .map(|(i, &(kind, arch, channels, classes, act))| {
            let a = Architecture::new(&config(kind, arch, channels, classes, act)).unwrap();
            // Doubled weights reach the activations' curved parts.
            let params = init_params(&a, InitScheme::Torch, i as u32 + 1).iter().map(|p| 2.0 * p).collect();
            (format!("{kind:?} {arch:?} c{channels} classes {classes} {act:?}"), a, params)
        })
        .collect()
}

fn out(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("web").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn exported(name: &str, arch: &Architecture, params: &[f32]) -> (PathBuf, Value) {
    let dir = out(name);
    export::export(arch, params, Format::Web, &dir).unwrap();
    let json = serde_json::from_slice(&std::fs::read(dir.join("model.json")).unwrap()).unwrap();
    (dir, json)
}

fn dispatches(model: &Value) -> impl Iterator<Item = &Value> {
    ["encoder", "decoder"]
        .into_iter()
        .flat_map(move |h| model["programs"][h].as_array().unwrap())
        .flat_map(|p| p["dispatches"].as_array().unwrap())
}

#[test]
fn every_kernel_validates_fits_webgpu_defaults_and_is_bound_whole() {
    for (name, arch, params) in models() {
        let (_, model) = exported(&name.replace(' ', "-"), &arch, &params);
        let modules: Vec<(naga::Module, naga::valid::ModuleInfo)> = model["modules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let source = m.as_str().unwrap();
                let module = naga::front::wgsl::parse_str(source)
                    .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
                let info = Validator::new(ValidationFlags::all(), Capabilities::empty())
                    .validate(&module)
                    .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
                (module, info)
            })
            .collect();
        let mut count = 0;
        for d in dispatches(&model) {
            count += 1;
            let label = d["label"].as_str().unwrap();
            let (module, info) = &modules[d["module"].as_u64().unwrap() as usize];
            let entry = d["entry"].as_str().unwrap();
            let index = module.entry_points.iter().position(|e| e.name == entry).expect("entry point");
            let ep = &module.entry_points[index];
            let uses = info.get_entry_point(index);
            let mut layouter = naga::proc::Layouter::default();
            layouter.update(module.to_ctx()).unwrap();
            assert!(ep.workgroup_size.iter().product::<u32>() <= 256, "{name}: {label}: invocations");
            let mut workgroup_bytes = 0;
            let mut storage = 0;
            for (handle, var) in module.global_variables.iter() {
                if uses[handle].is_empty() {
                    continue;
                }
                match var.space {
                    naga::AddressSpace::WorkGroup => workgroup_bytes += layouter[var.ty].size,
                    naga::AddressSpace::Storage { .. } | naga::AddressSpace::Uniform => {}
                    _ => continue,
                }
                let Some(b) = &var.binding else { continue };
                if b.group == 1 {
                    continue; // the step row, bound by the runtime
                }
                let bound = d["bindings"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|x| x["binding"].as_u64() == Some(b.binding as u64))
                    .unwrap_or_else(|| panic!("{name}: {label}: binding {} used but not bound", b.binding));
                match var.space {
                    naga::AddressSpace::Uniform => assert!(bound["uniform"].is_array(), "{name}: {label}"),
                    naga::AddressSpace::Storage { access } => {
                        storage += 1;
                        let writes = access.contains(naga::StorageAccess::STORE);
                        let want = if writes { "read_write" } else { "read" };
                        assert_eq!(bound["access"], want, "{name}: {label}: binding {}", b.binding);
                    }
                    _ => unreachable!(),
                }
            }
            let declared = d["bindings"].as_array().unwrap().iter().filter(|b| b["buffer"].is_u64()).count();
            assert!(declared <= 8 && storage <= 8, "{name}: {label}: {declared} storage buffers");
            assert!(workgroup_bytes <= 16384, "{name}: {label}: {workgroup_bytes} bytes of workgroup memory");
        }
        assert!(count >= 4, "{name}: {count} dispatches");
    }
}

/// The programs' own limits are WebGPU's defaults, and the decoder's output
/// is the pixels (the sigmoid runs on the device).
#[test]
fn the_model_file_names_sizes_limits_and_outputs() {
    let (name, arch, params) = models().swap_remove(4);
    let (dir, model) = exported("names", &arch, &params);
    assert_eq!(model["latent"], 3, "{name}");
    assert_eq!(model["channels"], 1);
    assert_eq!(model["classes"], serde_json::json!(["0", "1", "2", "3"]));
    assert_eq!(model["limits"]["maxStorageBuffersPerShaderStage"], 8);
    assert_eq!(model["limits"]["maxComputeWorkgroupStorageSize"], 16384);
    let decoder = &model["programs"]["decoder"][0];
    let output = &decoder["buffers"][decoder["output"]["buffer"].as_u64().unwrap() as usize];
    assert_eq!(output["name"], "pixels");
    assert!(decoder["labels"].is_object(), "a conditional decoder takes labels");
    let weights = std::fs::read(dir.join("weights.bin")).unwrap();
    assert_eq!(weights.len(), 4 * arch.param_count);
    assert_eq!(f32::from_le_bytes(weights[..4].try_into().unwrap()), params[0]);
    for file in ["gpu-vae.js", "index.html", "explorer.json", "metrics.csv"] {
        assert!(dir.join(file).exists(), "{file}");
    }
    assert_eq!(std::fs::read_to_string(dir.join("gpu-vae.js")).unwrap(), web::RUNTIME_JS);
}

/// Runs a program of model.json on a wgpu device, as gpu-vae.js does.
mod replay {
    use serde_json::Value;
    use wgpu::util::DeviceExt;

    pub struct Device {
        pub device: wgpu::Device,
        pub queue: wgpu::Queue,
    }

    /// A device with WebGPU's default limits: what a browser grants.
    pub fn open() -> Option<Device> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = pollster::block_on(instance.request_adapter(&Default::default())).ok()?;
        let desc = wgpu::DeviceDescriptor { required_limits: wgpu::Limits::default(), ..Default::default() };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc)).ok()?;
        Some(Device { device, queue })
    }

    fn entry(binding: u32, ty: wgpu::BufferBindingType) -> wgpu::BindGroupLayoutEntry {
        wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer { ty, has_dynamic_offset: false, min_binding_size: None },
            count: None,
        }
    }

    /// The half's output for `x` (rows of the input width) and one-hot labels.
    pub fn run(
        dev: &Device,
        model: &Value,
        weights: &[u8],
        half: &str,
        x: &[f32],
        rows: usize,
        labels: &[u8],
    ) -> Vec<f32> {
        let (device, queue) = (&dev.device, &dev.queue);
        let list = model["programs"][half].as_array().unwrap();
        let p = list.iter().find(|p| p["rows"].as_u64().unwrap() as usize >= rows).expect("a bucket");
        let storage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC;
        let buffers: Vec<wgpu::Buffer> = p["buffers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                if b["role"] == "weights" {
                    device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: None,
                        contents: weights,
                        usage: storage,
                    })
                } else {
                    let size = b["bytes"].as_u64().unwrap();
                    device.create_buffer(&wgpu::BufferDescriptor {
                        label: None,
                        size,
                        usage: storage,
                        mapped_at_creation: false,
                    })
                }
            })
            .collect();
        let step_bytes = model["step"]["bytes"].as_u64().unwrap() as usize;
        let mut step = vec![0u32; step_bytes / 4];
        step[model["step"]["rows_word"].as_u64().unwrap() as usize] = rows as u32;
        let step = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: bytemuck::cast_slice(&step),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let step_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: None,
            entries: &[entry(0, wgpu::BufferBindingType::Uniform)],
        });
        let step_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &step_layout,
            entries: &[wgpu::BindGroupEntry { binding: 0, resource: step.as_entire_binding() }],
        });
        let buffer = |v: &Value| &buffers[v["buffer"].as_u64().unwrap() as usize];
        queue.write_buffer(buffer(&p["input"]), 0, bytemuck::cast_slice(x));
        if p["labels"].is_object() {
            let width = p["labels"]["width"].as_u64().unwrap() as usize;
            let mut onehot = vec![0f32; rows * width];
            labels.iter().enumerate().for_each(|(i, &l)| onehot[i * width + l as usize] = 1.0);
            queue.write_buffer(buffer(&p["labels"]), 0, bytemuck::cast_slice(&onehot));
        }
        let mut work = Vec::new();
        for d in p["dispatches"].as_array().unwrap() {
            let mut entries = Vec::new();
            let mut uniforms = Vec::new();
            for b in d["bindings"].as_array().unwrap() {
                let binding = b["binding"].as_u64().unwrap() as u32;
                if let Some(words) = b["uniform"].as_array() {
                    let mut w: Vec<u32> = words.iter().map(|v| v.as_u64().unwrap() as u32).collect();
                    w.resize(w.len().next_multiple_of(4).max(16), 0);
                    uniforms.push((
                        binding,
                        device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                            label: None,
                            contents: bytemuck::cast_slice(&w),
                            usage: wgpu::BufferUsages::UNIFORM,
                        }),
                    ));
                    entries.push(entry(binding, wgpu::BufferBindingType::Uniform));
                } else {
                    let read_only = b["access"] == "read";
                    entries.push(entry(binding, wgpu::BufferBindingType::Storage { read_only }));
                }
            }
            let layout =
                device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: None, entries: &entries });
            let group_entries: Vec<wgpu::BindGroupEntry> = d["bindings"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| {
                    let binding = b["binding"].as_u64().unwrap() as u32;
                    let resource = match uniforms.iter().find(|(i, _)| *i == binding) {
                        Some((_, u)) => u.as_entire_binding(),
                        None => buffer(b).as_entire_binding(),
                    };
                    wgpu::BindGroupEntry { binding, resource }
                })
                .collect();
            let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &layout,
                entries: &group_entries,
            });
            let source = model["modules"][d["module"].as_u64().unwrap() as usize].as_str().unwrap();
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: None,
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
            let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: None,
                bind_group_layouts: &[Some(&layout), Some(&step_layout)],
                immediate_size: 0,
            });
            let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: None,
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(d["entry"].as_str().unwrap()),
                compilation_options: Default::default(),
                cache: None,
            });
            let g: Vec<u32> = d["groups"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
            work.push((pipeline, group, [g[0], g[1], g[2]]));
        }
        let width = p["output"]["width"].as_u64().unwrap() as usize;
        let bytes = (rows * width * 4) as u64;
        let staging = device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            pass.set_bind_group(1, &step_group, &[]);
            for (pipeline, group, [x, y, z]) in &work {
                pass.set_pipeline(pipeline);
                pass.set_bind_group(0, group, &[]);
                pass.dispatch_workgroups(*x, *y, *z);
            }
        }
        enc.copy_buffer_to_buffer(buffer(&p["output"]), 0, &staging, 0, bytes);
        queue.submit([enc.finish()]);
        staging.slice(..).map_async(wgpu::MapMode::Read, |r| r.unwrap());
        device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
        let all: Vec<f32> = bytemuck::cast_slice(&staging.slice(..).get_mapped_range().unwrap()).to_vec();
        let take = p["output"]["take"].as_u64().unwrap() as usize;
        all.chunks(width).flat_map(|r| r[..take].to_vec()).collect()
    }
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// The exported programs, replayed on a device with WebGPU's default
/// limits, against the CPU path, at a batch of 1 and of 5 (two buckets).
#[test]
fn replayed_programs_match_the_cpu_path() {
    if gpu_common::gpu("replayed_programs_match_the_cpu_path").is_none() {
        return;
    }
    let dev = replay::open().expect("a device with the default limits");
    let mut worst = (0f32, 0f32);
    for (name, arch, params) in models() {
        let (dir, model) = exported(&format!("replay-{}", name.replace(' ', "-")), &arch, &params);
        let weights = std::fs::read(dir.join("weights.bin")).unwrap();
        let mut cpu = CpuModel::for_inference(arch.clone(), params.clone());
        let cfg = &arch.config;
        for rows in [1, 5] {
            let labels: Vec<u8> = (0..rows).map(|i| (i % cfg.classes.max(1)) as u8).collect();
            let cpu_labels = (cfg.classes > 0).then_some(labels.as_slice());
            let z = web::check_codes(rows, cfg.latent);
            let want = cpu.decode(&z, cpu_labels, rows).unwrap();
            let got = replay::run(&dev, &model, &weights, "decoder", &z, rows, &labels);
            let d = max_diff(&got, &want);
            assert!(d <= TOLERANCE, "{name}: decoder at {rows} rows off by {d}");
            worst.0 = worst.0.max(d);
            let x: Vec<f32> = (0..rows * cfg.input_dim()).map(|i| ((i * 37 % 101) as f32) / 100.0).collect();
            let code = cpu.encode(&x, cpu_labels, rows).unwrap();
            let want: Vec<f32> = code.chunks(code.len() / rows).flat_map(|r| r[..cfg.latent].to_vec()).collect();
            let got = replay::run(&dev, &model, &weights, "encoder", &x, rows, &labels);
            let d = max_diff(&got, &want);
            assert!(d <= TOLERANCE, "{name}: encoder at {rows} rows off by {d}");
            worst.1 = worst.1.max(d);
        }
    }
    eprintln!("largest differences from the CPU path: decoder {:.1e}, encoder {:.1e}", worst.0, worst.1);
}

/// The exported dispatches are the ones `gpu::lower::emit` makes of the same
/// calls for the engine (which binds wgpu objects instead of writing data):
/// the same count, kernels and workgroups, program by program.
#[test]
fn exported_dispatches_are_the_engines_own() {
    let Some(gpu) = gpu_common::gpu("exported_dispatches_are_the_engines_own") else { return };
    let mode = &gpu.modes[0];
    for (name, arch, params) in models() {
        let model = web::model_json(&arch, &[]).unwrap();
        let buffers = ParamBuffers::new(&mode.ctx, &params, false).unwrap();
        for web::Plan { half, graph, rows, calls, .. } in web::plans(&arch) {
            let mut pool = TensorPool::new(rows);
            let bind = Bindings {
                params: &buffers.params,
                param_count: buffers.count,
                grads: None,
                adam: None,
                losses: None,
                data: None,
            };
            let program = emit(&mode.ctx, &mode.kernels, &graph, &calls, &mut pool, &bind).unwrap();
            let programs = model["programs"][half].as_array().unwrap();
            let exported = programs.iter().find(|p| p["rows"] == rows).unwrap()["dispatches"].as_array().unwrap();
            assert_eq!(program.len(), exported.len(), "{name}: {half} at {rows} rows");
            for (d, e) in program.dispatches.iter().zip(exported) {
                let entry = match &d.kernel {
                    Ok(kernel) => kernel.entry(),
                    Err(_) => "main",
                };
                assert_eq!(e["entry"], entry, "{name}: {half} at {rows} rows");
                assert_eq!(e["groups"], serde_json::json!(d.groups), "{name}: {half} {entry} at {rows} rows");
            }
        }
    }
}

/// From a trained run: test images and their codes ship, the loss curve too.
#[test]
fn the_cli_exports_a_trained_run_with_its_explorer_data() {
    let run = out("cli-run");
    let dir = out("cli-web");
    let bin = || Command::cargo_bin("gpu-vae").unwrap();
    bin()
        .args(["train", "--epochs", "1", "--device", "cpu", "--latent", "4", "--hidden", "32", "--out"])
        .arg(&run)
        .assert()
        .success();
    let listed = bin().args(["export", "--format", "web", "--run"]).arg(&run).arg("--out").arg(&dir).assert().success();
    let stdout = String::from_utf8(listed.get_output().stdout.clone()).unwrap();
    for file in ["model.json", "weights.bin", "explorer.json", "metrics.csv", "gpu-vae.js", "index.html"] {
        assert!(stdout.contains(file), "{stdout}");
    }
    let explorer: Value = serde_json::from_slice(&std::fs::read(dir.join("explorer.json")).unwrap()).unwrap();
    assert_eq!(explorer["images"].as_array().unwrap().len(), 16 * 784);
    assert_eq!(explorer["codes"].as_array().unwrap().len(), 16 * 4);
    assert_eq!(explorer["sliders"]["axes"], "dimensions", "4 latent dimensions: a slider each");
    assert_eq!(explorer["check"]["pixels"].as_array().unwrap().len(), 4 * 784);
    let metrics = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    assert!(metrics.starts_with("epoch,train_loss"), "{metrics}");
}

/// `gpu-vae view` serves the export on 127.0.0.1: the page, the runtime and
/// the model file with their types, 404 for anything else; it stops when killed.
#[test]
fn view_serves_the_export_on_the_loopback_address() {
    use std::io::{BufRead, BufReader, Read, Write};
    let run = out("view-run");
    Command::cargo_bin("gpu-vae")
        .unwrap()
        .args(["train", "--epochs", "1", "--device", "cpu", "--latent", "2", "--hidden", "16", "--out"])
        .arg(&run)
        .assert()
        .success();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("gpu-vae"))
        .args(["view", "--port", "0", "--run"])
        .arg(&run)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.split_whitespace().find(|w| w.starts_with("http://127.0.0.1:")).unwrap_or_else(|| panic!("{line}"));
    let addr = url.trim_start_matches("http://").trim_end_matches('/').to_string();
    let get = |path: &str| {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
        let mut response = Vec::new();
        s.read_to_end(&mut response).unwrap();
        String::from_utf8_lossy(&response).into_owned()
    };
    let page = get("/");
    let js = get("/gpu-vae.js");
    let model = get("/model.json");
    let missing = get("/../config.json");
    child.kill().unwrap();
    child.wait().unwrap();
    let status = |r: &str| r.lines().next().unwrap_or("").split(' ').nth(1).unwrap_or("").to_string();
    assert!(status(&page) == "200" && page.contains("text/html") && page.contains("latent explorer"), "{page}");
    assert!(js.contains("text/javascript") && js.contains("export async function loadModel"), "{}", &js[..200]);
    assert!(model.contains("application/json") && model.contains("\"gpu-vae web\""));
    assert_eq!(status(&missing), "404", "{missing}");
}

/// A model whose weights outgrow what a browser binds by default is refused
/// in one line naming the buffer, before anything is written.
#[test]
fn weights_beyond_the_default_binding_are_refused() {
    let big = ModelConfig { hidden: vec![44_000], ..config(ModelKind::Vae, Arch::Mlp, 1, 0, Activation::Relu) };
    let big = ModelConfig { image_rows: 28, image_cols: 28, ..big };
    let arch = Architecture::new(&big).unwrap();
    let err = web::model_json(&arch, &[]).unwrap_err().to_string();
    assert!(err.starts_with("cannot export as WebGPU: buffer \"params\""), "{err}");
    assert!(err.contains("134217728"), "{err}");
}
