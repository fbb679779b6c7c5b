//! The never-block list: addresses that no rule, resolved answer or learned answer may ever
//! block (docs/reference.md, "Built-in never-block list").
//!
//! One [`NeverBlock`] is built at start-up ([`NeverBlock::build`]: the built-in ranges,
//! `--never-block`, the gateway's interface addresses and the resolvers' addresses) and handed,
//! as clones of the same value, to every place an address can enter a set: policy validation
//! (`policy::LoadOptions`, so `rules add` too), the daemon's resolver and the learner
//! (`resolve::Guard`), the addresses restored from the state files and `explain`.
//!
//! Beside that fixed list it remembers the DNS servers seen answering clients' queries that
//! crossed the gateway ([`NeverBlock::note_dns_server`]): clones share them, so an answer the
//! learner or the resolver gets that names such a server is refused. Those come from traffic,
//! so they only guard answers: policy validation uses the fixed list alone, which is why
//! `check` and `run` agree on a policy whatever the traffic.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use ipnet::IpNet;

use crate::sys::netif;

/// Ranges no rule may ever block: local, private, link-local, multicast and broadcast space.
const BUILTIN: [&str; 14] = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "255.255.255.255/32",
    "::/128",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

/// How many DNS servers seen in traffic are remembered; beyond it the one seen least recently
/// is forgotten, so a flood of forged servers cannot grow the daemon without bound.
pub const MAX_DNS_SERVERS: usize = 1024;

/// Why a range is in the list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Origin {
    /// The built-in list.
    BuiltIn,
    /// `--never-block` (flag or config file).
    Configured,
    /// An address of one of the gateway's interfaces.
    Interface,
    /// A DNS server the daemon itself asks.
    Resolver,
    /// A DNS server seen answering clients' queries through the gateway.
    DnsServerInUse,
    /// `--learn-from`: DNS servers whose answers are learned.
    LearnFrom,
}

impl Origin {
    pub const ALL: [Origin; 6] = [
        Self::BuiltIn,
        Self::Configured,
        Self::Interface,
        Self::Resolver,
        Self::DnsServerInUse,
        Self::LearnFrom,
    ];

    /// The origin of a name given by [`Origin::as_str`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == name)
    }

    /// The stable name used in JSON (`explain --json`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BuiltIn => "built-in",
            Self::Configured => "never-block",
            Self::Interface => "interface",
            Self::Resolver => "resolver",
            Self::DnsServerInUse => "dns-server",
            Self::LearnFrom => "learn-from",
        }
    }

    /// What it means, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Self::BuiltIn => "built-in range",
            Self::Configured => "--never-block",
            Self::Interface => "an address of the gateway",
            Self::Resolver => "a resolver of the daemon",
            Self::DnsServerInUse => "a DNS server clients use",
            Self::LearnFrom => "--learn-from",
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// One range of the list and why it is there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub net: IpNet,
    pub origin: Origin,
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.net, self.origin)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NeverBlockError {
    #[error("reading the gateway's addresses: {0}")]
    LocalAddresses(std::io::Error),
}

/// The never-block list. Cloning is cheap and clones share the DNS servers seen in traffic.
#[derive(Clone, Debug)]
pub struct NeverBlock {
    /// Truncated, without repeats, sorted (so messages are stable).
    ranges: Arc<[Range]>,
    servers: Arc<Mutex<DnsServers>>,
}

impl Default for NeverBlock {
    /// The built-in list alone.
    fn default() -> Self {
        Self::builtin()
    }
}

impl NeverBlock {
    /// The built-in ranges alone.
    pub fn builtin() -> Self {
        Self::from_ranges(builtin_ranges())
    }

    /// Exactly `ranges` (no built-in ones unless given). The first origin given for a range is
    /// the one kept.
    pub fn from_ranges(ranges: impl IntoIterator<Item = (IpNet, Origin)>) -> Self {
        Self {
            ranges: normalise(ranges),
            servers: Arc::default(),
        }
    }

