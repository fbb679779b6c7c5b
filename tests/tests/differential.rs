//! Differential test: the XDP program (through BPF_PROG_TEST_RUN) against the reference matcher
//! in `enforcer::reference`, on random policies and tens of thousands of random frames, plus a
//! few hand-written cases with known verdicts.
//!
//! Needs root (BPF). The seed is printed; rerun a failure with `ENFORCER_DIFF_SEED=<seed>`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::time::Instant;

use enforcer::compile::{CompileError, CompiledPolicy, compile, compile_with};
use enforcer::datapath::{CounterSnapshot, Datapath, MatchKey};
use enforcer::policy::model::{Action, Entry, Location, Platform, Policy, PortRange, Protocol};
use enforcer::reference::{Decision, Matcher, XDP_DROP, XDP_PASS, parse_frame};
use enforcer_common::{
    ACTION_ALLOW, ACTION_DROP, ACTION_MONITOR, Counter, DIRECTION_EGRESS, DIRECTION_INGRESS,
    FAMILY_IPV4, FAMILY_IPV6, PASS_NO_MATCH, PASS_NOT_IP, PASS_REASONS, PASS_UNPARSED,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tests::r#gen::{
    GeneratedPolicy, describe, ethertype_frame, hex, hex_compact, random_frame, random_policy,
    shrink_candidates, simple_frame,
};

/// Policies per run unless `ENFORCER_DIFF_POLICIES` asks for more (a longer soak).
const POLICIES: usize = 20;
const FRAMES_PER_POLICY: usize = 1_500;
/// How many disagreeing frames a failure prints in full.
const REPORTED: usize = 5;

fn is_root() -> bool {
    // /proc/self belongs to the effective user.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn seed() -> u64 {
    match std::env::var("ENFORCER_DIFF_SEED") {
        Ok(text) => {
            let text = text.trim();
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.parse(),
            };
            parsed.unwrap_or_else(|e| panic!("ENFORCER_DIFF_SEED={text:?}: {e}"))
        }
        Err(_) => rand::rng().random(),
    }
}

fn policies() -> usize {
    std::env::var("ENFORCER_DIFF_POLICIES")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(POLICIES)
}

fn load() -> Option<Datapath> {
    if !is_root() {
        eprintln!("skipping: loading the XDP program needs root");
        return None;
    }
    Some(Datapath::load_unpinned().unwrap_or_else(|e| panic!("loading the datapath: {e}")))
}

/// Per-counter packets and bytes, as the datapath counts them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Tally {
    matches: BTreeMap<MatchKey, Counter>,
    passed: [Counter; PASS_REASONS as usize],
}

impl Tally {
    fn add(&mut self, decision: Decision, len: usize) {
        let counter = match decision {
            Decision::Pass(reason) => &mut self.passed[reason as usize],
            Decision::Match {
                platform,
                action,
                direction,
                family,
            } => self
                .matches
                .entry(MatchKey {
                    platform,
                    action,
                    direction,
                    family,
                })
                .or_default(),
        };
        counter.packets += 1;
        counter.bytes += len as u64;
    }

    fn single(decision: Decision, len: usize) -> Self {
        let mut tally = Self::default();
        tally.add(decision, len);
        tally
    }

    /// What changed between two snapshots (only non-zero entries).
    fn delta(before: &CounterSnapshot, after: &CounterSnapshot) -> Self {
        let minus = |a: &Counter, b: &Counter| Counter {
            packets: a.packets.wrapping_sub(b.packets),
            bytes: a.bytes.wrapping_sub(b.bytes),
        };
        let mut tally = Self::default();
        for (key, counter) in &after.matches {
            let old = before.matches.get(key).copied().unwrap_or_default();
            let change = minus(counter, &old);
            if change != Counter::default() {
                tally.matches.insert(*key, change);
            }
        }
        for (key, old) in &before.matches {
            if !after.matches.contains_key(key) {
                // A counter went back to zero: report it as a (wrapped) negative change.
                tally.matches.insert(*key, minus(&Counter::default(), old));
            }
        }
        for reason in 0..PASS_REASONS as usize {
            tally.passed[reason] = minus(&after.passed[reason], &before.passed[reason]);
        }
        tally
    }
}

