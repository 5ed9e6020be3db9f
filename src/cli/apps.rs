//! Subcommands that use a trained run (`--run DIR`).

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum AppCommand {}

pub fn run(command: AppCommand) -> anyhow::Result<()> {
    match command {}
}
