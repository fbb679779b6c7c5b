//! Issue 17: what finding a matched packet's site costs, and proof that a packet that matches
//! nothing pays nothing for sites. The real program on single runs over many frames (as the
//! no-match section of `lookup`), one drop platform, compared with no sites:
//! - `SITES` sites, an IPv4 and an IPv6 client prefix each, the frames' sources in one of them;
//! - the same plus an `action-by-site` monitor override of the platform for the frames' site
//!   (the leaf is looked up again with the site's variant).
//!
//! The two policies compared are applied one after the other, so each holds one generation;
//! every frame then runs under both, switching the generation in force between them (one map
//! write), which pairs the measurements frame by frame: blocks measured apart drift by more
//! than the lookup costs on a shared machine. Each round does it both ways round (which
//! policy holds which generation), as the generations do not cost quite the same. `xdp_pass`
//! runs beside the enforcer the same way, so its difference between the generations is the
//! method's noise. Every run's action and the site counters of every round are checked.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::Instant;

use enforcer::compile::{self, CompiledPolicy};
use enforcer::datapath::{Datapath, PASS_PROGRAM, PROGRAM};
use enforcer::policy::{
    Action, Enforce, Entry, Location, Platform, Policy, Protocol, SiteAction, Sites,
};
use enforcer_common::{Counter, SITE_OTHER, SiteCounterKey};
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::lookup::{Family, PrefixSet};
use crate::{median, udp_frame};

/// Sites configured (each with one IPv4 /24 and one IPv6 /48).
pub const SITES: usize = 1_000;
/// The platform's prefixes: IPv4, and a quarter as many IPv6 (the lookup bench's middle size).
pub const PLATFORM_PREFIXES_V4: usize = 100_000;
/// Frames per family, matched and unmatched alike.
pub const FRAMES: usize = 2_048;
/// Rounds, each measuring both ways round.
pub const ROUNDS: usize = 20;
/// The kernel gives a single run's duration in whole ns.
pub const RESOLUTION_NS: f64 = 1.0;
/// The site every frame's source is in.
const FRAMES_SITE: usize = 500;
const PLATFORM: &str = "bench-drop";

/// The configurations compared with no sites, and their names.
pub const NO_SITES: usize = 0;
pub const WITH_SITES: usize = 1;
pub const WITH_OVERRIDE: usize = 2;
pub const CONFIG_NAMES: [&str; 3] = [
    "no sites",
    "1,000 sites",
    "1,000 sites + action-by-site (monitor)",
];

/// One kind of frame (matched or not, one family) under no sites and under `config`: per
/// round, the median over the frames of each program's single runs under each.
pub struct SiteRow {
    pub matched: bool,
    pub family: Family,
    pub config: usize,
    pub base_enforcer: Vec<f64>,
    pub base_pass: Vec<f64>,
    pub enforcer: Vec<f64>,
    pub pass: Vec<f64>,
}

fn minus(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x - y).collect()
}

impl SiteRow {
    /// Per round, the enforcer under `config` minus under no sites.
    pub fn extra(&self) -> Vec<f64> {
        minus(&self.enforcer, &self.base_enforcer)
    }

    /// The same for xdp_pass: the noise of the comparison.
    pub fn noise(&self) -> Vec<f64> {
        minus(&self.pass, &self.base_pass)
    }

    /// Within the noise: the median extra lies inside xdp_pass's min..max widened by
    /// `RESOLUTION_NS` (a bare program's medians are often equal to the ns, leaving no range).
    pub fn within_noise(&self) -> bool {
        let m = median(self.extra());
        let noise = self.noise();
        let lo = noise.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = noise.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        lo - RESOLUTION_NS <= m && m <= hi + RESOLUTION_NS
    }
}

/// What the matched runs moved in the site counters under one configuration, over the rounds.
pub struct CountCheck {
    pub config: usize,
    /// The configuration it was compared with.
    pub paired: usize,
    pub site: String,
    pub action: &'static str,
    /// Matched runs of the enforcer, and the packets counted under the expected key.
    pub runs: u64,
    pub counted: u64,
}

