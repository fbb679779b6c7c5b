//! `enforcer explain TARGET [--json]`: which platform and entry decide an address or a name.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use super::client::{self, items, joined, text};
use crate::control::Request;
use crate::never_block::Origin;

#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// An IP address or a domain name.
    pub target: String,
    /// Print the daemon's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn execute(socket: &Path, args: &ExplainArgs) -> ExitCode {
    let request = Request::Explain {
        target: args.target.clone(),
    };
    client::run(socket, &request, args.json, render)
}

fn render(answer: &serde_json::Value) -> String {
    let mut out = String::new();
    let matches = items(answer, "matches");
    let _ = writeln!(
        out,
        "{}: {}",
        text(answer, "target"),
        match text(answer, "verdict") {
            "none" => "no platform matches it",
            verdict => verdict,
        }
    );
    if let Some(note) = answer.get("never_block") {
        let _ = writeln!(
            out,
            "  in the never-block list: {} ({}); no DNS answer makes it blocked",
            text(note, "range"),
            Origin::from_name(text(note, "origin")).map_or("", Origin::describe),
        );
    }
    for (i, m) in matches.iter().enumerate() {
        let ports = joined(m, "ports");
        let scope = match (text(m, "protocol"), ports.is_empty()) {
            ("any", _) => "every protocol and port".to_owned(),
            (protocol, true) => format!("{protocol}, every port"),
            (protocol, false) => format!("{protocol} ports {ports}"),
        };
        let why = match text(m, "source") {
            "dns" => {
                let chain = joined(m, "cname_chain");
                if chain.is_empty() {
                    format!("resolved from {}", text(m, "name"))
                } else {
                    format!("resolved from {} via CNAME {chain}", text(m, "name"))
                }
            }
            "domain" => format!("domain {} (no address known yet)", text(m, "name")),
            "learned" => {
                let chain = joined(m, "cname_chain");
                let via = if chain.is_empty() {
                    String::new()
                } else {
                    format!(" via CNAME {chain}")
                };
                format!(
                    "learned from an answer for {}{via} (from {})",
                    text(m, "name"),
                    text(m, "resolver")
                )
            }
            _ => format!("published prefix {}", text(m, "prefix")),
        };
        let _ = writeln!(
            out,
            "  {} {} {} (entry {} at {}): {why}; {scope}{}",
            if i == 0 { "=>" } else { "  " },
            text(m, "platform"),
            text(m, "action"),
            m.get("entry").and_then(|v| v.as_u64()).unwrap_or_default(),
            text(m, "location"),
            if text(m, "action") == "allow" {
                " (an allow exception: never dropped)"
            } else {
                ""
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_in_the_never_block_list_says_so() {
        let answer = serde_json::json!({
            "target": "192.0.2.53",
            "verdict": "none",
            "matches": [],
            "never_block": {"range": "192.0.2.53/32", "origin": "resolver"},
        });
        assert_eq!(
            render(&answer),
            "192.0.2.53: no platform matches it\n  in the never-block list: 192.0.2.53/32 (a \
             resolver of the daemon); no DNS answer makes it blocked\n"
        );
        let answer = serde_json::json!({"target": "198.18.0.1", "verdict": "none", "matches": []});
        assert_eq!(render(&answer), "198.18.0.1: no platform matches it\n");
    }
}
