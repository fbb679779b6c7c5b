//! `enforcer status [--json]`.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use super::client;
use crate::control::Request;
use crate::control::protocol::StatusReply;

#[derive(Debug, clap::Args)]
#[command(after_help = "Example: enforcer status --json")]
pub struct StatusArgs {
    /// Print the daemon's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn execute(socket: &Path, args: &StatusArgs) -> ExitCode {
    client::run(socket, &Request::Status, args.json, render)
}

fn render(status: &StatusReply) -> String {
    let mut out = String::new();
    let interfaces: Vec<String> = status
        .interfaces
        .iter()
        .map(|i| format!("{} ({}, {})", i.name, i.mode, i.role))
        .collect();
    let _ = writeln!(out, "interfaces:    {}", interfaces.join(", "));
    let _ = writeln!(out, "policy digest: {}", status.policy_digest);
    let health = if status.resolver.ok { "ok" } else { "failing" };
    let last = status.resolver.last_success.map_or_else(
        || "never".to_owned(),
        crate::report::clock::format_utc_seconds,
    );
    let _ = writeln!(out, "resolver:      {health}, last answer {last}");
    if let Some(bundle) = &status.bundle {
        let _ = writeln!(
            out,
            "bundle:        version {}, signed {} s ago",
            bundle.version, bundle.age_seconds
        );
    }
    let _ = writeln!(
        out,
        "{:<24} {:<8} {:>10} {:>10} {:>8} {:>14} {:>16}",
        "platform", "action", "prefix v4", "prefix v6", "names", "packets", "bytes"
    );
    for p in &status.platforms {
        let _ = writeln!(
            out,
            "{:<24} {:<8} {:>10} {:>10} {:>8} {:>14} {:>16}",
            p.platform, p.action, p.prefixes_v4, p.prefixes_v6, p.names, p.packets, p.bytes,
        );
    }
    // Sites: which still send traffic to which platform, and the stage each is in.
    if status
        .sites
        .iter()
        .any(|s| s.site != crate::policy::OTHER_SITE)
    {
        let _ = writeln!(
            out,
            "\n{:<24} {:<24} {:<8} {:>14} {:>16}",
            "site", "platform", "stage", "packets", "bytes"
        );
        for s in &status.sites {
            let _ = writeln!(
                out,
                "{:<24} {:<24} {:<8} {:>14} {:>16}",
                s.site, s.platform, s.action, s.packets, s.bytes
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_platform_shows_its_names() {
        let status: StatusReply = serde_json::from_value(serde_json::json!({
            "interfaces": [{"name": "eth0", "mode": "skb", "role": "inside"}],
            "policy_digest": "00ff",
            "platforms": [{"platform": "meet", "action": "drop", "prefixes_v4": 3,
                "prefixes_v6": 2, "names": 7, "packets": 11, "bytes": 900}],
            "resolver": {"ok": true, "last_success": null},
        }))
        .unwrap();
        let text = render(&status);
        let mut lines = text.lines().skip(3);
        let head: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        let names = head.iter().position(|h| *h == "names").unwrap();
        // "prefix v4" and "prefix v6" are two words each in the heading.
        assert_eq!(row[names - 2], "7", "{text}");
        assert!(text.contains("last answer never"), "{text}");
    }

    #[test]
    fn the_last_answer_is_a_date() {
        let status: StatusReply = serde_json::from_value(serde_json::json!({
            "interfaces": [], "policy_digest": "00ff", "platforms": [],
            "resolver": {"ok": true, "last_success": 1_796_322_007u64},
        }))
        .unwrap();
        let text = render(&status);
        assert!(
            text.contains("resolver:      ok, last answer 2026-12-03 18:20:07Z\n"),
            "{text}"
        );
    }
}
