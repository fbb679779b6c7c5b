//! `cargo xtask bench` (datapath part), through BPF_PROG_TEST_RUN. Needs root.
//! - `lookup`: the in-program cost of a lookup over many distinct addresses, the enforcer's and a
//!   plain kernel LPM trie's, from 0 to 1,000,000 prefixes; a packet that matches nothing against
//!   a bare XDP_PASS; building and learning times.
//! - `sites`: the extra cost of finding a matched packet's site (and of an `action-by-site`
//!   override), and that unmatched packets pay nothing for sites.
//! - `report` writes both as bench-datapath.json and this bench's section of BENCHMARKS.md, at
//!   the repository root.
//! - Here, printed only: ns per packet for one hot matching and non-matching frame, with 1k and
//!   100k prefixes per family, next to XDP_PASS; and name-level blocking.

// Benchmark code: a failed unwrap stops the run with its reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::Instant;

use enforcer::compile;
use enforcer::datapath::{Datapath, PASS_PROGRAM, PROGRAM};
use enforcer::policy::Policy;
use enforcer_common::{NameKey, NameRule, NameVerdict, ROLE_INSIDE, name_hash};
use rand::{SeedableRng, rngs::StdRng};

mod lookup;
mod report;
mod sites;

const REPEAT: u32 = 1_000_000;
const ROUNDS: usize = 5;

fn main() -> anyhow::Result<()> {
    let (mut datapath, mut bench) = Datapath::load_for_lookup_bench()?;
    let before = report::busy_cpus();
    // Before the lookups, whose last policy (1,000,000 + 1,000,000 prefixes) would take long
    // to clear.
    let sites = sites::run(&mut datapath)?;
    let results = lookup::run(&mut datapath, &mut bench)?;
    let after = report::busy_cpus();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| {
            anyhow::anyhow!("no repository root above {}", env!("CARGO_MANIFEST_DIR"))
        })?;
    report::write(root, &results, &sites, [before, after])?;
    let verified = datapath
        .program_mut()?
        .info()
        .ok()
        .and_then(|info| info.verified_instruction_count());
    println!(
        "datapath: instructions the verifier processed for the program: {}",
        verified.map_or_else(|| "unknown".to_owned(), |n| n.to_string())
    );
    println!("datapath: BPF_PROG_TEST_RUN, {REPEAT} runs per measurement, median of {ROUNDS}");
    println!(
        "{:>9} {:>6} {:>10} {:>12} {:>12} {:>7}",
        "prefixes", "family", "frame", "enforcer ns", "xdp_pass ns", "ratio"
    );
    for per_family in [1_000usize, 100_000] {
        let (policy, hit_v4, hit_v6) = generate_policy(per_family, 7);
        let compiled = compile::compile(&policy)?;
        let started = Instant::now();
        let stats = datapath.apply(&compiled)?;
        let applied = started.elapsed();
        eprintln!(
            "applied {} v4 + {} v6 prefixes in {:.2?} ({} inserted, {} removed)",
            compiled.v4.len(),
            compiled.v6.len(),
            applied,
            stats.inserted,
            stats.removed
        );
        let miss_v4 = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
        let miss_v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
        let source_v4 = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
        let source_v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2));
        for (family, frame_kind, src, dst, expected) in [
            ("ipv4", "match", source_v4, hit_v4, 1),
            ("ipv4", "no-match", source_v4, miss_v4, 2),
            ("ipv6", "match", source_v6, hit_v6, 1),
            ("ipv6", "no-match", source_v6, miss_v6, 2),
        ] {
            let frame = udp_frame(src, dst, 40000, 443);
            let (verdict, _) = datapath.test_run_repeat(PROGRAM, &frame, 1)?;
            anyhow::ensure!(
                verdict == expected,
                "{family} {frame_kind}: verdict {verdict}, expected {expected}"
            );
            let enforcer_ns = median_ns(&mut datapath, PROGRAM, &frame)?;
            let pass_ns = median_ns(&mut datapath, PASS_PROGRAM, &frame)?;
            println!(
                "{:>9} {:>6} {:>10} {:>12.1} {:>12.1} {:>7.2}",
                per_family,
                family,
                frame_kind,
                enforcer_ns,
                pass_ns,
                enforcer_ns / pass_ns
            );
            // The same frame arriving on an inside interface (test runs arrive on the loopback,
            // ifindex 1, given that role here): one lookup instead of two.
            datapath.set_dns_trust(&[], &[(1, ROLE_INSIDE)])?;
            let inside_ns = median_ns(&mut datapath, PROGRAM, &frame)?;
            datapath.set_dns_trust(&[], &[])?;
            println!(
                "{:>9} {:>6} {:>10} {:>12.1} {:>12.1} {:>7.2}",
                per_family,
                family,
                format!("{frame_kind} in"),
                inside_ns,
                pass_ns,
                inside_ns / pass_ns
            );
        }
    }
    names(&mut datapath)?;
    Ok(())
}

