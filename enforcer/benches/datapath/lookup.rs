//! Issue 16, goals 2 to 4, measured over many distinct addresses (one hot frame keeps any
//! table's path in cache and flatters every design):
//! - the in-program cost of the enforcer's lookup and of a plain kernel LPM trie over a program
//!   that only parses (the bench programs of enforcer-ebpf/src/bench.rs), at 0 to 1,000,000
//!   prefixes, hit and miss addresses apart;
//! - the real program against a bare XDP_PASS on frames that match nothing;
//! - compiling and applying 1,000,000 + 1,000,000 prefixes, and writing one learned host.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use enforcer::compile::{self, CompiledPolicy, EntryAddress};
use enforcer::datapath::{
    BENCH_ENFORCER_PROGRAM, BENCH_LPM_PROGRAM, BENCH_PARSE_PROGRAM, Datapath, LookupBench,
    LookupCount, PASS_PROGRAM, PROGRAM,
};
use enforcer::policy::{Action, Enforce, Entry, Location, Platform, Policy, Protocol};
use enforcer_common::{BENCH_ADDRESSES, ROLE_INSIDE};
use ipnet::IpNet;
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::{median, udp_frame};

/// IPv4 prefix counts measured; each comes with a quarter as many IPv6 prefixes (250,000 at
/// 1,000,000, the figure).
pub const SIZES: [usize; 4] = [0, 1_000, 100_000, 1_000_000];
/// Runs per BPF_PROG_TEST_RUN call, each on the next address.
pub const LOOKUP_REPEAT: u32 = 1_000_000;
pub const ROUNDS: usize = 5;
/// Goal 3: frames to distinct destinations that match nothing, and rounds of single runs.
pub const NO_MATCH_FRAMES: usize = 4096;
pub const NO_MATCH_ROUNDS: usize = 25;
/// Goal 4: prefixes of each family compiled and applied, and learned hosts written one by one.
pub const BUILD_PREFIXES: usize = 1_000_000;
pub const HOST_SAMPLES: usize = 100;

/// Prefixes of each of the 16 lengths at 1,000,000 (shortest first): few short ones, most long
/// ones, as in bench_flood's mix and a routing table; other counts scale it, keeping at least
/// one of each length.
pub const MIX: [usize; 16] = [
    4, 8, 16, 32, 64, 128, 256, 1024, 2048, 4096, 8192, 16_384, 32_768, 65_536, 131_072, 738_372,
];
pub const V4_LENGTHS: [u8; 16] = [
    9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24,
];
pub const V6_LENGTHS: [u8; 16] = [
    20, 23, 26, 29, 32, 35, 38, 41, 44, 47, 50, 53, 56, 59, 62, 64,
];
/// First octets never drawn: private, loopback, link-local and the frames' sources (198.18/15).
const EXCLUDED_FIRST_OCTETS: [u32; 8] = [0, 10, 100, 127, 169, 172, 192, 198];
const SOURCE_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// Outside 2000::/3, where the IPv6 prefixes are.
const SOURCE_V6: Ipv6Addr = Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 2);
const PLATFORMS: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }

    fn bits(self) -> u32 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    fn lengths(self) -> [u8; 16] {
        match self {
            Family::V4 => V4_LENGTHS,
            Family::V6 => V6_LENGTHS,
        }
    }

    /// A random address of the space prefixes are drawn from.
    fn draw(self, rng: &mut StdRng) -> u128 {
        match self {
            Family::V4 => loop {
                let a = rng.random::<u32>();
                let first = a >> 24;
                if (1..=223).contains(&first) && !EXCLUDED_FIRST_OCTETS.contains(&first) {
                    return u128::from(a);
                }
            },
            Family::V6 => (1u128 << 125) | (rng.random::<u128>() >> 3),
        }
    }

    fn address(self, value: u128) -> IpAddr {
        match self {
            Family::V4 => IpAddr::V4(Ipv4Addr::from(u32::try_from(value).unwrap())),
            Family::V6 => IpAddr::V6(Ipv6Addr::from(value)),
        }
    }

    fn source(self) -> IpAddr {
        match self {
            Family::V4 => IpAddr::V4(SOURCE_V4),
            Family::V6 => IpAddr::V6(SOURCE_V6),
        }
    }

    fn host_mask(self, len: u8) -> u128 {
        let host_bits = self.bits() - u32::from(len);
        if host_bits == 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        }
    }
}