pub struct SiteResults {
    pub prefixes_v4: usize,
    pub prefixes_v6: usize,
    pub rows: Vec<SiteRow>,
    pub counts: Vec<CountCheck>,
    /// Wall time of the whole section (generating, compiling, applying, measuring).
    pub seconds: f64,
}

struct Frame {
    bytes: Vec<u8>,
    matched: bool,
    family: Family,
}

/// `sites` sites `site-NNNN`, site i with 10.(i / 256).(i % 256).0/24 and fd00:0:i::/48.
fn sites_yaml(sites: usize) -> String {
    (0..sites)
        .map(|i| {
            format!(
                "site-{i:04}: [10.{}.{}.0/24, 'fd00:0:{i:x}::/48']\n",
                i / 256,
                i % 256
            )
        })
        .collect()
}

/// A random client address of site `i` (as laid out by `sites_yaml`).
fn client(family: Family, i: usize, rng: &mut StdRng) -> IpAddr {
    let i = u16::try_from(i).unwrap();
    match family {
        Family::V4 => {
            let [hi, lo] = i.to_be_bytes();
            IpAddr::V4(Ipv4Addr::new(10, hi, lo, rng.random_range(1..255)))
        }
        Family::V6 => IpAddr::V6(Ipv6Addr::new(
            0xfd00,
            0,
            i,
            rng.random(),
            rng.random(),
            rng.random(),
            rng.random(),
            rng.random_range(1..u16::MAX),
        )),
    }
}

/// One drop platform over every prefix of `sets`, monitored for clients of `monitored`.
fn policy(sets: &[&PrefixSet], monitored: Option<&str>) -> Policy {
    let location = Location {
        path: "bench".into(),
        line: 1,
        column: 1,
    };
    Policy {
        platforms: vec![Platform {
            data_date: None,
            feed: None,
            action_by_site: monitored
                .map(|site| SiteAction {
                    site: site.to_owned(),
                    action: Action::Monitor,
                    location: location.clone(),
                })
                .into_iter()
                .collect(),
            id: 0,
            name: PLATFORM.to_owned(),
            description: None,
            reference: None,
            action: Action::Drop,
            entries: vec![Entry {
                index: 0,
                domains: vec![],
                prefixes: sets.iter().flat_map(|s| s.ip_nets()).collect(),
                protocol: Protocol::Any,
                ports: vec![],
                enforce: Enforce::Both,
                location: location.clone(),
            }],
            location,
        }],
    }
}

