//! The site maps (enforcer-ebpf/src/sites.rs): site prefixes with their variants, the leaves a
//! variant changes, the name-table actions a variant changes, and the per-site counters. The
//! first three are written per generation, before the switch, like the lookup table.

// Generations (0, 1) and leaf ids fit the fields they are cast to.
#![allow(clippy::cast_possible_truncation)]

use std::collections::{BTreeMap, HashSet};

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{HashMap, MapData, PerCpuHashMap};
use enforcer_common::{
    Counter, FAMILY_IPV4, FAMILY_IPV6, MAX_PLATFORMS, MAX_VARIANTS, RuleRef, SiteAddress,
    SiteCounterKey, SiteValue, site_action_index, site_leaf_key,
};
use ipnet::IpNet;

use super::DatapathError;
use crate::compile::SiteTables;

pub(super) const MAP_SITES: &str = "SITES";
pub(super) const MAP_SITE_LEAVES: &str = "SITE_LEAVES";
pub(super) const MAP_SITE_ACTIONS: &str = "SITE_ACTIONS";
pub(super) const MAP_SITE_STATS: &str = "SITE_STATS";
pub(super) const MAP_SITE_CONFIG: &str = "SITE_CONFIG";

pub(crate) struct SiteMaps {
    sites: LpmTrie<MapData, SiteAddress, SiteValue>,
    leaves: HashMap<MapData, u64, RuleRef>,
    actions: HashMap<MapData, u32, u8>,
    stats: PerCpuHashMap<MapData, SiteCounterKey, Counter>,
    /// `[generation]`: 1 when that generation has sites.
    config: aya::maps::Array<MapData, u32>,
}

fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> DatapathError + Copy {
    move |source| DatapathError::Map { name, source }
}

impl SiteMaps {
    pub(super) fn take(
        take: &mut impl FnMut(&'static str) -> Result<aya::maps::Map, DatapathError>,
    ) -> Result<Self, DatapathError> {
        Ok(Self {
            sites: LpmTrie::try_from(take(MAP_SITES)?).map_err(map_err(MAP_SITES))?,
            leaves: HashMap::try_from(take(MAP_SITE_LEAVES)?).map_err(map_err(MAP_SITE_LEAVES))?,
            actions: HashMap::try_from(take(MAP_SITE_ACTIONS)?)
                .map_err(map_err(MAP_SITE_ACTIONS))?,
            stats: PerCpuHashMap::try_from(take(MAP_SITE_STATS)?)
                .map_err(map_err(MAP_SITE_STATS))?,
            config: aya::maps::Array::try_from(take(MAP_SITE_CONFIG)?)
                .map_err(map_err(MAP_SITE_CONFIG))?,
        })
    }

    /// The rule slots that generation `g`'s changed leaves use (so no new list overwrites them).
    pub(super) fn slots_in_use(&self, g: u32) -> Result<Vec<(u32, u32)>, DatapathError> {
        let mut slots = Vec::new();
        for item in self.leaves.iter() {
            let (key, value) = item.map_err(map_err(MAP_SITE_LEAVES))?;
            if (key >> 32) as u32 == g && value.count > 0 {
                slots.push((value.slot, value.count));
            }
        }
        Ok(slots)
    }

    /// Makes generation `g` (not in force) hold exactly `tables` and the changed `leaves`
    /// (leaf id, variant, reference): stale entries go first, then new ones.
    pub(super) fn write_generation(
        &mut self,
        g: u32,
        tables: &SiteTables,
        leaves: &[(u16, u32, RuleRef)],
    ) -> Result<(), DatapathError> {
        let stale: Vec<Key<SiteAddress>> = self
            .sites
            .keys()
            .filter_map(Result::ok)
            .filter(|k| u32::from(k.data().generation) == g)
            .collect();
        for key in &stale {
            self.sites.remove(key).map_err(map_err(MAP_SITES))?;
        }
        for &(net, site, variant) in &tables.prefixes {
            let (family, bits, address) = match net {
                IpNet::V4(n) => {
                    let mut a = [0u8; 16];
                    a[..4].copy_from_slice(&n.network().octets());
                    (FAMILY_IPV4, n.prefix_len(), a)
                }
                IpNet::V6(n) => (FAMILY_IPV6, n.prefix_len(), n.network().octets()),
            };
            let data = SiteAddress {
                generation: g as u8,
                family,
                _pad: [0; 2],
                address,
            };
            self.sites
                .insert(
                    &Key::new(32 + u32::from(bits), data),
                    SiteValue { site, variant },
                    0,
                )
                .map_err(map_err(MAP_SITES))?;
        }

        let stale: Vec<u64> = self
            .leaves
            .keys()
            .filter_map(Result::ok)
            .filter(|k| (k >> 32) as u32 == g)
            .collect();
        for key in &stale {
            self.leaves.remove(key).map_err(map_err(MAP_SITE_LEAVES))?;
        }
        self.add_leaves(g, leaves)?;

        let stale: Vec<u32> = self
            .actions
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k / (MAX_VARIANTS * MAX_PLATFORMS) == g)
            .collect();
        for key in &stale {
            self.actions
                .remove(key)
                .map_err(map_err(MAP_SITE_ACTIONS))?;
        }
        for (variant, overrides) in tables.variant_ids().zip(&tables.variants) {
            for (&platform, &action) in overrides {
                self.actions
                    .insert(site_action_index(g, variant, platform), action, 0)
                    .map_err(map_err(MAP_SITE_ACTIONS))?;
            }
        }
        self.config
            .set(g, u32::from(!tables.prefixes.is_empty()), 0)
            .map_err(map_err(MAP_SITE_CONFIG))?;
        Ok(())
    }

    /// Adds changed leaves to generation `g` (learned hosts' new leaves, in force).
    pub(super) fn add_leaves(
        &mut self,
        g: u32,
        leaves: &[(u16, u32, RuleRef)],
    ) -> Result<(), DatapathError> {
        for &(leaf, variant, value) in leaves {
            self.leaves
                .insert(site_leaf_key(g, variant, leaf), value, 0)
                .map_err(map_err(MAP_SITE_LEAVES))?;
        }
        Ok(())
    }

    /// Packets and bytes by (site, platform, action), summed over CPUs (non-zero only).
    pub(super) fn counters(&self) -> Result<BTreeMap<SiteCounterKey, Counter>, DatapathError> {
        let mut totals = BTreeMap::new();
        for item in self.stats.iter() {
            let (key, values) = item.map_err(map_err(MAP_SITE_STATS))?;
            let total = values.iter().fold(Counter::default(), |acc, c| Counter {
                packets: acc.packets + c.packets,
                bytes: acc.bytes + c.bytes,
            });
            if total != Counter::default() {
                totals.insert(key, total);
            }
        }
        Ok(totals)
    }

    /// Removes every counter of a platform id that is handed to a new platform.
    pub(super) fn clear_platform(&mut self, platform: u16) -> Result<(), DatapathError> {
        let keys: HashSet<SiteCounterKey> = self
            .stats
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.platform == platform)
            .collect();
        for key in &keys {
            self.stats.remove(key).map_err(map_err(MAP_SITE_STATS))?;
        }
        Ok(())
    }
}
