//! The loaded XDP program and its maps: load (fresh or adopting pinned maps), apply a compiled
//! policy as a diff, read counters, and run frames through BPF_PROG_TEST_RUN.

pub mod attach;
pub mod bpffs;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aya::maps::{Array, LpmTrie, MapData, MapError, MapInfo, PerCpuArray, RingBuf, lpm_trie::Key};
use aya::programs::{ProgramError, TestRun, TestRunOptions, Xdp};
use aya::{Ebpf, EbpfError, EbpfLoader};
use enforcer_common::{
    ACTIONS, Counter, DIRECTIONS, DNS_HOLD_DEADLINE, FAMILIES, MATCH_COUNTERS, PASS_REASONS,
    RULE_SLOTS, RULES_PER_SLOT, Rule, RuleRef, RuleSlot,
};

use crate::compile::{CompiledPolicy, Prefix, PrefixRules};
use ipnet::IpNet;

/// The program object built by build.rs from enforcer-ebpf.
static PROGRAM_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/enforcer"));

pub const PROGRAM: &str = "enforcer";
pub const PASS_PROGRAM: &str = "xdp_pass";
/// The tries of generation 0 and 1 (see `ACTIVE_GENERATION`).
const MAP_PREFIXES_V4: [&str; 2] = ["PREFIXES_V4_0", "PREFIXES_V4_1"];
const MAP_PREFIXES_V6: [&str; 2] = ["PREFIXES_V6_0", "PREFIXES_V6_1"];
const MAP_ACTIVE: &str = "ACTIVE_GENERATION";
/// How long after a switch the previous generation may still be read by a packet in flight
/// (XDP runs within an RCU read section of microseconds); it is rewritten only after this.
const SWITCH_SETTLE: Duration = Duration::from_millis(5);
const MAP_RULE_SLOTS: &str = "RULE_SLOTS_MAP";
const MAP_MATCH_STATS: &str = "MATCH_STATS";
const MAP_PASS_STATS: &str = "PASS_STATS";
/// Not pinned: only the running daemon reads it, and each program brings its own.
const MAP_DNS_EVENTS: &str = "DNS_EVENTS";
/// Not pinned either: a new program starts without holding.
const MAP_DNS_HOLD: &str = "DNS_HOLD";
pub const MAPS: [&str; 8] = [
    MAP_PREFIXES_V4[0],
    MAP_PREFIXES_V4[1],
    MAP_PREFIXES_V6[0],
    MAP_PREFIXES_V6[1],
    MAP_ACTIVE,
    MAP_RULE_SLOTS,
    MAP_MATCH_STATS,
    MAP_PASS_STATS,
];

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("loading the XDP program: {0}")]
    Load(#[from] EbpfError),
    #[error("program {0} missing from the object")]
    MissingProgram(&'static str),
    #[error("map {0} missing from the object")]
    MissingMap(&'static str),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: MapError,
    },
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        source: ProgramError,
    },
    #[error(
        "pinned map {path} does not match this build (key {key}, value {value}, entries {entries}); \
         run `enforcer detach --all` to remove the old installation first"
    )]
    IncompatiblePin {
        path: PathBuf,
        key: u32,
        value: u32,
        entries: u32,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("no free rule slot: the table holds {RULE_SLOTS} lists")]
    NoFreeSlot,
    #[error("hosts can only be added to a policy that was applied")]
    NotApplied,
}

/// What `apply` changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyStats {
    pub inserted: usize,
    pub updated: usize,
    pub removed: usize,
    pub unchanged: usize,
    pub slots_written: usize,
}

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
}

pub struct Datapath {
    ebpf: Ebpf,
    /// Both generations; `generation` is the one in force.
    prefixes_v4: [LpmTrie<MapData, [u8; 4], RuleRef>; 2],
    prefixes_v6: [LpmTrie<MapData, [u8; 16], RuleRef>; 2],
    active: Array<MapData, u32>,
    generation: usize,
    last_switch: Option<Instant>,
    slots: Array<MapData, RuleSlot>,
    match_stats: PerCpuArray<MapData, Counter>,
    pass_stats: PerCpuArray<MapData, Counter>,
    dns_events: Option<RingBuf<MapData>>,
    dns_hold: Array<MapData, u64>,
    /// The rule lists in force after the last `apply`, and the free slots, so that hosts can be
    /// added without reading the tries back.
    slot_cache: Option<SlotCache>,
}

