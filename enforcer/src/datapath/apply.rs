//! Applying a compiled policy: the new sets go into the generation not in force, then one write
//! switches to it; learned hosts go straight into the generation in force.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::time::Instant;

use aya::maps::{LpmTrie, MapData, lpm_trie::Key};
use enforcer_common::{
    NameKey, NameRule, PROTOCOL_ANY, RULE_SLOTS, RULES_PER_SLOT, Rule, RuleRef, RuleSlot,
    rule_score,
};
use ipnet::IpNet;

use super::{
    Datapath, DatapathError, MAP_ACTIVE, MAP_NAMES, MAP_PREFIXES_V4, MAP_PREFIXES_V6,
    MAP_RULE_SLOTS, SWITCH_SETTLE,
};
use crate::compile::{CompiledPolicy, Prefix, PrefixRules};

/// What `apply` changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyStats {
    pub inserted: usize,
    pub updated: usize,
    pub removed: usize,
    pub unchanged: usize,
    pub slots_written: usize,
}

#[derive(Debug, Default)]
pub(super) struct SlotCache {
    by_content: HashMap<Vec<Rule>, u32>,
    free: BTreeSet<u32>,
}

impl Datapath {
    /// Makes the maps enforce `policy` in one step: the new sets are written into the
    /// generation not in force (new rule lists into slots the generation in force does not use),
    /// then `ACTIVE_GENERATION` switches to it with one write, so every packet sees either the
    /// old policy or the new one, never a mix. The old generation is left as it is and rewritten
    /// by the next call. Statistics compare the new sets with the ones that were in force.
    pub fn apply(&mut self, policy: &CompiledPolicy) -> Result<ApplyStats, DatapathError> {
        if let Some(at) = self.last_switch {
            std::thread::sleep(SWITCH_SETTLE.saturating_sub(at.elapsed()));
        }
        let (active, next) = (self.generation, 1 - self.generation);
        let current_v4 = read_trie(&self.prefixes_v4[active], MAP_PREFIXES_V4[active])?;
        let current_v6 = read_trie(&self.prefixes_v6[active], MAP_PREFIXES_V6[active])?;
        let next_v4 = read_trie(&self.prefixes_v4[next], MAP_PREFIXES_V4[next])?;
        let next_v6 = read_trie(&self.prefixes_v6[next], MAP_PREFIXES_V6[next])?;
        let mut stats = ApplyStats::default();

        // Slots the generation in force uses stay untouched; identical lists are reused.
        let mut in_use: HashMap<u32, u32> = HashMap::new();
        for r in current_v4.values().chain(current_v6.values()) {
            in_use.insert(r.slot, r.count);
        }
        let mut by_content: HashMap<Vec<Rule>, u32> = HashMap::new();
        for (&slot, &count) in &in_use {
            let content = self
                .slots
                .get(&slot, 0)
                .map_err(|source| DatapathError::Map {
                    name: MAP_RULE_SLOTS,
                    source,
                })?;
            let count = (count as usize).min(RULES_PER_SLOT);
            by_content.insert(content.rules[..count].to_vec(), slot);
        }
        let mut free = (0..RULE_SLOTS).filter(|s| !in_use.contains_key(s));
        let mut slots_of: HashMap<&[Rule], u32> = HashMap::new();
        for list in policy.rule_lists() {
            let slot = match by_content.get(list) {
                Some(&slot) => slot,
                None => {
                    let slot = free.next().ok_or(DatapathError::NoFreeSlot)?;
                    let mut value = RuleSlot::default();
                    value.rules[..list.len()].copy_from_slice(list);
                    self.slots
                        .set(slot, value, 0)
                        .map_err(|source| DatapathError::Map {
                            name: MAP_RULE_SLOTS,
                            source,
                        })?;
                    stats.slots_written += 1;
                    slot
                }
            };
            slots_of.insert(list, slot);
        }

        let wanted_v4 = wanted(&policy.v4, &slots_of, |a| a.to_be_bytes());
        let wanted_v6 = wanted(&policy.v6, &slots_of, |a| a.to_be_bytes());
        count_changes(&current_v4, &wanted_v4, &mut stats);
        count_changes(&current_v6, &wanted_v6, &mut stats);
        let mut written = ApplyStats::default();
        // Stale keys go first: no packet reads this generation, and a trie that was left full
        // (by a failed apply, or a large policy two changes ago) must make room for the new one.
        remove_stale(
            &mut self.prefixes_v4[next],
            MAP_PREFIXES_V4[next],
            &next_v4,
            &wanted_v4,
            &mut written,
        )?;
        remove_stale(
            &mut self.prefixes_v6[next],
            MAP_PREFIXES_V6[next],
            &next_v6,
            &wanted_v6,
            &mut written,
        )?;
        upsert(
            &mut self.prefixes_v4[next],
            MAP_PREFIXES_V4[next],
            &next_v4,
            &wanted_v4,
            &mut written,
        )?;
        upsert(
            &mut self.prefixes_v6[next],
            MAP_PREFIXES_V6[next],
            &next_v6,
            &wanted_v6,
            &mut written,
        )?;
        self.write_names(next, &policy.names)?;
        self.active
            .set(0, if next == 0 { 0 } else { 1 }, 0)
            .map_err(|source| DatapathError::Map {
                name: MAP_ACTIVE,
                source,
            })?;
        self.generation = next;
        self.last_switch = Some(Instant::now());
        let by_content: HashMap<Vec<Rule>, u32> = slots_of
            .iter()
            .map(|(list, slot)| (list.to_vec(), *slot))
            .collect();
        let used: HashSet<u32> = by_content.values().copied().collect();
        self.slot_cache = Some(SlotCache {
            free: (0..RULE_SLOTS).filter(|s| !used.contains(s)).collect(),
            by_content,
        });
        Ok(stats)
    }

