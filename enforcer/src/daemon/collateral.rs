//! Collateral: names that a block also hits. A blocked prefix whose addresses DNS answers
//! crossing the gateway also gave for names that none of the platform's patterns match serves
//! something else too (a shared host, a CDN edge, a vendor range that moved). `collateral`
//! lists them for the policy in force, `plan` for a candidate.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::SystemTime;

use ipnet::IpNet;

use enforcer_common::{ACTION_ALLOW, Rule};

use super::state::State;
use crate::compile::{self, CompiledPolicy, Prefix};
use crate::control::protocol::{
    CollateralName, CollateralPlatform, CollateralPrefix, CollateralReply, PlanReply,
    PlannedCollateral, PlannedItems, PlannedPlatform,
};
use crate::learn::observed::ObservedNames;
use crate::policy::{DomainPattern, Platform, Policy};

/// Per platform name, per blocked prefix, the names (with when last seen) it also served.
pub type Collateral = BTreeMap<String, BTreeMap<IpNet, BTreeMap<String, SystemTime>>>;

fn covers(pattern: &DomainPattern, name: &str) -> bool {
    match pattern {
        DomainPattern::Exact(d) => name == d,
        DomainPattern::Wildcard(d) => name
            .strip_suffix(d.as_str())
            .is_some_and(|rest| rest.ends_with('.')),
    }
}

/// The collateral of `policy` as `compiled` (its prefixes with the addresses known for its
/// domains), from what `observed` saw: each observed address is looked up in the compiled
/// prefixes (longest first, as the datapath does), and counts for the platform of the best rule
/// there, under the prefix that rule came from, when that platform drops (for everybody or a
/// site) and none of its patterns covers the name. An `allow` exception or a longer prefix of
/// another platform takes the address out. The cost follows the observed pairs, not the policy.
pub fn collateral(
    policy: &Policy,
    compiled: &CompiledPolicy,
    observed: &ObservedNames,
) -> Collateral {
    let by_id: BTreeMap<u16, &Platform> = (0..policy.platforms.len())
        .filter_map(|i| Some((policy.platform_id(i), policy.platforms.get(i)?)))
        .collect();
    let mut found = Collateral::new();
    for (address, name, seen) in observed.all() {
        let Some((rule, net)) = best_rule(compiled, address) else {
            continue;
        };
        if rule.action == ACTION_ALLOW {
            continue;
        }
        let Some(platform) = by_id.get(&rule.platform) else {
            continue;
        };
        if !platform.drops_anywhere() {
            continue;
        }
        let own = |n: &str| {
            platform
                .entries
                .iter()
                .flat_map(|e| e.domains.iter())
                .any(|p| covers(p, n))
        };
        if own(name) || seen.cname_chain.iter().any(|c| own(c)) {
            continue;
        }
        let names = found
            .entry(platform.name.clone())
            .or_default()
            .entry(net)
            .or_default();
        let last = names.entry(name.to_owned()).or_insert(seen.last_seen);
        *last = (*last).max(seen.last_seen);
    }
    found
}

/// The best rule for `address` in `compiled` (whatever the ports) and the prefix it came from.
fn best_rule(compiled: &CompiledPolicy, address: IpAddr) -> Option<(Rule, IpNet)> {
    let rules = match address {
        IpAddr::V4(a) => {
            let a = u32::from(a);
            (0..=32u8).rev().find_map(|len| {
                let key = Prefix {
                    addr: a & u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0),
                    len,
                };
                compiled.v4.get(&key)
            })?
        }
        IpAddr::V6(a) => {
            let a = u128::from(a);
            (0..=128u8).rev().find_map(|len| {
                let key = Prefix {
                    addr: a & u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0),
                    len,
                };
                compiled.v6.get(&key)
            })?
        }
    };
    let best = usize::from(*rules.order.first()?);
    let rule = *rules.rules.get(best)?;
    let len = *rules.prefix_lens.get(best)?;
    let net = IpNet::new(address, len).ok()?.trunc();
    Some((rule, net))
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Distinct collateral names per platform (the `enforcer_collateral_names` gauge).
pub fn name_counts(found: &Collateral) -> BTreeMap<String, usize> {
    found
        .iter()
        .map(|(platform, prefixes)| {
            let names: BTreeSet<&String> = prefixes.values().flat_map(|n| n.keys()).collect();
            (platform.clone(), names.len())
        })
        .collect()
}

impl State {
    /// The collateral of the policy in force.
    pub fn collateral(&self) -> Collateral {
        if self.learner().observed.is_empty() {
            return Collateral::new();
        }
        collateral(self.policy(), self.compiled(), &self.learner().observed)
    }

    pub fn collateral_reply(&self) -> CollateralReply {
        let platforms = self
            .collateral()
            .into_iter()
            .map(|(platform, prefixes)| CollateralPlatform {
                platform,
                prefixes: prefixes
                    .into_iter()
                    .map(|(net, names)| CollateralPrefix {
                        prefix: net.to_string(),
                        names: names
                            .into_iter()
                            .map(|(name, seen)| CollateralName {
                                name,
                                last_seen: unix(seen),
                            })
                            .collect(),
                    })
                    .collect(),
            })
            .collect();
        CollateralReply { platforms }
    }

