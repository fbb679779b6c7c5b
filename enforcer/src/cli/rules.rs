//! `enforcer rules list|add|remove`: change the policy from the command line. The daemon keeps
//! these rules in `enforcer-managed.yaml` in the policy directory and applies them at once.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use ipnet::IpNet;

use super::client;
use crate::control::Request;
use crate::control::protocol::RulesList;
use crate::policy::{self, Action, DomainPattern, Enforce};

#[derive(Debug, Subcommand)]
#[command(
    after_help = "Example: enforcer rules add whereby --domain whereby.com --domain '*.whereby.com'"
)]
pub enum RulesCommand {
    /// Every platform of the running policy with its entries and where they were written.
    #[command(after_help = "Example: enforcer rules list --json")]
    List {
        /// Print the daemon's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add domains and prefixes to a platform (created when new).
    #[command(
        after_help = "Example: enforcer rules add zoom --prefix 170.114.0.0/16 --domain zoom.us"
    )]
    Add {
        platform: String,
        /// Domain to ban (repeatable); `*.example.com` for every name below it.
        #[arg(long = "domain", value_name = "D", value_parser = policy::parse_domain)]
        domains: Vec<DomainPattern>,
        /// Prefix to ban (repeatable); a bare address stands for itself alone.
        #[arg(long = "prefix", value_name = "P", value_parser = policy::parse_prefix)]
        prefixes: Vec<IpNet>,
        /// drop, monitor or allow (default: the platform's, or drop for a new one).
        #[arg(long, value_name = "A", value_parser = policy::parse_action)]
        action: Option<Action>,
        /// How the domains are blocked: name, address or both (default both).
        #[arg(long, value_name = "E", value_parser = policy::parse_enforce)]
        enforce: Option<Enforce>,
    },
    /// Remove domains and prefixes added with `rules add` (all of the platform's without any).
    #[command(after_help = "Example: enforcer rules remove whereby --domain '*.whereby.com'")]
    Remove {
        platform: String,
        #[arg(long = "domain", value_name = "D", value_parser = policy::parse_domain)]
        domains: Vec<DomainPattern>,
        #[arg(long = "prefix", value_name = "P", value_parser = policy::parse_prefix)]
        prefixes: Vec<IpNet>,
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
            enforce,
        } => {
            let request = Request::RulesAdd {
                platform,
                domains: texts(&domains),
                prefixes: texts(&prefixes),
                action: action.map(|a| a.as_str().to_owned()),
                enforce: enforce.map(|e| e.as_str().to_owned()),
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
                domains: texts(&domains),
                prefixes: texts(&prefixes),
            };
            client::run(socket, &request, false, client::render_change)
        }
    }
}

/// Values already checked here, written as the daemon parses them again.
fn texts<T: ToString>(values: &[T]) -> Vec<String> {
    values.iter().map(ToString::to_string).collect()
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
            if let Some(enforce) = &e.enforce {
                parts.push(format!("enforce: {enforce}"));
            }
            let _ = writeln!(out, "  - {}  [{}]", parts.join("; "), e.location);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser as _;

    fn parse(args: &[&str]) -> Result<RulesCommand, String> {
        let argv = ["enforcer", "rules"].iter().chain(args);
        match Cli::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .command
        {
            Command::Rules(command) => Ok(command),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn values_are_checked_with_the_rule_files_vocabulary() {
        let RulesCommand::Add {
            domains,
            prefixes,
            action,
            ..
        } = parse(&[
            "add",
            "zoom",
            "--domain",
            "Zoom.US.",
            "--prefix",
            "198.51.100.7",
            "--action",
            "monitor",
        ])
        .unwrap()
        else {
            panic!("not an add");
        };
        assert_eq!(domains, vec![DomainPattern::Exact("zoom.us".into())]);
        assert_eq!(prefixes, vec!["198.51.100.7/32".parse::<IpNet>().unwrap()]);
        assert_eq!(action, Some(Action::Monitor));
        let Ok(RulesCommand::Add { enforce, .. }) = parse(&[
            "add",
            "meet",
            "--domain",
            "meet.example",
            "--enforce",
            "name",
        ]) else {
            panic!("not an add");
        };
        assert_eq!(enforce, Some(Enforce::Name));
        for (args, flag, message) in [
            (
                ["add", "zoom", "--domain", "a_b.zoom.us"],
                "--domain",
                "invalid domain `a_b.zoom.us`: character `_` is not allowed",
            ),
            (
                ["add", "zoom", "--prefix", "10.0.0.1/8"],
                "--prefix",
                "prefix `10.0.0.1/8` has host bits set; did you mean `10.0.0.0/8`?",
            ),
            (
                ["add", "zoom", "--action", "block"],
                "--action",
                "invalid action `block`: expected drop, monitor or allow",
            ),
            (
                ["add", "zoom", "--enforce", "dns"],
                "--enforce",
                "invalid enforce `dns`: expected name, address or both",
            ),
            (
                ["remove", "zoom", "--domain", "*.com"],
                "--domain",
                "invalid domain `*.com`: a wildcard must cover",
            ),
        ] {
            let error = parse(&args).unwrap_err();
            assert!(
                error.contains(flag) && error.contains(message),
                "{args:?}: {error}"
            );
        }
    }
}