    /// Makes the name table of generation `generation` (not in force) hold exactly `names`:
    /// stale keys go first, then new and changed ones.
    fn write_names(
        &mut self,
        generation: usize,
        names: &BTreeMap<NameKey, NameRule>,
    ) -> Result<(), DatapathError> {
        let map_err = |source| DatapathError::Map {
            name: MAP_NAMES[generation],
            source,
        };
        let table = &mut self.names[generation];
        let current: HashMap<NameKey, NameRule> =
            table.iter().collect::<Result<_, _>>().map_err(map_err)?;
        for key in current.keys().filter(|k| !names.contains_key(k)) {
            table.remove(key).map_err(map_err)?;
        }
        for (key, rule) in names {
            if current.get(key) != Some(rule) {
                table.insert(key, rule, 0).map_err(map_err)?;
            }
        }
        Ok(())
    }

    /// Writes the given host prefixes of `policy` (which must be the last applied policy plus
    /// these hosts, see `compile::add_hosts`) straight into the tries: each is one key, inserted
    /// or replaced atomically, its rule list written first into a free slot unless an identical
    /// list is already in the table. Needs a previous `apply`.
    pub fn write_hosts(
        &mut self,
        policy: &CompiledPolicy,
        hosts: &[IpNet],
    ) -> Result<usize, DatapathError> {
        let cache = self.slot_cache.as_mut().ok_or(DatapathError::NotApplied)?;
        let mut written = 0;
        for host in hosts {
            let rules = match host {
                IpNet::V4(n) => policy.v4.get(&Prefix {
                    addr: u32::from(n.addr()),
                    len: 32,
                }),
                IpNet::V6(n) => policy.v6.get(&Prefix {
                    addr: u128::from(n.addr()),
                    len: 128,
                }),
            };
            let Some(rules) = rules else {
                continue;
            };
            let slot = match cache.by_content.get(&rules.rules) {
                Some(&slot) => slot,
                None => {
                    let slot = cache.free.pop_first().ok_or(DatapathError::NoFreeSlot)?;
                    let mut value = RuleSlot::default();
                    value.rules[..rules.rules.len()].copy_from_slice(&rules.rules);
                    self.slots
                        .set(slot, value, 0)
                        .map_err(|source| DatapathError::Map {
                            name: MAP_RULE_SLOTS,
                            source,
                        })?;
                    cache.by_content.insert(rules.rules.clone(), slot);
                    slot
                }
            };
            let value = rule_ref(slot, rules);
            match host {
                IpNet::V4(n) => self.prefixes_v4[self.generation]
                    .insert(&Key::new(32, n.addr().octets()), value, 0)
                    .map_err(|source| DatapathError::Map {
                        name: MAP_PREFIXES_V4[self.generation],
                        source,
                    })?,
                IpNet::V6(n) => self.prefixes_v6[self.generation]
                    .insert(&Key::new(128, n.addr().octets()), value, 0)
                    .map_err(|source| DatapathError::Map {
                        name: MAP_PREFIXES_V6[self.generation],
                        source,
                    })?,
            }
            written += 1;
        }
        Ok(written)
    }
}

impl Datapath {
    /// The host keys (/32 and /128) of the generation in force with the rules each carries at
    /// its full length (its own, not inherited from an enclosing prefix): what an earlier run
    /// left enforced for single addresses, read on adoption.
    pub fn hosts_in_force(&self) -> Result<Vec<(IpAddr, Vec<Rule>)>, DatapathError> {
        let active = self.generation;
        let v4 = read_trie(&self.prefixes_v4[active], MAP_PREFIXES_V4[active])?;
        let v6 = read_trie(&self.prefixes_v6[active], MAP_PREFIXES_V6[active])?;
        let hosts = v4
            .into_iter()
            .filter(|((len, _), _)| *len == 32)
            .map(|((_, a), r)| (IpAddr::from(a), 32, r))
            .chain(
                v6.into_iter()
                    .filter(|((len, _), _)| *len == 128)
                    .map(|((_, a), r)| (IpAddr::from(a), 128, r)),
            );
        let mut out = Vec::new();
        for (address, len, value) in hosts {
            let slot = self
                .slots
                .get(&value.slot, 0)
                .map_err(|source| DatapathError::Map {
                    name: MAP_RULE_SLOTS,
                    source,
                })?;
            let count = usize::try_from(value.count)
                .unwrap_or(usize::MAX)
                .min(RULES_PER_SLOT);
            let own = slot.rules[..count]
                .iter()
                .zip(value.prefix_lens)
                .filter(|(_, l)| *l == len)
                .map(|(r, _)| *r)
                .collect();
            out.push((address, own));
        }
        Ok(out)
    }
}

