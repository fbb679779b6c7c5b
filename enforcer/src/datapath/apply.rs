//! Applying a compiled policy: a new lookup table (see `table`) is written into the generation
//! not in force, then one write switches to it; learned hosts go straight into the generation in
//! force, as exact entries its ranges are flagged to consult.

// Casts below take the bits they name: generations (0, 1), families and the bit fields of the table's entries.
#![allow(clippy::cast_possible_truncation)]

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasher as _, BuildHasherDefault, DefaultHasher};
use std::net::IpAddr;
use std::time::Instant;

use aya::maps::lpm_trie::Key;
use enforcer_common::{
    FAMILY_IPV4, FAMILY_IPV6, HostKey, INDEX_BITS, INDEX_COUNT_MASK, INDEX_COUNT_SHIFT, LEAF_HOSTS,
    LEAF_ID_MASK, LEAVES_PER_GENERATION, LongKey, NameKey, NameRule, RULE_SLOTS, RULES_PER_SLOT,
    RangeEntry, Rule, RuleRef, RuleSlot, index_blocks, index_slot, v4_range_slot,
};
use ipnet::IpNet;

use super::table::{self, Table};
use super::{
    Datapath, DatapathError, MAP_ACTIVE, MAP_INDEX, MAP_LEARNED_HOSTS, MAP_LEAVES, MAP_LONG_V6,
    MAP_NAMES, MAP_RANGES, MAP_RANGES_V4, MAP_RULE_SLOTS, SWITCH_SETTLE,
};
use crate::compile::{CompiledPolicy, Prefix, PrefixRules, SiteTables};
use crate::sys::mmap::MappedArray;

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

/// What the generation in force holds, beyond the maps: its leaves (learned hosts add to them)
/// and a digest of every prefix's leaf, which the next `apply` compares against for its
/// statistics.
#[derive(Debug, Default)]
pub(super) struct InForce {
    leaves: Table,
    prefixes: foldhash::HashMap<PrefixKey, u64>,
    /// The sites' variants in force, for learned hosts' new leaves.
    sites: SiteTables,
}

/// A prefix as the statistics key it: family, address, length.
type PrefixKey = (u8, u128, u8);

fn digest(value: &RuleRef) -> u64 {
    BuildHasherDefault::<DefaultHasher>::default().hash_one(value)
}

