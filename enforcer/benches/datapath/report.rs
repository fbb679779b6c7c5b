//! The lookup results as bench-datapath.json and as this bench's section of BENCHMARKS.md
//! (between its markers; bench_flood and others own the rest of the file), with the issue's
//! goals beside the figures.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use enforcer_common::BENCH_ADDRESSES;
use serde_json::json;

use crate::lookup::{
    BUILD_PREFIXES, HOST_SAMPLES, LOOKUP_REPEAT, MIB, MIX, NO_MATCH_FRAMES, NO_MATCH_ROUNDS,
    ROUNDS, Results, V4_LENGTHS, V6_LENGTHS, median_duration,
};
use crate::median;
use crate::sites::{self, CONFIG_NAMES, SiteResults};

const SECTION_BEGIN: &str = "<!-- bench_datapath: begin -->";
const SECTION_END: &str = "<!-- bench_datapath: end -->";
/// Issue 16's goals.
const GOAL_IN_PROGRAM_NS: f64 = 30.0;
const GOAL_NO_MATCH_NS: f64 = 30.0;
const GOAL_BUILD: Duration = Duration::from_secs(2);
const GOAL_LEARNED_HOST: Duration = Duration::from_micros(10);
const GOAL_MEMORY_MIB: f64 = 128.0;

pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub kernel: String,
}

pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map_or_else(|| "unknown".to_string(), |(_, m)| m.trim().to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".to_string(), |k| k.trim().to_string());
    Machine { cpu, cores, kernel }
}

/// The CPUs busy with other work over one second (user+nice+system+irq+softirq+steal of all
/// CPUs in /proc/stat), sampled before and after the measurements: the shared machine's load,
/// which slows lookups that miss the caches.
pub fn busy_cpus() -> f64 {
    let sample = || -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let fields: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal (guest is inside user).
        let busy = [0, 1, 2, 5, 6, 7]
            .iter()
            .filter_map(|&i| fields.get(i))
            .sum();
        let total = fields.iter().take(8).sum();
        Some((busy, total))
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let Some(before) = sample() else {
        return f64::NAN;
    };
    std::thread::sleep(Duration::from_secs(1));
    match sample() {
        Some(after) if after.1 > before.1 => {
            (after.0 - before.0) as f64 / (after.1 - before.1) as f64 * cores
        }
        _ => f64::NAN,
    }
}

/// Now, as "YYYY-MM-DD HH:MM UTC" (days to civil date: proleptic Gregorian).
pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let z = secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let rest = secs.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rest / 3600,
        rest / 60 % 60
    )
}