/// `n` split over the 16 lengths in the proportions of `MIX`.
pub fn counts(n: usize) -> [usize; 16] {
    let mut counts = [0; 16];
    if n == 0 {
        return counts;
    }
    let total: usize = MIX.iter().sum();
    for i in 0..15 {
        counts[i] = ((MIX[i] * n + total / 2) / total).max(1);
    }
    counts[15] = n.saturating_sub(counts[..15].iter().sum());
    counts
}

/// Non-overlapping prefixes of one family spread over its space, and the ranges they cover.
pub struct PrefixSet {
    pub family: Family,
    /// (network, length).
    pub nets: Vec<(u128, u8)>,
    /// First address → last address of each prefix.
    taken: BTreeMap<u128, u128>,
}

impl PrefixSet {
    pub fn generate(family: Family, n: usize, rng: &mut StdRng) -> Self {
        let mut set = PrefixSet {
            family,
            nets: Vec::with_capacity(n),
            taken: BTreeMap::new(),
        };
        for (len, count) in family.lengths().into_iter().zip(counts(n)) {
            let mask = family.host_mask(len);
            let mut placed = 0;
            while placed < count {
                let start = family.draw(rng) & !mask;
                let end = start | mask;
                // Ranges do not overlap, so only the last one starting at or before `end` can
                // reach into [start, end].
                if set
                    .taken
                    .range(..=end)
                    .next_back()
                    .is_some_and(|(_, e)| *e >= start)
                {
                    continue;
                }
                set.taken.insert(start, end);
                set.nets.push((start, len));
                placed += 1;
            }
        }
        set
    }

    fn covers(&self, a: u128) -> bool {
        self.taken
            .range(..=a)
            .next_back()
            .is_some_and(|(_, e)| *e >= a)
    }

    pub fn ip_nets(&self) -> Vec<IpNet> {
        self.nets
            .iter()
            .map(|&(a, len)| IpNet::new(self.family.address(a), len).unwrap())
            .collect()
    }

    /// `count` addresses, each inside a prefix drawn at random.
    pub fn hits(&self, count: usize, rng: &mut StdRng) -> Vec<IpAddr> {
        (0..count)
            .map(|_| {
                let (network, len) = self.nets[rng.random_range(0..self.nets.len())];
                let host = rng.random::<u128>() & self.family.host_mask(len);
                self.family.address(network | host)
            })
            .collect()
    }

    /// `count` addresses of the same space outside every prefix.
    pub fn misses(&self, count: usize, rng: &mut StdRng) -> Vec<IpAddr> {
        let mut out = Vec::with_capacity(count);
        while out.len() < count {
            let a = self.family.draw(rng);
            if !self.covers(a) {
                out.push(self.family.address(a));
            }
        }
        out
    }
}

/// Every prefix of `sets` dropped, in `PLATFORMS` drop platforms taking turns.
pub fn policy(sets: &[&PrefixSet]) -> Policy {
    let mut nets: Vec<Vec<IpNet>> = vec![Vec::new(); PLATFORMS];
    for (i, net) in sets.iter().flat_map(|s| s.ip_nets()).enumerate() {
        nets[i % PLATFORMS].push(net);
    }
    let location = Location {
        path: "bench".into(),
        line: 1,
        column: 1,
    };
    let platforms = nets
        .into_iter()
        .enumerate()
        .map(|(i, prefixes)| Platform {
            data_date: None,
            feed: None,
            action_by_site: Vec::new(),
            id: 0,
            name: format!("lookup-{i}"),
            description: None,
            reference: None,
            action: Action::Drop,
            entries: vec![Entry {
                index: 0,
                domains: vec![],
                prefixes,
                protocol: Protocol::Any,
                ports: vec![],
                enforce: Enforce::Both,
                location: location.clone(),
            }],
            location: location.clone(),
        })
        .collect();
    Policy { platforms }
}

