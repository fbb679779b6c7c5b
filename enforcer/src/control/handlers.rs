//! What the daemon answers on the control socket. The JSON shapes are those of interface.md.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::SystemTime;

use ipnet::IpNet;
use serde::Serialize;

use super::{Request, Response};
use crate::daemon::{self, DaemonState, ReloadError};
use crate::datapath::MatchKey;
use crate::never_block::NeverBlock;
use crate::policy::{self, DomainPattern, Policy, managed};
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
    /// For an address in the never-block list: the range holding it and why it is there.
    #[serde(skip_serializing_if = "Option::is_none")]
    never_block: Option<NeverBlockNote>,
}

#[derive(Serialize)]
struct NeverBlockNote {
    range: String,
    /// `built-in`, `never-block`, `interface`, `resolver` or `dns-server`.
    origin: &'static str,
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
    let ip = target.parse::<IpAddr>().ok();
    let matches = match ip {
        Some(ip) => explain_ip(state, ip),
        None => explain_name(state, target),
    };
    let never_block = ip.and_then(|ip| never_block_note(&state.never_block, ip));
    // Matches come best first; the first one decides.
    let verdict = matches
        .first()
        .map_or_else(|| "none".to_owned(), |m| m.action.clone());
    Response::success(Explanation {
        target: target.to_owned(),
        verdict,
        matches,
        never_block,
    })
}

/// For an address in the never-block list, where it is and why. No DNS answer makes it blocked
/// (a published prefix of a monitor or allow platform may still match it).
fn never_block_note(never_block: &NeverBlock, ip: IpAddr) -> Option<NeverBlockNote> {
    never_block.find(ip).map(|range| NeverBlockNote {
        range: range.net.to_string(),
        origin: range.origin.as_str(),
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

/// Parses the CLI's domains and prefixes with the rule files' vocabulary, so that `rules add`
/// refuses exactly what the loader would; every bad one is reported, naming its flag.
fn parse_items(
    domains: &[String],
    prefixes: &[String],
) -> Result<(Vec<DomainPattern>, Vec<IpNet>), Vec<String>> {
    let mut errors = Vec::new();
    let domains = parse_all("--domain", domains, policy::parse_domain, &mut errors);
    let prefixes = parse_all("--prefix", prefixes, policy::parse_prefix, &mut errors);
    if errors.is_empty() {
        Ok((domains, prefixes))
    } else {
        Err(errors)
    }
}

/// Every text `parse` accepts; an error for each it refuses, naming `flag`.
fn parse_all<T>(
    flag: &str,
    texts: &[String],
    parse: fn(&str) -> Result<T, String>,
    errors: &mut Vec<String>,
) -> Vec<T> {
    texts
        .iter()
        .filter_map(|text| {
            parse(text)
                .map_err(|message| errors.push(format!("{flag}: {message}")))
                .ok()
        })
        .collect()
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
    let action = match action.map(policy::parse_action).transpose() {
        Ok(action) => action,
        Err(message) => return Response::failure(vec![format!("--action: {message}")]),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::never_block::Origin;

    #[test]
    fn explain_says_when_an_address_is_in_the_never_block_list() {
        let list = NeverBlock::builtin().with_resolvers(&["198.51.100.53:53".parse().unwrap()]);
        list.note_dns_server("198.18.2.2".parse().unwrap());
        let note = |ip: &str| {
            never_block_note(&list, ip.parse().unwrap())
                .map(|n| serde_json::to_value(n).unwrap().to_string())
        };
        assert_eq!(
            note("10.1.2.3").as_deref(),
            Some(r#"{"origin":"built-in","range":"10.0.0.0/8"}"#)
        );
        assert_eq!(
            note("198.51.100.53").as_deref(),
            Some(r#"{"origin":"resolver","range":"198.51.100.53/32"}"#)
        );
        assert_eq!(
            note("198.18.2.2").as_deref(),
            Some(r#"{"origin":"dns-server","range":"198.18.2.2/32"}"#)
        );
        assert_eq!(note("198.18.2.3"), None);
        assert_eq!(
            Origin::from_name("dns-server"),
            Some(Origin::DnsServerInUse)
        );
    }

    #[test]
    fn rules_items_are_parsed_like_rule_files() {
        // A rule file refuses `_` in a domain: `rules add` must refuse it too, naming the flag,
        // rather than write it into the managed file for the loader to reject there.
        assert_eq!(
            parse_items(&["a_b.example.com".into()], &[]).unwrap_err(),
            vec![
                "--domain: invalid domain `a_b.example.com`: character `_` is not allowed \
                 (only letters, digits and `-`)"
            ]
        );
        // Every bad item is reported, each with the rule files' words.
        assert_eq!(
            parse_items(&["*.com".into()], &["10.0.0.1/8".into(), "zoom".into()]).unwrap_err(),
            vec![
                "--domain: invalid domain `*.com`: a wildcard must cover a domain of at least two \
                 labels, like `*.example.com`, not a whole top-level domain",
                "--prefix: prefix `10.0.0.1/8` has host bits set; did you mean `10.0.0.0/8`?",
                "--prefix: invalid prefix `zoom`: expected an address or a CIDR like \
                 192.0.2.0/24 or 2001:db8::/32",
            ]
        );
        let (domains, prefixes) = parse_items(
            &["Zoom.US.".into(), "*.zoom.us".into()],
            &["198.51.100.7".into()],
        )
        .unwrap();
        assert_eq!(
            domains,
            vec![
                DomainPattern::Exact("zoom.us".into()),
                DomainPattern::Wildcard("zoom.us".into())
            ]
        );
        assert_eq!(prefixes, vec!["198.51.100.7/32".parse::<IpNet>().unwrap()]);
    }
}
