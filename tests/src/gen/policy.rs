//! Random policies over a small pool of nested and overlapping prefixes, so that the prefixes of
//! different entries and platforms contain one another often.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use enforcer::compile::EntryAddress;
use enforcer::policy::Sites;
use enforcer::policy::model::{
    Action, DomainPattern, Entry, Location, Platform, Policy, PortRange, Protocol, SiteAction,
};
use enforcer_common::MAX_PLATFORMS;
use ipnet::IpNet;
use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};

/// IPv4 prefixes inside 198.18.0.0/15, nested several levels deep and overlapping.
pub const V4_POOL: &[&str] = &[
    "198.18.0.0/15",
    "198.18.0.0/16",
    "198.19.0.0/16",
    "198.18.0.0/20",
    "198.18.1.0/24",
    "198.18.1.128/25",
    "198.18.1.192/26",
    "198.18.1.200/30",
    "198.18.1.7/32",
    "198.18.1.201/32",
    "198.18.16.0/20",
    "198.19.7.0/24",
    "198.19.7.0/28",
    "198.19.7.5/32",
    "198.19.255.255/32",
];

/// IPv6 prefixes inside 2001:db8::/32.
pub const V6_POOL: &[&str] = &[
    "2001:db8::/32",
    "2001:db8::/33",
    "2001:db8:8000::/33",
    "2001:db8::/48",
    "2001:db8:0:1::/64",
    "2001:db8:0:1::/96",
    "2001:db8:0:1::1/128",
    "2001:db8:0:1::80/121",
    "2001:db8:1::/48",
    "2001:db8:1:2::/64",
    "2001:db8:1:2:3::/80",
    "2001:db8:1:2:3::7/128",
    "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff/128",
];

/// Ports that packets use and that the port ranges below start, end or just miss.
pub const PORTS: &[u16] = &[
    0, 1, 53, 80, 443, 1023, 1024, 3477, 3478, 3479, 3481, 3482, 8801, 8805, 8810, 8811, 49999,
    50000, 65535,
];

/// Port ranges for entries: single ports and ranges.
pub const PORT_RANGES: &[(u16, u16)] = &[
    (53, 53),
    (80, 80),
    (443, 443),
    (3478, 3478),
    (3478, 3481),
    (8801, 8810),
    (8810, 8811),
    (1, 1023),
    (1024, 65535),
    (50000, 65535),
    (65535, 65535),
];

const NAMES: &[&str] = &[
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
];

/// The pool as parsed prefixes (the constants are checked by a unit test).
pub fn pool(v6: bool) -> Vec<IpNet> {
    let texts = if v6 { V6_POOL } else { V4_POOL };
    texts.iter().filter_map(|t| t.parse().ok()).collect()
}

/// A policy plus addresses "resolved" for its domain entries.
#[derive(Clone, Debug, Default)]
pub struct GeneratedPolicy {
    pub policy: Policy,
    pub addresses: Vec<EntryAddress>,
}

fn location() -> Location {
    Location {
        path: "generated.yaml".into(),
        line: 1,
        column: 1,
    }
}