/// Mean ns per run of each program over the rounds; `enforcer` is `None` when the policy did not
/// fit the datapath.
pub struct LookupRow {
    pub prefixes_v4: usize,
    pub prefixes_v6: usize,
    pub family: Family,
    pub hit: bool,
    pub parse: Vec<f64>,
    pub enforcer: Option<Vec<f64>>,
    pub lpm: Vec<f64>,
}

impl LookupRow {
    /// Per round, the enforcer's extra over parsing.
    pub fn enforcer_extra(&self) -> Option<Vec<f64>> {
        let enforcer = self.enforcer.as_ref()?;
        Some(
            enforcer
                .iter()
                .zip(&self.parse)
                .map(|(e, p)| e - p)
                .collect(),
        )
    }

    pub fn lpm_extra(&self) -> Vec<f64> {
        self.lpm
            .iter()
            .zip(&self.parse)
            .map(|(l, p)| l - p)
            .collect()
    }
}

/// The real program against xdp_pass on frames that match nothing: per round, the median over
/// the frames of each program's single runs; `pass_again` is xdp_pass measured a second time
/// in the same rounds (its difference from `pass` is the method's noise).
pub struct NoMatchRow {
    pub prefixes_v4: usize,
    pub prefixes_v6: usize,
    pub role: &'static str,
    pub enforcer: Vec<f64>,
    pub pass: Vec<f64>,
    pub pass_again: Vec<f64>,
}

impl NoMatchRow {
    pub fn extra(&self) -> Vec<f64> {
        self.enforcer
            .iter()
            .zip(&self.pass)
            .map(|(e, p)| e - p)
            .collect()
    }

    pub fn noise(&self) -> Vec<f64> {
        self.pass_again
            .iter()
            .zip(&self.pass)
            .map(|(a, p)| a - p)
            .collect()
    }
}

/// How long `write_hosts` took for one learned host, with a policy of this size in force.
pub struct HostRow {
    pub prefixes_v4: usize,
    pub prefixes_v6: usize,
    pub samples: Vec<Duration>,
}

/// The kernel memory of the datapath's maps with a policy of this size in both generations.
pub struct MemoryRow {
    pub prefixes_v4: usize,
    pub prefixes_v6: usize,
    pub bytes: u64,
}

/// Compiling and applying `BUILD_PREFIXES` of each family; `Err` when it does not fit.
pub struct Build {
    pub result: Result<BuildTimes, String>,
}

pub struct BuildTimes {
    pub compile: Duration,
    /// Into the generation not in force, then into the other one (both full after it).
    pub apply_first: Duration,
    pub apply_second: Duration,
}

pub struct Results {
    pub lookups: Vec<LookupRow>,
    pub no_match: Vec<NoMatchRow>,
    pub hosts: Vec<HostRow>,
    pub memory: Vec<MemoryRow>,
    pub build: Build,
}

/// Every measurement of this module.
pub fn run(datapath: &mut Datapath, bench: &mut LookupBench) -> anyhow::Result<Results> {
    let mut rng = StdRng::seed_from_u64(16);
    let mut results = Results {
        lookups: Vec::new(),
        no_match: Vec::new(),
        hosts: Vec::new(),
        memory: Vec::new(),
        build: Build {
            result: Err("not run".into()),
        },
    };
    println!(
        "lookups: BPF_PROG_TEST_RUN, {LOOKUP_REPEAT} runs a call, each on the next of {BENCH_ADDRESSES} addresses; ns per packet over bench_parse, median of {ROUNDS} rounds"
    );
    for n4 in SIZES {
        measure_size(datapath, bench, &mut rng, n4, &mut results)?;
    }
    bench.clear_lpm()?;
    results.build = build(datapath, &mut rng, &mut results.hosts, &mut results.memory)?;
    Ok(results)
}