    /// What the daemon enforces with: the built-in ranges, `configured` (`--never-block`), every
    /// address of this host's interfaces and the addresses of the resolvers the daemon asks.
    /// `run`, `check` and `resolve` all build it here, so they agree.
    pub fn build(configured: &[IpNet], resolvers: &[SocketAddr]) -> Result<Self, NeverBlockError> {
        let local = netif::local_addresses().map_err(NeverBlockError::LocalAddresses)?;
        Ok(Self::from_ranges(
            builtin_ranges()
                .chain(configured.iter().map(|n| (*n, Origin::Configured)))
                .chain(local.into_iter().map(|n| (n, Origin::Interface)))
                .chain(resolvers.iter().map(|s| (s.ip().into(), Origin::Resolver))),
        ))
    }

    /// This list plus `extra` (ranges already in it keep their origin); the DNS servers seen in
    /// traffic stay shared with `self`.
    pub fn with(&self, extra: impl IntoIterator<Item = (IpNet, Origin)>) -> Self {
        let ranges = self.ranges.iter().map(|r| (r.net, r.origin)).chain(extra);
        Self {
            ranges: normalise(ranges),
            servers: Arc::clone(&self.servers),
        }
    }

    /// This list plus the addresses of `servers` as resolvers.
    pub fn with_resolvers(&self, servers: &[SocketAddr]) -> Self {
        self.with(
            servers
                .iter()
                .map(|s| (IpNet::from(s.ip()), Origin::Resolver)),
        )
    }

    /// The fixed ranges (without the DNS servers seen in traffic).
    pub fn ranges(&self) -> &[Range] {
        &self.ranges
    }

    /// The fixed ranges a policy prefix overlaps, either way (containing it or inside it). A
    /// prefix of a `drop` platform that overlaps any is an error.
    pub fn overlaps(&self, prefix: &IpNet) -> Vec<Range> {
        self.ranges
            .iter()
            .filter(|r| r.net.contains(prefix) || prefix.contains(&r.net))
            .copied()
            .collect()
    }

    /// The range holding `address`: a fixed one first, else a DNS server seen in traffic.
    pub fn find(&self, address: IpAddr) -> Option<Range> {
        if let Some(range) = self.ranges.iter().find(|r| r.net.contains(&address)) {
            return Some(*range);
        }
        self.lock().seen.contains_key(&address).then(|| Range {
            net: IpNet::from(address),
            origin: Origin::DnsServerInUse,
        })
    }

    /// Whether DNS may never make `address` blocked.
    pub fn contains(&self, address: IpAddr) -> bool {
        self.find(address).is_some()
    }

    /// Remembers a DNS server seen answering a client's query through the gateway.
    pub fn note_dns_server(&self, address: IpAddr) {
        self.lock().note(address);
    }

