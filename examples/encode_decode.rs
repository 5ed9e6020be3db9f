//! Loads a trained run, encodes a picture (read at the model's size and
//! colour) and writes the picture decoded from its posterior mean.
//!
//!     cargo run --release --example encode_decode -- RUN_DIR IN.png OUT.png

use std::path::Path;

use gpu_vae::Run;

fn main() -> gpu_vae::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [run_dir, input, output] = &args[..] else {
        eprintln!("usage: encode_decode RUN_DIR IN.png OUT.png");
        std::process::exit(2);
    };
    encode_decode(Path::new(run_dir), Path::new(input), Path::new(output))
}

pub fn encode_decode(run_dir: &Path, input: &Path, output: &Path) -> gpu_vae::Result<()> {
    let run = Run::open(run_dir)?;
    let image = run.load_image(input)?;
    let latents = run.encode(std::slice::from_ref(&image))?;
    println!("mean: {:?}", latents.mean[0]);
    if let Some(log_var) = &latents.log_var {
        println!("log-variance: {:?}", log_var[0]);
    }
    run.decode(&latents.mean)?[0].save(output)?;
    println!("wrote {}", output.display());
    Ok(())
}
