//! Reads what a loaded program did to one frame: the counters of chosen platform ids (read by
//! index, so a check after every frame stays cheap whatever the ids) and the DNS copies in its
//! ring buffer.
//!
//! The counter maps are opened a second time through the program's map ids: the same kernel
//! maps the datapath's own `counters()` reads, without reading all of them.

use anyhow::{Context, Result};
use aya::maps::{Map, MapData, PerCpuArray, PerCpuHashMap};
use enforcer::datapath::dns_events::split_record;
use enforcer::datapath::{CounterSnapshot, Datapath, DnsEvents, MatchKey};
use enforcer_common::{
    ACTIONS, Counter, DIRECTIONS, DnsEventHeader, FAMILIES, PASS_REASONS, SiteCounterKey,
    match_counter_index,
};

/// Map names as the program object declares them.
const MATCH_STATS: &str = "MATCH_STATS";
const PASS_STATS: &str = "PASS_STATS";
const SITE_STATS: &str = "SITE_STATS";

pub struct Probe {
    matches: PerCpuArray<MapData, Counter>,
    passes: PerCpuArray<MapData, Counter>,
    sites: PerCpuHashMap<MapData, SiteCounterKey, Counter>,
    dns: Option<DnsEvents>,
}

impl Probe {
    /// Opens the counter maps of `datapath`'s program and takes its DNS ring buffer.
    pub fn new(datapath: &mut Datapath) -> Result<Self> {
        let ids = datapath
            .program_mut()?
            .info()?
            .map_ids()?
            .context("the kernel does not list the program's maps")?;
        let (mut matches, mut passes, mut sites) = (None, None, None);
        for id in ids {
            let data = MapData::from_id(id)?;
            let name = data.info()?.name_as_str().map(str::to_owned);
            if name.as_deref() == Some(SITE_STATS) {
                sites = Some(PerCpuHashMap::try_from(Map::from_map_data(data)?)?);
                continue;
            }
            let slot = match name.as_deref() {
                Some(MATCH_STATS) => &mut matches,
                Some(PASS_STATS) => &mut passes,
                _ => continue,
            };
            *slot = Some(PerCpuArray::try_from(Map::from_map_data(data)?)?);
        }
        Ok(Self {
            matches: matches.context("no MATCH_STATS map")?,
            passes: passes.context("no PASS_STATS map")?,
            sites: sites.context("no SITE_STATS map")?,
            dns: datapath.take_dns_events(),
        })
    }

    /// The non-zero match counters of `platforms` and every pass counter, summed over CPUs.
    pub fn counters(&self, platforms: &[u16]) -> Result<CounterSnapshot> {
        let mut snapshot = CounterSnapshot::default();
        for &platform in platforms {
            for action in 0..ACTIONS as u8 {
                for direction in 0..DIRECTIONS as u8 {
                    for family in 0..FAMILIES as u8 {
                        let index = match_counter_index(platform, action, direction, family);
                        let total = sum(&self.matches, index)?;
                        if total != Counter::default() {
                            let key = MatchKey {
                                platform,
                                action,
                                direction,
                                family,
                            };
                            snapshot.matches.insert(key, total);
                        }
                    }
                }
            }
        }
        for reason in 0..PASS_REASONS {
            snapshot.passed[reason as usize] = sum(&self.passes, reason)?;
        }
        for item in self.sites.iter() {
            let (key, values) = item?;
            let total = values.iter().fold(Counter::default(), |acc, c| Counter {
                packets: acc.packets + c.packets,
                bytes: acc.bytes + c.bytes,
            });
            if total != Counter::default() && platforms.contains(&key.platform) {
                snapshot.sites.insert(key, total);
            }
        }
        Ok(snapshot)
    }

    /// Every DNS record waiting in the ring buffer (header and frame bytes), oldest first
    /// (empties it).
    pub fn dns_events(&mut self) -> Result<Vec<(DnsEventHeader, Vec<u8>)>> {
        let ring = self.dns.as_mut().context("the DNS ring buffer was taken")?;
        Ok(std::iter::from_fn(|| ring.next_record())
            .filter_map(|r| split_record(&r).map(|(h, frame)| (h, frame.to_vec())))
            .collect())
    }
}

fn sum(map: &PerCpuArray<MapData, Counter>, index: u32) -> Result<Counter> {
    let values = map.get(&index, 0)?;
    Ok(values.iter().fold(Counter::default(), |acc, c| Counter {
        packets: acc.packets + c.packets,
        bytes: acc.bytes + c.bytes,
    }))
}
