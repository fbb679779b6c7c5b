//! What the daemon answers on the control socket. The JSON shapes are those of
//! docs/reference.md ("JSON outputs").

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::SystemTime;

use ipnet::IpNet;
use serde::Serialize;

use super::{Request, Response};
use crate::daemon::{self, DaemonState, ReloadError};
use crate::datapath::MatchKey;
use crate::policy::managed;
use crate::policy::{Action, DomainPattern, Policy};
use crate::reference::{Matcher, PrefixSource};

pub fn handle(state: &Mutex<DaemonState>, request: Request) -> Response {
    let Ok(mut state) = state.lock() else {
        return Response::failure(vec!["the daemon's state is poisoned; restart it".into()]);
    };
    match request {
        Request::Status => status(&state),
        Request::Reload => changed(state.reload("reload requested")),
        Request::Explain { target } => explain(&state, &target),
        Request::RulesList => Response::success(rules_list(&state.policy)),
        Request::RulesAdd {
            platform,
            domains,
            prefixes,
            action,
        } => rules_add(&mut state, platform, &domains, &prefixes, action.as_deref()),
        Request::RulesRemove {
            platform,
            domains,
            prefixes,
        } => rules_remove(&mut state, platform, &domains, &prefixes),
    }
}

fn changed(result: Result<daemon::PolicyChange, ReloadError>) -> Response {
    match result {
        Ok(change) => Response::success(change),
        Err(ReloadError::Policy(crate::policy::PolicyError::Invalid(diagnostics))) => {
            Response::failure(diagnostics.iter().map(ToString::to_string).collect())
        }
        Err(error) => Response::failure(vec![error.to_string()]),
    }
}

#[derive(Serialize)]
struct Status {
    interfaces: Vec<InterfaceStatus>,
    policy_digest: String,
    platforms: Vec<PlatformStatus>,
    resolver: ResolverStatus,
}

#[derive(Serialize)]
struct InterfaceStatus {
    name: String,
    mode: String,
}

#[derive(Serialize)]
struct PlatformStatus {
    platform: String,
    action: String,
    prefixes_v4: usize,
    prefixes_v6: usize,
    packets: u64,
    bytes: u64,
}

