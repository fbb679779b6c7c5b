//! The kernel boundary: the loaded XDP program and its maps. One concern per file:
//! - `load`: load the program, fresh or adopting the maps an earlier run pinned;
//! - `apply`: write a compiled policy (as a diff, switched in atomically) and learned hosts;
//! - `counters`: read and clear the per-CPU counters;
//! - `dns_events`: read the DNS packets the program copies into its ring buffer;
//! - `attach`, `bpffs`: attaching to interfaces, and the BPF filesystem the pins live in.
//!
//! Here: the map names, the error type, the [`Datapath`] handle itself, DNS holding and
//! BPF_PROG_TEST_RUN.

mod apply;
pub mod attach;
mod bench;
pub mod bpffs;
mod counters;
pub mod dns_events;
mod dns_trust;
mod load;
mod sites;
pub mod table;

pub use apply::ApplyStats;
pub use bench::{
    BENCH_ENFORCER_PROGRAM, BENCH_LPM_PROGRAM, BENCH_PARSE_PROGRAM, LookupBench, LookupCount,
};
pub use counters::{CounterSnapshot, MatchKey};
pub use dns_events::{DnsEvents, DnsKind, DnsPacket};
pub use dns_trust::{DnsStats, Reinjector};

use std::path::PathBuf;
use std::time::{Duration, Instant};

use aya::maps::{Array, LpmTrie, MapData, MapError, PerCpuArray};
use aya::programs::{ProgramError, TestRun, TestRunOptions, Xdp};
use aya::{Ebpf, EbpfError};
use enforcer_common::{
    Counter, DNS_HOLD_DEADLINE, HostKey, LongKey, NameKey, NameRule, RULE_SLOTS, RuleRef, RuleSlot,
};

use crate::sys::mmap::MappedArray;

/// The program object built by build.rs from enforcer-ebpf.
static PROGRAM_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/enforcer"));

