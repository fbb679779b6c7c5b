//! `enforcer status [--json]`.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use super::client::{self, items, number, text};
use crate::control::Request;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Print the daemon's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn execute(socket: &Path, args: &StatusArgs) -> ExitCode {
    client::run(socket, &Request::Status, args.json, render)
}

fn render(status: &serde_json::Value) -> String {
    let mut out = String::new();
    let interfaces: Vec<String> = items(status, "interfaces")
        .iter()
        .map(|i| format!("{} ({})", text(i, "name"), text(i, "mode")))
        .collect();
    let _ = writeln!(out, "interfaces:    {}", interfaces.join(", "));
    let _ = writeln!(out, "policy digest: {}", text(status, "policy_digest"));
    let resolver = status.get("resolver").cloned().unwrap_or_default();
    let health = if resolver.get("ok").and_then(|v| v.as_bool()) == Some(true) {
        "ok"
    } else {
        "failing"
    };
    let last = resolver
        .get("last_success")
        .and_then(|v| v.as_u64())
        .map_or_else(|| "never".to_owned(), |t| format!("{t} (unix)"));
    let _ = writeln!(out, "resolver:      {health}, last answer {last}");
    let _ = writeln!(
        out,
        "{:<24} {:<8} {:>10} {:>10} {:>14} {:>16}",
        "platform", "action", "prefix v4", "prefix v6", "packets", "bytes"
    );
    for p in items(status, "platforms") {
        let _ = writeln!(
            out,
            "{:<24} {:<8} {:>10} {:>10} {:>14} {:>16}",
            text(p, "platform"),
            text(p, "action"),
            number(p, "prefixes_v4"),
            number(p, "prefixes_v6"),
            number(p, "packets"),
            number(p, "bytes"),
        );
    }
    out
}
