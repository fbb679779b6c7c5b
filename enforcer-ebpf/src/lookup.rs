//! Which leaf (rule list reference) applies to an address: a table compiled in user space
//! (`enforcer::datapath::table`) into array maps, DXR-like. The address becomes a 64-bit key
//! (IPv4: the address in the top 32 bits; IPv6: its top 64 bits); its top 16 bits (`INDEX_BITS`)
//! pick an index entry, which is either the leaf of that whole block or a run of sorted ranges
//! over the other bits (32-bit ranges for IPv4, 64-bit for IPv6), searched in at most
//! `RANGE_SEARCH_STEPS` steps (a few cache lines for real tables).
//! Two flags on a leaf send the lookup to exact tables first: hosts learned since the last build,
//! and IPv6 prefixes longer than /64 (which the 64-bit key cannot tell apart).
//!
//! Both generations live side by side in each map; a packet reads one generation throughout.

// Casts below take the bits they name: packed fields of index entries and ranges, and map
// indexes that the constants bound.
#![allow(clippy::cast_possible_truncation)]

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_PREALLOC},
    macros::map,
    maps::{Array, HashMap, LpmTrie, lpm_trie::Key},
};
use enforcer_common::{
    FAMILY_IPV4, FAMILY_IPV6, HostKey, INDEX_BITS, INDEX_COUNT_MASK, INDEX_COUNT_SHIFT,
    INDEX_ENTRIES, LEAF_ENTRIES, LEAF_HOSTS, LEAF_ID_MASK, LEAF_LONG, LEAVES_PER_GENERATION,
    LongKey, MAX_CAPACITY, MAX_LEARNED_HOSTS, MAX_LONG_PREFIXES_V6, RANGE_ENTRIES_V4,
    RANGE_ENTRIES_V6, RANGE_SEARCH_STEPS, RangeEntry, RuleRef, index_slot, ranges_per_generation,
    v4_range_slot,
};

/// The index: for each (generation, family) and each value of the key's top 16 bits, either a
/// leaf (run length 0, leaf in the low 16 bits) or the start (low 32 bits, absolute) and length
/// (bits 32-55) of its run in the family's ranges. Written by user space through mmap.
#[map]
static LOOKUP_INDEX: Array<u64> = Array::with_max_entries(INDEX_ENTRIES, BPF_F_MMAPABLE);

/// IPv4 ranges: `first key (the address's low 16 bits) << 16 | leaf`, sorted within each run,
/// two to a value (`v4_range_slot`); the first of a run starts at 0.
#[map]
static LOOKUP_RANGES_V4: Array<u64> = Array::with_max_entries(RANGE_ENTRIES_V4, BPF_F_MMAPABLE);

/// IPv6 ranges: `first key (low 48 bits of the top 64) << 16 | leaf`, as the IPv4 ones.
#[map]
static LOOKUP_RANGES: Array<u64> = Array::with_max_entries(RANGE_ENTRIES_V6, BPF_F_MMAPABLE);

/// Leaves: the rule list reference of each distinct (rules, prefix lengths, order) of a
/// generation; generation g owns `[g * LEAVES_PER_GENERATION, ..)`, and its leaf 0 means "no rule".
#[map]
static LOOKUP_LEAVES: Array<RuleRef> = Array::with_max_entries(LEAF_ENTRIES, BPF_F_MMAPABLE);

/// Hosts learned from DNS since their generation was built (value: leaf id); the next build
/// folds them into the ranges. Read only for ranges flagged `LEAF_HOSTS`.
#[map]
static LEARNED_HOSTS: HashMap<HostKey, u32> =
    HashMap::with_max_entries(MAX_LEARNED_HOSTS, BPF_F_NO_PREALLOC);

/// IPv6 prefixes longer than /64 of both generations (key: generation byte, then the address;
/// value: leaf id). Read only for ranges flagged `LEAF_LONG`.
#[map]
static LONG_PREFIXES_V6: LpmTrie<LongKey, u32> =
    LpmTrie::with_max_entries(2 * MAX_LONG_PREFIXES_V6, 0);

