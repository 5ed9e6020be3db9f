//! `gpu-vae sample`: a grid of decoded prior draws from a saved run.

use anyhow::bail;

use super::SampleArgs;
use crate::limits;
use crate::model::ModelKind;
use crate::train::pictures;
use crate::train::run_dir::RunDir;

pub fn run(args: SampleArgs) -> anyhow::Result<()> {
    if args.n == 0 {
        bail!("invalid --n: must be at least 1");
    }
    limits::at_most("--n", args.n, limits::MAX_SAMPLES)?;
    // Before any work: an --out that may not be replaced (a device, a FIFO).
    crate::fsutil::write_target(&args.out)?;
    let run = RunDir::open(&args.run)?;
    limits::check_rows("--n", args.n, &run.arch().config)?;
    let mut model = super::device::open_inference(&args.device, run.arch(), run.params().to_vec())?;
    // The AE has no prior: it samples around the codes of the run's test images.
    let reference = match run.arch().config.kind {
        ModelKind::Ae => Some(run.load_data()?.test),
        ModelKind::Vae => None,
    };
    println!("device: {}", model.device());
    // Its errors name the file.
    pictures::sample_grid(model.as_mut(), reference.as_ref(), args.n, args.seed, &args.out)?;
    println!("wrote {} ({} samples)", args.out.display(), args.n);
    Ok(())
}