/// `n4` IPv4 and a quarter as many IPv6 prefixes: lookups in the bench programs, then, when the
/// datapath holds them, the real program on frames that match nothing and learned hosts.
fn measure_size(
    datapath: &mut Datapath,
    bench: &mut LookupBench,
    rng: &mut StdRng,
    n4: usize,
    results: &mut Results,
) -> anyhow::Result<()> {
    let n6 = n4 / 4;
    let v4 = PrefixSet::generate(Family::V4, n4, rng);
    let v6 = PrefixSet::generate(Family::V6, n6, rng);
    let policy = policy(&[&v4, &v6]);
    let fitted = apply_both(datapath, &policy);
    match &fitted {
        Err(error) => println!("{n4} IPv4 + {n6} IPv6 prefixes: does not fit ({error})"),
        Ok(_) => {
            let bytes = maps_memory()?;
            println!(
                "{n4} IPv4 + {n6} IPv6 prefixes in both generations: maps {:.1} MiB",
                bytes as f64 / MIB
            );
            results.memory.push(MemoryRow {
                prefixes_v4: n4,
                prefixes_v6: n6,
                bytes,
            });
        }
    }
    bench.clear_lpm()?;
    bench.insert_lpm(&v4.ip_nets())?;
    bench.insert_lpm(&v6.ip_nets())?;
    for set in [&v4, &v6] {
        for hit in [true, false] {
            if hit && set.nets.is_empty() {
                continue;
            }
            let addresses = if hit {
                set.hits(BENCH_ADDRESSES as usize, rng)
            } else {
                set.misses(BENCH_ADDRESSES as usize, rng)
            };
            let (parse, enforcer, lpm) =
                lookups(datapath, bench, &addresses, set.family, hit, fitted.is_ok())?;
            let row = LookupRow {
                prefixes_v4: n4,
                prefixes_v6: n6,
                family: set.family,
                hit,
                parse,
                enforcer,
                lpm,
            };
            println!(
                "{n4} + {n6} prefixes, {} {}: parse {:.0} ns, enforcer {} ns over it, LPM trie {:+.0}",
                set.family.name(),
                if hit { "hits" } else { "misses" },
                median(row.parse.clone()),
                row.enforcer_extra()
                    .map_or("does not fit".to_string(), |e| format!("{:+.0}", median(e))),
                median(row.lpm_extra()),
            );
            results.lookups.push(row);
        }
    }
    let Ok(mut compiled) = fitted else {
        return Ok(());
    };
    let misses = v4.misses(NO_MATCH_FRAMES, rng);
    for role in ["none (both lookups)", "inside (destination only)"] {
        let roles = if role.starts_with("inside") {
            vec![(1, ROLE_INSIDE)]
        } else {
            vec![]
        };
        // Test runs arrive on the loopback (ifindex 1).
        datapath.set_dns_trust(&[], &roles)?;
        let (enforcer, pass, pass_again) = no_match(datapath, &misses)?;
        let row = NoMatchRow {
            prefixes_v4: n4,
            prefixes_v6: n6,
            role,
            enforcer,
            pass,
            pass_again,
        };
        println!(
            "no match, {n4} + {n6} prefixes, role {role}: enforcer {:.0} ns, xdp_pass {:.0} ns, extra {:+.0} ns (xdp_pass against itself {:+.0})",
            median(row.enforcer.clone()),
            median(row.pass.clone()),
            median(row.extra()),
            median(row.noise()),
        );
        results.no_match.push(row);
    }
    datapath.set_dns_trust(&[], &[])?;
    if n4 > 0 {
        let hosts = v4.misses(HOST_SAMPLES, rng);
        let samples = write_hosts(datapath, &mut compiled, &policy, &hosts)?;
        println!(
            "learned host with {n4} + {n6} prefixes in force: write_hosts {:.1?} (median of {HOST_SAMPLES})",
            median_duration(&samples)
        );
        results.hosts.push(HostRow {
            prefixes_v4: n4,
            prefixes_v6: n6,
            samples,
        });
    }
    Ok(())
}

/// Compiles `policy` and applies it twice, so that both generations hold it (what the memory
/// figure is of); the error's text when it does not fit.
fn apply_both(datapath: &mut Datapath, policy: &Policy) -> Result<CompiledPolicy, String> {
    let compiled = compile::compile(policy).map_err(|e| e.to_string())?;
    for _ in 0..2 {
        datapath.apply(&compiled).map_err(|e| e.to_string())?;
    }
    Ok(compiled)
}

