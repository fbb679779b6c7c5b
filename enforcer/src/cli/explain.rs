//! `enforcer explain TARGET [--json]`: which platform and entry decide an address or a name.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use super::client;
use crate::control::Request;
use crate::control::protocol::Explanation;

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

fn render(answer: &Explanation) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: {}",
        answer.target,
        match answer.verdict.as_str() {
            "none" => "no platform matches it",
            verdict => verdict,
        }
    );
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
            "domain" => format!("domain {name} (no address known yet)"),
            "learned" => format!(
                "learned from an answer for {name}{via} (from {})",
                m.resolver.as_deref().unwrap_or("?")
            ),
            _ => format!("published prefix {}", m.prefix),
        };
        let _ = writeln!(
            out,
            "  {} {} {} (entry {} at {}): {why}; {scope}{}",
            if i == 0 { "=>" } else { "  " },
            m.platform,
            m.action,
            m.entry,
            m.location,
            if m.action == "allow" {
                " (an allow exception: never dropped)"
            } else {
                ""
            },
        );
    }
    out
}