/// The leaf id and rule list reference that apply to an address in `generation` (0 or 1), or
/// `None` when no rule does. `addr_hi`/`addr_lo`: the IPv6 address's halves; IPv4 in the low 32
/// bits of `addr_lo`.
#[inline(always)]
pub fn leaf(
    generation: u64,
    family: u8,
    addr_hi: u64,
    addr_lo: u64,
) -> Option<(u16, &'static RuleRef)> {
    let v4 = family == FAMILY_IPV4;
    let key = if v4 { addr_lo << 32 } else { addr_hi };
    let rest_bits = 64 - INDEX_BITS[(family & 1) as usize];
    let slot = index_slot(generation as u32, family, (key >> rest_bits) as u32);
    let entry = *LOOKUP_INDEX.get(slot)?;
    let count = ((entry >> INDEX_COUNT_SHIFT) & INDEX_COUNT_MASK) as u32;
    let rest = key & ((1 << rest_bits) - 1);
    let mut found = if count == 0 {
        entry as u16
    } else if v4 {
        search(range_v4, entry as u32, count, rest)
    } else {
        search(|i| LOOKUP_RANGES.get(i).copied(), entry as u32, count, rest)
    };
    if found & (LEAF_HOSTS | LEAF_LONG) != 0 {
        found = exact(generation, v4, found, addr_hi, addr_lo);
    }
    let id = (found & LEAF_ID_MASK) as u64;
    if id == 0 {
        return None;
    }
    let r = LOOKUP_LEAVES.get((generation * LEAVES_PER_GENERATION as u64 + id) as u32)?;
    Some((id as u16, r))
}

/// The leaf of the last range of the run `[start, start + count)` whose first key is at most
/// `rest`. The run's first range starts at 0, so there always is one. Branch-free steps keep the
/// verifier's work linear.
#[inline(always)]
fn search<R: RangeEntry>(
    range: impl Fn(u32) -> Option<R>,
    start: u32,
    count: u32,
    rest: u64,
) -> u16 {
    let (mut base, mut n) = (start, count);
    for _ in 0..RANGE_SEARCH_STEPS {
        if n <= 1 {
            break;
        }
        let half = n / 2;
        let Some(probe) = range(base + half) else {
            return 0;
        };
        base += half * ((probe.first() <= rest) as u32);
        n -= half;
    }
    range(base).map_or(0, RangeEntry::leaf)
}

/// IPv4 range `i`.
#[inline(always)]
fn range_v4(i: u32) -> Option<u32> {
    let (value, shift) = v4_range_slot(i);
    LOOKUP_RANGES_V4
        .get(value)
        .map(|&pair| (pair >> shift) as u32)
}

/// A flagged leaf: the exact entry for the address when there is one, else the leaf itself.
#[inline(always)]
fn exact(generation: u64, v4: bool, found: u16, addr_hi: u64, addr_lo: u64) -> u16 {
    let mut address = [0u8; 16];
    if v4 {
        address[..4].copy_from_slice(&(addr_lo as u32).to_be_bytes());
    } else {
        address[..8].copy_from_slice(&addr_hi.to_be_bytes());
        address[8..].copy_from_slice(&addr_lo.to_be_bytes());
    }
    if found & LEAF_HOSTS != 0 {
        let key = HostKey {
            tag: (generation * 2 + (!v4) as u64) as u32,
            address,
        };
        // SAFETY: the value is copied out at once; user space replaces, never frees, in place.
        if let Some(&leaf) = unsafe { LEARNED_HOSTS.get(key) } {
            return leaf as u16;
        }
    }
    if found & LEAF_LONG != 0 && !v4 {
        let mut data = [0u8; 17];
        data[0] = generation as u8;
        data[1..].copy_from_slice(&address);
        if let Some(&leaf) = LONG_PREFIXES_V6.get(Key::new(8 + 128, data)) {
            return leaf as u16;
        }
    }
    found
}

// The index's run start is absolute (below both generations' ranges), and a run's length fits,
// at the largest capacity the daemon accepts.
const _: () = assert!(2 * (ranges_per_generation(FAMILY_IPV6, MAX_CAPACITY) as u64) < 1 << 32);
const _: () = assert!(ranges_per_generation(FAMILY_IPV6, MAX_CAPACITY) as u64 <= INDEX_COUNT_MASK);