impl Datapath {
    /// Makes the maps enforce `policy` in one step: the new table is written into the generation
    /// not in force (new rule lists into slots the generation in force does not use), then
    /// `ACTIVE_GENERATION` switches to it with one write, so every packet sees either the old
    /// policy or the new one, never a mix. The old generation is left as it is and rewritten by
    /// the next call. Statistics compare the new prefixes with the ones this datapath applied
    /// last (all are "inserted" after a restart).
    pub fn apply(&mut self, policy: &CompiledPolicy) -> Result<ApplyStats, DatapathError> {
        if let Some(at) = self.last_switch {
            std::thread::sleep(SWITCH_SETTLE.saturating_sub(at.elapsed()));
        }
        let (active, next) = (self.generation, 1 - self.generation);
        let mut stats = ApplyStats::default();

        // Slots the generation in force uses stay untouched; identical lists are reused.
        let mut in_use: HashMap<u32, u32> = HashMap::new();
        for leaf in self.leaves_of(active)?.iter().skip(1) {
            if leaf.count > 0 {
                in_use.insert(leaf.slot, leaf.count);
            }
        }
        for (slot, count) in self.sites.slots_in_use(active as u32)? {
            in_use.insert(slot, count);
        }
        // The rules as each site variant sees them, where its overrides change them: their
        // lists need slots too.
        let changed = variant_rules(policy);
        let mut by_content: HashMap<Vec<Rule>, u32> = HashMap::new();
        for (&slot, &count) in &in_use {
            let content = self.slots.get(&slot, 0).map_err(map_err(MAP_RULE_SLOTS))?;
            let count = (count as usize).min(RULES_PER_SLOT);
            by_content.insert(content.rules[..count].to_vec(), slot);
        }
        let mut free = (0..RULE_SLOTS).filter(|s| !in_use.contains_key(s));
        let mut slots_of: foldhash::HashMap<&[Rule], u32> = foldhash::HashMap::default();
        let mut lists = policy.rule_lists();
        lists.extend(changed.iter().map(|(_, _, rules)| rules.rules.as_slice()));
        for list in lists {
            let slot = match by_content.get(list) {
                Some(&slot) => slot,
                None => {
                    let slot = free.next().ok_or(DatapathError::NoFreeSlot)?;
                    let mut value = RuleSlot::default();
                    value.rules[..list.len()].copy_from_slice(list);
                    self.slots
                        .set(slot, value, 0)
                        .map_err(map_err(MAP_RULE_SLOTS))?;
                    stats.slots_written += 1;
                    slot
                }
            };
            slots_of.insert(list, slot);
        }

        let per_generation = self.lookup.ranges_per_generation;
        let range_base = per_generation.map(|n| next as u32 * n);
        let mut table = table::build(
            policy,
            |rules| slots_of.get(rules).copied(),
            range_base,
            per_generation,
        )?;
        let site_leaves = site_leaves(policy, &mut table, &changed, |rules| {
            slots_of.get(rules).copied()
        })?;
        self.write_table(next, &table)?;
        self.write_names(next, &policy.names)?;
        self.sites
            .write_generation(next as u32, &policy.sites, &site_leaves)?;
        self.active
            .set(0, if next == 0 { 0 } else { 1 }, 0)
            .map_err(map_err(MAP_ACTIVE))?;
        self.generation = next;
        self.last_switch = Some(Instant::now());

        let prefixes = prefix_digests(policy, &table);
        let old = self.in_force.take().map(|f| f.prefixes).unwrap_or_default();
        for (key, value) in &prefixes {
            match old.get(key) {
                Some(v) if v == value => stats.unchanged += 1,
                Some(_) => stats.updated += 1,
                None => stats.inserted += 1,
            }
        }
        stats.removed = old.keys().filter(|k| !prefixes.contains_key(*k)).count();
        self.in_force = Some(InForce {
            leaves: Table::with_leaves(table.leaves),
            prefixes,
            sites: policy.sites.clone(),
        });
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

    /// Writes `table` into generation `generation`, which no packet reads: index, ranges and
    /// leaves by memory copies; learned hosts of that generation dropped (the table holds them
    /// now); long IPv6 prefixes as a diff of the trie.
    fn write_table(&mut self, generation: usize, table: &Table) -> Result<(), DatapathError> {
        let g = generation as u32;
        for (family, index) in table.index.iter().enumerate() {
            let first = index_slot(g, family as u8, 0);
            if !self.lookup.index.write(first, index) {
                return Err(DatapathError::MappedWrite(MAP_INDEX));
            }
        }
        let [v4_base, v6_base] = self.lookup.ranges_per_generation.map(|n| g * n);
        let pairs: Vec<u64> = table
            .ranges_v4
            .chunks(2)
            .map(|pair| {
                pair.iter()
                    .rev()
                    .fold(0, |value, &r| value << 32 | u64::from(r))
            })
            .collect();
        // A generation's count of IPv4 ranges is even: its first is the low half of a value.
        if !self
            .lookup
            .ranges_v4
            .write(v4_range_slot(v4_base).0, &pairs)
        {
            return Err(DatapathError::MappedWrite(MAP_RANGES_V4));
        }
        if !self.lookup.ranges_v6.write(v6_base, &table.ranges_v6) {
            return Err(DatapathError::MappedWrite(MAP_RANGES));
        }
        let mut leaves = table.leaves.clone();
        leaves.resize(LEAVES_PER_GENERATION as usize, RuleRef::default());
        if !self.lookup.leaves.write(g * LEAVES_PER_GENERATION, &leaves) {
            return Err(DatapathError::MappedWrite(MAP_LEAVES));
        }

        let hosts = &mut self.lookup.learned_hosts;
        let stale: Vec<HostKey> = hosts
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.tag / 2 == g)
            .collect();
        for key in &stale {
            hosts.remove(key).map_err(map_err(MAP_LEARNED_HOSTS))?;
        }

        let long = &mut self.lookup.long_v6;
        let mut current: HashMap<(u32, LongKey), u32> = HashMap::new();
        for item in long.iter() {
            let (key, value) = item.map_err(map_err(MAP_LONG_V6))?;
            if u32::from(key.data()[0]) == g {
                current.insert((key.prefix_len(), key.data()), value);
            }
        }
        let wanted: HashMap<(u32, LongKey), u32> = table
            .long_v6
            .iter()
            .map(|&(addr, len, leaf)| ((8 + u32::from(len), long_key(g, addr)), u32::from(leaf)))
            .collect();
        for (len, data) in current.keys().filter(|k| !wanted.contains_key(*k)) {
            long.remove(&Key::new(*len, *data))
                .map_err(map_err(MAP_LONG_V6))?;
        }
        for (&(len, data), &leaf) in &wanted {
            if current.get(&(len, data)) != Some(&leaf) {
                long.insert(&Key::new(len, data), leaf, 0)
                    .map_err(map_err(MAP_LONG_V6))?;
            }
        }
        Ok(())
    }

