//! `enforcer rules list|add|remove`: change the policy from the command line. The daemon keeps
//! these rules in `enforcer-managed.yaml` in the policy directory and applies them at once.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;

use super::client;
use crate::control::Request;
use crate::control::protocol::RulesList;

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

fn render_list(list: &RulesList) -> String {
    let mut out = String::new();
    for p in &list.platforms {
        let _ = writeln!(out, "{} ({}) at {}", p.platform, p.action, p.location);
        for e in &p.entries {
            let mut parts = Vec::new();
            for (key, values) in [("domains", &e.domains), ("prefixes", &e.prefixes)] {
                if !values.is_empty() {
                    parts.push(format!("{key}: {}", values.join(", ")));
                }
            }
            if e.protocol != "any" {
                parts.push(format!("protocol: {}", e.protocol));
            }
            if !e.ports.is_empty() {
                parts.push(format!("ports: {}", e.ports.join(", ")));
            }
            let _ = writeln!(out, "  - {}  [{}]", parts.join("; "), e.location);
        }
    }
    out
}
