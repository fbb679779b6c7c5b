//! The lookup table the XDP program searches (enforcer-ebpf/src/lookup.rs), built in user space
//! from a compiled policy, DXR-like: nested prefixes are flattened into disjoint ranges, each
//! carrying the leaf (the rule list reference) of the longest prefix over it, which already holds
//! every enclosing prefix's rules (see `compile`). An address becomes a 64-bit key (IPv4: the
//! address in the top 32 bits; IPv6: its top 64 bits); the key's top bits (`INDEX_BITS`) pick an
//! index entry,
//! which is the leaf of its whole block or points at the block's sorted ranges. IPv6 prefixes
//! longer than /64 go to a separate exact table, and the ranges over their /64 are flagged.
//!
//! Pure: no kernel here, so the flattening is tested against the compiled prefixes directly.

// Casts below take the bits they name: packs and unpacks the bit fields of index entries, ranges and leaves.
#![allow(clippy::cast_possible_truncation)]

use enforcer_common::{
    FAMILY_NAMES, INDEX_BITS, INDEX_COUNT_SHIFT, LEAF_LONG, LEAVES_PER_GENERATION,
    MAX_LONG_PREFIXES_V6, PROTOCOL_ANY, RULES_PER_SLOT, RangeEntry, Rule, RuleRef, rule_score,
};

use crate::compile::{CompiledPolicy, PrefixRules};

const KEY_BITS: u32 = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TableError {
    #[error(
        "{count} distinct rule combinations in one policy exceed the lookup table's {limit} leaves"
    )]
    TooManyLeaves { count: usize, limit: u32 },
    #[error(
        "the policy needs {count} {family} ranges; the lookup table holds {limit} a generation"
    )]
    TooManyRanges {
        family: &'static str,
        count: usize,
        limit: u32,
    },
    #[error("{count} IPv6 prefixes longer than /64 exceed the table's {limit}")]
    TooManyLongPrefixes { count: usize, limit: u32 },
    #[error("a rule list of the policy has no slot in the rule table")]
    NoSlot,
}

/// One generation of the table, ready to copy into the maps.
#[derive(Debug, Default)]
pub struct Table {
    /// Per family (IPv4, IPv6), `index_blocks(family)` index entries; run starts are absolute (they
    /// include the family's `range_base` given to [`build`]).
    pub index: [Vec<u64>; 2],
    /// IPv4's runs of ranges, from its `range_base`.
    pub ranges_v4: Vec<u32>,
    /// IPv6's runs of ranges, from its `range_base`.
    pub ranges_v6: Vec<u64>,
    /// Leaf id → rule list reference; id 0 is the empty leaf.
    pub leaves: Vec<RuleRef>,
    /// IPv6 prefixes longer than /64: address, length, leaf id.
    pub long_v6: Vec<(u128, u8, u16)>,
    /// The leaf id of every prefix of the policy, IPv4 then IPv6, in the policy's order.
    pub prefix_leaves: Vec<u16>,
    leaf_ids: foldhash::HashMap<RuleRef, u16>,
}

impl Table {
    /// The id of `value`'s leaf, adding it when new.
    pub fn leaf_id(&mut self, value: RuleRef) -> Result<u16, TableError> {
        let id = self.leaf_id_unchecked(value);
        check_leaves(self)?;
        Ok(id)
    }

    /// As `leaf_id`, counting on without a limit (ids past it wrap; `build` checks at the end,
    /// so that its error says how many leaves the policy needs).
    fn leaf_id_unchecked(&mut self, value: RuleRef) -> u16 {
        if let Some(&id) = self.leaf_ids.get(&value) {
            return id;
        }
        let id = self.leaves.len() as u16;
        self.leaves.push(value);
        self.leaf_ids.insert(value, id);
        id
    }

    /// The ids of the leaves and their values, for a table rebuilt from what the maps hold.
    pub fn with_leaves(leaves: Vec<RuleRef>) -> Self {
        let leaf_ids = leaves
            .iter()
            .enumerate()
            .skip(1)
            .filter_map(|(id, r)| Some((*r, u16::try_from(id).ok()?)))
            .collect();
        Self {
            leaves,
            leaf_ids,
            ..Self::default()
        }
    }
}

