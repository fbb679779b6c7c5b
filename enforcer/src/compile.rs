//! Compiles a policy into what the datapath looks up: per family, a map from prefix to the full
//! list of rules that apply to addresses under it.
//!
//! The kernel does one longest-prefix lookup per address, so each prefix's list also carries the
//! rules of every enclosing prefix, with the length of the prefix each rule came from (so
//! precedence is unchanged). Lengths are kept beside the list, not in it, so that prefixes whose
//! rules differ only in where they came from share one list in the rule table. The lookup structure stays behind this module: a faster one can replace the tries
//! without touching the policy side.

use std::collections::{BTreeMap, BTreeSet};

use enforcer_common::{
    MAX_LONG_PREFIXES_V6, MAX_PLATFORMS, MAX_PREFIXES_V4, MAX_PREFIXES_V6, NameKey, NameRule,
    RULE_SLOTS, RULES_PER_SLOT, Rule,
};
use ipnet::IpNet;

use crate::policy::{Entry, Policy, Protocol};

mod names;
mod sites;
pub use names::{NameMatch, compile_names, name_key, name_verdict, wire};
pub use sites::{SiteTables, compile_sites};

/// A prefix as the tries key it: network address bits and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix<A> {
    pub addr: A,
    pub len: u8,
}

pub type PrefixV4 = Prefix<u32>;
pub type PrefixV6 = Prefix<u128>;

/// Everything that applies to addresses under one prefix: the sorted, duplicate-free rules;
/// at the same positions, the length of the policy prefix each came from; and the positions in
/// the order the datapath tries them, best first, so that the first match wins.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PrefixRules {
    pub rules: Vec<Rule>,
    pub prefix_lens: Vec<u8>,
    pub order: Vec<u8>,
}

impl PrefixRules {
    fn new(full: &BTreeMap<Rule, u8>) -> Self {
        let rules: Vec<Rule> = full.keys().copied().collect();
        let prefix_lens: Vec<u8> = full.values().copied().collect();
        // At most RULES_PER_SLOT rules reach here (checked by the caller), so every index fits.
        let count = u8::try_from(rules.len()).unwrap_or(u8::MAX);
        let mut order: Vec<u8> = (0..count).collect();
        // Best first: action precedence, then the longer prefix, then platform name order.
        order.sort_by_key(|&i| {
            let (rule, len) = (rules[usize::from(i)], prefix_lens[usize::from(i)]);
            (
                std::cmp::Reverse(enforcer_common::action_precedence(rule.action)),
                std::cmp::Reverse(len),
                rule.rank,
                i,
            )
        });
        Self {
            rules,
            prefix_lens,
            order,
        }
    }
}

/// The compiled policy: every prefix with the rules that apply under it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompiledPolicy {
    pub v4: BTreeMap<PrefixV4, PrefixRules>,
    pub v6: BTreeMap<PrefixV6, PrefixRules>,
    /// How many prefixes use each distinct rule list (one rule slot each), kept up to date by
    /// this module's functions so that adding learned hosts can check the table's limit without
    /// a pass over every prefix. (`rule_lists` reads the prefixes themselves.)
    lists: BTreeMap<Vec<Rule>, usize>,
    /// How many IPv6 prefixes are longer than /64, kept up to date like `lists`.
    long_v6: usize,
    /// The capacity it was compiled against, which learned hosts are checked against too.
    pub capacity: Capacity,
    /// The name table: for each suffix of the patterns of entries that enforce by name, what it
    /// says (see `enforcer_common::NameRule`). Written with the prefixes, behind the same switch.
    pub names: BTreeMap<NameKey, NameRule>,
    /// The sites' prefixes and variants (see `compile_sites`); empty until the daemon adds
    /// them. Written with the prefixes, behind the same switch.
    pub sites: SiteTables,
}

impl CompiledPolicy {
    fn new(v4: BTreeMap<PrefixV4, PrefixRules>, v6: BTreeMap<PrefixV6, PrefixRules>) -> Self {
        // Counted by reference first: a million prefixes share a few dozen lists.
        let mut counts: foldhash::HashMap<&[Rule], usize> = foldhash::HashMap::default();
        for p in v4.values().chain(v6.values()) {
            *counts.entry(p.rules.as_slice()).or_default() += 1;
        }
        let lists: BTreeMap<Vec<Rule>, usize> = counts
            .into_iter()
            .map(|(list, count)| (list.to_vec(), count))
            .collect();
        let long_v6 = v6.keys().filter(|p| p.len > 64).count();
        Self {
            v4,
            v6,
            lists,
            long_v6,
            capacity: Capacity::default(),
            names: BTreeMap::new(),
            sites: SiteTables::default(),
        }
    }