/// 1000000 → "1,000,000".
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn min_max(values: &[f64]) -> (f64, f64) {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

/// "+12 (+10..+15)": the median and the range of per-round values.
fn spread(values: &[f64]) -> String {
    let (min, max) = min_max(values);
    format!("{:+.0} ({min:+.0}..{max:+.0})", median(values.to_vec()))
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// One goal: what was measured against what the issue asks.
struct Goal {
    key: &'static str,
    label: String,
    /// `None`: not measured (the policy does not fit yet).
    value: Option<f64>,
    goal: f64,
    unit: &'static str,
    note: String,
}

impl Goal {
    fn verdict(&self) -> &'static str {
        match self.value {
            Some(v) if v <= self.goal => "met",
            Some(_) => "missed",
            None => "not measured",
        }
    }
}

fn goals(results: &Results) -> Vec<Goal> {
    let top = results
        .lookups
        .iter()
        .map(|r| r.prefixes_v4)
        .max()
        .unwrap_or(0);
    // The goal is set at the largest count; below it, the largest the datapath held.
    let fitted = results
        .lookups
        .iter()
        .filter(|r| r.enforcer.is_some())
        .map(|r| r.prefixes_v4)
        .max();
    let worst = |size: usize| {
        results
            .lookups
            .iter()
            .filter(|r| r.prefixes_v4 == size)
            .filter_map(|r| r.enforcer_extra().map(median))
            .reduce(f64::max)
    };
    let mut goals = vec![Goal {
        key: "in_program_ns",
        label: format!(
            "in-program cost over parsing, {} IPv4 + {} IPv6 prefixes (worst of IPv4/IPv6, hit/miss)",
            thousands(fitted.unwrap_or(top)),
            thousands(fitted.unwrap_or(top) / 4)
        ),
        value: fitted.and_then(worst),
        goal: GOAL_IN_PROGRAM_NS,
        unit: "ns",
        note: if fitted == Some(top) {
            String::new()
        } else {
            format!(
                "{} IPv4 + {} IPv6 prefixes do not fit",
                thousands(top),
                thousands(top / 4)
            )
        },
    }];
    let largest = results.no_match.iter().map(|r| r.prefixes_v4).max();
    let no_match_worst = results
        .no_match
        .iter()
        .filter(|r| Some(r.prefixes_v4) == largest)
        .map(|r| median(r.extra()))
        .reduce(f64::max);
    let noise = results
        .no_match
        .iter()
        .filter(|r| Some(r.prefixes_v4) == largest)
        .map(|r| median(r.noise()).abs())
        .reduce(f64::max);
    goals.push(Goal {
        key: "no_match_ns",
        label: format!(
            "no match over XDP_PASS, {} IPv4 prefixes (the largest that fit; worst role)",
            thousands(largest.unwrap_or(0))
        ),
        value: no_match_worst,
        goal: GOAL_NO_MATCH_NS,
        unit: "ns",
        note: noise.map_or_else(String::new, |n| {
            format!("xdp_pass against itself: {n:.0} ns")
        }),
    });
    let build = results.build.result.as_ref().ok();
    goals.push(Goal {
        key: "build_s",
        label: format!(
            "compile + apply {} IPv4 + {} IPv6 prefixes (first apply)",
            thousands(BUILD_PREFIXES),
            thousands(BUILD_PREFIXES)
        ),
        value: build.map(|b| (b.compile + b.apply_first).as_secs_f64()),
        goal: GOAL_BUILD.as_secs_f64(),
        unit: "s",
        note: match &results.build.result {
            Ok(b) => format!(
                "apply into the other generation {:.2} s",
                b.apply_second.as_secs_f64()
            ),
            Err(e) => format!("does not fit: {e}"),
        },
    });
    let built = results
        .memory
        .iter()
        .find(|m| m.prefixes_v4 == BUILD_PREFIXES && m.prefixes_v6 == BUILD_PREFIXES);
    let largest = results.memory.iter().max_by_key(|m| m.prefixes_v4);
    goals.push(Goal {
        key: "memory_mib",
        label: format!(
            "kernel memory of the maps, {} IPv4 + {} IPv6 prefixes in both generations",
            thousands(BUILD_PREFIXES),
            thousands(BUILD_PREFIXES)
        ),
        value: built.map(|m| m.bytes as f64 / MIB),
        goal: GOAL_MEMORY_MIB,
        unit: "MiB",
        note: match (built, largest) {
            (Some(_), _) => String::new(),
            (None, Some(m)) => format!(
                "does not fit; {:.1} MiB with {} + {}",
                m.bytes as f64 / MIB,
                thousands(m.prefixes_v4),
                thousands(m.prefixes_v6)
            ),
            (None, None) => "does not fit".into(),
        },
    });
    let host = results.hosts.iter().max_by_key(|h| h.prefixes_v4);
    goals.push(Goal {
        key: "learned_host_us",
        label: format!(
            "learned host written (write_hosts), {} IPv4 + {} IPv6 prefixes in force",
            thousands(host.map_or(0, |h| h.prefixes_v4)),
            thousands(host.map_or(0, |h| h.prefixes_v6))
        ),
        value: host.map(|h| micros(median_duration(&h.samples))),
        goal: micros(GOAL_LEARNED_HOST),
        unit: "µs",
        note: format!("median of {HOST_SAMPLES}"),
    });
    goals
}

fn tables(results: &Results) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| IPv4 prefixes | IPv6 prefixes | family | addresses | parse only, ns | enforcer − parse, ns | LPM trie − parse, ns |"
    );
    let _ = writeln!(t, "|---:|---:|---|---|---:|---:|---:|");
    for r in &results.lookups {
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {:.0} | {} | {} |",
            thousands(r.prefixes_v4),
            thousands(r.prefixes_v6),
            r.family.name(),
            if r.hit { "hit" } else { "miss" },
            median(r.parse.clone()),
            r.enforcer_extra()
                .map_or("does not fit".to_string(), |e| spread(&e)),
            spread(&r.lpm_extra()),
        );
    }
    let _ = writeln!(
        t,
        "\n### A packet that matches nothing, against a bare XDP_PASS\n"
    );
    let _ = writeln!(
        t,
        "| IPv4 prefixes | IPv6 prefixes | arrival role | enforcer, ns | xdp_pass, ns | extra, ns | xdp_pass against itself, ns |"
    );
    let _ = writeln!(t, "|---:|---:|---|---:|---:|---:|---:|");
    for r in &results.no_match {
        let _ = writeln!(
            t,
            "| {} | {} | {} | {:.0} | {:.0} | {} | {} |",
            thousands(r.prefixes_v4),
            thousands(r.prefixes_v6),
            r.role,
            median(r.enforcer.clone()),
            median(r.pass.clone()),
            spread(&r.extra()),
            spread(&r.noise()),
        );
    }
    let _ = writeln!(t, "\n### Building and learning\n");
    let _ = writeln!(t, "| step | result |");
    let _ = writeln!(t, "|---|---:|");
    match &results.build.result {
        Ok(b) => {
            let _ = writeln!(
                t,
                "| compile {} IPv4 + {} IPv6 prefixes | {:.2} s |",
                thousands(BUILD_PREFIXES),
                thousands(BUILD_PREFIXES),
                b.compile.as_secs_f64()
            );
            let _ = writeln!(
                t,
                "| apply them (into the generation not in force) | {:.2} s |",
                b.apply_first.as_secs_f64()
            );
            let _ = writeln!(
                t,
                "| apply them again (into the other generation: both full) | {:.2} s |",
                b.apply_second.as_secs_f64()
            );
        }
        Err(e) => {
            let _ = writeln!(
                t,
                "| compile and apply {} IPv4 + {} IPv6 prefixes | does not fit ({}) |",
                thousands(BUILD_PREFIXES),
                thousands(BUILD_PREFIXES),
                e.replace('|', "/")
            );
        }
    }
    for h in &results.hosts {
        let (min, max) = min_max(&h.samples.iter().map(|d| micros(*d)).collect::<Vec<f64>>());
        let _ = writeln!(
            t,
            "| write one learned host, {} IPv4 + {} IPv6 prefixes in force (median of {HOST_SAMPLES}, min..max) | {:.1} µs ({min:.1}..{max:.1}) |",
            thousands(h.prefixes_v4),
            thousands(h.prefixes_v6),
            micros(median_duration(&h.samples)),
        );
    }
    for m in &results.memory {
        let _ = writeln!(
            t,
            "| kernel memory of the datapath's maps (fdinfo memlock), {} IPv4 + {} IPv6 prefixes in both generations | {:.1} MiB |",
            thousands(m.prefixes_v4),
            thousands(m.prefixes_v6),
            m.bytes as f64 / MIB
        );
    }
    let _ = writeln!(t, "\n### Against the goals (issue 16)\n");
    let _ = writeln!(
        t,
        "| goal | measured | at most | measured / goal | verdict |"
    );
    let _ = writeln!(t, "|---|---:|---:|---:|---|");
    for g in goals(results) {
        let measured = g
            .value
            .map_or("—".to_string(), |v| format!("{v:.2} {}", g.unit));
        let ratio = g
            .value
            .map_or("—".to_string(), |v| format!("{:.2}", v / g.goal));
        let note = if g.note.is_empty() {
            String::new()
        } else {
            format!(" ({})", g.note.replace('|', "/"))
        };
        let _ = writeln!(
            t,
            "| {} | {measured} | {} {} | {ratio} | {}{note} |",
            g.label,
            g.goal,
            g.unit,
            g.verdict()
        );
    }
    t
}