/// The leaf id of a prefix's rules, added to `table` when new; recorded in `prefix_leaves`.
fn leaf_of<'p>(
    table: &mut Table,
    known: &mut foldhash::HashMap<&'p PrefixRules, u16>,
    rules: &'p PrefixRules,
    slot_of: &impl Fn(&[Rule]) -> Option<u32>,
) -> Result<u16, TableError> {
    let id = match known.get(rules) {
        Some(&id) => id,
        None => {
            let slot = slot_of(&rules.rules).ok_or(TableError::NoSlot)?;
            let id = table.leaf_id_unchecked(rule_ref(slot, rules));
            known.insert(rules, id);
            id
        }
    };
    table.prefix_leaves.push(id);
    Ok(id)
}

fn check_leaves(table: &Table) -> Result<(), TableError> {
    if table.leaves.len() > LEAVES_PER_GENERATION as usize {
        return Err(TableError::TooManyLeaves {
            count: table.leaves.len() - 1,
            limit: LEAVES_PER_GENERATION - 1,
        });
    }
    Ok(())
}

/// What a prefix contributes to the sweep.
#[derive(Clone, Copy)]
enum Cover {
    Leaf(u16),
    /// The /64 of a longer IPv6 prefix: the leaf around it, flagged to look in the long table.
    Long,
}

/// A prefix over the 64-bit key space: `[start, end)`, ordered by start then length.
struct Span {
    start: u64,
    len: u32,
    end: u128,
    cover: Cover,
}

/// Builds one generation of the table for `policy`; `slot_of` gives the rule table slot of each
/// rule list; per family, `range_base` where this generation's ranges begin in the family's map
/// and `range_limit` how many it may use.
pub fn build(
    policy: &CompiledPolicy,
    slot_of: impl Fn(&[Rule]) -> Option<u32>,
    range_base: [u32; 2],
    range_limit: [u32; 2],
) -> Result<Table, TableError> {
    let mut table = Table::with_leaves(vec![RuleRef::default()]);
    // Prefixes share a few leaves: each distinct rule set is turned into its leaf once.
    let mut known: foldhash::HashMap<&PrefixRules, u16> = foldhash::HashMap::default();
    let mut leaf = |table: &mut Table, rules| leaf_of(table, &mut known, rules, &slot_of);
    let mut v4 = Vec::with_capacity(policy.v4.len());
    for (p, rules) in &policy.v4 {
        let len = u32::from(p.len);
        v4.push(Span {
            start: u64::from(p.addr) << 32,
            len,
            end: (u128::from(p.addr) << 32) + (1u128 << (KEY_BITS - len)),
            cover: Cover::Leaf(leaf(&mut table, rules)?),
        });
    }
    let mut v6 = Vec::with_capacity(policy.v6.len());
    for (p, rules) in &policy.v6 {
        let len = u32::from(p.len);
        let top = (p.addr >> 64) as u64;
        let id = leaf(&mut table, rules)?;
        if len <= KEY_BITS {
            v6.push(Span {
                start: top,
                len,
                end: u128::from(top) + (1u128 << (KEY_BITS - len)),
                cover: Cover::Leaf(id),
            });
        } else {
            table.long_v6.push((p.addr, p.len, id));
            // One flagged /64 for all the long prefixes in it (they come in address order).
            if v6
                .last()
                .is_none_or(|s: &Span| s.start != top || s.len != KEY_BITS + 1)
            {
                v6.push(Span {
                    start: top,
                    len: KEY_BITS + 1,
                    end: u128::from(top) + 1,
                    cover: Cover::Long,
                });
            }
        }
    }
    if table.long_v6.len() > MAX_LONG_PREFIXES_V6 as usize {
        return Err(TableError::TooManyLongPrefixes {
            count: table.long_v6.len(),
            limit: MAX_LONG_PREFIXES_V6,
        });
    }
    // Long prefixes' /64s were pushed after the /64 prefix with the same start, if any, but a
    // shorter prefix starting at the same /64 may follow them: put everything in order.
    v6.sort_unstable_by_key(|s| (s.start, s.len));
    let v4_index = blocks(
        &sweep(&v4),
        INDEX_BITS[0],
        range_base[0],
        &mut table.ranges_v4,
    );
    let v6_index = blocks(
        &sweep(&v6),
        INDEX_BITS[1],
        range_base[1],
        &mut table.ranges_v6,
    );
    for (family, count) in [table.ranges_v4.len(), table.ranges_v6.len()]
        .into_iter()
        .enumerate()
    {
        if count > range_limit[family] as usize {
            return Err(TableError::TooManyRanges {
                family: FAMILY_NAMES[family],
                count,
                limit: range_limit[family],
            });
        }
    }
    table.index = [v4_index, v6_index];
    check_leaves(&table)?;
    Ok(table)
}