    /// What `candidate` would change against the policy in force, and its collateral.
    pub fn plan(&self, candidate: &Policy) -> PlanReply {
        let running = self.policy();
        let by_name = |policy: &Policy| -> BTreeMap<String, Platform> {
            policy
                .platforms
                .iter()
                .map(|p| (p.name.clone(), p.clone()))
                .collect()
        };
        let (old, new) = (by_name(running), by_name(candidate));
        let items = |p: Option<&Platform>| -> (BTreeSet<String>, BTreeSet<String>) {
            let Some(p) = p else {
                return Default::default();
            };
            let prefixes = p
                .entries
                .iter()
                .flat_map(|e| e.prefixes.iter().map(ToString::to_string))
                .collect();
            let names = p
                .entries
                .iter()
                .flat_map(|e| e.domains.iter().map(ToString::to_string))
                .collect();
            (prefixes, names)
        };
        let names: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
        let mut platforms = Vec::new();
        for name in names {
            let (before, after) = (old.get(name), new.get(name));
            let ((p0, n0), (p1, n1)) = (items(before), items(after));
            let diff = |a: &BTreeSet<String>, b: &BTreeSet<String>| -> Vec<String> {
                a.difference(b).cloned().collect()
            };
            let action = |p: Option<&Platform>| p.map_or("none", |p| p.action.as_str());
            let changed_action = (action(before) != action(after))
                .then(|| [action(before), action(after)].map(str::to_owned));
            let entry = PlannedPlatform {
                platform: name.clone(),
                added: PlannedItems {
                    prefixes: diff(&p1, &p0),
                    names: diff(&n1, &n0),
                },
                removed: PlannedItems {
                    prefixes: diff(&p0, &p1),
                    names: diff(&n0, &n1),
                },
                action: changed_action,
            };
            let unchanged = entry.added == PlannedItems::default()
                && entry.removed == PlannedItems::default()
                && entry.action.is_none();
            if !unchanged {
                platforms.push(entry);
            }
        }
        let addresses = self.entry_addresses_for(candidate);
        let found = match compile::compile_within(candidate, addresses, self.compiled().capacity) {
            Ok(compiled) => collateral(candidate, &compiled, &self.learner().observed),
            // A candidate the datapath cannot hold: its changes are still shown; its collateral
            // cannot be computed (`reload` would refuse it with the compiler's error).
            Err(error) => {
                tracing::warn!(%error, "plan: the candidate does not compile");
                Collateral::new()
            }
        };
        let collateral = found
            .into_iter()
            .flat_map(|(platform, prefixes)| {
                prefixes
                    .into_iter()
                    .map(move |(net, names)| PlannedCollateral {
                        platform: platform.clone(),
                        prefix: net.to_string(),
                        names: names.into_keys().collect(),
                    })
            })
            .collect();
        PlanReply {
            platforms,
            collateral,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::time::Duration;

    use super::*;
    use crate::policy::policy_of;

    #[test]
    fn a_blocked_prefix_serving_an_unlisted_name_is_collateral() {
        let policy = policy_of(&[
            "platform: media\nmatch:\n  - prefixes: [198.19.10.0/24]\n  - domains: [\"*.media.example\"]\n",
            "platform: visio\naction: allow\nmatch:\n  - prefixes: [198.19.10.9/32]\n",
        ]);
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(7);
        let mut seen = ObservedNames::new(100);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        seen.record("www.unrelated.example", &[], &[ip("198.19.10.5")], t);
        seen.record("x.media.example", &[], &[ip("198.19.10.6")], t);
        // Reached through a CNAME into the platform's own names: not collateral.
        seen.record(
            "alias.example",
            &["edge.media.example".into()],
            &[ip("198.19.10.7")],
            t,
        );
        // Inside the allow exception: never blocked.
        seen.record("visio.example", &[], &[ip("198.19.10.9")], t);
        seen.record("elsewhere.example", &[], &[ip("198.19.11.5")], t);
        let compiled = crate::compile::compile(&policy).unwrap();
        let found = collateral(&policy, &compiled, &seen);
        let net: IpNet = "198.19.10.0/24".parse().unwrap();
        let names: Vec<&String> = found["media"][&net].keys().collect();
        assert_eq!(names, ["www.unrelated.example"]);
        assert_eq!(name_counts(&found)["media"], 1);
        assert!(!found.contains_key("visio"));
    }

    #[test]
    fn wildcards_cover_names_below_only() {
        let w = DomainPattern::Wildcard("media.example".into());
        assert!(covers(&w, "a.media.example"));
        assert!(!covers(&w, "media.example"));
        assert!(!covers(&w, "xmedia.example"));
    }
}
