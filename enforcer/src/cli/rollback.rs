//! `enforcer rollback [--to DIGEST]`: the daemon writes a stored version of the policy back into
//! the policy files and applies it.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use super::client;
use crate::control::Request;
use crate::control::protocol::RollbackReply;

/// `rollback`'s options (the help text is on `Command::Rollback`).
#[derive(Debug, clap::Args)]
#[command(after_help = "Example: enforcer rollback --to 3f2a9c")]
pub struct RollbackArgs {
    /// The version: its digest or a unique prefix of it [default: the version before the
    /// current].
    #[arg(long, value_name = "DIGEST")]
    pub to: Option<String>,
}

pub fn execute(socket: &Path, args: &RollbackArgs) -> ExitCode {
    let request = Request::Rollback {
        to: args.to.clone(),
    };
    client::run(socket, &request, false, render)
}

fn render(reply: &RollbackReply) -> String {
    let mut out = format!(
        "rolled back from {} to {}\n",
        reply.from, reply.change.policy_digest
    );
    if !reply.files_written.is_empty() {
        let _ = writeln!(out, "written: {}", reply.files_written.join(", "));
    }
    if !reply.files_removed.is_empty() {
        let _ = writeln!(out, "removed: {}", reply.files_removed.join(", "));
    }
    out.push_str(&client::render_change(&reply.change));
    out
}
