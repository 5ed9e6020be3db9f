//! `gpu-vae export`: a trained run's encoder and decoder as files other
//! tools run (`crate::export`).

use super::ExportArgs;
use crate::train::run_dir::RunDir;

pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    let run = RunDir::open(&args.run)?;
    print!("{}", crate::export::export(run.arch(), run.params(), args.format, &args.out)?);
    Ok(())
}