fn compile_generated(generated: &GeneratedPolicy) -> Result<CompiledPolicy, CompileError> {
    compile_with(&generated.policy, generated.addresses.iter().copied())
}

fn apply(datapath: &mut Datapath, generated: &GeneratedPolicy) {
    let compiled = compile_generated(generated)
        .unwrap_or_else(|e| panic!("compiling\n{}: {e}", describe(generated)));
    datapath
        .apply(&compiled)
        .unwrap_or_else(|e| panic!("applying\n{}: {e}", describe(generated)));
}

/// The datapath's verdict and counting for one frame, read with the counters around it.
fn observe(datapath: &mut Datapath, platforms: usize, frame: &[u8]) -> (u32, Tally) {
    let below = u16::try_from(platforms + 1).unwrap_or(u16::MAX);
    let before = datapath.counters_up_to(Some(below)).unwrap();
    let action = datapath.test_run(frame).unwrap();
    let after = datapath.counters_up_to(Some(below)).unwrap();
    (action, Tally::delta(&before, &after))
}

fn expected(generated: &GeneratedPolicy, frame: &[u8]) -> (u32, Tally) {
    let matcher = Matcher::with_addresses(&generated.policy, generated.addresses.iter().copied());
    let decision = matcher.decide(frame);
    (decision.xdp_action(), Tally::single(decision, frame.len()))
}

/// Whether the datapath, loaded with `generated`, disagrees with the reference on `frame`.
fn disagrees(datapath: &mut Datapath, generated: &GeneratedPolicy, frame: &[u8]) -> bool {
    if compile_generated(generated).is_err() {
        return false;
    }
    apply(datapath, generated);
    let platforms = generated.policy.platforms.len();
    observe(datapath, platforms, frame) != expected(generated, frame)
}

/// Removes platforms, entries, prefixes, addresses and port ranges while the disagreement on
/// `frame` stays, so that the report shows only what matters.
fn shrink(datapath: &mut Datapath, generated: &GeneratedPolicy, frame: &[u8]) -> GeneratedPolicy {
    let mut current = generated.clone();
    'smaller: loop {
        for candidate in shrink_candidates(&current) {
            if disagrees(datapath, &candidate, frame) {
                current = candidate;
                continue 'smaller;
            }
        }
        return current;
    }
}

fn report(
    datapath: &mut Datapath,
    seed: u64,
    round: usize,
    generated: &GeneratedPolicy,
    frame: &[u8],
) -> String {
    let platforms = generated.policy.platforms.len();
    let (want_action, want_tally) = expected(generated, frame);
    apply(datapath, generated);
    let (got_action, got_tally) = observe(datapath, platforms, frame);
    let matcher = Matcher::with_addresses(&generated.policy, generated.addresses.iter().copied());
    format!(
        "seed {seed}, policy #{round}, frame of {len} bytes:\n{hex}\n({compact})\n\
         parsed by the reference: {parsed:?}\n\
         reference: {decision:?} -> XDP action {want_action}, counters {want_tally:?}\n\
         datapath:  XDP action {got_action}, counters {got_tally:?}\n",
        len = frame.len(),
        hex = hex(frame),
        compact = hex_compact(frame),
        parsed = parse_frame(frame),
        decision = matcher.decide(frame),
    )
}

#[derive(Default)]
struct Coverage {
    by_outcome: BTreeMap<&'static str, usize>,
}

