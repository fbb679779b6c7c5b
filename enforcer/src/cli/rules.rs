//! `enforcer rules list|add|remove`: change the policy from the command line. The daemon keeps
//! these rules in `enforcer-managed.yaml` in the policy directory and applies them at once.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;

use super::client::{self, items, joined, text};
use crate::control::Request;

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Every platform of the running policy with its entries and where they were written.
    List {
        /// Print the daemon's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add domains and prefixes to a platform (created when new).
    Add {
        platform: String,
        /// Domain to ban (repeatable); `*.example.com` for every name below it.
        #[arg(long = "domain", value_name = "D")]
        domains: Vec<String>,
        /// Prefix to ban (repeatable).
        #[arg(long = "prefix", value_name = "P")]
        prefixes: Vec<String>,
        /// drop, monitor or allow (default: the platform's, or drop for a new one).
        #[arg(long, value_name = "A")]
        action: Option<String>,
    },
    /// Remove domains and prefixes added with `rules add` (all of the platform's without any).
    Remove {
        platform: String,
        #[arg(long = "domain", value_name = "D")]
        domains: Vec<String>,
        #[arg(long = "prefix", value_name = "P")]
        prefixes: Vec<String>,
    },
}

pub fn execute(socket: &Path, command: RulesCommand) -> ExitCode {
    match command {
        RulesCommand::List { json } => client::run(socket, &Request::RulesList, json, render_list),
        RulesCommand::Add {
            platform,
            domains,
            prefixes,
            action,
        } => {
            let request = Request::RulesAdd {
                platform,
                domains,
                prefixes,
                action,
            };
            client::run(socket, &request, false, client::render_change)
        }
        RulesCommand::Remove {
            platform,
            domains,
            prefixes,
        } => {
            let request = Request::RulesRemove {
                platform,
                domains,
                prefixes,
            };
            client::run(socket, &request, false, client::render_change)
        }
    }
}

fn render_list(list: &serde_json::Value) -> String {
    let mut out = String::new();
    for p in items(list, "platforms") {
        let _ = writeln!(
            out,
            "{} ({}) at {}",
            text(p, "platform"),
            text(p, "action"),
            text(p, "location")
        );
        for e in items(p, "entries") {
            let mut parts = Vec::new();
            for key in ["domains", "prefixes"] {
                let values = joined(e, key);
                if !values.is_empty() {
                    parts.push(format!("{key}: {values}"));
                }
            }
            if text(e, "protocol") != "any" {
                parts.push(format!("protocol: {}", text(e, "protocol")));
            }
            let ports = joined(e, "ports");
            if !ports.is_empty() {
                parts.push(format!("ports: {ports}"));
            }
            let _ = writeln!(out, "  - {}  [{}]", parts.join("; "), text(e, "location"));
        }
    }
    out
}