    /// The leaves of generation `generation` as the map holds them (index = leaf id).
    fn leaves_of(&self, generation: usize) -> Result<Vec<RuleRef>, DatapathError> {
        let first = generation as u32 * LEAVES_PER_GENERATION;
        (first..first + LEAVES_PER_GENERATION)
            .map(|i| {
                self.lookup
                    .leaves
                    .get(i)
                    .ok_or(DatapathError::MappedWrite(MAP_LEAVES))
            })
            .collect()
    }

    /// Makes the name table of generation `generation` (not in force) hold exactly `names`:
    /// stale keys go first, then new and changed ones.
    fn write_names(
        &mut self,
        generation: usize,
        names: &BTreeMap<NameKey, NameRule>,
    ) -> Result<(), DatapathError> {
        let map_err = map_err(MAP_NAMES[generation]);
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
    /// these hosts, see `compile::add_hosts`) into the generation in force: each host's leaf
    /// (new ones into unused leaf ids, rule lists into free slots), then its exact entry, then
    /// the flag on the range holding it, so a packet finds either the old verdict or the new
    /// one. Needs a previous `apply`.
    pub fn write_hosts(
        &mut self,
        policy: &CompiledPolicy,
        hosts: &[IpNet],
    ) -> Result<usize, DatapathError> {
        let cache = self.slot_cache.as_mut().ok_or(DatapathError::NotApplied)?;
        let in_force = self.in_force.as_mut().ok_or(DatapathError::NotApplied)?;
        let g = self.generation as u32;
        let mut written = 0;
        for host in hosts {
            let (family, address, len, rules) = match host {
                IpNet::V4(n) => {
                    let a = u32::from(n.addr());
                    let rules = policy.v4.get(&Prefix { addr: a, len: 32 });
                    (FAMILY_IPV4, u128::from(a), 32, rules)
                }
                IpNet::V6(n) => {
                    let a = u128::from(n.addr());
                    let rules = policy.v6.get(&Prefix { addr: a, len: 128 });
                    (FAMILY_IPV6, a, 128, rules)
                }
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
                        .map_err(map_err(MAP_RULE_SLOTS))?;
                    cache.by_content.insert(rules.rules.clone(), slot);
                    slot
                }
            };
            let mut value = table::rule_ref(slot, rules);
            // The host's rules as each site variant sees them, where that changes them.
            let mut by_variant = Vec::new();
            for variant in in_force.sites.variant_ids() {
                let Some(seen) = in_force.sites.rules_for(rules, variant) else {
                    continue;
                };
                let slot = match cache.by_content.get(&seen.rules) {
                    Some(&slot) => slot,
                    None => {
                        let slot = cache.free.pop_first().ok_or(DatapathError::NoFreeSlot)?;
                        let mut list = RuleSlot::default();
                        list.rules[..seen.rules.len()].copy_from_slice(&seen.rules);
                        self.slots
                            .set(slot, list, 0)
                            .map_err(map_err(MAP_RULE_SLOTS))?;
                        cache.by_content.insert(seen.rules.clone(), slot);
                        slot
                    }
                };
                by_variant.push((variant, table::rule_ref(slot, &seen)));
            }
            value.by_site = u32::from(!by_variant.is_empty());
            let known = in_force.leaves.leaves.len();
            let leaf = in_force.leaves.leaf_id(value)?;
            if usize::from(leaf) >= known {
                // The variants' leaves first: the flag on the leaf sends packets to them.
                let entries: Vec<(u16, u32, RuleRef)> = by_variant
                    .iter()
                    .map(|&(variant, r)| (leaf, variant, r))
                    .collect();
                self.sites.add_leaves(g, &entries)?;
                if !self
                    .lookup
                    .leaves
                    .write(g * LEAVES_PER_GENERATION + u32::from(leaf), &[value])
                {
                    return Err(DatapathError::MappedWrite(MAP_LEAVES));
                }
            }
            let key = HostKey {
                tag: g * 2 + u32::from(family),
                address: host_bytes(family, address),
            };
            self.lookup
                .learned_hosts
                .insert(key, u32::from(leaf), 0)
                .map_err(map_err(MAP_LEARNED_HOSTS))?;
            self.lookup
                .flag_hosts(g, family, lookup_key(family, address))?;
            in_force
                .prefixes
                .insert((family, address, len), digest(&value));
            written += 1;
        }
        Ok(written)
    }
}