impl Coverage {
    fn add(&mut self, decision: Decision) {
        let outcome = match decision {
            Decision::Pass(PASS_NO_MATCH) => "no match",
            Decision::Pass(PASS_NOT_IP) => "not ip",
            Decision::Pass(_) => "unparsed",
            Decision::Match { action, .. } if action == ACTION_DROP => "drop",
            Decision::Match { action, .. } if action == ACTION_MONITOR => "monitor",
            Decision::Match { .. } => "allow",
        };
        *self.by_outcome.entry(outcome).or_default() += 1;
    }
}

#[test]
fn datapath_agrees_with_reference() {
    let Some(mut datapath) = load() else {
        return;
    };
    let seed = seed();
    println!("differential test seed: {seed} (rerun with ENFORCER_DIFF_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut coverage = Coverage::default();
    let mut frames_run = 0usize;
    let mut too_many_rules = 0usize;
    let policies = policies();
    for round in 0..policies {
        // The compiler limits the rules per prefix; draw again when a policy exceeds that.
        let (generated, compiled) = loop {
            let generated = random_policy(&mut rng);
            match compile_generated(&generated) {
                Ok(compiled) => break (generated, compiled),
                Err(CompileError::TooManyRules { .. }) => too_many_rules += 1,
                Err(e) => panic!("seed {seed}: compiling\n{}: {e}", describe(&generated)),
            }
        };
        let stats = datapath
            .apply(&compiled)
            .unwrap_or_else(|e| panic!("seed {seed}: applying\n{}: {e}", describe(&generated)));
        let matcher =
            Matcher::with_addresses(&generated.policy, generated.addresses.iter().copied());
        let frames: Vec<Vec<u8>> = (0..FRAMES_PER_POLICY)
            .map(|_| random_frame(&mut rng))
            .collect();

        let before = datapath.counters().unwrap();
        let mut want = Tally::default();
        let mut wrong_action = Vec::new();
        for frame in &frames {
            let decision = matcher.decide(frame);
            coverage.add(decision);
            want.add(decision, frame.len());
            let action = datapath.test_run(frame).unwrap();
            if action != decision.xdp_action() {
                wrong_action.push(frame.clone());
            }
        }
        let after = datapath.counters().unwrap();
        frames_run += frames.len();
        let got = Tally::delta(&before, &after);
        println!(
            "policy #{round}: {} platforms, {} resolved addresses, applied {stats:?}; {} frames, \
             {} wrong verdicts, counters {}",
            generated.policy.platforms.len(),
            generated.addresses.len(),
            frames.len(),
            wrong_action.len(),
            if got == want { "equal" } else { "DIFFER" },
        );
        if wrong_action.is_empty() && got == want {
            continue;
        }

        // Find the frames that disagree one by one (verdict or counter), then shrink the policy
        // on the first of them.
        let platforms = generated.policy.platforms.len();
        let culprits: Vec<&Vec<u8>> = frames
            .iter()
            .filter(|frame| observe(&mut datapath, platforms, frame) != expected(&generated, frame))
            .collect();
        let mut message = format!(
            "seed {seed}: the datapath disagrees with the reference on policy #{round} \
             ({} of {} frames; {} with a wrong verdict)\n{}\n\
             expected counter deltas: {want:?}\ndatapath counter deltas: {got:?}\n\n",
            culprits.len(),
            frames.len(),
            wrong_action.len(),
            describe(&generated),
        );
        for frame in culprits.iter().take(REPORTED) {
            message.push_str(&report(&mut datapath, seed, round, &generated, frame));
            message.push('\n');
        }
        if let Some(first) = culprits.first() {
            let small = shrink(&mut datapath, &generated, first);
            message.push_str(&format!(
                "smallest policy that still disagrees on the first frame:\n{}\n{}",
                describe(&small),
                report(&mut datapath, seed, round, &small, first),
            ));
        }
        panic!("{message}");
    }
    let elapsed = started.elapsed();
    println!(
        "{policies} policies, {frames_run} frames in {:.2?} ({too_many_rules} policies redrawn \
         for exceeding the rules per prefix); outcomes: {:?}",
        elapsed, coverage.by_outcome,
    );
    for outcome in ["drop", "monitor", "allow", "no match", "not ip", "unparsed"] {
        let count = coverage.by_outcome.get(outcome).copied().unwrap_or(0);
        assert!(
            count >= 100,
            "seed {seed}: only {count} frames ended as {outcome}: the generator needs tuning"
        );
    }
}

fn location() -> Location {
    Location {
        path: "fixed.yaml".into(),
        line: 1,
        column: 1,
    }
}

fn entry(prefixes: &[&str], protocol: Protocol, ports: &[(u16, u16)]) -> Entry {
    Entry {
        index: 0,
        domains: Vec::new(),
        prefixes: prefixes.iter().map(|p| p.parse().unwrap()).collect(),
        protocol,
        ports: ports
            .iter()
            .map(|&(first, last)| PortRange { first, last })
            .collect(),
        location: location(),
    }
}

fn platform(name: &str, action: Action, mut entries: Vec<Entry>) -> Platform {
    for (i, entry) in entries.iter_mut().enumerate() {
        entry.index = i;
    }
    Platform {
        name: name.to_string(),
        id: 0,
        description: None,
        reference: None,
        action,
        entries,
        location: location(),
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn matched(platform: u16, action: u8, direction: u8, family: u8) -> Decision {
    Decision::Match {
        platform,
        action,
        direction,
        family,
    }
}

/// IPv6 to 2001:db8:8000::1 with one hop-by-hop header of `len` bytes whose next header is TCP
/// (no TCP header follows); `whole` false cuts the frame two bytes into the hop-by-hop header.
fn ipv6_with_extension(len: usize, whole: bool) -> Vec<u8> {
    let mut frame = simple_frame(ip("fd00::1"), ip("2001:db8:8000::1"), 0, 0, 0);
    // simple_frame adds 8 bytes after the header for protocols other than TCP and UDP.
    frame.truncate(frame.len() - 8);
    let mut header = vec![6, (len / 8 - 1) as u8];
    header.resize(len, 0);
    frame.extend_from_slice(if whole { &header } else { &header[..2] });
    frame
}

#[test]
fn fixed_verdicts() {
    let Some(mut datapath) = load() else {
        return;
    };
    // Platform ids follow name order: alpha 1, bravo 2, charlie 3, delta 4, echo 5, foxtrot 6.
    let policy = Policy {
        platforms: vec![
            // TURN on a prefix that another platform drops entirely.
            platform(
                "alpha",
                Action::Allow,
                vec![entry(&["198.18.1.0/24"], Protocol::Udp, &[(3478, 3478)])],
            ),
            platform(
                "bravo",
                Action::Drop,
                vec![
                    entry(&["198.18.1.0/24"], Protocol::Any, &[]),
                    entry(&["198.18.0.0/16", "2001:db8::/33"], Protocol::Any, &[]),
                ],
            ),
            // An allowed network nested inside bravo's /16.
            platform(
                "charlie",
                Action::Allow,
                vec![entry(&["198.18.9.0/24"], Protocol::Any, &[])],
            ),
            platform(
                "delta",
                Action::Monitor,
                vec![
                    entry(&["198.19.0.0/16"], Protocol::Any, &[]),
                    entry(&["2001:db8:1::/48"], Protocol::Tcp, &[(443, 443)]),
                ],
            ),
            platform(
                "echo",
                Action::Drop,
                vec![entry(&["198.19.200.0/24"], Protocol::Udp, &[(3478, 3481)])],
            ),
            // TCP on any port: needs the protocol, not the ports.
            platform(
                "foxtrot",
                Action::Monitor,
                vec![entry(&["2001:db8:8000::/48"], Protocol::Tcp, &[])],
            ),
        ],
    };
    let client = ip("10.0.0.1");
    let client6 = ip("fd00::1");
    let cases: Vec<(&str, Vec<u8>, Decision)> = vec![
        (
            "udp 3478 allowed on a dropped prefix",
            simple_frame(client, ip("198.18.1.5"), 17, 40000, 3478),
            matched(1, ACTION_ALLOW, DIRECTION_EGRESS, FAMILY_IPV4),
        ),
        (
            "udp 3479 on the same prefix dropped",
            simple_frame(client, ip("198.18.1.5"), 17, 40000, 3479),
            matched(2, ACTION_DROP, DIRECTION_EGRESS, FAMILY_IPV4),
        ),
        (
            "tcp 3478 is not the allowed udp",
            simple_frame(client, ip("198.18.1.5"), 6, 40000, 3478),
            matched(2, ACTION_DROP, DIRECTION_EGRESS, FAMILY_IPV4),
        ),
        (
            "allow nested inside drop",
            simple_frame(client, ip("198.18.9.9"), 6, 40000, 443),
            matched(3, ACTION_ALLOW, DIRECTION_EGRESS, FAMILY_IPV4),
        ),
        (
            "the enclosing drop outside the nested allow",
            simple_frame(client, ip("198.18.10.9"), 6, 40000, 443),
            matched(2, ACTION_DROP, DIRECTION_EGRESS, FAMILY_IPV4),
        ),
        (
            "monitor passes and counts",
            simple_frame(client, ip("198.19.1.1"), 17, 40000, 53),
            matched(4, ACTION_MONITOR, DIRECTION_EGRESS, FAMILY_IPV4),
        ),
        (
            "ingress match on the source with its source port",
            simple_frame(ip("198.19.200.5"), client, 17, 3479, 50000),
            matched(5, ACTION_DROP, DIRECTION_INGRESS, FAMILY_IPV4),
        ),
        (
            "the destination port does not count for ingress",
            simple_frame(ip("198.19.200.5"), client, 17, 50000, 3479),
            matched(4, ACTION_MONITOR, DIRECTION_INGRESS, FAMILY_IPV4),
        ),
        (
            "drop beats a longer monitor prefix",
            simple_frame(client6, ip("2001:db8:1::1"), 6, 40000, 443),
            matched(2, ACTION_DROP, DIRECTION_EGRESS, FAMILY_IPV6),
        ),
        (
            "ipv6 return traffic",
            simple_frame(ip("2001:db8:5::1"), client6, 58, 0, 0),
            matched(2, ACTION_DROP, DIRECTION_INGRESS, FAMILY_IPV6),
        ),
        (
            "no match",
            simple_frame(client6, ip("2001:db9::1"), 17, 40000, 3478),
            Decision::Pass(PASS_NO_MATCH),
        ),
        (
            "tcp without its header still has a protocol",
            ipv6_with_extension(8, true),
            matched(6, ACTION_MONITOR, DIRECTION_EGRESS, FAMILY_IPV6),
        ),
        (
            "arp",
            ethertype_frame(0x0806, 42),
            Decision::Pass(PASS_NOT_IP),
        ),
        (
            "ipv4 ethertype without a header",
            ethertype_frame(0x0800, 14),
            Decision::Pass(PASS_UNPARSED),
        ),
        (
            "an extension header cut by the frame end leaves the protocol unknown",
            ipv6_with_extension(8, false),
            Decision::Pass(PASS_NO_MATCH),
        ),
    ];
    datapath.apply(&compile(&policy).unwrap()).unwrap();
    let matcher = Matcher::new(&policy);
    let platforms = policy.platforms.len();
    for (what, frame, want) in &cases {
        assert_eq!(matcher.decide(frame), *want, "reference: {what}");
        let want_action = if matches!(want, Decision::Match { action, .. } if *action == ACTION_DROP)
        {
            XDP_DROP
        } else {
            XDP_PASS
        };
        let (action, tally) = observe(&mut datapath, platforms, frame);
        assert_eq!(action, want_action, "datapath verdict: {what}");
        assert_eq!(
            tally,
            Tally::single(*want, frame.len()),
            "datapath counters: {what}"
        );
    }
}