/// bench_parse, bench_enforcer (unless the policy did not fit) and bench_lpm alternated over
/// `ROUNDS` rounds on `addresses`; each call's counts must show every address found (hits) or
/// none (misses).
#[allow(clippy::type_complexity)]
fn lookups(
    datapath: &mut Datapath,
    bench: &mut LookupBench,
    addresses: &[IpAddr],
    family: Family,
    hit: bool,
    fits: bool,
) -> anyhow::Result<(Vec<f64>, Option<Vec<f64>>, Vec<f64>)> {
    bench.set_addresses(addresses)?;
    let frame = udp_frame(family.source(), addresses[0], 40000, 443);
    let mut parse = Vec::new();
    let mut enforcer = Vec::new();
    let mut lpm = Vec::new();
    for _ in 0..ROUNDS {
        for (program, samples) in [
            (BENCH_PARSE_PROGRAM, &mut parse),
            (BENCH_ENFORCER_PROGRAM, &mut enforcer),
            (BENCH_LPM_PROGRAM, &mut lpm),
        ] {
            if program == BENCH_ENFORCER_PROGRAM && !fits {
                continue;
            }
            bench.reset()?;
            let (_, mean) = datapath.test_run_repeat(program, &frame, LOOKUP_REPEAT)?;
            let found = if program != BENCH_PARSE_PROGRAM && hit {
                u64::from(LOOKUP_REPEAT)
            } else {
                0
            };
            let count = bench.count()?;
            anyhow::ensure!(
                count
                    == LookupCount {
                        runs: u64::from(LOOKUP_REPEAT),
                        found
                    },
                "{program}, {} {}: {count:?}, expected {found} found",
                family.name(),
                if hit { "hits" } else { "misses" }
            );
            samples.push(mean.as_nanos() as f64);
        }
    }
    Ok((parse, fits.then_some(enforcer), lpm))
}

/// The real program and xdp_pass (twice) alternated, one run each, over frames
/// to `destinations` (which match nothing), `NO_MATCH_ROUNDS` rounds; per round the median over
/// the frames of each.
#[allow(clippy::type_complexity)]
fn no_match(
    datapath: &mut Datapath,
    destinations: &[IpAddr],
) -> anyhow::Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
    let frames: Vec<Vec<u8>> = destinations
        .iter()
        .map(|d| udp_frame(Family::V4.source(), *d, 40000, 443))
        .collect();
    for frame in &frames {
        let (action, _) = datapath.test_run_repeat(PROGRAM, frame, 1)?;
        anyhow::ensure!(action == 2, "a non-matching frame got action {action}");
    }
    let mut out = (Vec::new(), Vec::new(), Vec::new());
    let mut single = |program, frame: &[u8]| -> anyhow::Result<f64> {
        Ok(datapath.test_run_repeat(program, frame, 1)?.1.as_nanos() as f64)
    };
    for _ in 0..NO_MATCH_ROUNDS {
        // [enforcer, xdp_pass, xdp_pass again], run in an order that rotates from frame to
        // frame: a run right after another on the same frame is a little faster (warm caches).
        let mut round: [Vec<f64>; 3] = Default::default();
        for (i, frame) in frames.iter().enumerate() {
            for k in 0..3 {
                let which = (i + k) % 3;
                let program = if which == 0 { PROGRAM } else { PASS_PROGRAM };
                round[which].push(single(program, frame)?);
            }
        }
        let [enforcer, pass, pass_again] = round;
        out.0.push(median(enforcer));
        out.1.push(median(pass));
        out.2.push(median(pass_again));
    }
    Ok(out)
}