    /// The distinct rule lists, each of which needs one rule slot.
    pub fn rule_lists(&self) -> BTreeSet<&[Rule]> {
        self.v4
            .values()
            .chain(self.v6.values())
            .map(|p| p.rules.as_slice())
            .collect()
    }
}

/// The most distinct rule lists one policy may use: half the table, since a change writes its
/// new lists beside the ones in force.
const MAX_RULE_LISTS: u32 = RULE_SLOTS / 2;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CompileError {
    #[error("{count} platforms exceed the datapath's limit of {limit}")]
    TooManyPlatforms { count: usize, limit: u32 },
    #[error(
        "{prefix}: {count} rules apply to this prefix (with the prefixes that contain it); the datapath holds at most {limit}"
    )]
    TooManyRules {
        prefix: IpNet,
        count: usize,
        limit: usize,
    },
    #[error("{count} {family} prefixes exceed the datapath's capacity of {limit}")]
    TooManyPrefixes {
        family: &'static str,
        count: usize,
        limit: u32,
    },
    #[error("{count} distinct rule lists exceed the {limit} the rule table can switch atomically")]
    TooManyRuleLists { count: usize, limit: u32 },
    #[error(
        "{count} distinct combinations of rules and the prefix lengths they come from exceed \
         the {limit} the lookup table holds (nested prefixes of many lengths make them)"
    )]
    TooManyCombinations { count: usize, limit: u32 },
    #[error("{count} name patterns exceed the datapath's name table of {limit}")]
    TooManyNames { count: usize, limit: u32 },
    #[error("the sites' `action-by-site` overrides make more than {limit} distinct combinations")]
    TooManyVariants { limit: u32 },
    #[error("{count} site prefixes exceed the datapath's {limit}")]
    TooManySitePrefixes { count: usize, limit: u32 },
}

/// Address bits that `Prefix` can hold (u32 for IPv4, u128 for IPv6).
pub trait Bits: Copy + Ord {
    fn mask(self, len: u8) -> Self;
}

impl Bits for u32 {
    fn mask(self, len: u8) -> Self {
        if len == 0 {
            0
        } else {
            self & (u32::MAX << (32 - u32::from(len)))
        }
    }
}

impl Bits for u128 {
    fn mask(self, len: u8) -> Self {
        if len == 0 {
            0
        } else {
            self & (u128::MAX << (128 - u32::from(len)))
        }
    }
}

impl<A: Bits> Prefix<A> {
    fn contains(&self, other: &Prefix<A>) -> bool {
        self.len <= other.len && other.addr.mask(self.len) == self.addr
    }
}

/// An address learned for one entry of a platform (from DNS), enforced like a host prefix of
/// that entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryAddress {
    /// Index into `Policy::platforms`.
    pub platform: usize,
    /// Index into that platform's `entries`.
    pub entry: usize,
    pub net: IpNet,
}

/// How many prefixes of each family the datapath holds (`--max-prefixes-v4`/`-v6`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    pub v4: u32,
    pub v6: u32,
}

impl Default for Capacity {
    fn default() -> Self {
        Self {
            v4: MAX_PREFIXES_V4,
            v6: MAX_PREFIXES_V6,
        }
    }
}

/// Compiles the policy's published prefixes.
pub fn compile(policy: &Policy) -> Result<CompiledPolicy, CompileError> {
    compile_with(policy, std::iter::empty())
}

/// Compiles the published prefixes plus addresses resolved or learned for the policy's domains,
/// against the default capacity. Addresses naming a platform or entry that does not exist are
/// ignored.
pub fn compile_with(
    policy: &Policy,
    addresses: impl IntoIterator<Item = EntryAddress>,
) -> Result<CompiledPolicy, CompileError> {
    compile_within(policy, addresses, Capacity::default())
}

