//! `explorer.json` of a web export: what the latent explorer shows besides
//! what the model computes in the browser. A few of the run's test images
//! with their codes (latent means, from the CPU path), the principal
//! directions of the codes of up to `PCA_IMAGES` test images (the sliders'
//! axes; an autoencoder's grid draws from the Gaussian they describe), and
//! reference values for the runtime's self-check (`web::check_json`).

use serde_json::{Value, json};

use crate::apps::pca;
use crate::engine::Inference;
use crate::error::Result;
use crate::model::Architecture;
use crate::train::run_dir::RunDir;

/// Test images shipped in the export (pixels and codes).
const SHIPPED: usize = 16;
/// Test images whose codes the principal directions are fitted on.
const PCA_IMAGES: usize = 512;
/// Sliders: every latent dimension up to this many, else this many principal directions.
pub const SLIDERS: usize = 8;

/// The explorer's data; without a run (or when its data set cannot be read)
/// no images ship, and the sliders move along the first latent dimensions.
pub fn explorer_json(arch: &Architecture, params: &[f32], run: Option<&RunDir>) -> Result<Value> {
    let cfg = &arch.config;
    let latent = cfg.latent;
    let data = match run.map(|r| r.load_data()) {
        Some(Ok(set)) => Ok(set.test),
        Some(Err(e)) => Err(format!("the run's test images could not be read: {e}")),
        None => Err("exported without its run: no test images".to_string()),
    };
    let mut out = json!({ "images": [], "labels": null, "codes": [], "note": null });
    let (mut center, mut directions, mut scales) = (vec![0.0f32; latent], identity(latent), vec![1.0f32; latent]);
    let mut fitted = false;
    match data {
        Ok(test) => {
            let mut cpu = crate::cpu::CpuModel::for_inference(arch.clone(), params.to_vec());
            let n = test.count.min(PCA_IMAGES);
            let x: Vec<f32> = test.pixels[..n * test.dim()].iter().map(|&p| p as f32 / 255.0).collect();
            let labels = test.labels.as_ref().filter(|_| cfg.classes > 0).map(|l| l[..n].to_vec());
            let code = cpu.encode(&x, labels.as_deref(), n)?;
            let width = code.len() / n.max(1);
            let means: Vec<f32> = code.chunks(width).flat_map(|r| r[..latent].to_vec()).collect();
            let shipped = n.min(SHIPPED);
            out["images"] = json!(test.pixels[..shipped * test.dim()].to_vec());
            out["labels"] = json!(test.labels.as_ref().map(|l| l[..shipped].to_vec()));
            out["codes"] = json!(means[..shipped * latent].to_vec());
            if n >= 2 {
                let fit = pca::fit(&means, latent);
                center = fit.mean.iter().map(|&m| m as f32).collect();
                directions = fit.components.iter().map(|c| c.iter().map(|&v| v as f32).collect()).collect();
                scales = fit.variances.iter().map(|&v| (v.sqrt() as f32).max(1e-6)).collect();
                fitted = true;
            }
        }
        Err(note) => out["note"] = json!(note),
    }
    // Few dimensions: each slider moves one, scaled by the codes' spread along it.
    let sliders = if !fitted {
        // No codes to fit: the first dimensions, at the prior's scale.
        let n = latent.min(SLIDERS);
        json!({ "axes": "dimensions", "directions": identity(latent)[..n], "scales": vec![1.0f32; n] })
    } else if latent <= SLIDERS {
        let spread: Vec<f32> = (0..latent)
            .map(|d| directions.iter().zip(&scales).map(|(c, s)| (c[d] * s).powi(2)).sum::<f32>().sqrt())
            .collect();
        json!({ "axes": "dimensions", "directions": identity(latent), "scales": spread })
    } else {
        json!({ "axes": "principal", "directions": directions[..SLIDERS], "scales": scales[..SLIDERS] })
    };
    out["sliders"] = sliders;
    out["codes_fit"] = json!({ "center": center, "directions": directions, "scales": scales });
    Ok(out)
}

fn identity(n: usize) -> Vec<Vec<f32>> {
    (0..n).map(|i| (0..n).map(|j| if i == j { 1.0 } else { 0.0 }).collect()).collect()
}

/// The images the self-check encodes, in [0, 1], with their labels: the
/// first 4 shipped test images, or without them a fixed pattern.
pub fn check_images(explorer: &Value, arch: &Architecture) -> (Vec<f32>, usize, Option<Vec<u8>>) {
    let dim = arch.config.input_dim();
    let classes = arch.config.classes;
    let shipped: Vec<f32> = explorer["images"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_f64().unwrap_or(0.0) as f32 / 255.0).collect())
        .unwrap_or_default();
    let n = (shipped.len() / dim).min(4);
    if n > 0 {
        let labels = explorer["labels"]
            .as_array()
            .filter(|_| classes > 0)
            .map(|l| l[..n].iter().map(|v| (v.as_u64().unwrap_or(0) as usize % classes) as u8).collect());
        let labels = labels.or_else(|| (classes > 0).then(|| (0..n).map(|i| (i % classes) as u8).collect()));
        return (shipped[..n * dim].to_vec(), n, labels);
    }
    let n = 4;
    let x = (0..n * dim).map(|i| 0.5 + 0.5 * ((i as f32) * 0.37).sin() * ((i / dim) as f32 + 1.0).cos()).collect();
    (x, n, (classes > 0).then(|| (0..n).map(|i| (i % classes) as u8).collect()))
}