fn read_trie<const N: usize>(
    trie: &LpmTrie<MapData, [u8; N], RuleRef>,
    name: &'static str,
) -> Result<HashMap<(u32, [u8; N]), RuleRef>, DatapathError> {
    let mut out = HashMap::new();
    for item in trie.iter() {
        let (key, value) = item.map_err(|source| DatapathError::Map { name, source })?;
        out.insert((key.prefix_len(), key.data()), value);
    }
    Ok(out)
}

fn wanted<A: Copy, const N: usize>(
    prefixes: &BTreeMap<Prefix<A>, PrefixRules>,
    slots_of: &HashMap<&[Rule], u32>,
    bytes: impl Fn(A) -> [u8; N],
) -> HashMap<(u32, [u8; N]), RuleRef> {
    prefixes
        .iter()
        .filter_map(|(p, entry)| {
            let slot = *slots_of.get(entry.rules.as_slice())?;
            Some(((u32::from(p.len), bytes(p.addr)), rule_ref(slot, entry)))
        })
        .collect()
}

/// The trie value of a prefix whose rule list sits in `slot`.
fn rule_ref(slot: u32, entry: &PrefixRules) -> RuleRef {
    let mut value = RuleRef {
        slot,
        // At most RULES_PER_SLOT.
        count: u32::try_from(entry.rules.len()).unwrap_or(u32::MAX),
        prefix_lens: [0; RULES_PER_SLOT],
        order: [0; RULES_PER_SLOT],
        direct: 0,
    };
    value.prefix_lens[..entry.prefix_lens.len()].copy_from_slice(&entry.prefix_lens);
    value.order[..entry.order.len()].copy_from_slice(&entry.order);
    // The best rule for every protocol and port wins whatever the packet: its verdict goes in
    // the trie's value, and the program need not read the rule list.
    let best = entry.order.first().map(|&i| usize::from(i));
    if let Some(i) = best
        && let (Some(rule), Some(&len)) = (entry.rules.get(i), entry.prefix_lens.get(i))
        && rule.protocol == PROTOCOL_ANY
    {
        value.direct = rule_score(rule, len);
    }
    value
}

/// What switching from `current` to `wanted` changes, for the statistics.
fn count_changes<const N: usize>(
    current: &HashMap<(u32, [u8; N]), RuleRef>,
    wanted: &HashMap<(u32, [u8; N]), RuleRef>,
    stats: &mut ApplyStats,
) {
    for (key, value) in wanted {
        match current.get(key) {
            Some(old) if old == value => stats.unchanged += 1,
            Some(_) => stats.updated += 1,
            None => stats.inserted += 1,
        }
    }
    stats.removed += current.keys().filter(|k| !wanted.contains_key(*k)).count();
}

fn upsert<const N: usize>(
    trie: &mut LpmTrie<MapData, [u8; N], RuleRef>,
    name: &'static str,
    current: &HashMap<(u32, [u8; N]), RuleRef>,
    wanted: &HashMap<(u32, [u8; N]), RuleRef>,
    stats: &mut ApplyStats,
) -> Result<(), DatapathError> {
    for (&(len, addr), value) in wanted {
        match current.get(&(len, addr)) {
            Some(old) if old == value => stats.unchanged += 1,
            old => {
                trie.insert(&Key::new(len, addr), *value, 0)
                    .map_err(|source| DatapathError::Map { name, source })?;
                if old.is_some() {
                    stats.updated += 1;
                } else {
                    stats.inserted += 1;
                }
            }
        }
    }
    Ok(())
}

fn remove_stale<const N: usize>(
    trie: &mut LpmTrie<MapData, [u8; N], RuleRef>,
    name: &'static str,
    current: &HashMap<(u32, [u8; N]), RuleRef>,
    wanted: &HashMap<(u32, [u8; N]), RuleRef>,
    stats: &mut ApplyStats,
) -> Result<(), DatapathError> {
    let stale: HashSet<_> = current
        .keys()
        .filter(|k| !wanted.contains_key(*k))
        .collect();
    for &(len, addr) in stale {
        trie.remove(&Key::new(len, addr))
            .map_err(|source| DatapathError::Map { name, source })?;
        stats.removed += 1;
    }
    Ok(())
}
