//! What the program needs to decide which DNS answers to believe (see the XDP program's `dns`
//! module): the trust tries and the interface roles; its counts of answers it passed without
//! holding; and putting a held frame back into the receive path.

use std::collections::HashSet;
use std::io;
use std::os::fd::AsFd as _;

use aya::maps::lpm_trie::Key;
use aya::programs::ProgramFd;
use enforcer_common::{
    Counter, DNS_CONFIG_BLOCK_TTL, DNS_STATS, FAMILIES, FAMILY_IPV4, FAMILY_IPV6,
    ROLE_ARRAY_ENTRIES, ROLE_BOTH,
};
use ipnet::IpNet;

use super::{
    Datapath, DatapathError, MAP_DNS_BLOCKED, MAP_DNS_CONFIG, MAP_DNS_STATS, MAP_DNS_TRUST,
    MAP_IFACE_ROLES, MAP_IFACE_ROLES_HIGH, PASS_PROGRAM,
};
use crate::sys;

/// Counts of responses the program passed without holding, by `enforcer_common::DNS_STAT_*`.
pub type DnsStats = [u64; DNS_STATS as usize];

impl Datapath {
    /// Makes the program trust exactly `entries` (prefix, `TRUST_*` bits; bits of overlapping
    /// or equal prefixes are OR-ed) and give the interfaces `roles` (ifindex, `ROLE_*`). New
    /// entries are written before stale ones are removed.
    pub fn set_dns_trust(
        &mut self,
        entries: &[(IpNet, u32)],
        roles: &[(u32, u32)],
    ) -> Result<(), DatapathError> {
        let map_err = |name: &'static str| move |source| DatapathError::Map { name, source };
        // The trie answers with the longest match only: each prefix carries the bits of every
        // prefix that contains it (itself included).
        let mut bits: std::collections::HashMap<IpNet, u32> = std::collections::HashMap::new();
        for (net, _) in entries {
            let net = net.trunc();
            let all = entries
                .iter()
                .filter(|(outer, _)| outer.contains(&net))
                .fold(0, |acc, (_, b)| acc | b);
            bits.insert(net, all);
        }
        let (mut keep4, mut keep6) = (HashSet::new(), HashSet::new());
        for (net, b) in &bits {
            match net {
                IpNet::V4(n) => {
                    let key = Key::new(u32::from(n.prefix_len()), n.network().octets());
                    self.dns_trust_v4
                        .insert(&key, b, 0)
                        .map_err(map_err(MAP_DNS_TRUST[0]))?;
                    keep4.insert((n.prefix_len(), n.network().octets()));
                }
                IpNet::V6(n) => {
                    let key = Key::new(u32::from(n.prefix_len()), n.network().octets());
                    self.dns_trust_v6
                        .insert(&key, b, 0)
                        .map_err(map_err(MAP_DNS_TRUST[1]))?;
                    keep6.insert((n.prefix_len(), n.network().octets()));
                }
            }
        }
        let stale4: Vec<Key<[u8; 4]>> = self
            .dns_trust_v4
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !u8::try_from(k.prefix_len()).is_ok_and(|l| keep4.contains(&(l, k.data()))))
            .collect();
        for key in stale4 {
            self.dns_trust_v4
                .remove(&key)
                .map_err(map_err(MAP_DNS_TRUST[0]))?;
        }
        let stale6: Vec<Key<[u8; 16]>> = self
            .dns_trust_v6
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !u8::try_from(k.prefix_len()).is_ok_and(|l| keep6.contains(&(l, k.data()))))
            .collect();
        for key in stale6 {
            self.dns_trust_v6
                .remove(&key)
                .map_err(map_err(MAP_DNS_TRUST[1]))?;
        }
        let wanted: std::collections::HashMap<u32, u32> = roles
            .iter()
            .filter(|(_, role)| *role != ROLE_BOTH)
            .copied()
            .collect();
        // Low ifindexes in the array (0: both), written whole; the others in the hash.
        let mut low = vec![0u64; ROLE_ARRAY_ENTRIES as usize];
        for (&ifindex, &role) in &wanted {
            if let Some(slot) = low.get_mut(ifindex as usize) {
                *slot = u64::from(role);
            }
        }
        if !self.iface_roles.write(0, &low) {
            return Err(DatapathError::MappedWrite(MAP_IFACE_ROLES));
        }
        for (ifindex, role) in wanted.iter().filter(|(i, _)| **i >= ROLE_ARRAY_ENTRIES) {
            self.iface_roles_high
                .insert(ifindex, role, 0)
                .map_err(map_err(MAP_IFACE_ROLES_HIGH))?;
        }
        let stale: Vec<u32> = self
            .iface_roles_high
            .keys()
            .filter_map(Result::ok)
            .filter(|i| !wanted.contains_key(i))
            .collect();
        for ifindex in stale {
            self.iface_roles_high
                .remove(&ifindex)
                .map_err(map_err(MAP_IFACE_ROLES_HIGH))?;
        }
        Ok(())
    }

    /// Runs one frame through the program once, as if it had arrived on interface `ifindex` (of
    /// this thread's network namespace); returns its XDP action.
    pub fn test_run_on(&mut self, frame: &[u8], ifindex: u32) -> Result<u32, DatapathError> {
        let program = self.program_mut()?;
        let fd = program.fd().map_err(|source| DatapathError::Program {
            name: super::PROGRAM,
            source,
        })?;
        Ok(sys::xdp_run(fd.as_fd(), frame, ifindex, false)?)
    }

    /// Sets the TTL (and SOA minimum) of the NXDOMAIN answers the program synthesizes.
    pub fn set_dns_block_ttl(&mut self, seconds: u32) -> Result<(), DatapathError> {
        self.dns_config
            .set(DNS_CONFIG_BLOCK_TTL, seconds, 0)
            .map_err(|source| DatapathError::Map {
                name: MAP_DNS_CONFIG,
                source,
            })
    }

    /// Queries answered (or dropped) by name, summed over CPUs: (platform id, family, count),
    /// for every platform id below `platforms` and both families.
    pub fn dns_blocked(&self, platforms: u16) -> Result<Vec<(u16, u8, Counter)>, DatapathError> {
        let mut out = Vec::new();
        for platform in 0..platforms {
            for family in [FAMILY_IPV4, FAMILY_IPV6] {
                let index = u32::from(platform) * FAMILIES + u32::from(family);
                let values =
                    self.dns_blocked
                        .get(&index, 0)
                        .map_err(|source| DatapathError::Map {
                            name: MAP_DNS_BLOCKED,
                            source,
                        })?;
                let total = values.iter().fold(Counter::default(), |acc, c| Counter {
                    packets: acc.packets.wrapping_add(c.packets),
                    bytes: acc.bytes.wrapping_add(c.bytes),
                });
                out.push((platform, family, total));
            }
        }
        Ok(out)
    }

    /// The program's counts of responses it passed without holding, summed over CPUs.
    pub fn dns_stats(&self) -> Result<DnsStats, DatapathError> {
        let mut stats = DnsStats::default();
        for (slot, total) in (0u32..).zip(stats.iter_mut()) {
            let values = self
                .dns_stats
                .get(&slot, 0)
                .map_err(|source| DatapathError::Map {
                    name: MAP_DNS_STATS,
                    source,
                })?;
            *total = values.iter().copied().fold(0u64, u64::wrapping_add);
        }
        Ok(stats)
    }

    /// What puts held frames back; usable without the datapath (it owns a copy of the program's
    /// descriptor).
    pub fn reinjector(&mut self) -> Result<Reinjector, DatapathError> {
        let program = self.xdp_mut(PASS_PROGRAM)?;
        let fd = program
            .fd()
            .map_err(|source| DatapathError::Program {
                name: PASS_PROGRAM,
                source,
            })?
            .try_clone()?;
        Ok(Reinjector { pass: fd })
    }
}

/// Puts held frames back into the receive path of the interface they arrived on, by running the
/// program that passes everything on them in live-frames mode: the stack then handles each frame
/// exactly as if it had just arrived (conntrack, NAT, forward filters, rp_filter), byte for byte.
pub struct Reinjector {
    pass: ProgramFd,
}

impl Reinjector {
    pub fn put_back(&self, frame: &[u8], ifindex: u32) -> io::Result<()> {
        sys::xdp_run(self.pass.as_fd(), frame, ifindex, true).map(|_| ())
    }
}
