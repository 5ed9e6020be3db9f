//! Scores every PNG and JPEG in a folder with a trained run, as
//! `gpu-vae anomaly` scores images, and flags those above its default
//! threshold (mean + 3 standard deviations of the training images' scores).
//!
//!     cargo run --release --example anomaly_folder -- RUN_DIR FOLDER

use std::path::{Path, PathBuf};

use gpu_vae::Run;

fn main() -> gpu_vae::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [run_dir, folder] = &args[..] else {
        eprintln!("usage: anomaly_folder RUN_DIR FOLDER");
        std::process::exit(2);
    };
    for (path, score, flagged) in anomaly_folder(Path::new(run_dir), Path::new(folder))? {
        println!("{score:12.4} {} {}", if flagged { "anomaly" } else { "       " }, path.display());
    }
    Ok(())
}

/// Each picture's path, score and whether it is above the threshold.
pub fn anomaly_folder(run_dir: &Path, folder: &Path) -> gpu_vae::Result<Vec<(PathBuf, f64, bool)>> {
    let run = Run::open(run_dir)?;
    let entries = std::fs::read_dir(folder).map_err(|e| gpu_vae::Error::io(folder, e))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| ["png", "jpg", "jpeg"].contains(&&*x.to_string_lossy().to_lowercase()))
        })
        .collect();
    paths.sort();
    let images = paths.iter().map(|p| run.load_image(p)).collect::<gpu_vae::Result<Vec<_>>>()?;
    let (scores, threshold) = (run.score(&images)?, run.threshold(3.0)?);
    Ok(paths.into_iter().zip(scores).map(|(p, s)| (p, s, s > threshold)).collect())
}