fn section(
    results: &Results,
    site_results: &SiteResults,
    machine: &Machine,
    date: &str,
    background: [f64; 2],
) -> String {
    format!(
        "{SECTION_BEGIN}\n## In-program cost over many addresses (cargo bench -p enforcer --bench datapath)\n\n\
         Machine: {} ({} cores), kernel {}, {date}. Other work on the machine: {:.2} CPUs busy \
         just before the measurements, {:.2} just after (lookups that miss the caches slow down \
         when another process shares them: compare runs on a quiet machine).\n\n\
         Method: BPF_PROG_TEST_RUN, {} runs a call on one UDP frame. Three XDP \
         programs made for this bench (enforcer-ebpf/src/bench.rs) parse the frame as the \
         enforcer does, then take the next of {} addresses from an array map (a \
         per-CPU counter advances every run, so every run looks up another address): \
         `bench_parse` stops there, `bench_enforcer` calls the enforcer's lookup (`best_rule`, \
         destination only, the generation in force), `bench_lpm` does one lookup in a plain \
         kernel LPM trie holding the same prefixes (the baseline). The tables give enforcer − \
         parse and LPM trie − parse in ns per packet: medians over {ROUNDS} rounds (the three \
         programs alternated within each) of the per-round differences, min..max in brackets. \
         Hit addresses are drawn inside random prefixes, misses outside every prefix (first \
         octets as for the prefixes for IPv4, under 2000::/3 for IPv6); every call's counters \
         confirmed that each hit and no miss was found. Prefixes: non-overlapping, spread over \
         the space, 16 lengths (IPv4 /{}../{}, IPv6 /{}../{} under 2000::/3), few short and most \
         long (at 1,000,000: {} of the shortest length up to {} of the longest), in 8 drop \
         platforms; each IPv4 count comes with a quarter as many IPv6 prefixes. \"does not \
         fit\": the datapath refused the policy.\n\n\
         A packet that matches nothing: the real `enforcer` program, `xdp_pass` and `xdp_pass` \
         again, each run once on every frame in an order that rotates from frame to frame (a \
         run right after another on the same frame is a few ns faster), single runs (repeat 1: \
         the kernel's duration of each run, its timer included in all three) over {} frames to distinct \
         IPv4 destinations outside every prefix, from a source outside them too, \
         {NO_MATCH_ROUNDS} rounds; per round the median over the frames of each program; \
         extra = median over the rounds of enforcer − xdp_pass, min..max in brackets; the \
         last column, `xdp_pass` against itself measured the same way, is the method's \
         noise. Test runs arrive on the loopback, given no role (both addresses looked up) or \
         the inside role (destination only).\n\n{}\n{}\n\
         Reproduce: `cargo xtask bench`, or `cargo bench -p enforcer --bench datapath` as \
         root; raw figures in bench-datapath.json.\n\
         {SECTION_END}\n",
        machine.cpu,
        machine.cores,
        machine.kernel,
        background[0],
        background[1],
        thousands(LOOKUP_REPEAT as usize),
        thousands(BENCH_ADDRESSES as usize),
        V4_LENGTHS[0],
        V4_LENGTHS[15],
        V6_LENGTHS[0],
        V6_LENGTHS[15],
        MIX[0],
        thousands(MIX[15]),
        thousands(NO_MATCH_FRAMES),
        tables(results),
        sites_section(site_results)
    )
}

