//! What the daemon reports about itself: `status`, `explain` and `rules list`, built from its
//! state as the typed replies of the control protocol.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::SystemTime;

use ipnet::IpNet;

use super::state::{State, policy_digest};
use crate::compile;
use crate::control::protocol::{
    BundleStatus, ExplainMatch, Explanation, InterfaceStatus, ListedEntry, ListedPlatform,
    NeverBlockNote, PlatformStatus, ResolverStatus, RulesList, SiteStatus, StatusReply,
    TOP_LEARNED, TopCounter, TopLearned, TopMap, TopPassed, TopPlatform, TopReply,
};
use crate::datapath::{CounterSnapshot, DatapathError};
use crate::never_block::NeverBlock;
use crate::policy::{DomainPattern, Entry, OTHER_SITE, Platform, Policy};
use crate::reference::{Matcher, PrefixSource};
use enforcer_common::{ACTION_NAMES, Counter, DIRECTION_NAMES, PASS_REASON_NAMES};

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// The platforms of `policy` with the id the datapath counts them by.
fn with_ids(policy: &Policy) -> impl Iterator<Item = (u16, &Platform)> {
    (0..)
        .zip(&policy.platforms)
        .map(|(index, platform)| (policy.platform_id(index), platform))
}

/// Packets and bytes summed over the counters whose key `keep` takes.
fn totals<K>(counters: &BTreeMap<K, Counter>, keep: impl Fn(&K) -> bool) -> (u64, u64) {
    counters
        .iter()
        .filter(|(k, _)| keep(k))
        .fold((0, 0), |(p, b), (_, c)| (p + c.packets, b + c.bytes))
}

impl State {
    /// Interfaces, policy digest, per-platform prefixes and counters, resolver health.
    pub fn status(&self) -> Result<StatusReply, DatapathError> {
        let counters = self.datapath().counters()?;
        Ok(self.status_from(&counters))
    }

    /// `status` from counters already read.
    fn status_from(&self, counters: &CounterSnapshot) -> StatusReply {
        let resolved = self.book().counts();
        let policy = self.policy();
        let platforms = with_ids(policy)
            .map(|(id, platform)| {
                let (mut v4, mut v6) = (0, 0);
                for net in platform.entries.iter().flat_map(|e| e.prefixes.iter()) {
                    match net {
                        IpNet::V4(_) => v4 += 1,
                        IpNet::V6(_) => v6 += 1,
                    }
                }
                let dns = resolved.get(&platform.name).copied().unwrap_or_default();
                let (packets, bytes) = totals(&counters.matches, |k| k.platform == id);
                PlatformStatus {
                    platform: platform.name.clone(),
                    action: platform.action.to_string(),
                    prefixes_v4: v4 + dns.ipv4,
                    prefixes_v6: v6 + dns.ipv6,
                    names: names_by_name(platform),
                    packets,
                    bytes,
                }
            })
            .collect();
        let health = self.resolve_metrics().health();
        let by_site = counters.by_site(!self.sites().sites.is_empty());
        let mut sites = Vec::new();
        for site in self.sites().names() {
            let named = (site != OTHER_SITE).then_some(site);
            let id = if named.is_some() {
                self.sites().get(site).map_or(0, |s| s.id)
            } else {
                enforcer_common::SITE_OTHER
            };
            for (platform_id, platform) in with_ids(policy) {
                let (packets, bytes) =
                    totals(&by_site, |k| k.site == id && k.platform == platform_id);
                sites.push(SiteStatus {
                    site: site.to_owned(),
                    platform: platform.name.clone(),
                    action: platform.action_for(named).to_string(),
                    packets,
                    bytes,
                });
            }
        }
        StatusReply {
            sites,
            bundle: self.bundle_mode().map(|m| BundleStatus {
                version: m.applied.version,
                age_seconds: super::bundle::age_seconds(m),
            }),
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
        }
    }

