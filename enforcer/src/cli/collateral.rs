//! `enforcer collateral [--json]`: per platform, the blocked prefixes whose addresses DNS
//! answers crossing the gateway also gave for names none of its patterns match.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use super::client;
use crate::control::Request;
use crate::control::protocol::CollateralReply;

#[derive(Debug, clap::Args)]
#[command(after_help = "Example: enforcer collateral --json")]
pub struct CollateralArgs {
    /// Print the daemon's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn execute(socket: &Path, args: &CollateralArgs) -> ExitCode {
    client::run(socket, &Request::Collateral, args.json, render)
}

fn render(reply: &CollateralReply) -> String {
    let mut out = String::new();
    if reply.platforms.is_empty() {
        out.push_str("no collateral: no blocked prefix served a name outside its platform\n");
    }
    for platform in &reply.platforms {
        let _ = writeln!(out, "{}:", platform.platform);
        for prefix in &platform.prefixes {
            let names: Vec<&str> = prefix.names.iter().map(|n| n.name.as_str()).collect();
            let _ = writeln!(out, "  {} also served {}", prefix.prefix, names.join(", "));
        }
    }
    out
}