/// The sites part of the section: method, table, counters, and whether unmatched packets pay.
fn sites_section(s: &SiteResults) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "### Sites (issue 17): the site lookup on matched packets, nothing on unmatched ones\n"
    );
    let _ = writeln!(
        t,
        "Method: one drop platform ({} IPv4 + {} IPv6 prefixes); {} frames per family to \
         distinct destinations inside its prefixes and {} per family outside them, all from \
         sources inside one site (test runs arrive on the loopback, no role: both addresses \
         looked up); matched and unmatched frames measured apart (an unmatched frame run \
         after a matched one would find the caches as its site lookup left them). Compared \
         with no sites (where a matched packet looks no site up and is \
         counted by site nowhere: site `other` is read from the match counters): {} sites, each an IPv4 /24 and an IPv6 /48; and the \
         same plus `action-by-site` monitor on the platform for the frames' site (its leaves \
         looked up again with the site's variant). The two policies compared are applied one \
         after the other, so each holds one generation, and every frame runs under both (the \
         generation in force switched between them, which comes first alternating from frame \
         to frame): the real `enforcer` program and `xdp_pass`, single runs (repeat 1), {} \
         rounds, each both ways round (which policy holds which generation: the two \
         generations' tables lie in different memory and cost a few ns apart); per round the \
         mean of the two ways of the median over the frames of each program under each \
         policy; extra = median over the rounds of enforcer (with) − enforcer (no sites), min..max in \
         brackets; `xdp_pass` compared the same way is the method's noise (\"within noise\": \
         the median extra lies inside its min..max widened by 1 ns, the resolution of a single \
         run's duration). Every run's action was checked (drop; pass \
         when monitored or unmatched), and in every round the site counters (`SITE_STATS`, \
         `site_counters()`) moved by exactly one packet per matched run under its site and \
         action, and by nothing else (and not at all for unmatched frames). A last comparison, \
         no sites against no sites on unmatched frames, is the enforcer against itself: how \
         far the real program's figure strays when nothing differs.\n",
        thousands(s.prefixes_v4),
        thousands(s.prefixes_v6),
        thousands(sites::FRAMES),
        thousands(sites::FRAMES),
        thousands(sites::SITES),
        sites::ROUNDS,
    );
    let _ = writeln!(
        t,
        "| frames | family | compared with no sites | enforcer, no sites, ns | enforcer, with, ns | xdp_pass, ns | extra, ns | xdp_pass against itself, ns | within noise |"
    );
    let _ = writeln!(t, "|---|---|---|---:|---:|---:|---:|---:|---|");
    for r in &s.rows {
        let _ = writeln!(
            t,
            "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {} | {} | {} |",
            if r.matched {
                "match (drop platform)"
            } else {
                "no match"
            },
            r.family.name(),
            if r.config == sites::NO_SITES {
                "no sites (control: the enforcer against itself)"
            } else {
                CONFIG_NAMES[r.config]
            },
            median(r.base_enforcer.clone()),
            median(r.enforcer.clone()),
            median(r.base_pass.clone()),
            spread(&r.extra()),
            spread(&r.noise()),
            if r.within_noise() { "yes" } else { "no" },
        );
    }
    let counted: Vec<String> = s
        .counts
        .iter()
        .map(|c| {
            format!(
                "{} (paired with {}): {} of {} matched runs under `{}`/{}",
                CONFIG_NAMES[c.config],
                CONFIG_NAMES[c.paired],
                thousands(usize::try_from(c.counted).unwrap_or(usize::MAX)),
                thousands(usize::try_from(c.runs).unwrap_or(usize::MAX)),
                c.site,
                c.action
            )
        })
        .collect();
    let _ = writeln!(t, "\nSite counters: {}.", counted.join("; "));
    let unmatched: Vec<String> = s
        .rows
        .iter()
        .filter(|r| !r.matched && r.config != sites::NO_SITES)
        .map(|r| {
            // The control's min..max: how far the enforcer strays from itself.
            let control = s
                .rows
                .iter()
                .find(|c| !c.matched && c.family == r.family && c.config == sites::NO_SITES)
                .map(|c| {
                    let extra = c.extra();
                    let (lo, hi) = min_max(&extra);
                    let m = median(r.extra());
                    format!(
                        "; the enforcer against itself {} ns: {}",
                        spread(&extra),
                        if lo <= m && m <= hi {
                            "within it"
                        } else {
                            "outside it"
                        }
                    )
                })
                .unwrap_or_default();
            format!(
                "{} {} ns against xdp_pass against itself {} ns ({}{control})",
                r.family.name(),
                spread(&r.extra()),
                spread(&r.noise()),
                if r.within_noise() {
                    "within the noise"
                } else {
                    "outside the noise"
                }
            )
        })
        .collect();
    let _ = writeln!(
        t,
        "Unmatched packets with {} sites over none: {}. This part of the bench took {:.1} s.",
        thousands(sites::SITES),
        unmatched.join("; "),
        s.seconds
    );
    t
}