impl super::LookupMaps {
    /// Sets `LEAF_HOSTS` on the index entry or range of generation `g` that holds `key`.
    fn flag_hosts(&self, g: u32, family: u8, key: u64) -> Result<(), DatapathError> {
        let rest_bits = 64 - INDEX_BITS[usize::from(family)];
        let slot = index_slot(g, family, (key >> rest_bits) as u32);
        let entry = self
            .index
            .get(slot)
            .ok_or(DatapathError::MappedWrite(MAP_INDEX))?;
        let count = ((entry >> INDEX_COUNT_SHIFT) & INDEX_COUNT_MASK) as u32;
        if count == 0 {
            if entry & u64::from(LEAF_HOSTS) == 0
                && !self.index.store(slot, entry | u64::from(LEAF_HOSTS))
            {
                return Err(DatapathError::MappedWrite(MAP_INDEX));
            }
            return Ok(());
        }
        let rest = key & ((1 << rest_bits) - 1);
        if family == FAMILY_IPV4 {
            flag_range(&PairedRanges(&self.ranges_v4), entry as u32, count, rest)
        } else {
            flag_range(&self.ranges_v6, entry as u32, count, rest)
        }
    }
}

/// A family's mapped ranges, read and flagged one range at a time.
trait MappedRanges {
    type Range: RangeEntry;
    const NAME: &'static str;
    fn range(&self, i: u32) -> Option<Self::Range>;
    /// Sets `flags` on range `i` atomically (the program may be reading it).
    fn set_flags(&self, i: u32, flags: u16) -> bool;
}

/// IPv6: one range a value.
impl MappedRanges for MappedArray<u64> {
    type Range = u64;
    const NAME: &'static str = MAP_RANGES;
    fn range(&self, i: u32) -> Option<u64> {
        self.get(i)
    }
    fn set_flags(&self, i: u32, flags: u16) -> bool {
        self.get(i)
            .is_some_and(|range| self.store(i, range.with_flags(flags)))
    }
}

/// IPv4: two ranges a value (`v4_range_slot`).
struct PairedRanges<'a>(&'a MappedArray<u64>);

impl MappedRanges for PairedRanges<'_> {
    type Range = u32;
    const NAME: &'static str = MAP_RANGES_V4;
    fn range(&self, i: u32) -> Option<u32> {
        let (value, shift) = v4_range_slot(i);
        self.0.get(value).map(|pair| (pair >> shift) as u32)
    }
    fn set_flags(&self, i: u32, flags: u16) -> bool {
        let (value, shift) = v4_range_slot(i);
        // Only the daemon writes: the other half is not changed under us.
        self.0
            .get(value)
            .is_some_and(|pair| self.0.store(value, pair | u64::from(flags) << shift))
    }
}

/// Sets `LEAF_HOSTS` on the last range of the run `[start, start + count)` of `ranges` starting
/// at or before `rest`, as the program finds it.
fn flag_range(
    ranges: &impl MappedRanges,
    start: u32,
    count: u32,
    rest: u64,
) -> Result<(), DatapathError> {
    let missing = || DatapathError::MappedWrite(ranges_name(ranges));
    let (mut lo, mut n) = (start, count);
    while n > 1 {
        let half = n / 2;
        if ranges.range(lo + half).ok_or_else(missing)?.first() <= rest {
            lo += half;
        }
        n -= half;
    }
    let range = ranges.range(lo).ok_or_else(missing)?;
    if range.leaf() & LEAF_HOSTS == 0 && !ranges.set_flags(lo, LEAF_HOSTS) {
        return Err(missing());
    }
    Ok(())
}