/// As [`compile_with`], against `capacity`.
pub fn compile_within(
    policy: &Policy,
    addresses: impl IntoIterator<Item = EntryAddress>,
    capacity: Capacity,
) -> Result<CompiledPolicy, CompileError> {
    if policy.platforms.len() >= MAX_PLATFORMS as usize {
        return Err(CompileError::TooManyPlatforms {
            count: policy.platforms.len(),
            limit: MAX_PLATFORMS - 1,
        });
    }
    // Every (prefix, rule) pair, sorted and deduplicated below: a million prefixes without a
    // set allocated for each. Rules of one prefix share its length, which `inherit` attaches.
    let mut own_v4: Vec<(PrefixV4, Rule)> = Vec::new();
    let mut own_v6: Vec<(PrefixV6, Rule)> = Vec::new();
    let mut add = |platform: usize, entry: &Entry, nets: &mut dyn Iterator<Item = IpNet>| {
        let action = policy.platforms[platform].action.code();
        let rules = entry_rules(
            policy.platform_id(platform),
            Policy::platform_rank(platform),
            action,
            entry,
        );
        for net in nets {
            match net {
                IpNet::V4(n) => {
                    let prefix = Prefix {
                        addr: u32::from(n.network()),
                        len: n.prefix_len(),
                    };
                    own_v4.extend(rules.iter().map(|&r| (prefix, r)));
                }
                IpNet::V6(n) => {
                    let prefix = Prefix {
                        addr: u128::from(n.network()),
                        len: n.prefix_len(),
                    };
                    own_v6.extend(rules.iter().map(|&r| (prefix, r)));
                }
            }
        }
    };
    for (index, platform) in policy.platforms.iter().enumerate() {
        for entry in &platform.entries {
            add(index, entry, &mut entry.prefixes.iter().copied());
        }
    }
    for address in addresses {
        if let Some(entry) = policy
            .platforms
            .get(address.platform)
            .and_then(|p| p.entries.get(address.entry))
        {
            add(
                address.platform,
                entry,
                &mut std::iter::once(address.net.trunc()),
            );
        }
    }
    own_v4.sort_unstable();
    own_v4.dedup();
    own_v6.sort_unstable();
    own_v6.dedup();
    check_capacity("IPv4", distinct(&own_v4), capacity.v4)?;
    check_capacity("IPv6", distinct(&own_v6), capacity.v6)?;
    check_capacity(
        LONG_V6,
        own_v6
            .chunk_by(|a, b| a.0 == b.0)
            .filter(|group| group[0].0.len > 64)
            .count(),
        MAX_LONG_PREFIXES_V6,
    )?;
    let mut compiled = CompiledPolicy::new(
        inherit(&own_v4, |p| IpNet::V4(ipv4_net(p)))?,
        inherit(&own_v6, |p| IpNet::V6(ipv6_net(p)))?,
    );
    check_rule_lists(compiled.lists.len())?;
    check_combinations(&compiled)?;
    compiled.capacity = capacity;
    compiled.names = compile_names(policy)?;
    Ok(compiled)
}