#[derive(Serialize)]
struct ResolverStatus {
    ok: bool,
    /// UNIX seconds of the last answer from the resolvers.
    last_success: Option<u64>,
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn status(state: &DaemonState) -> Response {
    let counters = match state.datapath.counters() {
        Ok(c) => c,
        Err(e) => return Response::failure(vec![format!("reading the counters: {e}")]),
    };
    let resolved = state.book.counts();
    let platforms = state
        .policy
        .platforms
        .iter()
        .enumerate()
        .map(|(index, platform)| {
            let id = state.policy.platform_id(index);
            let (mut v4, mut v6) = (0, 0);
            for net in platform.entries.iter().flat_map(|e| e.prefixes.iter()) {
                match net {
                    IpNet::V4(_) => v4 += 1,
                    IpNet::V6(_) => v6 += 1,
                }
            }
            let dns = resolved.get(&platform.name).copied().unwrap_or_default();
            let (packets, bytes) = counters
                .matches
                .iter()
                .filter(|(k, _)| k.platform == id)
                .fold((0, 0), |(p, b), (_, c): (&MatchKey, _)| {
                    (p + c.packets, b + c.bytes)
                });
            PlatformStatus {
                platform: platform.name.clone(),
                action: platform.action.to_string(),
                prefixes_v4: v4 + dns.ipv4,
                prefixes_v6: v6 + dns.ipv6,
                packets,
                bytes,
            }
        })
        .collect();
    let health = state.resolve_metrics.health();
    Response::success(Status {
        interfaces: state
            .attached
            .iter()
            .map(|a| InterfaceStatus {
                name: a.interface.clone(),
                mode: a.mode.as_str().to_owned(),
            })
            .collect(),
        policy_digest: daemon::policy_digest(&state.policy),
        platforms,
        resolver: ResolverStatus {
            ok: health.ok,
            last_success: health.last_success.map(unix_seconds),
        },
    })
}

#[derive(Serialize)]
struct Explanation {
    target: String,
    verdict: String,
    matches: Vec<ExplainMatch>,
}

#[derive(Clone, Serialize)]
struct ExplainMatch {
    platform: String,
    action: String,
    /// Position of the entry in the platform's `match` list, from 0.
    entry: usize,
    prefix: String,
    source: String,
    name: Option<String>,
    cname_chain: Vec<String>,
    /// For a learned address: the server whose answer taught it.
    #[serde(skip_serializing_if = "Option::is_none")]
    resolver: Option<String>,
    protocol: String,
    ports: Vec<String>,
    /// Where the entry was written (`PATH:LINE:COLUMN`).
    location: String,
}

fn explain(state: &DaemonState, target: &str) -> Response {
    let target = target.trim();
    let matches = match target.parse::<IpAddr>() {
        Ok(ip) => explain_ip(state, ip),
        Err(_) => explain_name(state, target),
    };
    // Matches come best first; the first one decides.
    let verdict = matches
        .first()
        .map_or_else(|| "none".to_owned(), |m| m.action.clone());
    Response::success(Explanation {
        target: target.to_owned(),
        verdict,
        matches,
    })
}

fn explain_ip(state: &DaemonState, ip: IpAddr) -> Vec<ExplainMatch> {
    let matcher = Matcher::with_addresses(&state.policy, state.entry_addresses());
    let mut matches = matcher.matches_for_ip(ip);
    // An address both resolved and learned for one entry is one match with several sources.
    let mut seen = std::collections::HashSet::new();
    matches.retain(|m| seen.insert((m.index, m.entry, m.prefix, m.source)));
    matches
        .into_iter()
        .flat_map(|m| {
            let platform = &state.policy.platforms[m.index];
            let entry = &platform.entries[m.entry];
            let base = ExplainMatch {
                platform: m.platform.to_owned(),
                action: m.action.to_string(),
                entry: m.entry,
                prefix: m.prefix.to_string(),
                source: "published".to_owned(),
                name: None,
                cname_chain: Vec::new(),
                resolver: None,
                protocol: m.protocol.as_str().to_owned(),
                ports: m.ports.iter().map(ToString::to_string).collect(),
                location: entry.location.to_string(),
            };
            match m.source {
                PrefixSource::Published => vec![base],
                // One line per name that gave this address to this entry.
                PrefixSource::Address => {
                    let resolved = state
                        .book
                        .entries()
                        .filter(|b| {
                            b.platform == m.platform && b.entry == m.entry && b.address == ip
                        })
                        .map(|b| ExplainMatch {
                            source: "dns".to_owned(),
                            name: Some(b.name.to_owned()),
                            cname_chain: b.cname_chain.to_vec(),
                            ..base.clone()
                        });
                    let learned = state
                        .learner
                        .set
                        .entries()
                        .filter(|(k, _)| {
                            k.platform == m.platform && k.entry == m.entry && k.address == ip
                        })
                        .map(|(_, l)| ExplainMatch {
                            source: "learned".to_owned(),
                            name: Some(l.name.clone()),
                            cname_chain: l.cname_chain.clone(),
                            resolver: Some(l.resolver.to_string()),
                            ..base.clone()
                        });
                    resolved.chain(learned).collect()
                }
            }
        })
        .collect()
}

/// A name: its current addresses per platform entry, or, when it has none yet, the entries
/// whose domains cover it.
fn explain_name(state: &DaemonState, target: &str) -> Vec<ExplainMatch> {
    let name = target.trim_end_matches('.').to_ascii_lowercase();
    let mut matches: Vec<(u8, ExplainMatch)> = Vec::new();
    for b in state.book.entries().filter(|b| b.name == name) {
        let Some(platform) = state.policy.platforms.iter().find(|p| p.name == b.platform) else {
            continue;
        };
        let Some(entry) = platform.entries.get(b.entry) else {
            continue;
        };
        matches.push((
            platform.action.precedence(),
            ExplainMatch {
                platform: platform.name.clone(),
                action: platform.action.to_string(),
                entry: b.entry,
                prefix: IpNet::from(b.address).to_string(),
                source: "dns".to_owned(),
                name: Some(b.name.to_owned()),
                cname_chain: b.cname_chain.to_vec(),
                resolver: None,
                protocol: entry.protocol.as_str().to_owned(),
                ports: entry.ports.iter().map(ToString::to_string).collect(),
                location: entry.location.to_string(),
            },
        ));
    }
    if matches.is_empty() {
        for platform in &state.policy.platforms {
            for entry in &platform.entries {
                for domain in &entry.domains {
                    let covers = match domain {
                        DomainPattern::Exact(d) => *d == name,
                        DomainPattern::Wildcard(d) => name.ends_with(&format!(".{d}")),
                    };
                    if covers {
                        matches.push((
                            platform.action.precedence(),
                            ExplainMatch {
                                platform: platform.name.clone(),
                                action: platform.action.to_string(),
                                entry: entry.index,
                                prefix: String::new(),
                                source: "domain".to_owned(),
                                name: Some(domain.to_string()),
                                cname_chain: Vec::new(),
                                resolver: None,
                                protocol: entry.protocol.as_str().to_owned(),
                                ports: entry.ports.iter().map(ToString::to_string).collect(),
                                location: entry.location.to_string(),
                            },
                        ));
                    }
                }
            }
        }
    }
    matches.sort_by_key(|(precedence, _)| std::cmp::Reverse(*precedence));
    matches.into_iter().map(|(_, m)| m).collect()
}

#[derive(Serialize)]
struct RulesList {
    platforms: Vec<ListedPlatform>,
}

#[derive(Serialize)]
struct ListedPlatform {
    platform: String,
    action: String,
    location: String,
    entries: Vec<ListedEntry>,
}

#[derive(Serialize)]
struct ListedEntry {
    entry: usize,
    domains: Vec<String>,
    prefixes: Vec<String>,
    protocol: String,
    ports: Vec<String>,
    location: String,
}

fn rules_list(policy: &Policy) -> RulesList {
    RulesList {
        platforms: policy
            .platforms
            .iter()
            .map(|p| ListedPlatform {
                platform: p.name.clone(),
                action: p.action.to_string(),
                location: p.location.to_string(),
                entries: p
                    .entries
                    .iter()
                    .map(|e| ListedEntry {
                        entry: e.index,
                        domains: e.domains.iter().map(ToString::to_string).collect(),
                        prefixes: e.prefixes.iter().map(ToString::to_string).collect(),
                        protocol: e.protocol.as_str().to_owned(),
                        ports: e.ports.iter().map(ToString::to_string).collect(),
                        location: e.location.to_string(),
                    })
                    .collect(),
            })
            .collect(),
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
    state: &mut DaemonState,
    platform: String,
    domains: &[String],
    prefixes: &[String],
    action: Option<&str>,
) -> Response {
    let (domains, prefixes) = match parse_items(domains, prefixes) {
        Ok(parsed) => parsed,
        Err(errors) => return Response::failure(errors),
    };
    let action = match action {
        None => None,
        Some("drop") => Some(Action::Drop),
        Some("monitor") => Some(Action::Monitor),
        Some("allow") => Some(Action::Allow),
        Some(other) => {
            return Response::failure(vec![format!(
                "--action {other}: expected drop, monitor or allow"
            )]);
        }
    };
    let summary = format!(
        "rules add {platform}: {} domains, {} prefixes",
        domains.len(),
        prefixes.len()
    );
    changed(state.edit_managed(&summary, |platforms| {
        managed::add(platforms, &platform, action, domains, prefixes)
    }))
}

fn rules_remove(
    state: &mut DaemonState,
    platform: String,
    domains: &[String],
    prefixes: &[String],
) -> Response {
    let (domains, prefixes) = match parse_items(domains, prefixes) {
        Ok(parsed) => parsed,
        Err(errors) => return Response::failure(errors),
    };
    let summary = format!(
        "rules remove {platform}: {} domains, {} prefixes",
        domains.len(),
        prefixes.len()
    );
    changed(state.edit_managed(&summary, |platforms| {
        managed::remove(platforms, &platform, &domains, &prefixes)
    }))
}
