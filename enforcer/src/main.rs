use std::process::ExitCode;

use clap::Parser;
use enforcer::cli::{Cli, Command};

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    enforcer::logging::init(cli.log_format);
    match cli.command {
        Command::Check(args) => Ok(enforcer::cli::check::execute(&args)),
        Command::Resolve(args) => Ok(enforcer::cli::resolve::execute(&args)),
        Command::Run(args) => enforcer::cli::run::execute(args).map_err(anyhow::Error::from),
        Command::Detach(args) => enforcer::cli::detach::execute(&args).map_err(anyhow::Error::from),
    }
}
