//! Sites: which client prefix (ministry, agency, building) a matched packet belongs to, for
//! counting by site and for the site's own actions (`action-by-site`). Consulted only after a
//! packet matched a platform, so traffic that matches nothing never pays for it.

// Generations (0, 1) fit a byte.
#![allow(clippy::cast_possible_truncation)]

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST},
    macros::map,
    maps::{Array, HashMap, LpmTrie, PerCpuHashMap, lpm_trie::Key},
};
use enforcer_common::{
    Counter, MAX_SITE_ACTIONS, MAX_SITE_COUNTERS, MAX_SITE_LEAVES, MAX_SITE_PREFIXES, RuleRef,
    SiteAddress, SiteCounterKey, SiteValue, site_action_index, site_leaf_key,
};

/// Site prefixes of both generations (key: generation, family, address; value: the site's id
/// and variant). A client in none is site `other` (id 0, variant 0).
#[map]
static SITES: LpmTrie<SiteAddress, SiteValue> = LpmTrie::with_max_entries(MAX_SITE_PREFIXES, 0);

/// The leaves whose verdict a variant changes, keyed by `site_leaf_key`: the rule list reference
/// with that variant's actions. Read only for leaves flagged `by_site`.
#[map]
static SITE_LEAVES: HashMap<u64, RuleRef> =
    HashMap::with_max_entries(MAX_SITE_LEAVES, BPF_F_NO_PREALLOC);

/// A variant's action for a platform, keyed by `site_action_index`, where it differs from the
/// platform's own: what a name-table verdict becomes for a client of that variant.
#[map]
static SITE_ACTIONS: HashMap<u32, u8> =
    HashMap::with_max_entries(MAX_SITE_ACTIONS, BPF_F_NO_PREALLOC);

/// Per-CPU packets and bytes of matched packets by (client's site, platform, action). Keys are
/// created by user space when a policy is applied, and here on a miss.
#[map]
static SITE_STATS: PerCpuHashMap<SiteCounterKey, Counter> =
    PerCpuHashMap::with_max_entries(MAX_SITE_COUNTERS, BPF_F_NO_PREALLOC);

/// `[generation]`: 1 when that generation has sites. Without any, a matched packet pays for no
/// site lookup and no per-site counter.
#[map]
static SITE_CONFIG: Array<u32> = Array::with_max_entries(2, 0);

/// Whether `generation` has sites.
#[inline(always)]
pub fn enabled(generation: u32) -> bool {
    SITE_CONFIG.get(generation & 1).is_some_and(|on| *on != 0)
}

/// The site of a client address (IPv4 in the first four bytes) in `generation`.
#[inline(always)]
pub fn site_of(generation: u32, family: u8, address: [u8; 16]) -> SiteValue {
    let data = SiteAddress {
        generation: (generation & 1) as u8,
        family,
        _pad: [0; 2],
        address,
    };
    let bits = if family == enforcer_common::FAMILY_IPV4 {
        32
    } else {
        128
    };
    SITES
        .get(Key::new(32 + bits, data))
        .copied()
        .unwrap_or_default()
}

/// The rule list reference a variant gives a flagged leaf, if it changes it.
#[inline(always)]
pub fn leaf_for(generation: u32, variant: u32, leaf: u16) -> Option<&'static RuleRef> {
    // SAFETY: the value is copied by the caller before any update could replace it; user space
    // writes a generation's entries only while that generation is not in force.
    unsafe { SITE_LEAVES.get(site_leaf_key(generation, variant, leaf)) }
}

/// A name-table verdict's action for a client of `variant`.
#[inline(always)]
pub fn action_for(generation: u32, variant: u32, platform: u16, action: u8) -> u8 {
    if variant == 0 {
        return action;
    }
    // SAFETY: the value is copied at once.
    match unsafe { SITE_ACTIONS.get(site_action_index(generation, variant, platform)) } {
        Some(&a) => a,
        None => action,
    }
}

/// Counts one matched packet under its client's site.
#[inline(always)]
pub fn count(site: u32, platform: u16, action: u8, bytes: u64) {
    let key = SiteCounterKey {
        site,
        platform,
        action,
        _pad: 0,
    };
    if let Some(counter) = SITE_STATS.get_ptr_mut(key) {
        // SAFETY: per-CPU value, only this CPU writes it while the program runs.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += bytes;
        }
        return;
    }
    let first = Counter { packets: 1, bytes };
    // Another CPU may create it at the same moment: then this packet is not counted, which
    // user space's pre-created keys make rare.
    let _ = SITE_STATS.insert(key, first, BPF_NOEXIST as u64);
}