fn sites_json(s: &SiteResults) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = s
        .rows
        .iter()
        .map(|r| {
            json!({
                "frames": if r.matched { "match" } else { "no-match" },
                "family": r.family.name(),
                "configuration": CONFIG_NAMES[r.config],
                "no_sites_enforcer_ns": r.base_enforcer,
                "no_sites_xdp_pass_ns": r.base_pass,
                "enforcer_ns": r.enforcer,
                "xdp_pass_ns": r.pass,
                "extra_ns_median": median(r.extra()),
                "xdp_pass_noise_ns_median": median(r.noise()),
                "within_noise": r.within_noise(),
            })
        })
        .collect();
    let counts: Vec<serde_json::Value> = s
        .counts
        .iter()
        .map(|c| {
            json!({
                "configuration": CONFIG_NAMES[c.config],
                "paired_with": CONFIG_NAMES[c.paired],
                "site": c.site,
                "action": c.action,
                "matched_runs": c.runs,
                "counted": c.counted,
            })
        })
        .collect();
    json!({
        "sites": sites::SITES,
        "platform_prefixes_v4": s.prefixes_v4,
        "platform_prefixes_v6": s.prefixes_v6,
        "frames_per_family": sites::FRAMES,
        "rounds": sites::ROUNDS,
        "resolution_ns": sites::RESOLUTION_NS,
        "rows": rows,
        "site_counters": counts,
        "seconds": s.seconds,
    })
}