#[derive(Debug, Default)]
struct SlotCache {
    by_content: HashMap<Vec<Rule>, u32>,
    free: std::collections::BTreeSet<u32>,
}

impl Datapath {
    /// Loads the program with private maps: for tests and benchmarks.
    pub fn load_unpinned() -> Result<Self, DatapathError> {
        Self::from_ebpf(EbpfLoader::new().load(PROGRAM_OBJECT)?)
    }

    /// Loads the program, reusing the maps pinned in `dir` (so enforcement continues with the
    /// sets in force) or creating and pinning them there.
    pub fn load_pinned(dir: &Path) -> Result<Self, DatapathError> {
        let maps_dir = dir.join("maps");
        std::fs::create_dir_all(&maps_dir)?;
        let paths: Vec<(&'static str, PathBuf)> = MAPS
            .iter()
            .map(|name| (*name, maps_dir.join(name)))
            .collect();
        let mut loader = EbpfLoader::new();
        for (name, path) in &paths {
            if path.exists() {
                check_pinned(name, path)?;
            }
            loader.map_pin_path(name, path.as_path());
        }
        Self::from_ebpf(loader.load(PROGRAM_OBJECT)?)
    }

    fn from_ebpf(mut ebpf: Ebpf) -> Result<Self, DatapathError> {
        for name in [PROGRAM, PASS_PROGRAM] {
            let program: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or(DatapathError::MissingProgram(name))?
                .try_into()
                .map_err(|source| DatapathError::Program { name, source })?;
            program
                .load()
                .map_err(|source| DatapathError::Program { name, source })?;
        }
        let mut take =
            |name: &'static str| ebpf.take_map(name).ok_or(DatapathError::MissingMap(name));
        let map_err = |name: &'static str| move |source| DatapathError::Map { name, source };
        let mut trie4 = |i: usize| {
            LpmTrie::try_from(take(MAP_PREFIXES_V4[i])?).map_err(map_err(MAP_PREFIXES_V4[i]))
        };
        let prefixes_v4 = [trie4(0)?, trie4(1)?];
        let mut trie6 = |i: usize| {
            LpmTrie::try_from(take(MAP_PREFIXES_V6[i])?).map_err(map_err(MAP_PREFIXES_V6[i]))
        };
        let prefixes_v6 = [trie6(0)?, trie6(1)?];
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
        Ok(Self {
            ebpf,
            prefixes_v4,
            prefixes_v6,
            active,
            generation,
            last_switch: None,
            slots,
            match_stats,
            pass_stats,
            dns_events: Some(dns_events),
            dns_hold,
            slot_cache: None,
        })
    }

    /// Zeroes the counters of a platform id that is handed to a new platform.
    pub fn clear_platform_counters(&mut self, platform: u16) -> Result<(), DatapathError> {
        clear_platform(&mut self.match_stats, platform)
    }

    /// Makes the program hold DNS responses until `deadline` (CLOCK_MONOTONIC nanoseconds, the
    /// clock of `bpf_ktime_get_ns`); 0 stops holding at once.
    pub fn set_dns_hold(&mut self, deadline: u64) -> Result<(), DatapathError> {
        self.dns_hold
            .set(DNS_HOLD_DEADLINE, deadline, 0)
            .map_err(|source| DatapathError::Map {
                name: MAP_DNS_HOLD,
                source,
            })
    }

    /// The ring buffer of DNS messages the program copies; there is one reader, so the first
    /// call gets it.
    pub fn take_dns_events(&mut self) -> Option<RingBuf<MapData>> {
        self.dns_events.take()
    }

    pub fn program_mut(&mut self) -> Result<&mut Xdp, DatapathError> {
        self.ebpf
            .program_mut(PROGRAM)
            .ok_or(DatapathError::MissingProgram(PROGRAM))?
            .try_into()
            .map_err(|source| DatapathError::Program {
                name: PROGRAM,
                source,
            })
    }

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
        self.active
            .set(0, next as u32, 0)
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

    /// Number of prefixes per family currently in the tries.
    pub fn prefix_counts(&self) -> Result<(usize, usize), DatapathError> {
        Ok((
            read_trie(
                &self.prefixes_v4[self.generation],
                MAP_PREFIXES_V4[self.generation],
            )?
            .len(),
            read_trie(
                &self.prefixes_v6[self.generation],
                MAP_PREFIXES_V6[self.generation],
            )?
            .len(),
        ))
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
                let key = MatchKey {
                    platform: (index / per_platform) as u16,
                    action: ((index / (DIRECTIONS * FAMILIES)) % ACTIONS) as u8,
                    direction: ((index / FAMILIES) % DIRECTIONS) as u8,
                    family: (index % FAMILIES) as u8,
                };
                snapshot.matches.insert(key, total);
            }
        }
        for reason in 0..PASS_REASONS {
            snapshot.passed[reason as usize] = sum(&self.pass_stats, reason, MAP_PASS_STATS)?;
        }
        Ok(snapshot)
    }

    pub fn counters(&self) -> Result<CounterSnapshot, DatapathError> {
        self.counters_up_to(None)
    }

    /// Runs one frame through the program once and returns its XDP action.
    pub fn test_run(&mut self, frame: &[u8]) -> Result<u32, DatapathError> {
        Ok(self.test_run_repeat(PROGRAM, frame, 1)?.0)
    }

    /// Runs `frame` `repeat` times through `program` (`PROGRAM` or `PASS_PROGRAM`); returns the
    /// action and the kernel's mean time per run.
    pub fn test_run_repeat(
        &mut self,
        program: &'static str,
        frame: &[u8],
        repeat: u32,
    ) -> Result<(u32, Duration), DatapathError> {
        let xdp: &mut Xdp = self
            .ebpf
            .program_mut(program)
            .ok_or(DatapathError::MissingProgram(program))?
            .try_into()
            .map_err(|source| DatapathError::Program {
                name: program,
                source,
            })?;
        let mut options = TestRunOptions::new();
        options.data_in = Some(frame);
        options.repeat = repeat;
        let result = xdp
            .test_run(options)
            .map_err(|source| DatapathError::Program {
                name: program,
                source,
            })?;
        Ok((result.return_value, result.duration))
    }
}