/// Name-level blocking: the cost of a blocked query (answered in place; each run changes the
/// frame, so single runs, median of many) and of a forwarded one (a name that matches nothing),
/// with 10,000 patterns, next to XDP_PASS measured the same way; and a non-DNS frame with and
/// without the name table, which must cost the same.
fn names(datapath: &mut Datapath) -> anyhow::Result<()> {
    let (policy, _, _) = generate_policy(1_000, 9);
    let mut compiled = compile::compile(&policy)?;
    let plain = udp_frame(
        IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)),
        IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
        40000,
        443,
    );
    datapath.apply(&compiled)?;
    let without_table = median_ns(datapath, PROGRAM, &plain)?;
    for i in 0..10_000u32 {
        let name = format!("p{i}.banned.example");
        let wire: Vec<u8> = name
            .split('.')
            .flat_map(|l| std::iter::once(u8::try_from(l.len()).unwrap()).chain(l.bytes()))
            .collect();
        compiled.names.insert(
            NameKey {
                hash: name_hash(&wire),
                labels: 3,
                _pad: [0; 7],
            },
            NameRule {
                exact: NameVerdict::default(),
                wildcard: NameVerdict {
                    platform: 0,
                    rank: 0,
                    action: 0,
                    present: 1,
                    _pad: [0; 2],
                },
            },
        );
    }
    datapath.apply(&compiled)?;
    let with_table = median_ns(datapath, PROGRAM, &plain)?;
    let blocked = query_frame("www.p77.banned.example");
    let forwarded = query_frame("www.allowed.example");
    let (action, _) = datapath.test_run_repeat(PROGRAM, &blocked, 1)?;
    anyhow::ensure!(
        action == 3,
        "the blocked query got action {action}, not XDP_TX"
    );
    let (action, _) = datapath.test_run_repeat(PROGRAM, &forwarded, 1)?;
    anyhow::ensure!(
        action == 2,
        "the forwarded query got action {action}, not XDP_PASS"
    );
    let single = |datapath: &mut Datapath, program: &'static str, frame: &[u8]| {
        let mut samples: Vec<f64> = (0..20_000)
            .map(|_| {
                datapath
                    .test_run_repeat(program, frame, 1)
                    .map(|(_, d)| d.as_nanos() as f64)
            })
            .collect::<Result<_, _>>()?;
        samples.sort_by(f64::total_cmp);
        anyhow::Ok(samples[samples.len() / 2])
    };
    let blocked_ns = single(datapath, PROGRAM, &blocked)?;
    let pass_single_ns = single(datapath, PASS_PROGRAM, &blocked)?;
    let forwarded_ns = median_ns(datapath, PROGRAM, &forwarded)?;
    let pass_ns = median_ns(datapath, PASS_PROGRAM, &forwarded)?;
    println!("names: 10,000 patterns");
    println!(
        "  blocked query (answered, single runs): enforcer {blocked_ns:.0} ns, xdp_pass {pass_single_ns:.0} ns, ratio {:.2}",
        blocked_ns / pass_single_ns
    );
    println!(
        "  forwarded query: enforcer {forwarded_ns:.1} ns, xdp_pass {pass_ns:.1} ns, ratio {:.2}",
        forwarded_ns / pass_ns
    );
    println!(
        "  non-DNS frame: {without_table:.1} ns without the name table, {with_table:.1} ns with it (ratio {:.3})",
        with_table / without_table
    );
    Ok(())
}

/// A UDP DNS query (A, with EDNS) for `name` from a client to port 53.
fn query_frame(name: &str) -> Vec<u8> {
    let mut message = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
    for label in name.split('.') {
        message.push(u8::try_from(label.len()).unwrap());
        message.extend_from_slice(label.as_bytes());
    }
    message.extend_from_slice(&[0, 0, 1, 0, 1]);
    message.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]);
    let mut frame = udp_frame(
        IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)),
        IpAddr::V4(Ipv4Addr::new(198, 18, 0, 53)),
        40000,
        53,
    );
    // Replace the 18-byte payload by the message and fix the lengths.
    frame.truncate(frame.len() - 18);
    frame.extend_from_slice(&message);
    let udp_len = u16::try_from(8 + message.len()).unwrap();
    frame[16..18].copy_from_slice(&(20 + udp_len).to_be_bytes());
    frame[38..40].copy_from_slice(&udp_len.to_be_bytes());
    frame
}

/// The median of `values` (NaN when empty).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn median_ns(datapath: &mut Datapath, program: &'static str, frame: &[u8]) -> anyhow::Result<f64> {
    let mut samples = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let (_, mean) = datapath.test_run_repeat(program, frame, REPEAT)?;
        samples.push(mean.as_nanos() as f64);
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples[ROUNDS / 2])
}

/// `per_family` non-overlapping prefixes of mixed lengths per family spread over the address
/// space (outside 198.18.0.0/15 and 2001:db8::/32, which the non-matching frames use), in 8 drop
/// platforms. Returns the policy and one address inside a generated prefix of each family.
fn generate_policy(per_family: usize, seed: u64) -> (Policy, IpAddr, IpAddr) {
    let mut rng = StdRng::seed_from_u64(seed);
    let v4 = lookup::PrefixSet::generate(lookup::Family::V4, per_family, &mut rng);
    let v6 = lookup::PrefixSet::generate(lookup::Family::V6, per_family, &mut rng);
    let hit_v4 = v4.hits(1, &mut rng)[0];
    let hit_v6 = v6.hits(1, &mut rng)[0];
    (lookup::policy(&[&v4, &v6]), hit_v4, hit_v6)
}

/// An Ethernet + IP + UDP frame with an 18-byte payload.
fn udp_frame(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    let payload = [0u8; 18];
    let udp_len = u16::try_from(8 + payload.len()).unwrap();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&0x0800u16.to_be_bytes());
            f.extend_from_slice(&[0x45, 0]);
            f.extend_from_slice(&(20 + udp_len).to_be_bytes());
            f.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f.extend_from_slice(&0x86DDu16.to_be_bytes());
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&udp_len.to_be_bytes());
            f.extend_from_slice(&[17, 64]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
        }
        _ => {}
    }
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&udp_len.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&payload);
    f
}
