//! Subcommands that use a trained run (`--run DIR`): the arguments are
//! checked into `crate::apps` options, the run is opened, the use runs, and
//! its report is printed.

mod args;

pub use args::*;

use crate::apps::{Inference, anomaly, compress, denoise, eval, interpolate, latent_plot, manifold, reconstruct};
use crate::cli::DeviceArgs;
use crate::cli::classes;
use crate::train::run_dir::RunDir;

pub fn run(command: AppCommand) -> anyhow::Result<()> {
    match command {
        AppCommand::Reconstruct(a) => {
            let mut o = a.options()?;
            let (run, mut model) = open(&a.run)?;
            if let Some(k) = &a.as_class {
                o.as_classes = classes::resolve("--as-class", k, &run, true)?;
            }
            print!("{}", reconstruct::run(model.as_mut(), &run.load_data()?, &o)?);
        }
        AppCommand::Interpolate(a) => {
            if let Some((mut o, (from, to))) = a.class_walk_options()? {
                let (run, mut model) = open(&a.run)?;
                let one = |k: &str| -> anyhow::Result<u8> { Ok(classes::resolve("--classes", k, &run, false)?[0]) };
                o.classes = (one(&from)?, one(&to)?);
                let mut opener = super::device::inference_opener(&a.run.device, run.arch())?;
                let data = run.load_data()?;
                print!("{}", interpolate::class_walk(model.as_mut(), &mut opener, run.params(), &data, &o)?);
                return Ok(());
            }
            let o = a.options()?;
            let (run, mut model) = open(&a.run)?;
            let data = if o.needs_data() { Some(run.load_data()?) } else { None };
            print!("{}", interpolate::run(model.as_mut(), data.as_ref(), &o)?);
        }
        AppCommand::Manifold(a) => {
            let mut o = a.options()?;
            let (run, mut model) = open(&a.run)?;
            if let Some(k) = &a.class {
                o.class = Some(classes::resolve("--class", k, &run, false)?[0]);
            }
            let data = if o.needs_data(run.arch()) { Some(run.load_data()?) } else { None };
            print!("{}", manifold::run(model.as_mut(), data.as_ref(), &o)?);
        }
        AppCommand::LatentPlot(a) => {
            let o = a.options()?;
            let (run, mut model) = open(&a.run)?;
            print!("{}", latent_plot::run(model.as_mut(), &run.load_data()?, &o)?);
        }
        AppCommand::Encode(a) => {
            let o = a.options()?;
            // Before any work: an --out that may not be replaced (a device, a FIFO).
            crate::fsutil::write_target(&o.out)?;
            let (run, mut model) = open(&a.run)?;
            print!("{}", compress::encode(model.as_mut(), &run.load_data()?, &o)?);
        }
        AppCommand::Decode(a) => {
            let (_, mut model) = open_on(&a.run, &a.device)?;
            print!("{}", compress::decode(model.as_mut(), &a.options())?);
        }
        AppCommand::Denoise(a) => {
            let o = a.options()?;
            let (run, mut model) = open(&a.run)?;
            print!("{}", denoise::run(model.as_mut(), &run.load_data()?, &o)?);
        }
        AppCommand::Anomaly(a) => {
            let mut o = a.options()?;
            let (run, mut model) = open(&a.run)?;
            o.normal_class = o.normal_class.or(run.config().normal_class);
            print!("{}", anomaly::run(model.as_mut(), &run.load_data()?, &o, run.draws())?);
        }
        AppCommand::Eval(a) => {
            let o = a.options()?;
            let (run, mut model) = open(&a.run)?;
            print!("{}", eval::run(model.as_mut(), &run.load_data()?, &o, run.draws())?);
        }
    }
    Ok(())
}

/// The run of `--run` and its model on the device of `--device`.
fn open(a: &RunArgs) -> anyhow::Result<(RunDir, Box<dyn Inference>)> {
    open_on(&a.run, &a.device)
}

fn open_on(dir: &std::path::Path, device: &DeviceArgs) -> anyhow::Result<(RunDir, Box<dyn Inference>)> {
    let run = RunDir::open(dir)?;
    let model = super::device::open_inference(device, run.arch(), run.params().to_vec())?;
    println!("device: {}", model.device());
    Ok((run, model))
}