    /// The DNS servers seen in traffic that are remembered, in address order.
    pub fn dns_servers(&self) -> Vec<IpAddr> {
        let mut servers: Vec<IpAddr> = self.lock().seen.keys().copied().collect();
        servers.sort();
        servers
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DnsServers> {
        // The set is a cache of addresses: whatever a panicking holder left is still usable.
        self.servers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn builtin_ranges() -> impl Iterator<Item = (IpNet, Origin)> {
    // The literals are checked by a unit test, so nothing is silently dropped here.
    BUILTIN
        .iter()
        .filter_map(|s| s.parse().ok())
        .map(|net| (net, Origin::BuiltIn))
}

fn normalise(ranges: impl IntoIterator<Item = (IpNet, Origin)>) -> Arc<[Range]> {
    let mut out: Vec<Range> = Vec::new();
    for (net, origin) in ranges {
        let net = net.trunc();
        if !out.iter().any(|r| r.net == net) {
            out.push(Range { net, origin });
        }
    }
    out.sort_by_key(|r| r.net);
    out.into()
}

/// The DNS servers seen in traffic, each with when it was last seen (a counter, not a clock).
#[derive(Debug, Default)]
struct DnsServers {
    seen: HashMap<IpAddr, u64>,
    clock: u64,
}

impl DnsServers {
    fn note(&mut self, address: IpAddr) {
        self.clock += 1;
        let clock = self.clock;
        if let Some(last) = self.seen.get_mut(&address) {
            *last = clock;
            return;
        }
        if self.seen.len() >= MAX_DNS_SERVERS
            && let Some(oldest) = self.seen.iter().min_by_key(|(_, t)| **t).map(|(a, _)| *a)
        {
            self.seen.remove(&oldest);
        }
        self.seen.insert(address, clock);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn builtin_list_is_complete() {
        let list = NeverBlock::builtin();
        assert_eq!(list.ranges().len(), BUILTIN.len());
        assert!(list.contains(ip("255.255.255.255")));
        assert!(list.contains(ip("ff02::1")));
        assert!(list.ranges().iter().all(|r| r.origin == Origin::BuiltIn));
        // The test networks stand for the internet and must stay blockable.
        for internet in ["198.18.0.0/15", "2001:db8::/32"] {
            assert!(list.overlaps(&net(internet)).is_empty(), "{internet}");
        }
    }

    #[test]
    fn overlaps_both_ways_and_once_each() {
        let list = NeverBlock::from_ranges([
            (net("10.0.0.0/8"), Origin::BuiltIn),
            (net("fe80::/10"), Origin::BuiltIn),
            (net("10.0.0.1/8"), Origin::Configured),
        ]);
        assert_eq!(list.ranges().len(), 2, "{:?}", list.ranges());
        let nets =
            |s: &str| -> Vec<IpNet> { list.overlaps(&net(s)).iter().map(|r| r.net).collect() };
        assert_eq!(nets("10.1.0.0/16"), vec![net("10.0.0.0/8")]);
        assert_eq!(nets("0.0.0.0/0"), vec![net("10.0.0.0/8")]);
        assert_eq!(nets("fe80::1/128"), vec![net("fe80::/10")]);
        assert!(nets("11.0.0.0/8").is_empty());
        assert!(nets("2001:db8::/32").is_empty());
    }

    #[test]
    fn build_holds_every_source_with_its_origin() {
        let resolver: SocketAddr = "198.51.100.53:5353".parse().unwrap();
        let list = NeverBlock::build(&[net("203.0.113.0/24")], &[resolver]).unwrap();
        let origin = |s: &str| list.find(ip(s)).map(|r| r.origin);
        assert_eq!(origin("127.0.0.1"), Some(Origin::BuiltIn));
        assert_eq!(origin("203.0.113.9"), Some(Origin::Configured));
        assert_eq!(origin("198.51.100.53"), Some(Origin::Resolver));
        assert_eq!(origin("198.51.100.54"), None);
        // Every address of this host, whatever it is (loopback alone in a bare namespace).
        for local in netif::local_addresses().unwrap() {
            assert!(list.contains(local.addr()), "{local}");
        }
    }

    #[test]
    fn dns_servers_seen_are_shared_by_clones_and_bounded() {
        let list = NeverBlock::builtin();
        let resolver_side = list.with_resolvers(&["198.51.100.53:53".parse().unwrap()]);
        assert!(!list.contains(ip("198.18.0.53")));
        list.note_dns_server(ip("198.18.0.53"));
        let hit = resolver_side.find(ip("198.18.0.53")).unwrap();
        assert_eq!(hit.origin, Origin::DnsServerInUse);
        assert_eq!(hit.net, net("198.18.0.53/32"));
        // Only the address itself, and only for answers: policy validation ignores traffic.
        assert!(!list.contains(ip("198.18.0.54")));
        assert!(list.overlaps(&net("198.18.0.0/24")).is_empty());
        // The resolver was added to the clone only.
        assert!(resolver_side.contains(ip("198.51.100.53")));
        assert!(!list.contains(ip("198.51.100.53")));

        // Bounded: the server seen least recently goes first.
        for i in 0..MAX_DNS_SERVERS {
            let [a, b] = u16::try_from(i).unwrap().to_be_bytes();
            list.note_dns_server(IpAddr::from([198, 19, a, b]));
            if i == 10 {
                list.note_dns_server(ip("198.18.0.53"));
            }
        }
        assert_eq!(list.dns_servers().len(), MAX_DNS_SERVERS);
        assert!(list.contains(ip("198.18.0.53")));
        assert!(!list.contains(ip("198.19.0.0")));
        assert!(list.contains(ip("198.19.0.11")));
    }
}