fn json(
    results: &Results,
    site_results: &SiteResults,
    machine: &Machine,
    date: &str,
    background: [f64; 2],
) -> serde_json::Value {
    let lookups: Vec<serde_json::Value> = results
        .lookups
        .iter()
        .map(|r| {
            json!({
                "prefixes_v4": r.prefixes_v4,
                "prefixes_v6": r.prefixes_v6,
                "family": r.family.name(),
                "addresses": if r.hit { "hit" } else { "miss" },
                "fits": r.enforcer.is_some(),
                "parse_ns": r.parse,
                "enforcer_ns": r.enforcer,
                "lpm_ns": r.lpm,
                "parse_ns_median": median(r.parse.clone()),
                "enforcer_extra_ns_median": r.enforcer_extra().map(median),
                "lpm_extra_ns_median": median(r.lpm_extra()),
            })
        })
        .collect();
    let no_match: Vec<serde_json::Value> = results
        .no_match
        .iter()
        .map(|r| {
            json!({
                "prefixes_v4": r.prefixes_v4,
                "prefixes_v6": r.prefixes_v6,
                "role": r.role,
                "enforcer_ns": r.enforcer,
                "xdp_pass_ns": r.pass,
                "xdp_pass_again_ns": r.pass_again,
                "extra_ns_median": median(r.extra()),
                "noise_ns_median": median(r.noise()),
            })
        })
        .collect();
    let hosts: Vec<serde_json::Value> = results
        .hosts
        .iter()
        .map(|h| {
            json!({
                "prefixes_v4": h.prefixes_v4,
                "prefixes_v6": h.prefixes_v6,
                "write_hosts_us": h.samples.iter().map(|d| micros(*d)).collect::<Vec<f64>>(),
                "write_hosts_us_median": micros(median_duration(&h.samples)),
            })
        })
        .collect();
    let memory: Vec<serde_json::Value> = results
        .memory
        .iter()
        .map(|m| {
            json!({
                "prefixes_v4": m.prefixes_v4,
                "prefixes_v6": m.prefixes_v6,
                "bytes": m.bytes,
            })
        })
        .collect();
    let build = match &results.build.result {
        Ok(b) => json!({
            "prefixes_v4": BUILD_PREFIXES,
            "prefixes_v6": BUILD_PREFIXES,
            "fits": true,
            "compile_s": b.compile.as_secs_f64(),
            "apply_first_s": b.apply_first.as_secs_f64(),
            "apply_second_s": b.apply_second.as_secs_f64(),
        }),
        Err(e) => json!({
            "prefixes_v4": BUILD_PREFIXES,
            "prefixes_v6": BUILD_PREFIXES,
            "fits": false,
            "error": e,
        }),
    };
    let goals: serde_json::Map<String, serde_json::Value> = goals(results)
        .into_iter()
        .map(|g| {
            let value = json!({
                "label": g.label,
                "value": g.value,
                "unit": g.unit,
                "goal_at_most": g.goal,
                "verdict": g.verdict(),
                "note": g.note,
            });
            (g.key.to_string(), value)
        })
        .collect();
    json!({
        "date": date,
        "machine": { "cpu": machine.cpu, "cores": machine.cores, "kernel": machine.kernel },
        "background_cpus": { "before": background[0], "after": background[1] },
        "method": {
            "repeat": LOOKUP_REPEAT,
            "rounds": ROUNDS,
            "addresses": BENCH_ADDRESSES,
            "prefix_lengths_v4": V4_LENGTHS,
            "prefix_lengths_v6": V6_LENGTHS,
            "per_length_at_1m": MIX,
            "no_match_frames": NO_MATCH_FRAMES,
            "no_match_rounds": NO_MATCH_ROUNDS,
        },
        "lookups": lookups,
        "no_match": no_match,
        "build": build,
        "learned_hosts": hosts,
        "maps_memory": memory,
        "goals": goals,
        "sites": sites_json(site_results),
    })
}