/// The sites of every generated policy: clients in and outside the pools (frames draw sources
/// and destinations from both), and addresses in no site (`other`).
pub const LAB_SITES: &str = "\
north: [198.18.0.0/20, \"2001:db8::/48\", 10.0.0.0/8]
south: [198.19.0.0/16, \"2001:db8:1::/48\", \"fe80::/10\"]
east: [198.18.16.0/20, \"2001:db8:8000::/33\", 203.0.113.0/24]
";

/// `LAB_SITES`, parsed.
pub fn lab_sites() -> Sites {
    Sites::parse(std::path::Path::new("lab-sites.yaml"), LAB_SITES)
        .unwrap_or_else(|e| panic!("LAB_SITES: {e:?}"))
}

/// Per-site actions for some of the lab's sites, half the time.
fn random_site_actions(rng: &mut impl Rng) -> Vec<SiteAction> {
    if rng.random_bool(0.5) {
        return Vec::new();
    }
    let mut actions = Vec::new();
    for site in ["east", "north", "south"] {
        if rng.random_bool(0.6) {
            actions.push(SiteAction {
                site: site.to_string(),
                action: random_action(rng),
                location: location(),
            });
        }
    }
    actions
}

fn random_action(rng: &mut impl Rng) -> Action {
    match rng.random_range(0..3) {
        0 => Action::Drop,
        1 => Action::Monitor,
        _ => Action::Allow,
    }
}

fn random_prefix(rng: &mut impl Rng) -> Option<IpNet> {
    pool(rng.random_bool(0.5)).choose(rng).copied()
}

fn random_entry(rng: &mut impl Rng, index: usize) -> Entry {
    let protocol = match rng.random_range(0..10) {
        0..=3 => Protocol::Any,
        4..=6 => Protocol::Udp,
        _ => Protocol::Tcp,
    };
    let ports = if protocol == Protocol::Any || rng.random_bool(0.35) {
        Vec::new()
    } else {
        let count = rng.random_range(1..=3);
        let mut ranges: Vec<PortRange> = PORT_RANGES
            .choose_multiple(rng, count)
            .map(|&(first, last)| PortRange { first, last })
            .collect();
        ranges.sort();
        ranges
    };
    let domain_only = rng.random_bool(0.1);
    let prefixes = if domain_only {
        Vec::new()
    } else {
        let count = rng.random_range(1..=3);
        let mut prefixes: Vec<IpNet> = (0..count).filter_map(|_| random_prefix(rng)).collect();
        prefixes.sort();
        prefixes.dedup();
        prefixes
    };
    let domains = if domain_only || rng.random_bool(0.1) {
        vec![DomainPattern::Exact(format!("e{index}.example.com"))]
    } else {
        Vec::new()
    };
    Entry {
        index,
        domains,
        prefixes,
        protocol,
        ports,
        enforce: enforcer::policy::Enforce::Both,
        location: location(),
    }
}

/// A random policy of 1..=5 platforms with 1..=4 entries each. Some entries have domains, and
/// some of those get "resolved" addresses (pool prefixes, usually hosts) like DNS would give.
pub fn random_policy(rng: &mut impl Rng) -> GeneratedPolicy {
    let count = rng.random_range(1..=5);
    let mut names: Vec<&str> = NAMES.choose_multiple(rng, count).copied().collect();
    names.sort();
    let mut generated = GeneratedPolicy::default();
    for (p, name) in names.into_iter().enumerate() {
        let entries: Vec<Entry> = (0..rng.random_range(1..=4))
            .map(|i| random_entry(rng, i))
            .collect();
        for (e, entry) in entries.iter().enumerate() {
            if entry.domains.is_empty() || rng.random_bool(0.3) {
                continue;
            }
            for _ in 0..rng.random_range(1..=3) {
                let net = if rng.random_bool(0.7) {
                    let v6 = rng.random_bool(0.5);
                    host_prefix(random_address(rng, v6, true))
                } else {
                    random_prefix(rng)
                };
                if let Some(net) = net {
                    generated.addresses.push(EntryAddress {
                        platform: p,
                        entry: e,
                        net,
                    });
                }
            }
        }
        generated.policy.platforms.push(Platform {
            data_date: None,
            feed: None,
            action_by_site: random_site_actions(rng),
            name: name.to_string(),
            id: 0,
            description: None,
            reference: None,
            action: random_action(rng),
            entries,
            location: location(),
        });
    }
    assign_ids(rng, &mut generated.policy);
    generated
}

/// Gives the platforms distinct datapath ids out of name order, as a daemon's lasting ids become
/// once platforms come and go (counters follow the id, ties follow the name): usually anywhere in
/// 1..MAX_PLATFORMS, sometimes the highest ids the counters hold, sometimes none at all (ids then
/// follow name order).
fn assign_ids(rng: &mut impl Rng, policy: &mut Policy) {
    let count = policy.platforms.len();
    let top = MAX_PLATFORMS as usize - 1;
    let mut ids: Vec<usize> = match rng.random_range(0..10) {
        0 => vec![0; count],
        1 => (top + 1 - count.min(top)..=top).collect(),
        _ => rand::seq::index::sample(rng, top, count.min(top))
            .into_iter()
            .map(|i| i + 1)
            .collect(),
    };
    ids.shuffle(rng);
    for (platform, id) in policy.platforms.iter_mut().zip(ids) {
        platform.id = u16::try_from(id).unwrap_or(0);
    }
}

/// `count` host addresses learned from DNS for random entries of the policy (entries with
/// domains when there are any, as the daemon learns only for those): usually inside the pool,
/// where they nest under published prefixes, sometimes outside it.
pub fn random_learned(rng: &mut impl Rng, policy: &Policy, count: usize) -> Vec<EntryAddress> {
    let entries: Vec<(usize, usize, bool)> = policy
        .platforms
        .iter()
        .enumerate()
        .flat_map(|(p, platform)| {
            platform
                .entries
                .iter()
                .enumerate()
                .map(move |(e, entry)| (p, e, !entry.domains.is_empty()))
        })
        .collect();
    let with_domains: Vec<(usize, usize, bool)> = entries.iter().copied().filter(|e| e.2).collect();
    let pick_from = if with_domains.is_empty() {
        &entries
    } else {
        &with_domains
    };
    (0..count)
        .filter_map(|_| {
            let &(platform, entry, _) = pick_from.choose(rng)?;
            let (v6, inside) = (rng.random_bool(0.5), rng.random_bool(0.85));
            let ip = random_address(rng, v6, inside);
            Some(EntryAddress {
                platform,
                entry,
                net: host_prefix(ip)?,
            })
        })
        .collect()
}

/// Ports that the crowded platforms of [`crowded_policy`] name, one rule each.
pub const CROWDED_PORTS: std::ops::RangeInclusive<u16> = 2000..=2063;

/// A random policy plus one to three platforms (named after all the others) whose entries pile
/// `wanted` single-port rules (at most 64) onto one chain of nested pool prefixes, so that at
/// least that many rules apply to the chain's innermost prefix. Returns the policy and that
/// innermost prefix.
pub fn crowded_policy(rng: &mut impl Rng, wanted: usize) -> (GeneratedPolicy, IpNet) {
    let mut generated = random_policy(rng);
    let pool = pool(rng.random_bool(0.5));
    let inner = pool.choose(rng).copied().unwrap_or_default();
    let chain: Vec<IpNet> = pool
        .iter()
        .copied()
        .filter(|n| n.contains(&inner))
        .collect();
    let mut ports: Vec<u16> = CROWDED_PORTS.collect();
    ports.shuffle(rng);
    let mut ports = ports.into_iter().take(wanted).peekable();
    let names = ["zz0", "zz1", "zz2"];
    let mut crowd: Vec<Vec<Entry>> = vec![Vec::new(); rng.random_range(1..=names.len())];
    while ports.peek().is_some() {
        let count = rng.random_range(1..=12usize);
        let mut ranges: Vec<PortRange> = ports
            .by_ref()
            .take(count)
            .map(|port| PortRange {
                first: port,
                last: port,
            })
            .collect();
        ranges.sort();
        let platform = rng.random_range(0..crowd.len());
        let entries = &mut crowd[platform];
        entries.push(Entry {
            index: entries.len(),
            domains: Vec::new(),
            prefixes: vec![chain.choose(rng).copied().unwrap_or(inner)],
            protocol: if rng.random_bool(0.5) {
                Protocol::Udp
            } else {
                Protocol::Tcp
            },
            ports: ranges,
            enforce: enforcer::policy::Enforce::Both,
            location: location(),
        });
    }
    for (name, entries) in names.iter().zip(crowd) {
        if entries.is_empty() {
            continue;
        }
        generated.policy.platforms.push(Platform {
            data_date: None,
            feed: None,
            action_by_site: Vec::new(),
            name: (*name).to_string(),
            id: 0,
            description: None,
            reference: None,
            action: random_action(rng),
            entries,
            location: location(),
        });
    }
    assign_ids(rng, &mut generated.policy);
    (generated, inner)
}

fn host_prefix(ip: IpAddr) -> Option<IpNet> {
    let len = if ip.is_ipv4() { 32 } else { 128 };
    IpNet::new(ip, len).ok()
}

/// An address inside the pool (inside a random pool prefix, often at its edges) or outside of
/// 198.18.0.0/15 and 2001:db8::/32 altogether.
pub fn random_address(rng: &mut impl Rng, v6: bool, inside: bool) -> IpAddr {
    if !inside {
        return if v6 {
            let outside: [u128; 4] = [
                0x2001_0db9 << 96,
                (0x2001_0db7_u128 << 96) | ((1 << 96) - 1),
                0xfe80 << 112,
                0x2a00_1450 << 96,
            ];
            let base = outside.choose(rng).copied().unwrap_or_default();
            IpAddr::V6(Ipv6Addr::from(base ^ u128::from(rng.random::<u8>())))
        } else {
            let outside: [u32; 4] = [0xCB00_7100, 0x0A00_0000, 0xC614_0000, 0xC611_FF00];
            let base = outside.choose(rng).copied().unwrap_or_default();
            IpAddr::V4(Ipv4Addr::from(base | u32::from(rng.random::<u8>())))
        };
    }
    let Some(net) = pool(v6).choose(rng).copied() else {
        return IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    };
    match net {
        IpNet::V4(n) => {
            let host_mask = u32::MAX.checked_shr(u32::from(n.prefix_len())).unwrap_or(0);
            let host = pick_host(rng, u128::from(host_mask)) as u32;
            IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) | host))
        }
        IpNet::V6(n) => {
            let host_mask = u128::MAX
                .checked_shr(u32::from(n.prefix_len()))
                .unwrap_or(0);
            let host = pick_host(rng, host_mask);
            IpAddr::V6(Ipv6Addr::from(u128::from(n.network()) | host))
        }
    }
}

