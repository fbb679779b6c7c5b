//! Which names DNS answers crossing the gateway gave for which addresses: every believed
//! answer, matched by the policy or not, so that `collateral` can tell when a blocked prefix
//! also serves names no pattern of its platform matches. Bounded (`--observed-names` pairs);
//! the pair seen longest ago goes first.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::time::SystemTime;

use ipnet::IpNet;

/// What is known of one (address, name) pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sighting {
    pub last_seen: SystemTime,
    /// The CNAME chain the name was reached through (usually none: kept small).
    pub cname_chain: Box<[String]>,
    /// Bumped on every sighting: tells a pair's latest place in the eviction queue.
    stamp: u64,
}

#[derive(Debug)]
pub struct ObservedNames {
    limit: usize,
    /// (address, name) -> sighting, in one flat map (a map per address would cost a tree
    /// node each): prefix queries are ranges of addresses.
    pairs_seen: BTreeMap<(IpAddr, Box<str>), Sighting>,
    /// (address, name, stamp) in the order seen; entries whose stamp is stale are skipped.
    order: VecDeque<(IpAddr, Box<str>, u64)>,
    next_stamp: u64,
}

impl ObservedNames {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            pairs_seen: BTreeMap::new(),
            order: VecDeque::new(),
            next_stamp: 0,
        }
    }

    /// How many (address, name) pairs are held.
    pub fn len(&self) -> usize {
        self.pairs_seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs_seen.is_empty()
    }

    /// Notes that an answer for `name` (through `cname_chain`) gave `addresses` at `now`.
    pub fn record(
        &mut self,
        name: &str,
        cname_chain: &[String],
        addresses: &[IpAddr],
        now: SystemTime,
    ) {
        if self.limit == 0 {
            return;
        }
        for &address in addresses {
            self.next_stamp += 1;
            let stamp = self.next_stamp;
            let key: (IpAddr, Box<str>) = (address, name.into());
            let sighting = Sighting {
                last_seen: now,
                cname_chain: cname_chain.into(),
                stamp,
            };
            self.order.push_back((address, key.1.clone(), stamp));
            self.pairs_seen.insert(key, sighting);
        }
        while self.pairs_seen.len() > self.limit {
            self.evict_oldest();
        }
        // Refreshed pairs leave stale queue entries behind: compact when they dominate.
        if self.order.len() > 2 * self.limit.max(self.pairs_seen.len()) + 1024 {
            let seen = &self.pairs_seen;
            self.order.retain(|(address, name, stamp)| {
                seen.get(&(*address, name.clone()))
                    .is_some_and(|s| s.stamp == *stamp)
            });
        }
    }

    fn evict_oldest(&mut self) {
        while let Some((address, name, stamp)) = self.order.pop_front() {
            let key = (address, name);
            if self.pairs_seen.get(&key).is_some_and(|s| s.stamp == stamp) {
                self.pairs_seen.remove(&key);
                return;
            }
        }
    }

    /// Every (address, name, sighting), in address order.
    pub fn all(&self) -> impl Iterator<Item = (IpAddr, &str, &Sighting)> {
        self.pairs_seen
            .iter()
            .map(|((address, name), seen)| (*address, &**name, seen))
    }

    /// Every (address, name, sighting) inside `net`.
    pub fn within(&self, net: &IpNet) -> impl Iterator<Item = (IpAddr, &str, &Sighting)> {
        let (first, last) = (net.network(), net.broadcast());
        self.pairs_seen
            .range((first, Box::<str>::from(""))..)
            .take_while(move |((address, _), _)| *address <= last)
            .map(|((address, name), seen)| (*address, &**name, seen))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn pairs_are_found_by_prefix_and_the_oldest_go_first() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let mut seen = ObservedNames::new(3);
        seen.record("a.example", &[], &[ip("198.19.10.5")], t0);
        seen.record(
            "b.example",
            &[],
            &[ip("198.19.10.6"), ip("2001:db8:10::5")],
            t0,
        );
        assert_eq!(seen.len(), 3);
        let net: IpNet = "198.19.10.0/24".parse().unwrap();
        let names: Vec<&str> = seen.within(&net).map(|(_, n, _)| n).collect();
        assert_eq!(names, ["a.example", "b.example"]);
        // a.example is seen again: now b.example's first pair is the oldest.
        seen.record(
            "a.example",
            &[],
            &[ip("198.19.10.5")],
            t0 + Duration::from_secs(5),
        );
        seen.record(
            "c.example",
            &[],
            &[ip("198.19.10.7")],
            t0 + Duration::from_secs(6),
        );
        assert_eq!(seen.len(), 3);
        let names: Vec<&str> = seen.within(&net).map(|(_, n, _)| n).collect();
        assert_eq!(
            names,
            ["a.example", "c.example"],
            "b.example on .6 was the oldest"
        );
        let (_, _, a) = seen.within(&net).next().unwrap();
        assert_eq!(a.last_seen, t0 + Duration::from_secs(5));
    }

    /// Memory at the bound: run with `--ignored --nocapture` to print it.
    #[test]
    #[ignore]
    fn memory_at_a_million_pairs() {
        let rss = || {
            std::fs::read_to_string("/proc/self/statm")
                .ok()
                .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
                .unwrap_or(0)
                * 4096
        };
        let before = rss();
        let mut seen = ObservedNames::new(1_000_000);
        let now = SystemTime::now();
        for i in 0..1_200_000u32 {
            let address = IpAddr::from((0xC613_0000u32 + (i % 500_000)).to_be_bytes());
            seen.record(&format!("host-{i}.example.org"), &[], &[address], now);
        }
        assert_eq!(seen.len(), 1_000_000);
        println!(
            "1,000,000 observed pairs (names of ~22 bytes): {:.1} MiB",
            (rss() - before) as f64 / (1024.0 * 1024.0)
        );
    }
}