/// A pinned map left by an older build with another layout must not be adopted.
fn check_pinned(name: &str, path: &Path) -> Result<(), DatapathError> {
    let info = MapInfo::from_pin(path).map_err(|source| DatapathError::Map {
        name: "pinned",
        source,
    })?;
    let expected = match name {
        n if MAP_PREFIXES_V4.contains(&n) => {
            (8, size_of::<RuleRef>(), enforcer_common::MAX_PREFIXES_V4)
        }
        n if MAP_PREFIXES_V6.contains(&n) => {
            (20, size_of::<RuleRef>(), enforcer_common::MAX_PREFIXES_V6)
        }
        MAP_ACTIVE => (4, size_of::<u32>(), 1),
        MAP_RULE_SLOTS => (4, size_of::<RuleSlot>(), RULE_SLOTS),
        MAP_MATCH_STATS => (4, size_of::<Counter>(), MATCH_COUNTERS),
        _ => (4, size_of::<Counter>(), PASS_REASONS),
    };
    let found = (info.key_size(), info.value_size(), info.max_entries());
    if found != (expected.0, expected.1 as u32, expected.2) {
        return Err(DatapathError::IncompatiblePin {
            path: path.to_path_buf(),
            key: found.0,
            value: found.1,
            entries: found.2,
        });
    }
    Ok(())
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
        count: entry.rules.len() as u32,
        prefix_lens: [0; RULES_PER_SLOT],
        order: [0; RULES_PER_SLOT],
    };
    value.prefix_lens[..entry.prefix_lens.len()].copy_from_slice(&entry.prefix_lens);
    value.order[..entry.order.len()].copy_from_slice(&entry.order);
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
