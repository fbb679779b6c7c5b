//! `enforcer plan PATH [--json]`: what a candidate policy would change in the running daemon,
//! and the collateral it would cause. Nothing is applied. Exit 0 when clean, 2 when it would
//! block collateral names, 1 on error (so a pipeline can gate on it).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::client;
use crate::control::Request;
use crate::control::protocol::PlanReply;

#[derive(Debug, clap::Args)]
#[command(after_help = "Example: enforcer plan /srv/policy-candidate/ --json")]
pub struct PlanArgs {
    /// The candidate policy: a rule file or a directory of them.
    pub path: PathBuf,
    /// Print the daemon's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn execute(socket: &Path, args: &PlanArgs) -> ExitCode {
    // The daemon reads the path itself: make it independent of this shell's directory.
    let path = std::fs::canonicalize(&args.path).unwrap_or_else(|_| args.path.clone());
    let request = Request::Plan {
        path: path.display().to_string(),
    };
    client::run_with_exit(socket, &request, args.json, render, |reply: &PlanReply| {
        if reply.collateral.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(2)
        }
    })
}

fn render(reply: &PlanReply) -> String {
    let mut out = String::new();
    if reply.platforms.is_empty() {
        out.push_str("no change\n");
    }
    for p in &reply.platforms {
        let _ = writeln!(out, "{}:", p.platform);
        if let Some([old, new]) = &p.action {
            let _ = writeln!(out, "  action {old} -> {new}");
        }
        for (sign, items) in [("+", &p.added), ("-", &p.removed)] {
            for prefix in &items.prefixes {
                let _ = writeln!(out, "  {sign} prefix {prefix}");
            }
            for name in &items.names {
                let _ = writeln!(out, "  {sign} name {name}");
            }
        }
    }
    for c in &reply.collateral {
        let _ = writeln!(
            out,
            "collateral: {} {} also serves {}",
            c.platform,
            c.prefix,
            c.names.join(", ")
        );
    }
    out
}
