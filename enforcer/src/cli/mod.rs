//! Command-line interface: one module per subcommand.

pub mod check;
pub mod config;
pub mod detach;
pub mod resolve;
pub mod run;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

pub const DEFAULT_SOCKET: &str = "/run/enforcer/enforcer.sock";

#[derive(Debug, Parser)]
#[command(
    name = "enforcer",
    version,
    about = "Blocks foreign video platforms at the gateway with XDP"
)]
pub struct Cli {
    /// Control socket of the daemon.
    #[arg(long, global = true, default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate policies; exit 0 when valid, 1 with every error otherwise.
    Check(check::CheckArgs),
    /// Resolve every exact domain once and print each platform's addresses with their source.
    Resolve(resolve::ResolveArgs),
    /// Run the daemon: load the policy, attach to the interfaces, enforce until SIGTERM.
    Run(run::RunArgs),
    /// Remove the program, links and pins (works on the pins directly, with or without a daemon).
    Detach(detach::DetachArgs),
}
