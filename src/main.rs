use clap::Parser;

fn main() -> std::process::ExitCode {
    // Mesa's Vulkan drivers warn on stderr when this is unset, though compute
    // never uses it; give them a directory rather than confuse users.
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir()) };
    }
    match gpu_vae::advanced::cli::run(gpu_vae::advanced::cli::Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // Stopped by SIGINT or SIGTERM: the trainer has said where and how to go on.
        Err(e) if matches!(e.downcast_ref(), Some(gpu_vae::advanced::error::Error::Interrupted { .. })) => {
            std::process::ExitCode::from(gpu_vae::advanced::train::interrupt::EXIT_STATUS)
        }
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