/// Flattens nested spans (sorted by start, then length) into boundaries: `(first key, leaf)`,
/// increasing, the first at 0, no two neighbours with the same leaf.
fn sweep(spans: &[Span]) -> Vec<(u64, u16)> {
    let mut bounds: Vec<(u64, u16)> = vec![(0, 0)];
    let mut open: Vec<(u128, u16)> = Vec::new();
    for span in spans {
        close_until(&mut open, &mut bounds, u128::from(span.start));
        let around = open.last().map_or(0, |o| o.1);
        let leaf = match span.cover {
            Cover::Leaf(id) => id,
            Cover::Long => around | LEAF_LONG,
        };
        mark(&mut bounds, u128::from(span.start), leaf);
        open.push((span.end, leaf));
    }
    close_until(&mut open, &mut bounds, u128::MAX);
    bounds
}

/// Closes the open spans that end at or before `at`, marking where each gives way to the one
/// around it.
fn close_until(open: &mut Vec<(u128, u16)>, bounds: &mut Vec<(u64, u16)>, at: u128) {
    while let Some(&(end, _)) = open.last() {
        if end > at {
            break;
        }
        open.pop();
        mark(bounds, end, open.last().map_or(0, |o| o.1));
    }
}

/// From `at` on, `leaf` applies.
fn mark(bounds: &mut Vec<(u64, u16)>, at: u128, leaf: u16) {
    let Ok(at) = u64::try_from(at) else {
        return; // the end of the key space
    };
    if let Some(last) = bounds.last_mut()
        && last.0 == at
    {
        last.1 = leaf;
        let n = bounds.len();
        if n >= 2 && bounds[n - 2].1 == leaf {
            bounds.pop();
        }
        return;
    }
    if bounds.last().is_some_and(|last| last.1 == leaf) {
        return;
    }
    bounds.push((at, leaf));
}

/// Splits boundaries into the index's blocks: a block with one leaf is that leaf; any other gets
/// a run of ranges (appended to `ranges`) starting with the leaf in force at its first key. The
/// key's top `index_bits` number the blocks.
fn blocks<R: RangeEntry>(
    bounds: &[(u64, u16)],
    index_bits: u32,
    range_base: u32,
    ranges: &mut Vec<R>,
) -> Vec<u64> {
    let rest_bits = KEY_BITS - index_bits;
    let rest_mask = (1u64 << rest_bits) - 1;
    let mut index = vec![0u64; 1 << index_bits];
    let mut i = 0usize;
    for (block, entry) in index.iter_mut().enumerate() {
        let first = (block as u64) << rest_bits;
        let next = (block as u128 + 1) << rest_bits;
        while i + 1 < bounds.len() && bounds[i + 1].0 <= first {
            i += 1;
        }
        let mut j = i + 1;
        while j < bounds.len() && u128::from(bounds[j].0) < next {
            j += 1;
        }
        let in_force = bounds[i].1;
        if j == i + 1 {
            *entry = u64::from(in_force);
        } else {
            let start = u64::from(range_base) + ranges.len() as u64;
            let count = (j - i) as u64;
            ranges.push(R::pack(0, in_force));
            ranges.extend(
                bounds[i + 1..j]
                    .iter()
                    .map(|&(at, leaf)| R::pack(at & rest_mask, leaf)),
            );
            *entry = start | count << INDEX_COUNT_SHIFT;
        }
        i = j - 1;
    }
    index
}

/// The leaf value of a prefix whose rule list sits in `slot`.
pub fn rule_ref(slot: u32, entry: &PrefixRules) -> RuleRef {
    let mut value = RuleRef {
        slot,
        // At most RULES_PER_SLOT.
        count: u32::try_from(entry.rules.len()).unwrap_or(u32::MAX),
        prefix_lens: [0; RULES_PER_SLOT],
        order: [0; RULES_PER_SLOT],
        direct: 0,
        by_site: 0,
        _pad: 0,
    };
    value.prefix_lens[..entry.prefix_lens.len()].copy_from_slice(&entry.prefix_lens);
    value.order[..entry.order.len()].copy_from_slice(&entry.order);
    // The best rule for every protocol and port wins whatever the packet: its verdict goes in
    // the leaf, and the program need not read the rule list.
    let best = entry.order.first().map(|&i| usize::from(i));
    if let Some(i) = best
        && let (Some(rule), Some(&len)) = (entry.rules.get(i), entry.prefix_lens.get(i))
        && rule.protocol == PROTOCOL_ANY
    {
        value.direct = rule_score(rule, len);
    }
    value
}