/// Replaces the bench's section of BENCHMARKS.md (or appends it; or creates the file).
fn write_section(path: &Path, section: &str) -> anyhow::Result<()> {
    let old = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "# Benchmarks\n".to_string(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let new = match (old.find(SECTION_BEGIN), old.find(SECTION_END)) {
        (Some(begin), Some(end)) if begin < end => format!(
            "{}{section}{}",
            &old[..begin],
            &old[end + SECTION_END.len()..].trim_start_matches('\n')
        ),
        _ => format!("{}\n\n{section}", old.trim_end_matches('\n')),
    };
    std::fs::write(path, new).with_context(|| format!("writing {}", path.display()))
}

/// Writes `root`/bench-datapath.json and the bench's section of `root`/BENCHMARKS.md.
/// `background`: [`busy_cpus`] before and after the measurements.
pub fn write(
    root: &Path,
    results: &Results,
    site_results: &SiteResults,
    background: [f64; 2],
) -> anyhow::Result<()> {
    let machine = machine();
    let date = utc_now();
    let section = section(results, site_results, &machine, &date, background);
    println!("\n{}\n{}", tables(results), sites_section(site_results));
    write_section(&root.join("BENCHMARKS.md"), &section)?;
    let path = root.join("bench-datapath.json");
    let text =
        serde_json::to_string_pretty(&json(results, site_results, &machine, &date, background))?;
    std::fs::write(&path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    println!(
        "wrote {} and {}",
        root.join("BENCHMARKS.md").display(),
        path.display()
    );
    Ok(())
}
