//! Reading and clearing the per-CPU counters the program keeps.

use std::collections::BTreeMap;

use aya::maps::{MapData, PerCpuArray};
use enforcer_common::{ACTIONS, Counter, DIRECTIONS, FAMILIES, MATCH_COUNTERS, PASS_REASONS};

use super::{Datapath, DatapathError, MAP_MATCH_STATS, MAP_PASS_STATS};

/// Counter key as the datapath indexes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MatchKey {
    pub platform: u16,
    pub action: u8,
    pub direction: u8,
    pub family: u8,
}

/// Counters summed over CPUs. `matches` holds only non-zero entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    pub matches: BTreeMap<MatchKey, Counter>,
    pub passed: [Counter; PASS_REASONS as usize],
    /// Matched packets by (client's site, platform, action); only non-zero entries.
    pub sites: BTreeMap<enforcer_common::SiteCounterKey, Counter>,
}

impl CounterSnapshot {
    /// Matched packets by (site, platform, action): the per-site counters when the policy in
    /// force has sites; without sites the datapath counts nothing by site, and every client is
    /// site `other`: its counts are the match counters summed over direction and family.
    pub fn by_site(
        &self,
        sites_configured: bool,
    ) -> BTreeMap<enforcer_common::SiteCounterKey, Counter> {
        if sites_configured {
            return self.sites.clone();
        }
        let mut totals: BTreeMap<enforcer_common::SiteCounterKey, Counter> = BTreeMap::new();
        for (key, c) in &self.matches {
            let total = totals
                .entry(enforcer_common::SiteCounterKey {
                    site: enforcer_common::SITE_OTHER,
                    platform: key.platform,
                    action: key.action,
                    _pad: 0,
                })
                .or_default();
            total.packets += c.packets;
            total.bytes += c.bytes;
        }
        totals
    }
}

impl MatchKey {
    /// The key of the counter at `index`: the inverse of `enforcer_common::match_counter_index`,
    /// the layout the program writes.
    fn of_index(index: u32) -> Self {
        MatchKey {
            // index < MATCH_COUNTERS, so the platform is below MAX_PLATFORMS.
            platform: u16::try_from(index / (ACTIONS * DIRECTIONS * FAMILIES)).unwrap_or(u16::MAX),
            action: ((index / (DIRECTIONS * FAMILIES)) % ACTIONS) as u8,
            direction: ((index / FAMILIES) % DIRECTIONS) as u8,
            family: (index % FAMILIES) as u8,
        }
    }
}

impl Datapath {
    /// Zeroes the counters of a platform id that is handed to a new platform.
    pub fn clear_platform_counters(&mut self, platform: u16) -> Result<(), DatapathError> {
        self.sites.clear_platform(platform)?;
        clear_platform(&mut self.match_stats, platform)
    }

    /// Packets and bytes of matched packets by (client's site, platform, action), summed over
    /// CPUs; only non-zero counters.
    pub fn site_counters(
        &self,
    ) -> Result<BTreeMap<enforcer_common::SiteCounterKey, Counter>, DatapathError> {
        self.sites.counters()
    }

    /// Counters of every platform id below `platforms_below` (all when `None`), summed over CPUs.
    pub fn counters_up_to(
        &self,
        platforms_below: Option<u16>,
    ) -> Result<CounterSnapshot, DatapathError> {
        let per_platform = ACTIONS * DIRECTIONS * FAMILIES;
        let limit = platforms_below
            .map(|p| (u32::from(p) * per_platform).min(MATCH_COUNTERS))
            .unwrap_or(MATCH_COUNTERS);
        let mut snapshot = CounterSnapshot::default();
        for index in 0..limit {
            let total = sum(&self.match_stats, index, MAP_MATCH_STATS)?;
            if total != Counter::default() {
                snapshot.matches.insert(MatchKey::of_index(index), total);
            }
        }
        for reason in 0..PASS_REASONS {
            snapshot.passed[reason as usize] = sum(&self.pass_stats, reason, MAP_PASS_STATS)?;
        }
        snapshot.sites = self.sites.counters()?;
        Ok(snapshot)
    }

    pub fn counters(&self) -> Result<CounterSnapshot, DatapathError> {
        self.counters_up_to(None)
    }
}

/// Zeroes every counter of one platform id, on every CPU.
fn clear_platform(
    map: &mut PerCpuArray<MapData, Counter>,
    platform: u16,
) -> Result<(), DatapathError> {
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| DatapathError::Io(e))?;
    let per_platform = ACTIONS * DIRECTIONS * FAMILIES;
    for index in u32::from(platform) * per_platform..(u32::from(platform) + 1) * per_platform {
        let zeros = aya::maps::PerCpuValues::try_from(vec![Counter::default(); cpus])
            .map_err(DatapathError::Io)?;
        map.set(index, zeros, 0)
            .map_err(|source| DatapathError::Map {
                name: MAP_MATCH_STATS,
                source,
            })?;
    }
    Ok(())
}

fn sum(
    map: &PerCpuArray<MapData, Counter>,
    index: u32,
    name: &'static str,
) -> Result<Counter, DatapathError> {
    let values = map
        .get(&index, 0)
        .map_err(|source| DatapathError::Map { name, source })?;
    Ok(values.iter().fold(Counter::default(), |acc, c| Counter {
        packets: acc.packets + c.packets,
        bytes: acc.bytes + c.bytes,
    }))
}

#[cfg(test)]
mod tests {
    use enforcer_common::match_counter_index;

    use super::*;

    /// Every counter the program can write is read back under the key it was written for.
    #[test]
    fn counter_keys_follow_the_programs_layout() {
        for index in 0..MATCH_COUNTERS {
            let k = MatchKey::of_index(index);
            assert_eq!(
                match_counter_index(k.platform, k.action, k.direction, k.family),
                index,
                "{k:?}"
            );
        }
    }
}
