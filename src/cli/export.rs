//! `gpu-vae export`: a trained run's encoder and decoder as files other
//! tools run (`crate::export`).

use super::ExportArgs;
use crate::train::run_dir::RunDir;

pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    let run = RunDir::open(&args.run)?;
    let exported = match args.format {
        crate::export::Format::Web => crate::export::web::export(run.arch(), run.params(), Some(&run), &args.out)?,
        format => crate::export::export(run.arch(), run.params(), format, &args.out)?,
    };
    print!("{exported}");
    Ok(())
}