/// Adds host addresses (one /32 or /128 each) to an already compiled policy exactly as
/// [`compile_with`] would have: each host gets its entry's rules plus every rule of the longest
/// enclosing prefix. A host is the most specific prefix there is, so nothing else changes; this
/// is how an address learned from DNS reaches the datapath without recompiling everything.
/// Returns the hosts whose rules changed, for the datapath to write.
pub fn add_hosts(
    compiled: &mut CompiledPolicy,
    policy: &Policy,
    addresses: &[EntryAddress],
) -> Result<Vec<IpNet>, CompileError> {
    // Every host's new rules are worked out first, against the compiled policy plus the hosts
    // already met in this batch; nothing changes unless the whole batch fits, exactly as a full
    // compile would have accepted or refused it.
    let mut v4: BTreeMap<PrefixV4, BTreeMap<Rule, u8>> = BTreeMap::new();
    let mut v6: BTreeMap<PrefixV6, BTreeMap<Rule, u8>> = BTreeMap::new();
    for address in addresses {
        let Some(platform) = policy.platforms.get(address.platform) else {
            continue;
        };
        let Some(entry) = platform.entries.get(address.entry) else {
            continue;
        };
        let rules = entry_rules(
            policy.platform_id(address.platform),
            Policy::platform_rank(address.platform),
            platform.action.code(),
            entry,
        );
        match address.net.addr() {
            std::net::IpAddr::V4(a) => merge_host(
                &compiled.v4,
                &mut v4,
                Prefix {
                    addr: u32::from(a),
                    len: 32,
                },
                rules,
                |p| IpNet::V4(ipv4_net(p)),
            )?,
            std::net::IpAddr::V6(a) => merge_host(
                &compiled.v6,
                &mut v6,
                Prefix {
                    addr: u128::from(a),
                    len: 128,
                },
                rules,
                |p| IpNet::V6(ipv6_net(p)),
            )?,
        }
    }
    let v4 = changed_hosts(&compiled.v4, v4);
    let v6 = changed_hosts(&compiled.v6, v6);
    let new_v4 = v4.keys().filter(|h| !compiled.v4.contains_key(h)).count();
    let new_v6 = v6.keys().filter(|h| !compiled.v6.contains_key(h)).count();
    check_capacity("IPv4", compiled.v4.len() + new_v4, compiled.capacity.v4)?;
    check_capacity("IPv6", compiled.v6.len() + new_v6, compiled.capacity.v6)?;
    // Learned hosts go to the datapath's exact table at first, but into the long-prefix table
    // at the next full build, so they count against it now.
    check_capacity(LONG_V6, compiled.long_v6 + new_v6, MAX_LONG_PREFIXES_V6)?;
    let mut lists = compiled.lists.clone();
    let mut count_list = |old: Option<&PrefixRules>, new: &PrefixRules| {
        if let Some(old) = old
            && let Some(uses) = lists.get_mut(&old.rules)
        {
            *uses -= 1;
            if *uses == 0 {
                lists.remove(&old.rules);
            }
        }
        *lists.entry(new.rules.clone()).or_default() += 1;
    };
    for (host, rules) in &v4 {
        count_list(compiled.v4.get(host), rules);
    }
    for (host, rules) in &v6 {
        count_list(compiled.v6.get(host), rules);
    }
    check_rule_lists(lists.len())?;
    compiled.lists = lists;
    let mut changed: Vec<IpNet> = Vec::with_capacity(v4.len() + v6.len());
    for (host, rules) in v4 {
        changed.push(IpNet::V4(ipv4_net(host)));
        compiled.v4.insert(host, rules);
    }
    for (host, rules) in v6 {
        changed.push(IpNet::V6(ipv6_net(host)));
        if compiled.v6.insert(host, rules).is_none() {
            compiled.long_v6 += 1;
        }
    }
    Ok(changed)
}

/// Adds `rules` to `host` in `pending` (the batch so far), starting from the host's rules in
/// `map`, or else those of its longest enclosing prefix.
fn merge_host<A: Bits>(
    map: &BTreeMap<Prefix<A>, PrefixRules>,
    pending: &mut BTreeMap<Prefix<A>, BTreeMap<Rule, u8>>,
    host: Prefix<A>,
    rules: Vec<Rule>,
    display: impl Fn(Prefix<A>) -> IpNet,
) -> Result<(), CompileError> {
    let full = match pending.get_mut(&host) {
        Some(full) => full,
        None => {
            let start = map.get(&host).map(full_of).unwrap_or_else(|| {
                (0..host.len)
                    .rev()
                    .find_map(|len| {
                        map.get(&Prefix {
                            addr: host.addr.mask(len),
                            len,
                        })
                    })
                    .map(full_of)
                    .unwrap_or_default()
            });
            pending.entry(host).or_insert(start)
        }
    };
    for rule in rules {
        full.insert(rule, host.len);
    }
    if full.len() > RULES_PER_SLOT {
        return Err(CompileError::TooManyRules {
            prefix: display(host),
            count: full.len(),
            limit: RULES_PER_SLOT,
        });
    }
    Ok(())
}

/// The hosts of `pending` whose rules differ from what `map` holds, compiled.
fn changed_hosts<A: Bits>(
    map: &BTreeMap<Prefix<A>, PrefixRules>,
    pending: BTreeMap<Prefix<A>, BTreeMap<Rule, u8>>,
) -> BTreeMap<Prefix<A>, PrefixRules> {
    pending
        .into_iter()
        .filter(|(host, full)| map.get(host).map(full_of).as_ref() != Some(full))
        .map(|(host, full)| (host, PrefixRules::new(&full)))
        .collect()
}

/// A compiled prefix's rules with the length each came from.
fn full_of(p: &PrefixRules) -> BTreeMap<Rule, u8> {
    p.rules
        .iter()
        .copied()
        .zip(p.prefix_lens.iter().copied())
        .collect()
}

fn check_rule_lists(count: usize) -> Result<(), CompileError> {
    if count > MAX_RULE_LISTS as usize {
        return Err(CompileError::TooManyRuleLists {
            count,
            limit: MAX_RULE_LISTS,
        });
    }
    Ok(())
}

