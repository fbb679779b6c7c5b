//! Loading the program: with private maps (tests, benchmarks) or adopting the maps pinned by an
//! earlier run, refusing pins whose layout is not this build's.

use std::path::{Path, PathBuf};

use aya::maps::{Array, LpmTrie, MapData, MapInfo, PerCpuArray, ProgramArray, RingBuf};
use aya::{Ebpf, EbpfLoader};
use enforcer_common::{
    Counter, DNS_BLOCKED_COUNTERS, DNS_CONFIG_ENTRIES, HostKey, INDEX_ENTRIES, LEAF_ENTRIES,
    LongKey, MATCH_COUNTERS, MAX_LEARNED_HOSTS, MAX_LONG_PREFIXES_V6, MAX_NAMES, NameRule,
    PASS_REASONS, QueryStash, ROLE_ARRAY_ENTRIES, RULE_SLOTS, RuleRef, RuleSlot,
    ranges_per_generation,
};
use enforcer_common::{FAMILY_IPV4, FAMILY_IPV6};

use super::dns_events::DnsEvents;
use super::{
    DNS_PROGRAM, DROP_PROGRAM, Datapath, DatapathError, MAP_ACTIVE, MAP_DNS_BLOCKED,
    MAP_DNS_CONFIG, MAP_DNS_EVENTS, MAP_DNS_HOLD, MAP_DNS_QUERY_PROGRAM, MAP_DNS_STATS,
    MAP_DNS_TRUST, MAP_IFACE_ROLES, MAP_IFACE_ROLES_HIGH, MAP_INDEX, MAP_LEARNED_HOSTS, MAP_LEAVES,
    MAP_LONG_V6, MAP_MATCH_STATS, MAP_NAMES, MAP_PASS_STATS, MAP_QUERY_STASH, MAP_RANGES,
    MAP_RANGES_V4, MAP_RULE_SLOTS, MAPS, PASS_PROGRAM, PROGRAM, PROGRAM_OBJECT,
};
use crate::compile::Capacity;
use crate::sys::mmap::MappedArray;
use std::os::fd::AsFd as _;

impl Datapath {
    /// For unit tests: the program with private maps, or `None` when not root (they skip). As
    /// root a failure to load (the verifier refusing the program) fails the test.
    #[cfg(test)]
    pub fn load_for_test() -> Option<Self> {
        match Self::load_unpinned() {
            Ok(datapath) => Some(datapath),
            Err(error) if crate::sys::is_root() => panic!("loading the XDP program: {error}"),
            Err(_) => {
                eprintln!("skipped: loading the XDP program needs root and BPF");
                None
            }
        }
    }

    /// Loads the program with private maps: for tests and benchmarks.
    pub fn load_unpinned() -> Result<Self, DatapathError> {
        let capacity = Capacity::default();
        let mut loader = EbpfLoader::new();
        size_ranges(&mut loader, capacity);
        Self::from_ebpf(loader.load(PROGRAM_OBJECT)?, capacity)
    }

