//! Command-line interface: one module per subcommand.

pub mod check;
pub mod client;
pub mod detach;
pub mod explain;
pub mod feeds;
pub mod reload;
pub mod report;
pub mod resolve;
pub mod rules;
pub mod run;
pub mod status;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub const DEFAULT_SOCKET: &str = crate::settings::Settings::DEFAULT_SOCKET;

#[derive(Debug, Parser)]
#[command(
    name = "enforcer",
    version,
    about = "Blocks foreign video platforms at the gateway with XDP"
)]
pub struct Cli {
    /// Control socket of the daemon [default: /run/enforcer/enforcer.sock].
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Log format [default: text].
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub command: Command,
}

pub use crate::logging::LogFormat;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate policies; exit 0 when valid, 1 with every error otherwise.
    Check(check::CheckArgs),
    /// Resolve every exact domain once and print each platform's addresses with their source.
    Resolve(resolve::ResolveArgs),
    /// Run the daemon: load the policy, attach to the interfaces, enforce until SIGTERM.
    Run(Box<run::RunArgs>),
    /// Remove the program, links and pins (works on the pins directly, with or without a daemon).
    Detach(detach::DetachArgs),
    /// Interfaces, policy digest, per-platform prefixes and counters, resolver health.
    Status(status::StatusArgs),
    /// Re-read the policy; on any error the running policy stays and this exits 1.
    Reload,
    /// Which platform and entry blocks or allows an address or name, and why.
    Explain(explain::ExplainArgs),
    /// Compliance by site from a Prometheus server: an HTML report (and a CSV) of the period.
    Report(report::ReportArgs),
    /// List, add or remove rules from the command line (kept in enforcer-managed.yaml).
    #[command(subcommand)]
    Rules(rules::RulesCommand),
    /// Follow the vendors' published ranges: `feeds update` fetches, checks and plans (and with
    /// --apply writes) the feed-managed entries of rule files with a `feed:`.
    #[command(subcommand)]
    Feeds(feeds::FeedsCommand),
}

impl Cli {
    /// `--socket`, else the default.
    pub fn socket_path(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
    }
}