pub const PROGRAM: &str = "enforcer";
pub const PASS_PROGRAM: &str = "xdp_pass";
/// A program that drops everything: the floor of the flood benchmark.
pub const DROP_PROGRAM: &str = "xdp_drop";
/// The program the main one hands DNS queries to (name-level blocking), by tail call.
pub const DNS_PROGRAM: &str = "enforcer_dns";
/// The lookup table, both generations in each map (see enforcer-ebpf/src/lookup.rs).
const MAP_INDEX: &str = "LOOKUP_INDEX";
const MAP_RANGES_V4: &str = "LOOKUP_RANGES_V4";
/// IPv6's ranges (the name of the map that held both families before IPv4's got their own).
const MAP_RANGES: &str = "LOOKUP_RANGES";
const MAP_LEAVES: &str = "LOOKUP_LEAVES";
const MAP_LEARNED_HOSTS: &str = "LEARNED_HOSTS";
const MAP_LONG_V6: &str = "LONG_PREFIXES_V6";
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
/// The trust tries (IPv4, IPv6), interface roles and DNS counts: each program has its own, which
/// its daemon fills at start-up.
const MAP_DNS_TRUST: [&str; 2] = ["DNS_TRUST_V4", "DNS_TRUST_V6"];
const MAP_IFACE_ROLES: &str = "IFACE_ROLES";
const MAP_IFACE_ROLES_HIGH: &str = "IFACE_ROLES_HIGH";
const MAP_DNS_STATS: &str = "DNS_STATS_MAP";
/// The name tables of generation 0 and 1, switched with the tries.
const MAP_NAMES: [&str; 2] = ["NAMES_0", "NAMES_1"];
/// `[0]`: the DNS program. Pinned: a program array forgets its entries when no process or pin
/// holds it, and name blocking must go on when the daemon is gone.
const MAP_DNS_QUERY_PROGRAM: &str = "DNS_QUERY_PROGRAM";
const MAP_DNS_CONFIG: &str = "DNS_CONFIG";
const MAP_DNS_BLOCKED: &str = "DNS_BLOCKED";
/// Pinned: an old main program and a new DNS program share it during an upgrade.
const MAP_QUERY_STASH: &str = "QUERY_STASH";
pub const MAPS: [&str; 21] = [
    sites::MAP_SITES,
    sites::MAP_SITE_CONFIG,
    sites::MAP_SITE_LEAVES,
    sites::MAP_SITE_ACTIONS,
    sites::MAP_SITE_STATS,
    MAP_INDEX,
    MAP_RANGES_V4,
    MAP_RANGES,
    MAP_LEAVES,
    MAP_LEARNED_HOSTS,
    MAP_LONG_V6,
    MAP_ACTIVE,
    MAP_RULE_SLOTS,
    MAP_MATCH_STATS,
    MAP_PASS_STATS,
    MAP_NAMES[0],
    MAP_NAMES[1],
    MAP_DNS_QUERY_PROGRAM,
    MAP_DNS_CONFIG,
    MAP_DNS_BLOCKED,
    MAP_QUERY_STASH,
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
    #[error("{0}")]
    Table(#[from] table::TableError),
    #[error("map {0}: write outside the mapped values")]
    MappedWrite(&'static str),
}

/// The lookup table's maps: the arrays mapped into this process, the exact tables as maps.
pub(crate) struct LookupMaps {
    index: MappedArray<u64>,
    /// IPv4's 32-bit ranges, two to a value (`v4_range_slot`).
    ranges_v4: MappedArray<u64>,
    ranges_v6: MappedArray<u64>,
    leaves: MappedArray<RuleRef>,
    learned_hosts: aya::maps::HashMap<MapData, HostKey, u32>,
    long_v6: LpmTrie<MapData, LongKey, u32>,
    /// Ranges of each generation in `ranges_v4` and `ranges_v6` (from `capacity`).
    ranges_per_generation: [u32; 2],
    capacity: crate::compile::Capacity,
    /// The arrays' maps, kept for their descriptors (memory accounting).
    arrays: [(&'static str, MapData); 4],
}

pub struct Datapath {
    ebpf: Ebpf,
    /// Both generations; `generation` is the one in force.
    lookup: LookupMaps,
    active: Array<MapData, u32>,
    generation: usize,
    last_switch: Option<Instant>,
    slots: Array<MapData, RuleSlot>,
    match_stats: PerCpuArray<MapData, Counter>,
    pass_stats: PerCpuArray<MapData, Counter>,
    dns_events: Option<DnsEvents>,
    dns_hold: Array<MapData, u64>,
    dns_trust_v4: LpmTrie<MapData, [u8; 4], u32>,
    dns_trust_v6: LpmTrie<MapData, [u8; 16], u32>,
    /// Roles by ifindex below `ROLE_ARRAY_ENTRIES`, mapped (0: both); the rest in the hash.
    iface_roles: MappedArray<u64>,
    iface_roles_high: aya::maps::HashMap<MapData, u32, u32>,
    dns_stats: PerCpuArray<MapData, u64>,
    names: [aya::maps::HashMap<MapData, NameKey, NameRule>; 2],
    dns_config: Array<MapData, u32>,
    dns_blocked: PerCpuArray<MapData, Counter>,
    /// Held open: a program array forgets its entries when the last descriptor (or pin) goes.
    #[allow(dead_code)]
    dns_programs: aya::maps::ProgramArray<MapData>,
    /// The rule lists in force after the last `apply`, and the free slots, so that hosts can be
    /// added without reading the maps back.
    slot_cache: Option<apply::SlotCache>,
    /// The leaves and prefixes of the generation in force after the last `apply`.
    in_force: Option<apply::InForce>,
    sites: sites::SiteMaps,
}

impl Datapath {
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
    pub fn take_dns_events(&mut self) -> Option<DnsEvents> {
        self.dns_events.take()
    }

    pub fn program_mut(&mut self) -> Result<&mut Xdp, DatapathError> {
        self.xdp_mut(PROGRAM)
    }

    /// One of the object's XDP programs (`PROGRAM`, `PASS_PROGRAM`, `DNS_PROGRAM`).
    fn xdp_mut(&mut self, name: &'static str) -> Result<&mut Xdp, DatapathError> {
        xdp_mut(&mut self.ebpf, name)
    }

    /// Runs one frame through the program once and returns its XDP action.
    pub fn test_run(&mut self, frame: &[u8]) -> Result<u32, DatapathError> {
        Ok(self.test_run_repeat(PROGRAM, frame, 1)?.0)
    }

    /// Attaches the program that passes everything to `interface` (of this thread's network
    /// namespace), for as long as this datapath lives: the peer of a veth needs an XDP program
    /// to receive frames sent back with XDP_TX (tests and labs).
    pub fn attach_pass(&mut self, interface: &str) -> Result<(), DatapathError> {
        self.attach_program(PASS_PROGRAM, interface)
    }

    /// Attaches the loaded program `name` (`PASS_PROGRAM`, `DROP_PROGRAM`...) to `interface` (of
    /// this thread's network namespace) in driver mode, for as long as this datapath lives.
    pub fn attach_program(
        &mut self,
        name: &'static str,
        interface: &str,
    ) -> Result<(), DatapathError> {
        let xdp = self.xdp_mut(name)?;
        xdp.attach(interface, aya::programs::xdp::XdpMode::Driver)
            .map_err(|source| DatapathError::Program { name, source })?;
        Ok(())
    }

    /// Runs one frame through the program once; returns its XDP action and the frame as the
    /// program left it (an answer it built, for XDP_TX).
    pub fn test_run_output(&mut self, frame: &[u8]) -> Result<(u32, Vec<u8>), DatapathError> {
        let xdp = self.program_mut()?;
        let mut out = vec![0u8; 4096];
        let mut options = TestRunOptions::new();
        options.data_in = Some(frame);
        options.data_out = Some(&mut out);
        let result = xdp
            .test_run(options)
            .map_err(|source| DatapathError::Program {
                name: PROGRAM,
                source,
            })?;
        let size = usize::try_from(result.data_size_out)
            .unwrap_or(usize::MAX)
            .min(out.len());
        out.truncate(size);
        Ok((result.return_value, out))
    }

    /// Runs `frame` `repeat` times through `program` (`PROGRAM` or `PASS_PROGRAM`); returns the
    /// action and the kernel's mean time per run.
    pub fn test_run_repeat(
        &mut self,
        program: &'static str,
        frame: &[u8],
        repeat: u32,
    ) -> Result<(u32, Duration), DatapathError> {
        let xdp = self.xdp_mut(program)?;
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

/// The XDP program `name` of `ebpf`.
fn xdp_mut<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Xdp, DatapathError> {
    ebpf.program_mut(name)
        .ok_or(DatapathError::MissingProgram(name))?
        .try_into()
        .map_err(|source| DatapathError::Program { name, source })
}

impl Datapath {
    /// The prefixes of each family the lookup table was sized for.
    pub fn capacity(&self) -> crate::compile::Capacity {
        self.lookup.capacity
    }

    /// Kernel memory of the maps that grow with the policy (the lookup table, rule slots, name
    /// tables), as the kernel accounts it (`memlock` in the map's fdinfo), in bytes per map.
    pub fn table_memory(&self) -> Vec<(&'static str, u64)> {
        use aya::maps::IterableMap as _;
        let mut maps: Vec<(&'static str, &MapData)> = self
            .lookup
            .arrays
            .iter()
            .map(|(name, data)| (*name, data))
            .collect();
        maps.push((MAP_LEARNED_HOSTS, self.lookup.learned_hosts.map()));
        maps.push((MAP_LONG_V6, self.lookup.long_v6.map()));
        maps.push((MAP_NAMES[0], self.names[0].map()));
        maps.push((MAP_NAMES[1], self.names[1].map()));
        maps.into_iter()
            .map(|(name, data)| (name, memlock(data).unwrap_or(0)))
            .collect()
    }
}

/// The `memlock` figure of a map's fdinfo: what the kernel charges for it.
fn memlock(data: &MapData) -> Option<u64> {
    use std::os::fd::{AsFd as _, AsRawFd as _};
    let fd = data.fd().as_fd().as_raw_fd();
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    info.lines()
        .find_map(|line| line.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
}