/// Host bits: the first, last, a small or a random host of the prefix.
fn pick_host(rng: &mut impl Rng, mask: u128) -> u128 {
    match rng.random_range(0..10) {
        0 => 0,
        1 => mask,
        2..=4 => rng.random_range(0..8u128) & mask,
        5 => 0x80 & mask,
        _ => rng.random::<u128>() & mask,
    }
}

/// A random port, usually one the port ranges care about.
pub fn random_port(rng: &mut impl Rng) -> u16 {
    if rng.random_bool(0.8) {
        PORTS.choose(rng).copied().unwrap_or(0)
    } else {
        rng.random()
    }
}

/// The policy as rule-file YAML (one document per platform), plus the resolved addresses:
/// what a failure message shows.
pub fn describe(generated: &GeneratedPolicy) -> String {
    let mut out = String::new();
    for (p, platform) in generated.policy.platforms.iter().enumerate() {
        let _ = writeln!(
            out,
            "--- # id {}\nplatform: {}\naction: {}\nmatch:",
            generated.policy.platform_id(p),
            platform.name,
            platform.action
        );
        if !platform.action_by_site.is_empty() {
            let sites: Vec<String> = platform
                .action_by_site
                .iter()
                .map(|a| format!("{}: {}", a.site, a.action))
                .collect();
            let _ = writeln!(out, "action-by-site: {{{}}}", sites.join(", "));
        }
        for (e, entry) in platform.entries.iter().enumerate() {
            let mut line = String::from("  - ");
            let mut parts = Vec::new();
            if !entry.domains.is_empty() {
                let domains: Vec<String> = entry.domains.iter().map(|d| d.to_string()).collect();
                parts.push(format!("domains: [{}]", domains.join(", ")));
            }
            if !entry.prefixes.is_empty() {
                let prefixes: Vec<String> = entry.prefixes.iter().map(|n| n.to_string()).collect();
                parts.push(format!("prefixes: [{}]", prefixes.join(", ")));
            }
            parts.push(format!("protocol: {}", entry.protocol.as_str()));
            if !entry.ports.is_empty() {
                let ports: Vec<String> = entry.ports.iter().map(|r| r.to_string()).collect();
                parts.push(format!("ports: [{}]", ports.join(", ")));
            }
            line.push_str(&parts.join(", "));
            let resolved: Vec<String> = generated
                .addresses
                .iter()
                .filter(|a| a.platform == p && a.entry == e)
                .map(|a| a.net.to_string())
                .collect();
            if !resolved.is_empty() {
                let _ = write!(line, "   # resolved: {}", resolved.join(", "));
            }
            let _ = writeln!(out, "{line}");
        }
    }
    out
}

