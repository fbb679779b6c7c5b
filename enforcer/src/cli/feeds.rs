//! `enforcer feeds update`: follow the vendors' published ranges (the `feed:` of rule files).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use ipnet::IpNet;

use super::check::{self, CheckArgs};
use crate::control::protocol::PolicyChange;
use crate::control::{self, ClientError, Request};
use crate::feeds::{self, Options};
use crate::policy;

#[derive(Debug, clap::Subcommand)]
#[command(after_help = "Example: enforcer feeds update /etc/enforcer/rules")]
pub enum FeedsCommand {
    /// Fetch every feed of the policy, check it and print the plan (exit 2 when it has
    /// changes, 0 when not, 1 on any error); with --apply, rewrite the feed-managed entries and
    /// data-date, then ask the daemon to reload.
    Update(UpdateArgs),
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Example: enforcer feeds update /etc/enforcer/rules --apply")]
pub struct UpdateArgs {
    /// Rule files, or directories of `*.yaml` rule files; together they form one policy.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Write the changes (only when every feed passed) and ask the daemon on --socket, when
    /// one answers, to reload.
    #[arg(long)]
    pub apply: bool,
    /// Accept an update that removes more than 25 % of a platform's feed-managed prefixes.
    #[arg(long)]
    pub force: bool,
    /// Also trust the CA certificates of this PEM file (private mirrors).
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// Print the plan as JSON: {"feeds": [{"file", "platform", "added", "removed",
    /// "data_date", "error"}]}.
    #[arg(long)]
    pub json: bool,
    /// Give up on a feed after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub timeout: u64,
    /// Extra range no feed may overlap, added to the built-in list (repeatable), as for `check`.
    #[arg(long = "never-block", value_name = "CIDR", value_parser = policy::parse_prefix)]
    pub never_block: Vec<IpNet>,
    /// The daemon's config file: its never-block list and shared suffixes count, as for `check`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Exit codes of `feeds update`.
const EXIT_CHANGES: u8 = 2;

pub fn execute(socket: &Path, command: FeedsCommand) -> ExitCode {
    match command {
        FeedsCommand::Update(args) => update(socket, &args),
    }
}

fn update(socket: &Path, args: &UpdateArgs) -> ExitCode {
    // The never-block list and shared suffixes exactly as `check` (and so the daemon) has them.
    let check_args = CheckArgs {
        paths: args.paths.clone(),
        never_block: args.never_block.clone(),
        config: args.config.clone(),
    };
    let load = match check::load_options(&check_args) {
        Ok(load) => load,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let options = Options {
        apply: args.apply,
        force: args.force,
        ca_file: args.ca_file.clone(),
        load,
        timeout: Duration::from_secs(args.timeout.max(1)),
        max_bytes: feeds::DEFAULT_MAX_BYTES,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("starting the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut outcome = runtime.block_on(feeds::update(&args.paths, &options));
    let applied = !outcome.written.is_empty();
    let mut reload_failed = false;
    let mut notes = Vec::new();
    if applied {
        match reload(socket) {
            Ok(Some(change)) => notes.push(format!(
                "daemon reloaded (source feeds): digest {}",
                change.policy_digest
            )),
            Ok(None) => notes.push(format!(
                "no daemon answers on {}; the files are written and apply at its next reload",
                socket.display()
            )),
            Err(errors) => {
                reload_failed = true;
                outcome.error = Some(format!(
                    "the files are written, but the daemon refused to reload:\n{}",
                    errors.join("\n")
                ));
            }
        }
    }
    if args.json {
        match serde_json::to_string_pretty(&feeds::to_json(&outcome)) {
            Ok(text) => println!("{text}"),
            Err(error) => {
                eprintln!("encoding the plan: {error}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", feeds::render(&outcome, applied));
        if outcome.feeds.is_empty() && outcome.error.is_none() {
            println!("no rule file names a feed");
        }
    }
    for note in notes {
        eprintln!("{note}");
    }
    if outcome.failed() || reload_failed {
        // The reasons on stderr too, so scripts that only log stderr still see them.
        if args.json {
            for error in outcome
                .feeds
                .iter()
                .filter_map(|f| f.error.as_ref())
                .chain(outcome.error.as_ref())
            {
                eprintln!("{error}");
            }
        }
        return ExitCode::FAILURE;
    }
    if !args.apply && outcome.changes() {
        return ExitCode::from(EXIT_CHANGES);
    }
    ExitCode::SUCCESS
}

/// Asks the daemon to reload with source `feeds`: `Ok(None)` when none answers on `socket`.
fn reload(socket: &Path) -> Result<Option<PolicyChange>, Vec<String>> {
    let request = Request::Reload {
        source: Some("feeds".to_owned()),
    };
    match control::call::<PolicyChange>(socket, &request) {
        Ok(Ok(change)) => Ok(Some(change)),
        Ok(Err(errors)) => Err(errors),
        Err(ClientError::Connect { .. }) => Ok(None),
        Err(error) => Err(vec![error.to_string()]),
    }
}