/// The map name of `ranges`, for errors.
fn ranges_name<M: MappedRanges>(_: &M) -> &'static str {
    M::NAME
}

impl Datapath {
    /// The host keys (/32 and /128) of the generation in force with the rules each carries at
    /// its full length (its own, not inherited from an enclosing prefix): what an earlier run
    /// left enforced for single addresses, read on adoption. Found as the learned hosts, the
    /// IPv4 ranges whose leaf has rules of /32 prefixes (such a range is made of hosts only),
    /// and the /128 entries of the long IPv6 table.
    pub fn hosts_in_force(&self) -> Result<Vec<(IpAddr, Vec<Rule>)>, DatapathError> {
        let g = self.generation as u32;
        let leaves = self.leaves_of(self.generation)?;
        let mut hosts: Vec<(IpAddr, u8, u16)> = Vec::new();
        for item in self.lookup.learned_hosts.iter() {
            let (key, leaf) = item.map_err(map_err(MAP_LEARNED_HOSTS))?;
            if key.tag / 2 != g {
                continue;
            }
            let leaf = (leaf as u16) & LEAF_ID_MASK;
            if key.tag % 2 == u32::from(FAMILY_IPV4) {
                let [a, b, c, d, ..] = key.address;
                hosts.push((IpAddr::from([a, b, c, d]), 32, leaf));
            } else {
                hosts.push((IpAddr::from(key.address), 128, leaf));
            }
        }
        for item in self.lookup.long_v6.iter() {
            let (key, leaf) = item.map_err(map_err(MAP_LONG_V6))?;
            let data = key.data();
            if u32::from(data[0]) == g && key.prefix_len() == 8 + 128 {
                let mut address = [0u8; 16];
                address.copy_from_slice(&data[1..]);
                hosts.push((IpAddr::from(address), 128, leaf as u16));
            }
        }
        let has_hosts = |leaf: u16| {
            leaves
                .get(usize::from(leaf & LEAF_ID_MASK))
                .is_some_and(|r| {
                    r.prefix_lens
                        .iter()
                        .take(r.count as usize)
                        .any(|&l| l == 32)
                })
        };
        for (start, end, leaf) in self.lookup.ranges_of(g, FAMILY_IPV4)? {
            if (leaf & LEAF_ID_MASK) == 0 || !has_hosts(leaf) {
                continue;
            }
            // Hosts only: at most one address per prefix of the policy.
            for key in (start..end).step_by(1 << 32).take(1 << 21) {
                let a = (key >> 32) as u32;
                hosts.push((IpAddr::from(a.to_be_bytes()), 32, leaf & LEAF_ID_MASK));
            }
        }
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for (address, len, leaf) in hosts {
            let Some(value) = leaves.get(usize::from(leaf)) else {
                continue;
            };
            if value.count == 0 || !seen.insert(address) {
                continue;
            }
            let slot = self
                .slots
                .get(&value.slot, 0)
                .map_err(map_err(MAP_RULE_SLOTS))?;
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

impl super::LookupMaps {
    /// The ranges of generation `g` and `family` as `(first key, end key, leaf)`, the end
    /// exclusive (u128: the last block ends at 2^64).
    fn ranges_of(&self, g: u32, family: u8) -> Result<Vec<(u128, u128, u16)>, DatapathError> {
        let mut out = Vec::new();
        let rest_bits = 64 - INDEX_BITS[usize::from(family)];
        for block in 0..index_blocks(family) {
            let entry = self
                .index
                .get(index_slot(g, family, block))
                .ok_or(DatapathError::MappedWrite(MAP_INDEX))?;
            let first = u128::from(block) << rest_bits;
            let next = first + (1 << rest_bits);
            let count = ((entry >> INDEX_COUNT_SHIFT) & INDEX_COUNT_MASK) as u32;
            if count == 0 {
                out.push((first, next, entry as u16));
                continue;
            }
            let start = entry as u32;
            let run: Vec<(u64, u16)> = if family == FAMILY_IPV4 {
                read_run(&PairedRanges(&self.ranges_v4), start, count)?
            } else {
                read_run(&self.ranges_v6, start, count)?
            };
            for (i, &(at, leaf)) in run.iter().enumerate() {
                let end = run
                    .get(i + 1)
                    .map_or(next, |&(following, _)| first + u128::from(following));
                out.push((first + u128::from(at), end, leaf));
            }
        }
        Ok(out)
    }
}

/// The ranges `[start, start + count)` of `ranges` as (first key, leaf).
fn read_run(
    ranges: &impl MappedRanges,
    start: u32,
    count: u32,
) -> Result<Vec<(u64, u16)>, DatapathError> {
    (start..start + count)
        .map(|i| {
            let range = ranges
                .range(i)
                .ok_or(DatapathError::MappedWrite(ranges_name(ranges)))?;
            Ok((range.first(), range.leaf()))
        })
        .collect()
}

/// Every prefix of `policy` with a digest of its leaf in `table`, for the statistics.
/// Every distinct rule list of `policy` that a site variant sees otherwise: (the rules, the
/// variant, what the variant sees).
fn variant_rules(policy: &CompiledPolicy) -> Vec<(&PrefixRules, u32, PrefixRules)> {
    if policy.sites.variants.is_empty() {
        return Vec::new();
    }
    let mut distinct: foldhash::HashSet<&PrefixRules> = foldhash::HashSet::default();
    distinct.extend(policy.v4.values().chain(policy.v6.values()));
    let mut changed = Vec::new();
    for rules in distinct {
        for variant in policy.sites.variant_ids() {
            if let Some(seen) = policy.sites.rules_for(rules, variant) {
                changed.push((rules, variant, seen));
            }
        }
    }
    changed
}

/// The leaves `changed` (see `variant_rules`) alter, as (leaf id, variant, what the variant
/// sees); flags those leaves `by_site` in `table`.
fn site_leaves(
    policy: &CompiledPolicy,
    table: &mut Table,
    changed: &[(&PrefixRules, u32, PrefixRules)],
    slot_of: impl Fn(&[Rule]) -> Option<u32>,
) -> Result<Vec<(u16, u32, RuleRef)>, DatapathError> {
    if changed.is_empty() {
        return Ok(Vec::new());
    }
    let mut leaf_of: foldhash::HashMap<&PrefixRules, u16> = foldhash::HashMap::default();
    for (rules, &leaf) in policy
        .v4
        .values()
        .chain(policy.v6.values())
        .zip(&table.prefix_leaves)
    {
        leaf_of.entry(rules).or_insert(leaf);
    }
    let mut entries = Vec::with_capacity(changed.len());
    for (rules, variant, seen) in changed {
        let Some(&leaf) = leaf_of.get(rules) else {
            continue;
        };
        let slot = slot_of(&seen.rules).ok_or(table::TableError::NoSlot)?;
        entries.push((leaf, *variant, table::rule_ref(slot, seen)));
        if let Some(value) = table.leaves.get_mut(usize::from(leaf)) {
            value.by_site = 1;
        }
    }
    Ok(entries)
}

fn prefix_digests(policy: &CompiledPolicy, table: &Table) -> foldhash::HashMap<PrefixKey, u64> {
    let digests: Vec<u64> = table.leaves.iter().map(digest).collect();
    let keys = policy
        .v4
        .keys()
        .map(|p| (FAMILY_IPV4, u128::from(p.addr), p.len))
        .chain(policy.v6.keys().map(|p| (FAMILY_IPV6, p.addr, p.len)));
    keys.zip(&table.prefix_leaves)
        .filter_map(|(key, &leaf)| Some((key, *digests.get(usize::from(leaf))?)))
        .collect()
}

/// The 64-bit key the program looks an address up by.
fn lookup_key(family: u8, address: u128) -> u64 {
    if family == FAMILY_IPV4 {
        (address as u64) << 32
    } else {
        (address >> 64) as u64
    }
}

/// The address bytes of a `HostKey` (IPv4 in the first four).
fn host_bytes(family: u8, address: u128) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    if family == FAMILY_IPV4 {
        bytes[..4].copy_from_slice(&(address as u32).to_be_bytes());
    } else {
        bytes = address.to_be_bytes();
    }
    bytes
}

/// The key data of `LONG_PREFIXES_V6` for generation `g`.
fn long_key(g: u32, address: u128) -> LongKey {
    let mut data = [0u8; 17];
    data[0] = g as u8;
    data[1..].copy_from_slice(&address.to_be_bytes());
    data
}

fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> DatapathError + Copy {
    move |source| DatapathError::Map { name, source }
}
