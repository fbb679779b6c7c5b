//! `enforcer explain TARGET [--json]`: which platform and entry decide an address or a name.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use super::client;
use crate::control::Request;
use crate::control::protocol::Explanation;
use crate::never_block::Origin;

#[derive(Debug, clap::Args)]
#[command(after_help = "Example: enforcer explain 170.114.52.2 --json")]
pub struct ExplainArgs {
    /// An IP address or a domain name.
    pub target: String,
    /// The verdict for the clients of this site (`other`: outside every site).
    #[arg(long, value_name = "SITE", conflicts_with = "client")]
    pub site: Option<String>,
    /// The verdict for this client address (for its site).
    #[arg(long, value_name = "ADDR")]
    pub client: Option<String>,
    /// Print the daemon's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn execute(socket: &Path, args: &ExplainArgs) -> ExitCode {
    let request = Request::Explain {
        target: args.target.clone(),
        site: args.site.clone(),
        client: args.client.clone(),
    };
    client::run(socket, &request, args.json, render)
}

fn render(answer: &Explanation) -> String {
    let mut out = String::new();
    if let Some(site) = &answer.site {
        let _ = writeln!(out, "for clients of site {site}:");
    }
    let _ = writeln!(
        out,
        "{}: {}",
        answer.target,
        match answer.verdict.as_str() {
            "none" => "no platform matches it",
            verdict => verdict,
        }
    );
    if let Some(verdict) = &answer.name_verdict {
        let what = match verdict.as_str() {
            "drop" => "answered NXDOMAIN by the gateway, never forwarded",
            "monitor" => "counted and forwarded",
            "allow" => "forwarded (an allow exception)",
            _ => "forwarded (no name rule matches it)",
        };
        let _ = writeln!(out, "  DNS queries for it: {verdict}: {what}");
    }
    if let Some(note) = &answer.never_block {
        let _ = writeln!(
            out,
            "  in the never-block list: {} ({}); no DNS answer makes it blocked",
            note.range,
            Origin::from_name(&note.origin).map_or("", Origin::describe),
        );
    }
    for (i, m) in answer.matches.iter().enumerate() {
        let ports = m.ports.join(", ");
        let scope = match (m.protocol.as_str(), ports.is_empty()) {
            ("any", _) => "every protocol and port".to_owned(),
            (protocol, true) => format!("{protocol}, every port"),
            (protocol, false) => format!("{protocol} ports {ports}"),
        };
        let name = m.name.as_deref().unwrap_or_default();
        let via = if m.cname_chain.is_empty() {
            String::new()
        } else {
            format!(" via CNAME {}", m.cname_chain.join(", "))
        };
        let why = match m.source.as_str() {
            "dns" => format!("resolved from {name}{via}"),
            "domain" => match m.enforce.as_deref() {
                Some("name") => format!("domain {name}, enforced by name only"),
                _ => format!("domain {name} (no address known yet)"),
            },
            "learned" => format!(
                "learned from an answer for {name}{via} (from {})",
                m.resolver.as_deref().unwrap_or("?")
            ),
            _ => format!("published prefix {}", m.prefix),
        };
        let enforce = m
            .enforce
            .as_deref()
            .map(|e| format!(", enforce {e}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {} {} {} (entry {}{enforce} at {}): {why}; {scope}{}",
            if i == 0 { "=>" } else { "  " },
            m.platform,
            m.action,
            m.entry,
            m.location,
            if m.action == crate::policy::Action::Allow.as_str() {
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
        let answer: Explanation = serde_json::from_value(serde_json::json!({
            "target": "192.0.2.53",
            "verdict": "none",
            "matches": [],
            "never_block": {"range": "192.0.2.53/32", "origin": "resolver"},
        }))
        .unwrap();
        assert_eq!(
            render(&answer),
            "192.0.2.53: no platform matches it\n  in the never-block list: 192.0.2.53/32 (a \
             resolver of the daemon); no DNS answer makes it blocked\n"
        );
        let answer: Explanation = serde_json::from_value(
            serde_json::json!({"target": "198.18.0.1", "verdict": "none", "matches": []}),
        )
        .unwrap();
        assert_eq!(render(&answer), "198.18.0.1: no platform matches it\n");
    }

    #[test]
    fn a_name_shows_what_its_dns_queries_get_and_how_entries_enforce_it() {
        let answer: Explanation = serde_json::from_value(serde_json::json!({
            "target": "meet.google.com",
            "verdict": "drop",
            "name_verdict": "drop",
            "matches": [{"platform": "meet-web", "action": "drop", "entry": 0, "prefix": "",
                "source": "domain", "name": "meet.google.com", "cname_chain": [],
                "protocol": "any", "ports": [], "enforce": "name", "location": "m.yaml:3:5"}],
        }))
        .unwrap();
        assert_eq!(
            render(&answer),
            "meet.google.com: drop\n  DNS queries for it: drop: answered NXDOMAIN by the \
             gateway, never forwarded\n  => meet-web drop (entry 0, enforce name at m.yaml:3:5): \
             domain meet.google.com, enforced by name only; every protocol and port\n"
        );
    }
}
