use clap::Parser;

fn main() -> std::process::ExitCode {
    match gpu_vae::cli::run(gpu_vae::cli::Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
