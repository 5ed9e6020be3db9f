//! Every WGSL module parsed and validated by naga, and translated to MSL
//! (Metal) and HLSL (DX12) by naga's back ends, as wgpu does on those
//! platforms: a kernel that Metal or DX12 would reject fails here, on any
//! machine, with no GPU. And every typed kernel id names an entry point of
//! its family's module, and every entry point has an id.

use gpu_vae::advanced::gpu::{Family, Kernel};
use naga::valid::{Capabilities, ValidationFlags, Validator};

fn module(family: Family) -> (naga::Module, naga::valid::ModuleInfo) {
    let source = family.source();
    let module =
        naga::front::wgsl::parse_str(&source).unwrap_or_else(|e| panic!("{family:?}: {}", e.emit_to_string(&source)));
    let info = Validator::new(ValidationFlags::all(), Capabilities::empty())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{family:?}: {}", e.emit_to_string(&source)));
    (module, info)
}

#[test]
fn every_module_validates_and_translates_to_msl_and_hlsl() {
    for family in Family::ALL {
        let (module, info) = module(family);
        let msl = naga::back::msl::Options { lang_version: (2, 1), ..Default::default() };
        naga::back::msl::write_string(&module, &info, &msl, &Default::default())
            .unwrap_or_else(|e| panic!("{family:?} to MSL: {e}"));
        let hlsl = naga::back::hlsl::Options::default();
        let pipeline = naga::back::hlsl::PipelineOptions::default();
        let mut out = String::new();
        naga::back::hlsl::Writer::new(&mut out, &hlsl, &pipeline)
            .write(&module, &info, None)
            .unwrap_or_else(|e| panic!("{family:?} to HLSL: {e}"));
        assert!(!out.is_empty());
    }
}

#[test]
fn every_generated_interface_matches_its_rust_twin() {
    for family in Family::ALL {
        let (module, _) = module(family);
        let (name, _, size) = family.params();
        let args = module.global_variables.iter().find(|(_, g)| g.name.as_deref() == Some("args")).expect("args");
        let ty = &module.types[args.1.ty];
        assert_eq!(ty.name.as_deref(), Some(name), "{family:?}");
        assert_eq!(ty.inner.size(module.to_ctx()) as usize, size, "{family:?}: {name} differs in size from Rust's");
        for (i, b) in family.bindings().iter().enumerate() {
            let var = module.global_variables.iter().find(|(_, g)| g.name.as_deref() == Some(b.slot.wgsl()));
            let binding = var.and_then(|(_, g)| g.binding).expect("declared");
            assert_eq!((binding.group, binding.binding), (0, i as u32 + 1), "{family:?}: {:?}", b.slot);
        }
    }
}

#[test]
fn every_kernel_id_is_an_entry_point_and_back() {
    for family in Family::ALL {
        let (module, _) = module(family);
        let entries: Vec<&str> = module.entry_points.iter().map(|e| e.name.as_str()).collect();
        let ids: Vec<Kernel> = Kernel::all().into_iter().filter(|k| k.family() == family).collect();
        for id in &ids {
            assert!(entries.contains(&id.entry()), "{id:?}: no entry point {} in {family:?}", id.entry());
        }
        for entry in &entries {
            assert!(ids.iter().any(|id| id.entry() == *entry), "{family:?}: entry point {entry} has no Kernel id");
        }
    }
}

fn validate_and_translate(what: &str, source: &str) {
    let module =
        naga::front::wgsl::parse_str(source).unwrap_or_else(|e| panic!("{what}: {}", e.emit_to_string(source)));
    let info = Validator::new(ValidationFlags::all(), Capabilities::empty())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{what}: {}", e.emit_to_string(source)));
    let msl = naga::back::msl::Options { lang_version: (2, 1), ..Default::default() };
    naga::back::msl::write_string(&module, &info, &msl, &Default::default())
        .unwrap_or_else(|e| panic!("{what} to MSL: {e}"));
    let mut out = String::new();
    naga::back::hlsl::Writer::new(&mut out, &Default::default(), &Default::default())
        .write(&module, &info, None)
        .unwrap_or_else(|e| panic!("{what} to HLSL: {e}"));
}

#[test]
fn every_generated_kernel_validates_and_translates_to_msl_and_hlsl() {
    use gpu_vae::advanced::gpu::fuse::{Env, Fusion, fuse};
    use gpu_vae::advanced::gpu::fused::{bindings, generate};
    use gpu_vae::advanced::gpu::ir::{Call, Res};
    use gpu_vae::advanced::gpu::lower::lower;
    use gpu_vae::advanced::model::{Activation, Arch, Architecture, Graph, ModelConfig, ModelKind, ReconLoss};
    use std::collections::BTreeSet;

    let vae = ModelConfig::pytorch_vae();
    let configs = [
        vae.clone(),
        ModelConfig { kind: ModelKind::Ae, hidden: vec![], latent: 64, loss: ReconLoss::Mse, ..vae.clone() },
        ModelConfig {
            hidden: vec![300, 37],
            latent: 6,
            loss: ReconLoss::Mse,
            activation: Activation::Tanh,
            ..vae.clone()
        },
        ModelConfig { arch: Arch::Conv, hidden: vec![], latent: 16, conv: vec![32, 64], ..vae.clone() },
        // Colour convolution products keeping SiLU's pre-activations.
        ModelConfig {
            arch: Arch::Conv,
            channels: 3,
            image_rows: 12,
            image_cols: 8,
            hidden: vec![16],
            latent: 2,
            conv: vec![5, 7],
            activation: Activation::Silu,
            ..vae.clone()
        },
        // Pre-activations kept by product epilogues and row chains.
        ModelConfig { hidden: vec![300, 37], latent: 6, activation: Activation::Gelu, ..vae },
    ];
    let roomy = wgpu::Limits { max_storage_buffers_per_shader_stage: 16, ..wgpu::Limits::default() };
    let mut kernels = 0;
    for config in &configs {
        let arch = Architecture::new(config).unwrap();
        for noisy in [false, true] {
            for graph in [Graph::training(&arch, noisy), Graph::forward(&arch, noisy)] {
                for (limits, rows) in [(&roomy, 128), (&roomy, 1024), (&wgpu::Limits::default(), 37)] {
                    let env = Env {
                        graph: &graph,
                        max_rows: rows,
                        limits,
                        param_count: arch.param_count,
                        keep: graph.named(),
                    };
                    for call in fuse(lower(&graph), Fusion::ALL, &env) {
                        if let Call::Fused(tasks) = call {
                            let generated = generate(&tasks, &graph, rows);
                            // The fusion pass plans with bindings counted
                            // from the IR: they are the ones generated.
                            let planned: BTreeSet<Res> = bindings(&tasks, &graph);
                            let got: BTreeSet<Res> = generated.bindings.iter().map(|&(r, _)| r).collect();
                            assert_eq!(planned, got, "{}", generated.label);
                            validate_and_translate(&generated.label, &generated.source);
                            kernels += 1;
                        }
                    }
                }
            }
        }
    }
    assert!(kernels > 50, "{kernels} kernels");
}
