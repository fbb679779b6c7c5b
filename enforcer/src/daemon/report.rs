//! What the daemon reports about itself: `status`, `explain` and `rules list`, built from its
//! state as the typed replies of the control protocol.

use std::net::IpAddr;
use std::time::SystemTime;

use ipnet::IpNet;

use super::state::{State, policy_digest};
use crate::control::protocol::{
    ExplainMatch, Explanation, InterfaceStatus, ListedEntry, ListedPlatform, NeverBlockNote,
    PlatformStatus, ResolverStatus, RulesList, StatusReply,
};
use crate::datapath::DatapathError;
use crate::never_block::NeverBlock;
use crate::policy::{DomainPattern, Policy};
use crate::reference::{Matcher, PrefixSource};

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

impl State {
    /// Interfaces, policy digest, per-platform prefixes and counters, resolver health.
    pub fn status(&self) -> Result<StatusReply, DatapathError> {
        let counters = self.datapath().counters()?;
        let resolved = self.book().counts();
        let policy = self.policy();
        let platforms = policy
            .platforms
            .iter()
            .enumerate()
            .map(|(index, platform)| {
                let id = policy.platform_id(index);
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
                    .fold((0, 0), |(p, b), (_, c)| (p + c.packets, b + c.bytes));
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
        let health = self.resolve_metrics().health();
        Ok(StatusReply {
            interfaces: self
                .attached()
                .iter()
                .map(|a| InterfaceStatus {
                    name: a.interface.clone(),
                    mode: a.mode.as_str().to_owned(),
                    role: self.role(&a.interface).as_str().to_owned(),
                })
                .collect(),
            policy_digest: policy_digest(policy),
            platforms,
            resolver: ResolverStatus {
                ok: health.ok,
                last_success: health.last_success.map(unix_seconds),
            },
        })
    }

    /// Which platform and entry decide an address or a name, best first.
    pub fn explain(&self, target: &str) -> Explanation {
        let target = target.trim();
        let ip = target.parse::<IpAddr>().ok();
        let matches = match ip {
            Some(ip) => explain_ip(self, ip),
            None => explain_name(self, target),
        };
        let never_block = ip.and_then(|ip| never_block_note(self.never_block(), ip));
        // Matches come best first; the first one decides.
        let verdict = matches
            .first()
            .map_or_else(|| "none".to_owned(), |m| m.action.clone());
        Explanation {
            target: target.to_owned(),
            verdict,
            matches,
            never_block,
        }
    }

    /// Every platform of the running policy with its entries and where they were written.
    pub fn rules_list(&self) -> RulesList {
        rules_list(self.policy())
    }
}

/// For an address in the never-block list, where it is and why. No DNS answer makes it blocked
/// (a published prefix of a monitor or allow platform may still match it).
fn never_block_note(never_block: &NeverBlock, ip: IpAddr) -> Option<NeverBlockNote> {
    never_block.find(ip).map(|range| NeverBlockNote {
        range: range.net.to_string(),
        origin: range.origin.as_str().to_owned(),
    })
}

fn explain_ip(state: &State, ip: IpAddr) -> Vec<ExplainMatch> {
    let matcher = Matcher::with_addresses(state.policy(), state.entry_addresses());
    let mut matches = matcher.matches_for_ip(ip);
    // An address both resolved and learned for one entry is one match with several sources.
    let mut seen = std::collections::HashSet::new();
    matches.retain(|m| seen.insert((m.index, m.entry, m.prefix, m.source)));
    matches
        .into_iter()
        .flat_map(|m| {
            let platform = &state.policy().platforms[m.index];
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
                        .book()
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
                        .learner()
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
fn explain_name(state: &State, target: &str) -> Vec<ExplainMatch> {
    let name = target.trim_end_matches('.').to_ascii_lowercase();
    let mut matches: Vec<(u8, ExplainMatch)> = Vec::new();
    for b in state.book().entries().filter(|b| b.name == name) {
        let Some(platform) = state
            .policy()
            .platforms
            .iter()
            .find(|p| p.name == b.platform)
        else {
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
        for platform in &state.policy().platforms {
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
}