/// Each distinct rule list with its prefix lengths is one leaf of the datapath's lookup table.
fn check_combinations(compiled: &CompiledPolicy) -> Result<(), CompileError> {
    let distinct: foldhash::HashSet<&PrefixRules> =
        compiled.v4.values().chain(compiled.v6.values()).collect();
    let limit = enforcer_common::LEAVES_PER_GENERATION - 1;
    if distinct.len() > limit as usize {
        return Err(CompileError::TooManyCombinations {
            count: distinct.len(),
            limit,
        });
    }
    Ok(())
}

/// How many distinct prefixes a sorted list of (prefix, rule) pairs holds.
fn distinct<A: PartialEq>(own: &[(Prefix<A>, Rule)]) -> usize {
    own.chunk_by(|a, b| a.0 == b.0).count()
}

/// IPv6 prefixes longer than /64 (hosts among them) have a table of their own in the datapath.
const LONG_V6: &str = "IPv6 (longer than /64)";

fn check_capacity(family: &'static str, count: usize, limit: u32) -> Result<(), CompileError> {
    if count > limit as usize {
        return Err(CompileError::TooManyPrefixes {
            family,
            count,
            limit,
        });
    }
    Ok(())
}

/// The datapath rules of one entry: one per port range, or one for the whole protocol.
/// The entries with domains (platform index, entry index) whose rules a host key of the
/// datapath carries as its own (`own`: the rules given at the host's full length), for
/// rebuilding the DNS addresses in force from the pinned maps. Rules are compared by platform
/// id, protocol and ports (ids last across restarts; ranks and actions may have moved).
pub fn entries_of_host(policy: &Policy, own: &[Rule]) -> Vec<(usize, usize)> {
    let same = |a: &Rule, b: &Rule| {
        (
            a.platform,
            a.protocol,
            a.port_first,
            a.port_last,
            a.has_ports,
        ) == (
            b.platform,
            b.protocol,
            b.port_first,
            b.port_last,
            b.has_ports,
        )
    };
    let mut found = Vec::new();
    for (p, platform) in policy.platforms.iter().enumerate() {
        for (e, entry) in platform.entries.iter().enumerate() {
            // Names enforced by name alone never become addresses, whatever the maps hold.
            if entry.domains.is_empty() || !entry.enforce.by_address() {
                continue;
            }
            let rules = entry_rules(policy.platform_id(p), 0, 0, entry);
            if rules.iter().all(|r| own.iter().any(|o| same(r, o))) {
                found.push((p, e));
            }
        }
    }
    found
}

fn entry_rules(platform: u16, rank: u16, action: u8, entry: &Entry) -> Vec<Rule> {
    let base = Rule {
        platform,
        rank,
        _pad0: 0,
        action,
        protocol: entry.protocol.code(),
        port_first: 0,
        port_last: u16::MAX,
        has_ports: 0,
        _pad: [0; 4],
    };
    if entry.protocol == Protocol::Any || entry.ports.is_empty() {
        return vec![base];
    }
    entry
        .ports
        .iter()
        .map(|range| Rule {
            port_first: range.first,
            port_last: range.last,
            has_ports: 1,
            ..base
        })
        .collect()
}

/// Adds to each prefix the rules of every prefix that contains it. Walking in address order,
/// enclosing prefixes come first, so a stack of the current chain of containers suffices. A rule
/// present at several levels keeps the longest length: it dominates the shorter copies.
fn inherit<A: Bits>(
    own: &[(Prefix<A>, Rule)],
    display: impl Fn(Prefix<A>) -> IpNet,
) -> Result<BTreeMap<Prefix<A>, PrefixRules>, CompileError> {
    let mut chain: Vec<(Prefix<A>, BTreeMap<Rule, u8>)> = Vec::new();
    let mut out = Vec::new();
    for group in own.chunk_by(|a, b| a.0 == b.0) {
        let prefix = group[0].0;
        while chain
            .last()
            .is_some_and(|(outer, _)| !outer.contains(&prefix))
        {
            chain.pop();
        }
        let mut full = chain
            .last()
            .map(|(_, outer)| outer.clone())
            .unwrap_or_default();
        for &(_, rule) in group {
            full.insert(rule, prefix.len);
        }
        if full.len() > RULES_PER_SLOT {
            return Err(CompileError::TooManyRules {
                prefix: display(prefix),
                count: full.len(),
                limit: RULES_PER_SLOT,
            });
        }
        out.push((prefix, PrefixRules::new(&full)));
        chain.push((prefix, full));
    }
    // In order already: built in bulk.
    Ok(out.into_iter().collect())
}

