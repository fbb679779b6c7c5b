//! Command-line interface: one module per subcommand.

pub mod assets;
pub mod bundle;
pub mod check;
pub mod client;
pub mod collateral;
pub mod detach;
pub mod explain;
pub mod feeds;
pub mod history;
pub mod plan;
pub mod reload;
pub mod report;
pub mod resolve;
pub mod rollback;
pub mod rules;
pub mod run;
pub mod status;
pub mod top;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub const DEFAULT_SOCKET: &str = crate::settings::Settings::DEFAULT_SOCKET;

#[derive(Debug, Parser)]
#[command(
    name = "enforcer",
    version,
    about = "Blocks foreign video platforms at the gateway with XDP",
    after_help = "Example: enforcer status"
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
    /// Write the man pages and shell completions into DIR (used by `cargo xtask package`).
    #[command(hide = true)]
    GenerateAssets(assets::AssetsArgs),
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
    #[command(after_help = "Example: enforcer reload")]
    Reload,
    /// Which platform and entry blocks or allows an address or name, and why.
    Explain(explain::ExplainArgs),
    /// Compliance by site from a Prometheus server: an HTML report (and a CSV) of the period.
    Report(report::ReportArgs),
    /// What a candidate policy would change, and its collateral; exit 0 clean, 2 collateral.
    Plan(plan::PlanArgs),
    /// Blocked prefixes whose addresses also served names outside their platform.
    Collateral(collateral::CollateralArgs),
    /// List, add or remove rules from the command line (kept in enforcer-managed.yaml).
    #[command(subcommand)]
    Rules(rules::RulesCommand),
    /// The applied policies the daemon keeps, oldest first, newest last (`*`: in force).
    ///
    /// Each line: the digest (what `rollback --to` takes, or a unique prefix of it), when it was
    /// applied (UTC), the source (start, reload, watcher, rules-add, rules-remove, feeds,
    /// rollback, bundle) and who applied it (`daemon` for start and watcher). Exit 1 when no
    /// daemon answers.
    History(history::HistoryArgs),
    /// Write a stored version back into the policy files and apply it (default: the one
    /// before the current).
    ///
    /// The version is validated first; the policy files (every *.yaml of the directory, or the
    /// single --rules file) are then made exactly that version and it is applied through the
    /// same atomic switch as a reload, recorded as a new version with source rollback. Exit 1,
    /// with nothing changed, when the digest is unknown or ambiguous, the version is refused or
    /// no daemon answers.
    Rollback(rollback::RollbackArgs),
    /// Follow the vendors' published ranges: `feeds update` fetches, checks and plans (and with
    /// --apply writes) the feed-managed entries of rule files with a `feed:`.
    #[command(subcommand)]
    Feeds(feeds::FeedsCommand),
    /// Live console view: drop and pass rates per platform, direction and site, DNS blocks,
    /// recently learned names, resolver health, map fill; refreshed every second.
    ///
    /// On a terminal it redraws in place (works over SSH) until q, Esc or Ctrl-C; when stdout
    /// is not a terminal (or with --plain, --once, --count) it prints a plain table every second.
    /// Rates are the difference of two successive samples. Exit 1 when no daemon answers at
    /// start; if the daemon stops answering later, the live view says so and keeps retrying,
    /// plain text exits 1.
    Top(top::TopArgs),
    /// Signed policy bundles for a fleet: `bundle keygen` makes the key and the root gateways
    /// pin, `bundle build` publishes a policy version (gateways follow with `run --bundle-url`).
    #[command(subcommand)]
    Bundle(bundle::BundleCommand),
}

impl Cli {
    /// `--socket`, else the default.
    pub fn socket_path(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
    }
}