    /// One sample for `enforcer top`: what `status` says, the counters by verdict and
    /// direction, DNS blocks, the last names learned and the fill of each map.
    pub fn top(&self) -> Result<TopReply, DatapathError> {
        let time_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or_default();
        let policy = self.policy();
        let below = with_ids(policy)
            .map(|(id, _)| id)
            .max()
            .map_or(0, |m| m.saturating_add(1));
        let counters = self.datapath().counters_up_to(Some(below))?;
        let blocked = self.datapath().dns_blocked(below)?;
        let status = self.status_from(&counters);
        let platforms = with_ids(policy)
            .map(|(id, platform)| {
                let mut rows = Vec::new();
                for (action, action_name) in (0u8..).zip(ACTION_NAMES) {
                    for (direction, direction_name) in (0u8..).zip(DIRECTION_NAMES) {
                        let (packets, bytes) = totals(&counters.matches, |k| {
                            k.platform == id && k.action == action && k.direction == direction
                        });
                        rows.push(TopCounter {
                            action: action_name.to_owned(),
                            direction: direction_name.to_owned(),
                            packets,
                            bytes,
                        });
                    }
                }
                TopPlatform {
                    platform: platform.name.clone(),
                    action: platform.action.to_string(),
                    counters: rows,
                    dns_blocked: blocked
                        .iter()
                        .filter(|(p, _, _)| *p == id)
                        .map(|(_, _, c)| c.packets)
                        .sum(),
                }
            })
            .collect();
        let passed = PASS_REASON_NAMES
            .iter()
            .zip(counters.passed.iter())
            .map(|(reason, c)| TopPassed {
                reason: (*reason).to_owned(),
                packets: c.packets,
                bytes: c.bytes,
            })
            .collect();
        let learned = self
            .learner()
            .recent
            .iter()
            .take(TOP_LEARNED)
            .map(|r| TopLearned {
                name: r.name.clone(),
                platform: r.platform.clone(),
                address: r.address.to_string(),
                time: unix_seconds(r.time),
            })
            .collect();
        let maps = crate::metrics::map_fill(self)
            .into_iter()
            .map(|(map, entries, capacity)| TopMap {
                map: map.to_owned(),
                entries,
                capacity,
            })
            .collect();
        Ok(TopReply {
            time_ms,
            interfaces: status.interfaces,
            policy_digest: status.policy_digest,
            resolver: status.resolver,
            platforms,
            sites: status.sites,
            passed,
            learned,
            maps,
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
        // What a DNS query for the name gets at the gateway, from the same rules as its table.
        let name_verdict = ip.is_none().then(|| {
            compile::name_verdict(self.policy(), target)
                .map_or_else(|| "none".to_owned(), |m| m.action.to_string())
        });
        // Matches come best first; the first one decides.
        let verdict = matches
            .first()
            .map_or_else(|| "none".to_owned(), |m| m.action.clone());
        Explanation {
            target: target.to_owned(),
            verdict,
            matches,
            name_verdict,
            never_block,
            site: None,
        }
    }

    /// `explain`, as the clients of a site see it: the site named, or the site of a client
    /// address (`other` outside every site). Each match takes its platform's action for that
    /// site, and the matches are ranked again with those actions, as the datapath ranks them.
    pub fn explain_for(
        &self,
        target: &str,
        site: Option<String>,
        client: Option<String>,
    ) -> Result<Explanation, Vec<String>> {
        let mut answer = self.explain(target);
        let site = match (site, client) {
            (None, None) => return Ok(answer),
            (Some(_), Some(_)) => return Err(vec!["give --site or --client, not both".into()]),
            (Some(site), None) => {
                if site != OTHER_SITE && self.sites().get(&site).is_none() {
                    let known: Vec<&str> = self.sites().names().collect();
                    return Err(vec![format!(
                        "unknown site `{site}` (sites: {})",
                        known.join(", ")
                    )]);
                }
                site
            }
            (None, Some(client)) => {
                let ip: IpAddr = client
                    .trim()
                    .parse()
                    .map_err(|_| vec![format!("--client {client}: not an IP address")])?;
                self.sites()
                    .site_of(ip)
                    .map_or_else(|| OTHER_SITE.to_owned(), |s| s.name.clone())
            }
        };
        let named = (site != OTHER_SITE).then_some(site.as_str());
        let action_of = |platform: &str, action: &str| {
            self.policy()
                .platforms
                .iter()
                .find(|p| p.name == platform)
                .map_or_else(|| action.to_owned(), |p| p.action_for(named).to_string())
        };
        for m in &mut answer.matches {
            m.action = action_of(&m.platform, &m.action);
        }
        // Stable: within one precedence the prefix-length and platform order stays.
        answer.matches.sort_by_key(|m| {
            std::cmp::Reverse(
                crate::policy::parse_action(&m.action)
                    .map_or(0, |a| enforcer_common::action_precedence(a.code())),
            )
        });
        answer.verdict = answer
            .matches
            .first()
            .map_or_else(|| "none".to_owned(), |m| m.action.clone());
        // A name's DNS verdict: the winning name rule, with its platform's action for the site
        // when the site overrides it (as the datapath's name table does).
        if answer.name_verdict.is_some() {
            answer.name_verdict = Some(
                compile::name_verdict(self.policy(), target.trim()).map_or_else(
                    || "none".to_owned(),
                    |m| match self.policy().platforms.get(m.platform) {
                        Some(p) => p.action_for(named).to_string(),
                        None => m.action.to_string(),
                    },
                ),
            );
        }
        answer.site = Some(site);
        Ok(answer)
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
                enforce: enforce_of(entry),
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
/// whose domains cover it; and the entry that decides a DNS query for it when its addresses
/// came from other entries.
fn explain_name(state: &State, target: &str) -> Vec<ExplainMatch> {
    let name = target.trim_end_matches('.').to_ascii_lowercase();
    let policy = state.policy();
    let mut matches: Vec<(u8, ExplainMatch)> = state
        .book()
        .entries()
        .filter(|b| b.name == name)
        .filter_map(|b| {
            ranked_match(policy, b.platform, b.entry, |base| ExplainMatch {
                prefix: IpNet::from(b.address).to_string(),
                source: "dns".to_owned(),
                name: Some(b.name.to_owned()),
                cname_chain: b.cname_chain.to_vec(),
                ..base
            })
        })
        .collect();
    // Addresses learned from answers for the name (wildcards are only ever learned).
    let learned = state
        .learner()
        .set
        .entries()
        .filter(|(_, l)| l.name == name)
        .filter_map(|(key, learned)| {
            ranked_match(policy, &key.platform, key.entry, |base| ExplainMatch {
                prefix: IpNet::from(key.address).to_string(),
                source: "learned".to_owned(),
                name: Some(learned.name.clone()),
                cname_chain: learned.cname_chain.clone(),
                resolver: Some(learned.resolver.to_string()),
                ..base
            })
        });
    matches.extend(learned);
    let by_name = compile::name_verdict(policy, &name);
    let domains = domain_matches(policy, &name)
        .into_iter()
        .filter(|(index, entry, _)| {
            // With addresses known, only the entry deciding the DNS query, if not already there.
            matches.is_empty()
                || by_name.as_ref().is_some_and(|v| {
                    (v.platform, v.entry) == (*index, *entry)
                        && !matches.iter().any(|(_, m)| {
                            m.platform == policy.platforms[*index].name && m.entry == *entry
                        })
                })
        })
        .map(|(index, _, m)| (policy.platforms[index].action.precedence(), m))
        .collect::<Vec<_>>();
    matches.extend(domains);
    matches.sort_by_key(|(precedence, _)| std::cmp::Reverse(*precedence));
    matches.into_iter().map(|(_, m)| m).collect()
}

/// Every (platform index, entry index, match) whose domains cover `name` (lower case, no
/// final dot), one per covering pattern.
fn domain_matches(policy: &Policy, name: &str) -> Vec<(usize, usize, ExplainMatch)> {
    let mut out = Vec::new();
    for (index, platform) in policy.platforms.iter().enumerate() {
        for entry in &platform.entries {
            for domain in &entry.domains {
                let covers = match domain {
                    DomainPattern::Exact(d) => d == name,
                    DomainPattern::Wildcard(d) => name.ends_with(&format!(".{d}")),
                };
                if covers {
                    out.push((
                        index,
                        entry.index,
                        ExplainMatch {
                            source: "domain".to_owned(),
                            name: Some(domain.to_string()),
                            ..entry_match(platform, entry)
                        },
                    ));
                }
            }
        }
    }
    out
}

/// The match of entry `entry` of platform `platform` as `fill` completes it, with the
/// platform's precedence; none when the policy in force has no such entry.
fn ranked_match(
    policy: &Policy,
    platform: &str,
    entry: usize,
    fill: impl FnOnce(ExplainMatch) -> ExplainMatch,
) -> Option<(u8, ExplainMatch)> {
    let platform = policy.platforms.iter().find(|p| p.name == platform)?;
    let entry = platform.entries.get(entry)?;
    Some((
        platform.action.precedence(),
        fill(entry_match(platform, entry)),
    ))
}

/// A match of `entry` with no address or name filled in yet.
fn entry_match(platform: &Platform, entry: &Entry) -> ExplainMatch {
    ExplainMatch {
        platform: platform.name.clone(),
        action: platform.action.to_string(),
        entry: entry.index,
        prefix: String::new(),
        source: String::new(),
        name: None,
        cname_chain: Vec::new(),
        resolver: None,
        protocol: entry.protocol.as_str().to_owned(),
        ports: entry.ports.iter().map(ToString::to_string).collect(),
        enforce: enforce_of(entry),
        location: entry.location.to_string(),
    }
}

/// An entry's `enforce`, for an entry that has domains.
fn enforce_of(entry: &Entry) -> Option<String> {
    (!entry.domains.is_empty()).then(|| entry.enforce.to_string())
}

/// How many of a platform's domain patterns the gateway matches by name.
fn names_by_name(platform: &Platform) -> usize {
    platform
        .entries
        .iter()
        .filter(|e| e.enforce.by_name())
        .map(|e| e.domains.len())
        .sum()
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
                        enforce: enforce_of(e),
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

    fn policy(text: &str) -> Policy {
        crate::policy::parse_policy_str(
            std::path::Path::new("p.yaml"),
            text,
            &crate::policy::LoadOptions::default(),
        )
        .unwrap()
    }

    /// `explain NAME` lists the entries covering a name with how each enforces it.
    #[test]
    fn domain_matches_carry_the_entry_and_its_enforce() {
        let p = policy(
            "platform: web\nmatch:\n  - domains: [\"*.teams.example\"]\n    enforce: name\n  \
             - domains: [chat.teams.example]\n    enforce: address\n  - prefixes: [198.18.0.0/16]\n",
        );
        let found: Vec<(usize, Option<String>, Option<String>, String)> =
            domain_matches(&p, "chat.teams.example")
                .into_iter()
                .map(|(_, entry, m)| (entry, m.name, m.enforce, m.source))
                .collect();
        assert_eq!(
            found,
            [
                (
                    0,
                    Some("*.teams.example".to_owned()),
                    Some("name".to_owned()),
                    "domain".to_owned()
                ),
                (
                    1,
                    Some("chat.teams.example".to_owned()),
                    Some("address".to_owned()),
                    "domain".to_owned()
                ),
            ]
        );
        assert!(domain_matches(&p, "teams.example").is_empty());
        assert_eq!(enforce_of(&p.platforms[0].entries[2]), None, "no domains");
        assert_eq!(names_by_name(&p.platforms[0]), 1, "only the name entry");
        let listed: Vec<Option<String>> = rules_list(&p).platforms[0]
            .entries
            .iter()
            .map(|e| e.enforce.clone())
            .collect();
        assert_eq!(listed, [Some("name".into()), Some("address".into()), None]);
    }
}