fn ipv4_net(p: PrefixV4) -> ipnet::Ipv4Net {
    ipnet::Ipv4Net::new(p.addr.into(), p.len).unwrap_or_default()
}

fn ipv6_net(p: PrefixV6) -> ipnet::Ipv6Net {
    ipnet::Ipv6Net::new(p.addr.into(), p.len).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Action, Location, Platform, PortRange};

    fn entry(prefixes: &[&str], protocol: Protocol, ports: &[(u16, u16)]) -> Entry {
        Entry {
            index: 0,
            domains: vec![],
            prefixes: prefixes.iter().map(|p| p.parse().unwrap()).collect(),
            protocol,
            ports: ports
                .iter()
                .map(|&(first, last)| PortRange { first, last })
                .collect(),
            enforce: crate::policy::Enforce::Both,
            location: Location {
                path: "t.yaml".into(),
                line: 1,
                column: 1,
            },
        }
    }

    fn platform(name: &str, action: Action, entries: Vec<Entry>) -> Platform {
        Platform {
            data_date: None,
            feed: None,
            action_by_site: Vec::new(),
            name: name.into(),
            id: 0,
            description: None,
            reference: None,
            action,
            entries,
            location: Location {
                path: "t.yaml".into(),
                line: 1,
                column: 1,
            },
        }
    }

    fn v4(s: &str) -> PrefixV4 {
        let n: ipnet::Ipv4Net = s.parse().unwrap();
        Prefix {
            addr: n.network().into(),
            len: n.prefix_len(),
        }
    }

    #[test]
    fn adding_hosts_equals_compiling_them() {
        let mut banned = entry(&["198.19.0.0/16", "2001:db8::/32"], Protocol::Any, &[]);
        banned.index = 0;
        let mut relay = entry(&["198.19.10.0/24"], Protocol::Udp, &[(3478, 3478)]);
        relay.index = 1;
        let policy = Policy {
            platforms: vec![
                platform(
                    "allowed",
                    Action::Allow,
                    vec![entry(&["198.19.10.77/32"], Protocol::Any, &[])],
                ),
                platform("media", Action::Drop, vec![banned, relay]),
            ],
        };
        let host = |platform, entry, net: &str| EntryAddress {
            platform,
            entry,
            net: net.parse().unwrap(),
        };
        let first = [host(1, 0, "203.0.113.9/32")];
        let later = [
            host(1, 1, "198.19.10.5/32"),  // inside two enclosing prefixes
            host(1, 0, "198.19.10.77/32"), // an existing host prefix of another platform
            host(1, 0, "203.0.113.9/32"),  // already there: no change
            host(1, 0, "2001:db8::5/128"),
            host(0, 0, "198.51.100.1/32"), // outside everything
        ];
        let mut compiled = compile_with(&policy, first).unwrap();
        let changed = add_hosts(&mut compiled, &policy, &later).unwrap();
        let expected = compile_with(&policy, first.into_iter().chain(later)).unwrap();
        assert_eq!(compiled, expected);
        assert_eq!(changed.len(), 4, "{changed:?}");
        assert!(!changed.contains(&"203.0.113.9/32".parse().unwrap()));
    }

    #[test]
    fn nested_prefixes_inherit_enclosing_rules() {
        let policy = Policy {
            platforms: vec![
                platform(
                    "a",
                    Action::Drop,
                    vec![entry(&["198.18.0.0/16"], Protocol::Any, &[])],
                ),
                platform(
                    "b",
                    Action::Allow,
                    vec![entry(
                        &["198.18.5.0/24"],
                        Protocol::Udp,
                        &[(3478, 3478), (8801, 8810)],
                    )],
                ),
                platform(
                    "c",
                    Action::Monitor,
                    vec![entry(&["198.19.0.0/16"], Protocol::Tcp, &[])],
                ),
            ],
        };
        let c = compile(&policy).unwrap();
        assert_eq!(c.v4.len(), 3);
        let outer = &c.v4[&v4("198.18.0.0/16")];
        assert_eq!(outer.rules.len(), 1);
        assert_eq!(
            (
                outer.rules[0].platform,
                outer.prefix_lens[0],
                outer.rules[0].has_ports
            ),
            (1, 16, 0)
        );
        let inner = &c.v4[&v4("198.18.5.0/24")];
        assert_eq!(
            inner.rules.len(),
            3,
            "two port rules of b plus a's any-port rule"
        );
        let with_len: Vec<(u16, u8)> = inner
            .rules
            .iter()
            .zip(&inner.prefix_lens)
            .map(|(r, l)| (r.platform, *l))
            .collect();
        assert_eq!(with_len, vec![(1, 16), (2, 24), (2, 24)]);
        let tried: Vec<u16> = inner
            .order
            .iter()
            .map(|&i| inner.rules[usize::from(i)].platform)
            .collect();
        assert_eq!(
            tried,
            vec![2, 2, 1],
            "the allow exception is tried before the enclosing drop"
        );
        assert!(inner.rules.iter().any(|r| r.platform == 2
            && r.port_first == 8801
            && r.port_last == 8810
            && r.has_ports == 1));
        let sibling = &c.v4[&v4("198.19.0.0/16")];
        assert_eq!(sibling.rules.len(), 1, "a sibling prefix inherits nothing");
        assert_eq!(sibling.rules[0].protocol, enforcer_common::PROTOCOL_TCP);
    }

    #[test]
    fn same_prefix_in_two_platforms_keeps_both_rules() {
        let policy = Policy {
            platforms: vec![
                platform(
                    "a",
                    Action::Drop,
                    vec![entry(&["2001:db8::/32"], Protocol::Udp, &[(3478, 3478)])],
                ),
                platform(
                    "b",
                    Action::Drop,
                    vec![entry(&["2001:db8::/32"], Protocol::Any, &[])],
                ),
            ],
        };
        let c = compile(&policy).unwrap();
        assert_eq!(c.v6.len(), 1);
        let rules = c.v6.values().next().unwrap();
        assert_eq!(rules.rules.len(), 2);
        assert_eq!(c.rule_lists().len(), 1);
    }

    #[test]
    fn too_many_rules_for_one_prefix_is_an_error_naming_it() {
        let ports: Vec<(u16, u16)> = (1..=40).map(|p| (p * 10, p * 10)).collect();
        let policy = Policy {
            platforms: vec![platform(
                "a",
                Action::Drop,
                vec![entry(&["198.18.0.0/24"], Protocol::Udp, &ports)],
            )],
        };
        let err = compile(&policy).unwrap_err();
        assert!(
            err.to_string().starts_with("198.18.0.0/24: 40 rules"),
            "{err}"
        );
    }

    #[test]
    fn a_host_in_force_is_never_given_to_an_entry_enforced_by_name() {
        let mut by_name = entry(&[], Protocol::Any, &[]);
        by_name.domains = vec![crate::policy::DomainPattern::Exact("a.example".into())];
        by_name.enforce = crate::policy::Enforce::Name;
        let mut by_address = by_name.clone();
        by_address.index = 1;
        by_address.enforce = crate::policy::Enforce::Address;
        let policy = Policy {
            platforms: vec![platform("p", Action::Drop, vec![by_name, by_address])],
        };
        let own = entry_rules(
            1,
            1,
            enforcer_common::ACTION_DROP,
            &policy.platforms[0].entries[0],
        );
        assert_eq!(entries_of_host(&policy, &own), [(0, 1)]);
    }

    #[test]
    fn deep_chain_pops_back_to_the_right_container() {
        let policy = Policy {
            platforms: vec![platform(
                "a",
                Action::Drop,
                vec![entry(
                    &[
                        "198.18.0.0/15",
                        "198.18.0.0/16",
                        "198.18.1.0/24",
                        "198.18.2.0/24",
                        "198.19.0.0/16",
                    ],
                    Protocol::Any,
                    &[],
                )],
            )],
        };
        let c = compile(&policy).unwrap();
        // One any-port rule of one platform: the innermost copy's length wins, and every prefix
        // shares one rule list.
        let lens = |p: &str| -> Vec<u8> { c.v4[&v4(p)].prefix_lens.clone() };
        assert_eq!(lens("198.18.2.0/24"), vec![24]);
        assert_eq!(lens("198.19.0.0/16"), vec![16]);
        assert_eq!(lens("198.18.0.0/15"), vec![15]);
        assert_eq!(c.rule_lists().len(), 1);
    }
}