/// Every comparison of this module, with the policies it applies left in the datapath.
pub fn run(datapath: &mut Datapath) -> anyhow::Result<SiteResults> {
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(17);
    let prefixes_v6 = PLATFORM_PREFIXES_V4 / 4;
    let v4 = PrefixSet::generate(Family::V4, PLATFORM_PREFIXES_V4, &mut rng);
    let v6 = PrefixSet::generate(Family::V6, prefixes_v6, &mut rng);
    let sites = Sites::parse(Path::new("bench-sites.yaml"), &sites_yaml(SITES))
        .map_err(|problems| anyhow::anyhow!("bench sites: {problems:?}"))?;
    let frames_site = sites
        .get(&format!("site-{FRAMES_SITE:04}"))
        .ok_or_else(|| anyhow::anyhow!("no site {FRAMES_SITE}"))?
        .clone();

    // [no sites, sites, sites + override]: the platform tables are the same in all three.
    let plain = policy(&[&v4, &v6], None);
    let overridden = policy(&[&v4, &v6], Some(&frames_site.name));
    let platform = plain.platform_id(0);
    let mut configs: Vec<CompiledPolicy> = Vec::new();
    for (p, s) in [
        (&plain, &Sites::default()),
        (&plain, &sites),
        (&overridden, &sites),
    ] {
        let mut compiled = compile::compile(p)?;
        compiled.sites = compile::compile_sites(p, s)?;
        configs.push(compiled);
    }
    // Each configuration's site and action for a matched frame. Without sites nothing is
    // counted by site (site `other` is read from the match counters then): 0 expected there.
    let expected = [
        (
            SITE_OTHER,
            "none (no sites: nothing counted by site)",
            Action::Drop,
        ),
        (frames_site.id, frames_site.name.as_str(), Action::Drop),
        (frames_site.id, frames_site.name.as_str(), Action::Monitor),
    ];

    // The kinds of frame interleaved (IPv4 and IPv6 alternate), so that each is spread over
    // the whole round.
    let mut groups: Vec<Vec<Frame>> = Vec::new();
    for set in [&v4, &v6] {
        for matched in [true, false] {
            let destinations = if matched {
                set.hits(FRAMES, &mut rng)
            } else {
                set.misses(FRAMES, &mut rng)
            };
            let frames = destinations
                .into_iter()
                .map(|d| Frame {
                    bytes: udp_frame(client(set.family, FRAMES_SITE, &mut rng), d, 40000, 443),
                    matched,
                    family: set.family,
                })
                .collect();
            groups.push(frames);
        }
    }
    let mut kinds: Vec<_> = groups.into_iter().map(Vec::into_iter).collect();
    let mut frames: Vec<Frame> = Vec::with_capacity(4 * FRAMES);
    for _ in 0..FRAMES {
        for kind in &mut kinds {
            frames.extend(kind.next());
        }
    }
    let group_of = |f: &Frame| usize::from(f.family == Family::V6) * 2 + usize::from(!f.matched);

    let mut rows = Vec::new();
    let mut counts = Vec::new();
    // Unmatched frames are compared on their own: run between matched ones, they would find
    // the caches as the matched frames' site lookups left them. An override changes nothing
    // for them, so they are compared with sites only.
    // Last, no sites against no sites on unmatched frames: the enforcer against itself, the
    // noise of this comparison for the real program.
    for (config, matched) in [
        (WITH_SITES, true),
        (WITH_OVERRIDE, true),
        (WITH_SITES, false),
        (NO_SITES, false),
    ] {
        let frames: Vec<&Frame> = frames.iter().filter(|f| f.matched == matched).collect();
        // [group][slot]: per-round medians, slots [no sites: enforcer, pass; config: enforcer,
        // pass], each the mean of the two arrangements below.
        let mut medians: Vec<[Vec<f64>; 4]> = (0..4).map(|_| Default::default()).collect();
        let mut runs = [0u64; 2];
        let mut counted = [0u64; 2];
        for _ in 0..ROUNDS {
            let mut both: Vec<[Vec<f64>; 4]> = (0..4).map(|_| Default::default()).collect();
            // The two generations' tables lie in different memory and do not cost quite the
            // same: each round measures both ways round (no sites in the generation before the
            // one in force, then in the one in force) and takes the mean.
            for swapped in [false, true] {
                if swapped {
                    datapath.apply(&configs[config])?;
                    datapath.apply(&configs[0])?;
                } else {
                    datapath.apply(&configs[0])?;
                    datapath.apply(&configs[config])?;
                }
                let before = datapath.site_counters()?;
                let mut samples: Vec<[Vec<f64>; 4]> = (0..4).map(|_| Default::default()).collect();
                for (i, frame) in frames.iter().enumerate() {
                    // Which generation runs first, and which program first under each,
                    // alternate from frame to frame: a run right after another on the same
                    // frame is faster.
                    // Frames alternate between the families: count within one.
                    let n = i / 2;
                    let order = if n % 2 == 0 { [0, 1] } else { [1, 0] };
                    let programs = if (n / 2) % 2 == 0 {
                        [PROGRAM, PASS_PROGRAM]
                    } else {
                        [PASS_PROGRAM, PROGRAM]
                    };
                    for side in order {
                        // Side 0: no sites.
                        datapath.select_generation_for_bench((side == 0) != swapped)?;
                        let action = expected[if side == 0 { 0 } else { config }].2;
                        let want = if frame.matched && action == Action::Drop {
                            1
                        } else {
                            2
                        };
                        for program in programs {
                            let (verdict, took) =
                                datapath.test_run_repeat(program, &frame.bytes, 1)?;
                            let slot = side * 2 + usize::from(program == PASS_PROGRAM);
                            if program == PROGRAM {
                                anyhow::ensure!(
                                    verdict == want,
                                    "{}, {} {}: action {verdict}, expected {want}",
                                    CONFIG_NAMES[if side == 0 { 0 } else { config }],
                                    frame.family.name(),
                                    if frame.matched { "match" } else { "no match" }
                                );
                            }
                            samples[group_of(frame)][slot].push(took.as_nanos() as f64);
                        }
                        runs[side] += u64::from(frame.matched);
                    }
                }
                datapath.select_generation_for_bench(false)?;
                // Every matched run counted under its configuration's site and action, and
                // nothing else moved (unmatched frames count nowhere).
                let moved = difference(&before, &datapath.site_counters()?);
                let key = |c: usize| SiteCounterKey {
                    site: expected[c].0,
                    platform,
                    action: expected[c].2.code(),
                    _pad: 0,
                };
                let want = if matched {
                    BTreeMap::from([(key(config), matched_total(&frames))])
                } else {
                    BTreeMap::new()
                };
                anyhow::ensure!(
                    moved == want,
                    "{}: site counters moved by {moved:?}, expected {want:?}",
                    CONFIG_NAMES[config]
                );
                for (side, c) in [(0, 0), (1, config)] {
                    counted[side] += moved.get(&key(c)).map_or(0, |m| m.packets);
                }
                for (group, taken) in samples.into_iter().enumerate() {
                    for (slot, values) in taken.into_iter().enumerate() {
                        if !values.is_empty() {
                            both[group][slot].push(median(values));
                        }
                    }
                }
            }
            for (group, taken) in both.into_iter().enumerate() {
                for (slot, values) in taken.into_iter().enumerate() {
                    if !values.is_empty() {
                        let mean = values.iter().sum::<f64>() / values.len() as f64;
                        medians[group][slot].push(mean);
                    }
                }
            }
        }
        for (side, c) in [(0, 0), (1, config)] {
            if !matched {
                continue;
            }
            counts.push(CountCheck {
                config: c,
                paired: if side == 0 { config } else { NO_SITES },
                site: expected[c].1.to_owned(),
                action: expected[c].2.as_str(),
                runs: runs[side],
                counted: counted[side],
            });
        }
        for (group, [base_enforcer, base_pass, enforcer, pass]) in medians.into_iter().enumerate() {
            if enforcer.is_empty() {
                continue;
            }
            rows.push(SiteRow {
                matched: group % 2 == 0,
                family: if group < 2 { Family::V4 } else { Family::V6 },
                config,
                base_enforcer,
                base_pass,
                enforcer,
                pass,
            });
        }
    }
    let results = SiteResults {
        prefixes_v4: PLATFORM_PREFIXES_V4,
        prefixes_v6,
        rows,
        counts,
        seconds: started.elapsed().as_secs_f64(),
    };
    for row in &results.rows {
        println!(
            "sites: {} {}, {}: {:+.1} ns over no sites (xdp_pass {:+.1})",
            row.family.name(),
            if row.matched { "match" } else { "no match" },
            CONFIG_NAMES[row.config],
            median(row.extra()),
            median(row.noise()),
        );
    }
    println!("sites: section took {:.1} s", results.seconds);
    Ok(results)
}

/// The packets and bytes of one run of every matched frame.
fn matched_total(frames: &[&Frame]) -> Counter {
    frames
        .iter()
        .filter(|f| f.matched)
        .fold(Counter::default(), |c, f| Counter {
            packets: c.packets + 1,
            bytes: c.bytes + f.bytes.len() as u64,
        })
}

/// The counters that changed between two reads, by how much.
fn difference(
    before: &BTreeMap<SiteCounterKey, Counter>,
    after: &BTreeMap<SiteCounterKey, Counter>,
) -> BTreeMap<SiteCounterKey, Counter> {
    after
        .iter()
        .filter_map(|(key, a)| {
            let b = before.get(key).copied().unwrap_or_default();
            (*a != b).then(|| {
                (
                    *key,
                    Counter {
                        packets: a.packets.wrapping_sub(b.packets),
                        bytes: a.bytes.wrapping_sub(b.bytes),
                    },
                )
            })
        })
        .collect()
}