    /// Loads the program, reusing the maps pinned in `dir` (so enforcement continues with the
    /// sets in force) or creating and pinning them there.
    /// The lookup table is sized for `capacity`; pinned maps of another size are refused.
    pub fn load_pinned(dir: &Path, capacity: Capacity) -> Result<Self, DatapathError> {
        let maps_dir = dir.join("maps");
        std::fs::create_dir_all(&maps_dir)?;
        let paths: Vec<(&'static str, PathBuf)> = MAPS
            .iter()
            .map(|name| (*name, maps_dir.join(name)))
            .collect();
        let mut loader = EbpfLoader::new();
        size_ranges(&mut loader, capacity);
        for (name, path) in &paths {
            if path.exists() {
                check_pinned(name, path, capacity)?;
            }
            loader.map_pin_path(name, path.as_path());
        }
        Self::from_ebpf(loader.load(PROGRAM_OBJECT)?, capacity)
    }

    pub(super) fn from_ebpf(mut ebpf: Ebpf, capacity: Capacity) -> Result<Self, DatapathError> {
        for name in [PROGRAM, PASS_PROGRAM, DROP_PROGRAM, DNS_PROGRAM] {
            super::xdp_mut(&mut ebpf, name)?
                .load()
                .map_err(|source| DatapathError::Program { name, source })?;
        }
        let mut take =
            |name: &'static str| ebpf.take_map(name).ok_or(DatapathError::MissingMap(name));
        let map_err = |name: &'static str| move |source| DatapathError::Map { name, source };
        let lookup = lookup_maps(&mut take, capacity)?;
        let sites = super::sites::SiteMaps::take(&mut take)?;
        let active: Array<MapData, u32> =
            Array::try_from(take(MAP_ACTIVE)?).map_err(map_err(MAP_ACTIVE))?;
        // A restarted daemon carries on with the generation its predecessor left in force.
        let generation = (active.get(&0, 0).map_err(map_err(MAP_ACTIVE))? & 1) as usize;
        let slots = Array::try_from(take(MAP_RULE_SLOTS)?).map_err(map_err(MAP_RULE_SLOTS))?;
        let match_stats =
            PerCpuArray::try_from(take(MAP_MATCH_STATS)?).map_err(map_err(MAP_MATCH_STATS))?;
        let pass_stats =
            PerCpuArray::try_from(take(MAP_PASS_STATS)?).map_err(map_err(MAP_PASS_STATS))?;
        let dns_events =
            RingBuf::try_from(take(MAP_DNS_EVENTS)?).map_err(map_err(MAP_DNS_EVENTS))?;
        let dns_hold = Array::try_from(take(MAP_DNS_HOLD)?).map_err(map_err(MAP_DNS_HOLD))?;
        let dns_trust_v4 =
            LpmTrie::try_from(take(MAP_DNS_TRUST[0])?).map_err(map_err(MAP_DNS_TRUST[0]))?;
        let dns_trust_v6 =
            LpmTrie::try_from(take(MAP_DNS_TRUST[1])?).map_err(map_err(MAP_DNS_TRUST[1]))?;
        let iface_roles = match take(MAP_IFACE_ROLES)? {
            aya::maps::Map::Array(data) => MappedArray::new(data.fd().as_fd(), ROLE_ARRAY_ENTRIES)?,
            _ => return Err(DatapathError::MissingMap(MAP_IFACE_ROLES)),
        };
        let iface_roles_high = aya::maps::HashMap::try_from(take(MAP_IFACE_ROLES_HIGH)?)
            .map_err(map_err(MAP_IFACE_ROLES_HIGH))?;
        let dns_stats =
            PerCpuArray::try_from(take(MAP_DNS_STATS)?).map_err(map_err(MAP_DNS_STATS))?;
        let mut names = |i: usize| {
            aya::maps::HashMap::try_from(take(MAP_NAMES[i])?).map_err(map_err(MAP_NAMES[i]))
        };
        let names = [names(0)?, names(1)?];
        let dns_config = Array::try_from(take(MAP_DNS_CONFIG)?).map_err(map_err(MAP_DNS_CONFIG))?;
        let dns_blocked =
            PerCpuArray::try_from(take(MAP_DNS_BLOCKED)?).map_err(map_err(MAP_DNS_BLOCKED))?;
        // The main program hands DNS queries to the DNS program through this array.
        let mut programs: ProgramArray<MapData> =
            ProgramArray::try_from(take(MAP_DNS_QUERY_PROGRAM)?)
                .map_err(map_err(MAP_DNS_QUERY_PROGRAM))?;
        {
            let dns = super::xdp_mut(&mut ebpf, DNS_PROGRAM)?;
            let fd = dns.fd().map_err(|source| DatapathError::Program {
                name: DNS_PROGRAM,
                source,
            })?;
            programs
                .set(0, fd, 0)
                .map_err(map_err(MAP_DNS_QUERY_PROGRAM))?;
        }
        Ok(Self {
            ebpf,
            lookup,
            active,
            generation,
            last_switch: None,
            slots,
            match_stats,
            pass_stats,
            dns_events: Some(DnsEvents::new(dns_events)),
            dns_hold,
            dns_trust_v4,
            dns_trust_v6,
            iface_roles,
            iface_roles_high,
            dns_stats,
            names,
            dns_config,
            dns_blocked,
            dns_programs: programs,
            slot_cache: None,
            in_force: None,
            sites,
        })
    }
}

// Key sizes as bpf(2) reports them (both are a few bytes).
const HOST_KEY_BYTES: u32 = 20;
const LONG_KEY_BYTES: u32 = 17;
const _: () = assert!(size_of::<HostKey>() == HOST_KEY_BYTES as usize);
const _: () = assert!(size_of::<LongKey>() == LONG_KEY_BYTES as usize);

/// Ranges of one generation for `capacity`, per family.
fn ranges_per_generation_of(capacity: Capacity) -> [u32; 2] {
    [
        ranges_per_generation(FAMILY_IPV4, capacity.v4),
        ranges_per_generation(FAMILY_IPV6, capacity.v6),
    ]
}

/// Entries (map values) of the family's ranges map for `capacity`: both generations (IPv4's
/// ranges two to a value).
fn range_entries(capacity: Capacity, family: u8) -> u32 {
    let ranges = 2 * ranges_per_generation_of(capacity)[usize::from(family & 1)];
    if family == FAMILY_IPV4 {
        ranges / 2
    } else {
        ranges
    }
}

/// The ranges maps sized for `capacity` (the object's sizes are the default capacity's).
fn size_ranges(loader: &mut EbpfLoader, capacity: Capacity) {
    loader.map_max_entries(MAP_RANGES_V4, range_entries(capacity, FAMILY_IPV4));
    loader.map_max_entries(MAP_RANGES, range_entries(capacity, FAMILY_IPV6));
}

/// The lookup table's maps, the arrays mapped into this process.
fn lookup_maps(
    take: &mut impl FnMut(&'static str) -> Result<aya::maps::Map, DatapathError>,
    capacity: Capacity,
) -> Result<super::LookupMaps, DatapathError> {
    let mut array = |name: &'static str, entries: u32| -> Result<MapData, DatapathError> {
        match take(name)? {
            aya::maps::Map::Array(data) => Ok(data),
            _ => Err(DatapathError::MissingMap(name)),
        }
        .and_then(|data| {
            // Checked here so that a map of another size is never mapped short.
            let info = data
                .info()
                .map_err(|source| DatapathError::Map { name, source })?;
            if info.max_entries() != entries {
                return Err(DatapathError::MissingMap(name));
            }
            Ok(data)
        })
    };
    let index = array(MAP_INDEX, INDEX_ENTRIES)?;
    let ranges_v4 = array(MAP_RANGES_V4, range_entries(capacity, FAMILY_IPV4))?;
    let ranges_v6 = array(MAP_RANGES, range_entries(capacity, FAMILY_IPV6))?;
    let leaves = array(MAP_LEAVES, LEAF_ENTRIES)?;
    let learned_hosts =
        aya::maps::HashMap::try_from(take(MAP_LEARNED_HOSTS)?).map_err(|source| {
            DatapathError::Map {
                name: MAP_LEARNED_HOSTS,
                source,
            }
        })?;
    let long_v6 =
        aya::maps::LpmTrie::try_from(take(MAP_LONG_V6)?).map_err(|source| DatapathError::Map {
            name: MAP_LONG_V6,
            source,
        })?;
    Ok(super::LookupMaps {
        index: MappedArray::new(index.fd().as_fd(), INDEX_ENTRIES)?,
        ranges_v4: MappedArray::new(ranges_v4.fd().as_fd(), range_entries(capacity, FAMILY_IPV4))?,
        ranges_v6: MappedArray::new(ranges_v6.fd().as_fd(), range_entries(capacity, FAMILY_IPV6))?,
        ranges_per_generation: ranges_per_generation_of(capacity),
        capacity,
        leaves: MappedArray::new(leaves.fd().as_fd(), LEAF_ENTRIES)?,
        learned_hosts,
        long_v6,
        arrays: [
            (MAP_INDEX, index),
            (MAP_RANGES_V4, ranges_v4),
            (MAP_RANGES, ranges_v6),
            (MAP_LEAVES, leaves),
        ],
    })
}

/// A pinned map left by an older build with another layout must not be adopted.
fn check_pinned(name: &str, path: &Path, capacity: Capacity) -> Result<(), DatapathError> {
    let info = MapInfo::from_pin(path).map_err(|source| DatapathError::Map {
        name: "pinned",
        source,
    })?;
    let expected = match name {
        MAP_INDEX => (4, size_of::<u64>(), INDEX_ENTRIES),
        MAP_RANGES_V4 => (4, size_of::<u64>(), range_entries(capacity, FAMILY_IPV4)),
        MAP_RANGES => (4, size_of::<u64>(), range_entries(capacity, FAMILY_IPV6)),
        MAP_LEAVES => (4, size_of::<RuleRef>(), LEAF_ENTRIES),
        MAP_LEARNED_HOSTS => (HOST_KEY_BYTES, size_of::<u32>(), MAX_LEARNED_HOSTS),
        MAP_LONG_V6 => (
            4 + LONG_KEY_BYTES,
            size_of::<u32>(),
            2 * MAX_LONG_PREFIXES_V6,
        ),
        MAP_ACTIVE => (4, size_of::<u32>(), 1),
        MAP_RULE_SLOTS => (4, size_of::<RuleSlot>(), RULE_SLOTS),
        MAP_MATCH_STATS => (4, size_of::<Counter>(), MATCH_COUNTERS),
        n if MAP_NAMES.contains(&n) => (16, size_of::<NameRule>(), MAX_NAMES),
        MAP_DNS_QUERY_PROGRAM => (4, 4, 1),
        MAP_DNS_CONFIG => (4, 4, DNS_CONFIG_ENTRIES),
        MAP_DNS_BLOCKED => (4, size_of::<Counter>(), DNS_BLOCKED_COUNTERS),
        MAP_QUERY_STASH => (4, size_of::<QueryStash>(), 1),
        super::sites::MAP_SITES => (
            4 + u32::try_from(size_of::<enforcer_common::SiteAddress>()).unwrap_or(u32::MAX),
            size_of::<enforcer_common::SiteValue>(),
            enforcer_common::MAX_SITE_PREFIXES,
        ),
        super::sites::MAP_SITE_LEAVES => {
            (8, size_of::<RuleRef>(), enforcer_common::MAX_SITE_LEAVES)
        }
        super::sites::MAP_SITE_ACTIONS => (4, 1, enforcer_common::MAX_SITE_ACTIONS),
        super::sites::MAP_SITE_CONFIG => (4, 4, 2),
        super::sites::MAP_SITE_STATS => {
            (8, size_of::<Counter>(), enforcer_common::MAX_SITE_COUNTERS)
        }
        _ => (4, size_of::<Counter>(), PASS_REASONS),
    };
    let found = (info.key_size(), info.value_size(), info.max_entries());
    let value_size = u32::try_from(expected.1).unwrap_or(u32::MAX);
    if found != (expected.0, value_size, expected.2) {
        return Err(DatapathError::IncompatiblePin {
            path: path.to_path_buf(),
            key: found.0,
            value: found.1,
            entries: found.2,
        });
    }
    Ok(())
}