/// The leaf a table gives a key of `family`, searched as the XDP program does (for tests).
pub fn lookup(table: &Table, family: usize, key: u64, range_base: u32) -> u16 {
    let rest_bits = KEY_BITS - INDEX_BITS[family];
    let entry = table.index[family][(key >> rest_bits) as usize];
    let count = (entry >> INDEX_COUNT_SHIFT) & enforcer_common::INDEX_COUNT_MASK;
    if count == 0 {
        return entry as u16;
    }
    let start = (entry as u32 - range_base) as usize;
    let rest = key & ((1 << rest_bits) - 1);
    if family == 0 {
        search_run(&table.ranges_v4[start..start + count as usize], rest)
    } else {
        search_run(&table.ranges_v6[start..start + count as usize], rest)
    }
}

/// The leaf of the last range of `run` starting at or before `rest`.
fn search_run<R: RangeEntry>(run: &[R], rest: u64) -> u16 {
    let at = run.partition_point(|r| r.first() <= rest) - 1;
    run[at].leaf()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    /// Random nested prefixes (IPv4 keys), flattened and split into blocks: every key looked
    /// up as the program does gets the leaf of its longest containing prefix.
    #[test]
    fn ranges_give_the_longest_prefix() {
        let mut rng = StdRng::seed_from_u64(16);
        for round in 0..50 {
            let mut prefixes: Vec<(u64, u32, u16)> = (0..rng.random_range(1..400))
                .map(|i| {
                    let len = rng.random_range(0..=32u32);
                    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                    // Clustered, so that prefixes nest and share blocks.
                    let addr = (rng.random::<u32>() & 0x0F0F_FFFF) & mask;
                    (u64::from(addr) << 32, len, (i % 7 + 1) as u16)
                })
                .collect();
            prefixes.sort();
            prefixes.dedup_by_key(|p| (p.0, p.1));
            let spans: Vec<Span> = prefixes
                .iter()
                .map(|&(start, len, leaf)| Span {
                    start,
                    len,
                    end: u128::from(start) + (1u128 << (64 - len)),
                    cover: Cover::Leaf(leaf),
                })
                .collect();
            let base = 1000;
            let mut ranges = Vec::new();
            let index = blocks(&sweep(&spans), INDEX_BITS[0], base, &mut ranges);
            let table = Table {
                index: [index, vec![0; 1 << INDEX_BITS[1]]],
                ranges_v4: ranges,
                ..Table::default()
            };
            let longest = |key: u64| {
                prefixes
                    .iter()
                    .filter(|&&(start, len, _)| {
                        len == 0 || (key >> (64 - len)) == (start >> (64 - len))
                    })
                    .max_by_key(|p| p.1)
                    .map_or(0, |p| p.2)
            };
            for &(start, len, _) in &prefixes {
                let last = (u128::from(start) + (1u128 << (64 - len)) - 1) as u64;
                for key in [
                    start,
                    last & !((1 << 32) - 1),
                    start.wrapping_sub(1 << 32),
                    last.wrapping_add(1),
                ] {
                    assert_eq!(
                        lookup(&table, 0, key, base),
                        longest(key),
                        "round {round}: key {:08x}",
                        key >> 32
                    );
                }
            }
            for _ in 0..200 {
                let key = u64::from(rng.random::<u32>() & 0x0F0F_FFFF) << 32;
                assert_eq!(lookup(&table, 0, key, base), longest(key));
            }
        }
    }

    /// A long IPv6 prefix flags the /64 around it with the leaf of the prefix that covers it.
    #[test]
    fn long_prefixes_flag_their_block() {
        let spans = [
            Span {
                start: 0x2001_0db8_0000_0000,
                len: 32,
                end: 0x2001_0db9_0000_0000,
                cover: Cover::Leaf(3),
            },
            Span {
                start: 0x2001_0db8_0000_0005,
                len: 65,
                end: 0x2001_0db8_0000_0006,
                cover: Cover::Long,
            },
        ];
        let mut ranges = Vec::new();
        let index = blocks(&sweep(&spans), INDEX_BITS[1], 0, &mut ranges);
        let table = Table {
            index: [vec![0; 1 << INDEX_BITS[0]], index],
            ranges_v6: ranges,
            ..Table::default()
        };
        assert_eq!(lookup(&table, 1, 0x2001_0db8_0000_0005, 0), 3 | LEAF_LONG);
        assert_eq!(lookup(&table, 1, 0x2001_0db8_0000_0004, 0), 3);
        assert_eq!(lookup(&table, 1, 0x2001_0db8_0000_0006, 0), 3);
        assert_eq!(lookup(&table, 1, 0x2001_0db9_0000_0000, 0), 0);
    }
}