/// Learns `hosts` one at a time (entry 0 of the first platform), timing `write_hosts` alone.
fn write_hosts(
    datapath: &mut Datapath,
    compiled: &mut CompiledPolicy,
    policy: &Policy,
    hosts: &[IpAddr],
) -> anyhow::Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(hosts.len());
    // The 1,000,000-prefix tables are exactly at the default capacity, which a learned host
    // would pass: the compiler is given room for the hosts measured (the datapath's exact
    // table holds them until the next build).
    let room = u32::try_from(compiled.v4.len() + hosts.len())?;
    compiled.capacity.v4 = compiled.capacity.v4.max(room);
    for host in hosts {
        let address = EntryAddress {
            platform: 0,
            entry: 0,
            net: IpNet::from(*host),
        };
        let changed = compile::add_hosts(compiled, policy, &[address])?;
        let started = Instant::now();
        let written = datapath.write_hosts(compiled, &changed)?;
        samples.push(started.elapsed());
        anyhow::ensure!(written == 1, "{host}: {written} keys written");
        let frame = udp_frame(Family::V4.source(), *host, 40000, 443);
        let (action, _) = datapath.test_run_repeat(PROGRAM, &frame, 1)?;
        anyhow::ensure!(action == 1, "the learned host {host} got action {action}");
    }
    Ok(samples)
}

/// `BUILD_PREFIXES` of each family compiled, then applied twice (both generations full), then
/// learned hosts written with that policy in force.
fn build(
    datapath: &mut Datapath,
    rng: &mut StdRng,
    hosts: &mut Vec<HostRow>,
    memory: &mut Vec<MemoryRow>,
) -> anyhow::Result<Build> {
    let v4 = PrefixSet::generate(Family::V4, BUILD_PREFIXES, rng);
    let v6 = PrefixSet::generate(Family::V6, BUILD_PREFIXES, rng);
    let policy = policy(&[&v4, &v6]);
    let started = Instant::now();
    let mut compiled = match compile::compile(&policy) {
        Ok(compiled) => compiled,
        Err(error) => {
            println!("build: {BUILD_PREFIXES} + {BUILD_PREFIXES} prefixes do not fit ({error})");
            return Ok(Build {
                result: Err(error.to_string()),
            });
        }
    };
    let compile_time = started.elapsed();
    let mut applies = Vec::new();
    for _ in 0..2 {
        let started = Instant::now();
        if let Err(error) = datapath.apply(&compiled) {
            println!("build: {BUILD_PREFIXES} + {BUILD_PREFIXES} prefixes do not fit ({error})");
            return Ok(Build {
                result: Err(error.to_string()),
            });
        }
        applies.push(started.elapsed());
    }
    let times = BuildTimes {
        compile: compile_time,
        apply_first: applies[0],
        apply_second: applies[1],
    };
    println!(
        "build: {BUILD_PREFIXES} + {BUILD_PREFIXES} prefixes: compile {:.2?}, apply {:.2?}, apply into the other generation {:.2?}",
        times.compile, times.apply_first, times.apply_second
    );
    memory.push(MemoryRow {
        prefixes_v4: BUILD_PREFIXES,
        prefixes_v6: BUILD_PREFIXES,
        bytes: maps_memory()?,
    });
    let learned = v4.misses(HOST_SAMPLES, rng);
    let samples = write_hosts(datapath, &mut compiled, &policy, &learned)?;
    println!(
        "learned host with {BUILD_PREFIXES} + {BUILD_PREFIXES} prefixes in force: write_hosts {:.1?} (median of {HOST_SAMPLES})",
        median_duration(&samples)
    );
    hosts.push(HostRow {
        prefixes_v4: BUILD_PREFIXES,
        prefixes_v6: BUILD_PREFIXES,
        samples,
    });
    Ok(Build { result: Ok(times) })
}

pub const MIB: f64 = 1024.0 * 1024.0;

/// The kernel memory of this process's BPF maps but the bench's own (`BENCH_*`): the sum of
/// their fdinfo `memlock`, which recent kernels give as the map's memory in use.
fn maps_memory() -> anyhow::Result<u64> {
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    for entry in std::fs::read_dir("/proc/self/fdinfo")? {
        // A descriptor closed meanwhile (the directory's own) has no fdinfo left.
        let Ok(text) = std::fs::read_to_string(entry?.path()) else {
            continue;
        };
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let (Some(id), Some(memlock)) = (field("map_id:"), field("memlock:")) else {
            continue;
        };
        if !seen.insert(id) {
            continue;
        }
        let info = aya::maps::MapInfo::from_id(u32::try_from(id)?)?;
        if info.name_as_str().is_some_and(|n| n.starts_with("BENCH_")) {
            continue;
        }
        total += memlock;
    }
    Ok(total)
}

pub fn median_duration(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}
