//! What the daemon answers on the control socket: each request goes to the daemon's method for
//! it, and its typed reply (docs/reference.md, "JSON outputs") or its errors go back.

use ipnet::IpNet;

use super::protocol::PolicyChange;
use super::{Request, Response};
use crate::daemon::Daemon;
use crate::policy::{Action, DomainPattern};

/// Answers one request. Runs on a blocking thread: a reload may compile a large policy.
pub fn handle(daemon: &Daemon, request: Request) -> Response {
    match request {
        Request::Status => Response::from_result(daemon.with(|s| {
            s.status()
                .map_err(|e| vec![format!("reading the counters: {e}")])
        })),
        Request::Reload => Response::from_result(
            daemon.with(|s| s.reload("reload requested").map_err(|e| e.lines())),
        ),
        Request::Explain { target } => {
            Response::from_result(daemon.with(|s| Ok(s.explain(&target))))
        }
        Request::RulesList => Response::from_result(daemon.with(|s| Ok(s.rules_list()))),
        Request::RulesAdd {
            platform,
            domains,
            prefixes,
            action,
        } => Response::from_result(rules_add(
            daemon,
            platform,
            &domains,
            &prefixes,
            action.as_deref(),
        )),
        Request::RulesRemove {
            platform,
            domains,
            prefixes,
        } => Response::from_result(rules_remove(daemon, platform, &domains, &prefixes)),
    }
}

/// Parses the CLI's domains and prefixes; every bad one is reported.
fn parse_items(
    domains: &[String],
    prefixes: &[String],
) -> Result<(Vec<DomainPattern>, Vec<IpNet>), Vec<String>> {
    let mut errors = Vec::new();
    let mut parsed_domains = Vec::new();
    for d in domains {
        let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
        let valid = |s: &str| {
            !s.is_empty()
                && s.contains('.')
                && s.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                })
        };
        match d.strip_prefix("*.") {
            Some(rest) if valid(rest) => parsed_domains.push(DomainPattern::Wildcard(rest.into())),
            None if valid(&d) => parsed_domains.push(DomainPattern::Exact(d)),
            _ => errors.push(format!("--domain {d}: not a domain name or *.domain")),
        }
    }
    let mut parsed_prefixes = Vec::new();
    for p in prefixes {
        match crate::cli::check::parse_cidr(p.trim()) {
            Ok(net) if net != net.trunc() => errors.push(format!(
                "--prefix {p}: host bits set; did you mean {}?",
                net.trunc()
            )),
            Ok(net) => parsed_prefixes.push(net),
            Err(e) => errors.push(format!("--prefix {p}: {e}")),
        }
    }
    if errors.is_empty() {
        Ok((parsed_domains, parsed_prefixes))
    } else {
        Err(errors)
    }
}

fn rules_add(
    daemon: &Daemon,
    platform: String,
    domains: &[String],
    prefixes: &[String],
    action: Option<&str>,
) -> Result<PolicyChange, Vec<String>> {
    let (domains, prefixes) = parse_items(domains, prefixes)?;
    let action = match action {
        None => None,
        Some("drop") => Some(Action::Drop),
        Some("monitor") => Some(Action::Monitor),
        Some("allow") => Some(Action::Allow),
        Some(other) => {
            return Err(vec![format!(
                "--action {other}: expected drop, monitor or allow"
            )]);
        }
    };
    daemon.with(|s| {
        s.rules_add(&platform, action, domains, prefixes)
            .map_err(|e| e.lines())
    })
}

fn rules_remove(
    daemon: &Daemon,
    platform: String,
    domains: &[String],
    prefixes: &[String],
) -> Result<PolicyChange, Vec<String>> {
    let (domains, prefixes) = parse_items(domains, prefixes)?;
    daemon.with(|s| {
        s.rules_remove(&platform, &domains, &prefixes)
            .map_err(|e| e.lines())
    })
}
