//! `gpu-vae sample`: decoded prior draws from a saved run, as a PNG grid or
//! an IDX file; a conditional run's draws of one class or of each.

use anyhow::bail;

use super::{SampleArgs, SampleFormat};
use crate::data::{Images, idx};
use crate::limits;
use crate::model::ModelKind;
use crate::train::pictures::{self, GRID_COLS};
use crate::train::run_dir::RunDir;
use crate::viz::write_labelled_grid;

/// Which classes `--class` asks for.
enum Classes {
    /// The classes in turn, a grid row each (a conditional run without `--class`).
    InTurn,
    One(u8),
    All,
}

pub fn run(args: SampleArgs) -> anyhow::Result<()> {
    if args.n == Some(0) {
        bail!("invalid --n: must be at least 1");
    }
    // Before any work: an --out that may not be replaced (a device, a FIFO).
    crate::fsutil::write_target(&args.out)?;
    let run = RunDir::open(&args.run)?;
    let cfg = run.arch().config.clone();
    let names = &run.config().class_names;
    let classes = match args.class.as_deref() {
        None => Classes::InTurn,
        Some(k) => match super::classes::resolve("--class", k, &run, true)?[..] {
            [one] if k != "all" => Classes::One(one),
            _ => Classes::All,
        },
    };
    let (n, cols, labels): (usize, usize, Option<Vec<u8>>) = match classes {
        _ if cfg.classes == 0 => (args.n.unwrap_or(64), GRID_COLS, None),
        Classes::InTurn => {
            let n = args.n.unwrap_or(64);
            (n, GRID_COLS, Some((0..n).map(|i| ((i / GRID_COLS) % cfg.classes) as u8).collect()))
        }
        Classes::One(k) => (args.n.unwrap_or(64), GRID_COLS, Some(vec![k; args.n.unwrap_or(64)])),
        Classes::All => {
            let per = args.n.unwrap_or(GRID_COLS);
            let n = per.saturating_mul(cfg.classes);
            (n, per, Some((0..n).map(|i| (i / per) as u8).collect()))
        }
    };
    limits::at_most("--n", n, limits::MAX_SAMPLES)?;
    limits::check_rows("--n", n, &cfg)?;
    let mut model = super::device::open_inference(&args.device, run.arch(), run.params().to_vec())?;
    // The AE has no prior: it samples around the codes of the run's test images.
    let reference = match cfg.kind {
        ModelKind::Ae => Some(run.load_data()?.test),
        ModelKind::Vae => None,
    };
    println!("device: {}", model.device());
    let images = pictures::samples(model.as_mut(), reference.as_ref(), n, labels.as_deref(), args.seed)?;
    let (c, h, w) = (cfg.channels, cfg.image_rows, cfg.image_cols);
    // Their errors name the file.
    match args.format {
        SampleFormat::Png => {
            let row_labels: Vec<String> = match classes {
                Classes::All => (0..cfg.classes).map(|k| class_name(k, names)).collect(),
                _ => Vec::new(),
            };
            write_labelled_grid(&args.out, &images, c, h, w, cols, &row_labels)?;
        }
        SampleFormat::Idx => {
            let pixels = images.iter().map(|&v| (v.clamp(0.0, 1.0) * 255.0).round() as u8).collect();
            let out = Images { pixels, count: n, channels: c, rows: h, cols: w, labels: None, class_names: None };
            idx::write_idx_images(&args.out, &out)?;
        }
    }
    println!("wrote {} ({n} samples)", args.out.display());
    Ok(())
}

/// The label of class `k` at a grid's margin: its name, or its number.
fn class_name(k: usize, names: &[String]) -> String {
    names.get(k).cloned().unwrap_or_else(|| k.to_string())
}