/// Smaller variants of a policy, for shrinking a failing case: each drops one platform, entry,
/// prefix, resolved address or port range.
pub fn shrink_candidates(generated: &GeneratedPolicy) -> Vec<GeneratedPolicy> {
    let mut out = Vec::new();
    let platforms = &generated.policy.platforms;
    for p in 0..platforms.len() {
        let mut smaller = generated.clone();
        smaller.policy.platforms.remove(p);
        smaller.addresses = generated
            .addresses
            .iter()
            .filter(|a| a.platform != p)
            .map(|a| EntryAddress {
                platform: if a.platform > p {
                    a.platform - 1
                } else {
                    a.platform
                },
                ..*a
            })
            .collect();
        out.push(smaller);
    }
    for a in 0..generated.addresses.len() {
        let mut smaller = generated.clone();
        smaller.addresses.remove(a);
        out.push(smaller);
    }
    for (p, platform) in platforms.iter().enumerate() {
        for (e, entry) in platform.entries.iter().enumerate() {
            if platform.entries.len() > 1 {
                let mut smaller = generated.clone();
                smaller.policy.platforms[p].entries.remove(e);
                smaller.addresses = generated
                    .addresses
                    .iter()
                    .filter(|a| (a.platform, a.entry) != (p, e))
                    .map(|a| EntryAddress {
                        entry: if a.platform == p && a.entry > e {
                            a.entry - 1
                        } else {
                            a.entry
                        },
                        ..*a
                    })
                    .collect();
                out.push(smaller);
            }
            for i in 0..entry.prefixes.len() {
                let mut smaller = generated.clone();
                smaller.policy.platforms[p].entries[e].prefixes.remove(i);
                out.push(smaller);
            }
            for i in 0..entry.ports.len() {
                let mut smaller = generated.clone();
                smaller.policy.platforms[p].entries[e].ports.remove(i);
                out.push(smaller);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn pools_parse_and_stay_in_the_test_ranges() {
        assert_eq!(pool(false).len(), V4_POOL.len());
        assert_eq!(pool(true).len(), V6_POOL.len());
        let v4: IpNet = "198.18.0.0/15".parse().unwrap();
        let v6: IpNet = "2001:db8::/32".parse().unwrap();
        for net in pool(false) {
            assert!(v4.contains(&net), "{net}");
        }
        for net in pool(true) {
            assert!(v6.contains(&net), "{net}");
        }
    }

    #[test]
    fn addresses_land_where_asked() {
        let mut rng = StdRng::seed_from_u64(1);
        let v4: IpNet = "198.18.0.0/15".parse().unwrap();
        let v6: IpNet = "2001:db8::/32".parse().unwrap();
        for _ in 0..1000 {
            let v = rng.random_bool(0.5);
            let inside = rng.random_bool(0.5);
            let ip = random_address(&mut rng, v, inside);
            assert_eq!(ip.is_ipv6(), v);
            assert_eq!(v4.contains(&ip) || v6.contains(&ip), inside, "{ip}");
        }
    }

    #[test]
    fn policies_are_sorted_and_consistent() {
        let mut rng = StdRng::seed_from_u64(2);
        for _ in 0..200 {
            let g = random_policy(&mut rng);
            let names: Vec<&str> = g.policy.platforms.iter().map(|p| p.name.as_str()).collect();
            let mut sorted = names.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(names, sorted);
            for a in &g.addresses {
                assert!(a.entry < g.policy.platforms[a.platform].entries.len());
            }
            for p in &g.policy.platforms {
                for e in &p.entries {
                    assert!(!e.prefixes.is_empty() || !e.domains.is_empty());
                    assert!(e.ports.is_empty() || e.protocol != Protocol::Any);
                }
            }
            for smaller in shrink_candidates(&g) {
                for a in &smaller.addresses {
                    assert!(a.entry < smaller.policy.platforms[a.platform].entries.len());
                }
            }
        }
    }
}
