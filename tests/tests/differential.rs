//! Differential test: the XDP program (through BPF_PROG_TEST_RUN) against the reference matcher
//! in `enforcer::reference`, on random policies and tens of thousands of random frames, plus a
//! few hand-written cases with known verdicts. Every frame's verdict, counter change and DNS copy
//! is compared with the reference's (and per batch the sum over every counter the datapath has).
//! The modules cover what changes the lookup table besides a plain apply: learned hosts
//! (`learned`), DNS holding (`holding`), full rule slots, table and rule table (`limits`), and a
//! million random prefixes with learned hosts on top (`million`).
//!
//! Needs root (BPF). The seed is printed; rerun a failure with `ENFORCER_DIFF_SEED=<seed>`.

#[path = "differential/holding.rs"]
mod holding;
#[path = "differential/learned.rs"]
mod learned;
#[path = "differential/limits.rs"]
mod limits;
#[path = "differential/million.rs"]
mod million;
#[path = "differential/names.rs"]
mod names;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Instant;

use enforcer::compile::{CompileError, CompiledPolicy, compile, compile_sites, compile_with};
use enforcer::datapath::{CounterSnapshot, Datapath, MatchKey};
use enforcer::policy::model::{Action, Entry, Policy, PortRange, Protocol};
use enforcer::reference::{
    Decision, DnsCopy, DnsModel, Matcher, ParsedFrame, XDP_DROP, XDP_PASS, parse_frame,
};
use enforcer_common::{
    ACTION_ALLOW, ACTION_DROP, ACTION_MONITOR, Counter, DIRECTION_EGRESS, DIRECTION_INGRESS,
    DNS_EVENT_RESPONSE, DnsEventHeader, FAMILY_IPV4, FAMILY_IPV6, PASS_DNS_HELD, PASS_NO_MATCH,
    PASS_NOT_IP, PASS_REASONS, PASS_UNPARSED, SiteCounterKey,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tests::r#gen::build::{entry, ip, is_root, matched, platform};
use tests::r#gen::{
    GeneratedPolicy, describe, ethertype_frame, hex, hex_compact, lab_sites, random_frame,
    random_policy, shrink_candidates, simple_frame,
};
use tests::probe::Probe;

/// Policies per run unless `ENFORCER_DIFF_POLICIES` asks for more (a longer soak).
const POLICIES: usize = 20;
const FRAMES_PER_POLICY: usize = 1_500;
/// How many disagreeing frames a failure prints in full.
const REPORTED: usize = 5;

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

/// The program with private maps, and a probe on them; `None` without root.
fn load() -> Option<(Datapath, Probe)> {
    if !is_root() {
        eprintln!("skipping: loading the XDP program needs root");
        return None;
    }
    let mut datapath =
        Datapath::load_unpinned().unwrap_or_else(|e| panic!("loading the datapath: {e}"));
    let probe = Probe::new(&mut datapath).unwrap_or_else(|e| panic!("probing the maps: {e:#}"));
    Some((datapath, probe))
}

/// CLOCK_MONOTONIC in nanoseconds: the clock the program compares the hold deadline with.
fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `now`, which lives for the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    assert_eq!(rc, 0, "clock_gettime");
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// Per-counter packets and bytes, as the datapath counts them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Tally {
    matches: BTreeMap<MatchKey, Counter>,
    passed: [Counter; PASS_REASONS as usize],
    /// By (client's site, platform, action).
    sites: BTreeMap<SiteCounterKey, Counter>,
}

impl Tally {
    fn add(&mut self, decision: Decision, len: usize) {
        let counter = match decision {
            Decision::Pass(reason) => &mut self.passed[reason as usize],
            Decision::Held => &mut self.passed[PASS_DNS_HELD as usize],
            // Counted in the blocked-query counters only (compared by the names test).
            Decision::NameBlocked { .. } => return,
            Decision::Match {
                platform,
                action,
                direction,
                family,
                site,
            } => {
                // SITE_NONE: no sites in force, nothing counted by site.
                if site != enforcer_common::SITE_NONE {
                    let by_site = self
                        .sites
                        .entry(SiteCounterKey {
                            site,
                            platform,
                            action,
                            _pad: 0,
                        })
                        .or_default();
                    by_site.packets += 1;
                    by_site.bytes += len as u64;
                }
                self.matches
                    .entry(MatchKey {
                        platform,
                        action,
                        direction,
                        family,
                    })
                    .or_default()
            }
        };
        counter.packets += 1;
        counter.bytes += len as u64;
    }

    /// The non-zero counters, one short line each: what a failure message shows.
    fn render(&self) -> String {
        const ACTIONS: [&str; 3] = ["drop", "monitor", "allow"];
        const DIRECTIONS: [&str; 2] = ["egress", "ingress"];
        const FAMILIES: [&str; 2] = ["IPv4", "IPv6"];
        const PASSES: [&str; 4] = ["no match", "not IP", "unparsed", "DNS held"];
        let name =
            |names: &[&'static str], i: u8| names.get(usize::from(i)).copied().unwrap_or("?");
        let mut parts: Vec<String> = self
            .matches
            .iter()
            .map(|(k, c)| {
                format!(
                    "id {} {} {} {}: {} packets {} bytes",
                    k.platform,
                    name(&ACTIONS, k.action),
                    name(&DIRECTIONS, k.direction),
                    name(&FAMILIES, k.family),
                    c.packets as i64,
                    c.bytes as i64,
                )
            })
            .collect();
        for (k, c) in &self.sites {
            parts.push(format!(
                "site {:#x} id {} {}: {} packets {} bytes",
                k.site,
                k.platform,
                name(&ACTIONS, k.action),
                c.packets as i64,
                c.bytes as i64,
            ));
        }
        for (reason, c) in self.passed.iter().enumerate() {
            if *c != Counter::default() {
                parts.push(format!(
                    "pass {}: {} packets {} bytes",
                    PASSES.get(reason).copied().unwrap_or("?"),
                    c.packets as i64,
                    c.bytes as i64,
                ));
            }
        }
        if parts.is_empty() {
            "nothing counted".to_string()
        } else {
            parts.join("; ")
        }
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
        for (key, counter) in &after.sites {
            let old = before.sites.get(key).copied().unwrap_or_default();
            let change = minus(counter, &old);
            if change != Counter::default() {
                tally.sites.insert(*key, change);
            }
        }
        for (key, old) in &before.sites {
            if !after.sites.contains_key(key) {
                tally.sites.insert(*key, minus(&Counter::default(), old));
            }
        }
        for reason in 0..PASS_REASONS as usize {
            tally.passed[reason] = minus(&after.passed[reason], &before.passed[reason]);
        }
        tally
    }
}

/// The datapath ids of the policy's platforms: the counters a frame may move.
fn ids(policy: &Policy) -> Vec<u16> {
    (0..policy.platforms.len())
        .map(|p| policy.platform_id(p))
        .collect()
}

/// `compile_with`, with the lab's sites (`gen::lab_sites`), whose overrides the policy may
/// name: the reference model (`Model`) always knows them, so every compiled policy carries them.
fn compile_sited(
    policy: &Policy,
    addresses: impl IntoIterator<Item = enforcer::compile::EntryAddress>,
) -> Result<CompiledPolicy, CompileError> {
    let mut compiled = compile_with(policy, addresses)?;
    compiled.sites = compile_sites(policy, &lab_sites())?;
    Ok(compiled)
}

/// `compile`, with the lab's sites (see `compile_sited`).
fn compile_sited_all(policy: &Policy) -> Result<CompiledPolicy, CompileError> {
    compile_sited(policy, std::iter::empty())
}

fn compile_generated(generated: &GeneratedPolicy) -> Result<CompiledPolicy, CompileError> {
    compile_sited(&generated.policy, generated.addresses.iter().copied())
}

fn apply(datapath: &mut Datapath, generated: &GeneratedPolicy) -> CompiledPolicy {
    let compiled = compile_generated(generated)
        .unwrap_or_else(|e| panic!("compiling\n{}: {e}", describe(generated)));
    datapath
        .apply(&compiled)
        .unwrap_or_else(|e| panic!("applying\n{}: {e}", describe(generated)));
    compiled
}

/// What the reference expects the datapath to be enforcing.
struct Model<'a> {
    matcher: Matcher<'a>,
    /// The platforms' ids: whose counters are read after each frame.
    ids: Vec<u16>,
    /// The program's DNS state (trust, roles, holding, remembered queries), as frames change it.
    dns: RefCell<DnsModel>,
    /// The interface a frame arrives on, when not the default (the namespace's loopback).
    arrivals: HashMap<Vec<u8>, u32>,
}

/// Where a test run without an interface says the frame arrived: the loopback's ifindex.
const LOOPBACK: u32 = 1;

impl<'a> Model<'a> {
    fn new(generated: &'a GeneratedPolicy) -> Self {
        Self::with(&generated.policy, &generated.addresses)
    }

    fn with(policy: &'a Policy, addresses: &[enforcer::compile::EntryAddress]) -> Self {
        Self {
            matcher: Matcher::with_addresses(policy, addresses.iter().copied())
                .with_sites(lab_sites()),
            ids: ids(policy),
            dns: RefCell::new(DnsModel::default()),
            arrivals: HashMap::new(),
        }
    }

    fn arrival(&self, frame: &[u8]) -> Option<u32> {
        self.arrivals.get(frame).copied()
    }

    fn expect(&self, frame: &[u8]) -> (Decision, Option<DnsCopy>) {
        let ifindex = self.arrival(frame).unwrap_or(LOOPBACK);
        self.matcher
            .decide_dns(frame, ifindex, &mut self.dns.borrow_mut())
    }
}

/// One frame on which the datapath and the reference disagree.
struct Mismatch {
    frame: Vec<u8>,
    decision: Decision,
    want: (u32, Tally),
    got: (u32, Tally),
    /// How the DNS copies differ, when they do.
    dns: Option<String>,
}

impl Mismatch {
    fn render(&self) -> String {
        let frame = &self.frame;
        format!(
            "frame of {len} bytes:\n{hex}\n({compact})\n\
             parsed by the reference: {parsed:?}\n\
             reference: {decision:?} -> XDP action {want_action}, counters: {want}\n\
             datapath:  XDP action {got_action}, counters: {got}\n{dns}",
            len = frame.len(),
            hex = hex(frame),
            compact = hex_compact(frame),
            parsed = parse_frame(frame),
            decision = self.decision,
            want_action = self.want.0,
            want = self.want.1.render(),
            got_action = self.got.0,
            got = self.got.1.render(),
            dns = self
                .dns
                .as_ref()
                .map(|d| format!("DNS copy: {d}\n"))
                .unwrap_or_default(),
        )
    }
}

/// The result of running a batch of frames.
#[derive(Default)]
struct Comparison {
    frames: usize,
    wrong_verdicts: usize,
    mismatches: Vec<Mismatch>,
    decisions: Vec<Decision>,
    /// Changes over every counter of the datapath (ids outside the policy too) and the sum of
    /// the reference's expectations.
    total_want: Tally,
    total_got: Tally,
}

impl Comparison {
    fn agrees(&self) -> bool {
        self.mismatches.is_empty() && self.total_want == self.total_got
    }

    /// A failure message: counts, the policy, the first disagreeing frames.
    fn report(&self, what: &str, policy: &str) -> String {
        let mut message = format!(
            "{what}: the datapath disagrees with the reference on {} of {} frames ({} with a wrong \
             verdict)\n{policy}\n",
            self.mismatches.len(),
            self.frames,
            self.wrong_verdicts,
        );
        if self.total_want != self.total_got {
            message.push_str(&format!(
                "change over all counters:\n  expected {}\n  datapath {}\n",
                self.total_want.render(),
                self.total_got.render()
            ));
        }
        for mismatch in self.mismatches.iter().take(REPORTED) {
            message.push('\n');
            message.push_str(&mismatch.render());
        }
        message
    }
}

/// Runs `frames` one at a time and compares, for each, the XDP action, the change of the
/// counters of the model's platforms and of every pass reason, and the DNS copy in the ring
/// buffer with what the reference expects; then compares the change over all counters (so
/// counting under an id outside the policy shows) with the sum of the expectations.
fn check_frames(
    datapath: &mut Datapath,
    probe: &mut Probe,
    model: &Model,
    frames: &[Vec<u8>],
) -> Comparison {
    let all_before = datapath.counters().unwrap();
    // Copies left by earlier batches belong to nobody here.
    probe.dns_events().unwrap();
    let mut comparison = Comparison::default();
    let mut before = probe.counters(&model.ids).unwrap();
    for frame in frames {
        let (decision, copy) = model.expect(frame);
        let want = (decision.xdp_action(), Tally::single(decision, frame.len()));
        comparison.total_want.add(decision, frame.len());
        comparison.decisions.push(decision);
        let action = match model.arrival(frame) {
            Some(ifindex) => datapath.test_run_on(frame, ifindex).unwrap(),
            None => datapath.test_run(frame).unwrap(),
        };
        let after = probe.counters(&model.ids).unwrap();
        let got = (action, Tally::delta(&before, &after));
        before = after;
        let events = probe.dns_events().unwrap();
        let dns = compare_dns(frame, copy, &events);
        comparison.frames += 1;
        if got.0 != want.0 {
            comparison.wrong_verdicts += 1;
        }
        if got != want || dns.is_some() {
            comparison.mismatches.push(Mismatch {
                frame: frame.clone(),
                decision,
                want,
                got,
                dns,
            });
        }
    }
    let all_after = datapath.counters().unwrap();
    comparison.total_got = Tally::delta(&all_before, &all_after);
    comparison
}

/// How the ring buffer's copies of one frame differ from the reference's, if they do.
fn compare_dns(
    frame: &[u8],
    want: Option<DnsCopy>,
    events: &[(DnsEventHeader, Vec<u8>)],
) -> Option<String> {
    let got: Vec<DnsCopy> = events
        .iter()
        .map(|(e, _)| {
            let address = |bytes: [u8; 16]| -> IpAddr {
                if e.family == FAMILY_IPV4 {
                    IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]])
                } else {
                    IpAddr::from(bytes)
                }
            };
            DnsCopy {
                kind: e.kind,
                l3: usize::from(e.l3_offset),
                captured: usize::from(e.captured),
                length: usize::from(e.length),
                payload_offset: usize::from(e.payload_offset),
                held: e.held != 0,
                query_client: (e.kind == DNS_EVENT_RESPONSE).then(|| address(e.query_client)),
                query_ifindex: e.query_ifindex,
            }
        })
        .collect();
    if got != want.into_iter().collect::<Vec<_>>() {
        return Some(format!("expected {want:?}, the ring buffer holds {got:?}"));
    }
    let (Some(copy), Some((event, copied))) = (want, events.first()) else {
        return None;
    };
    if copied.as_slice() != &frame[..copy.captured] {
        return Some("the copied bytes are not the frame's".to_string());
    }
    let ParsedFrame::Ip(packet) = parse_frame(frame) else {
        return Some("a copy of a frame that is not IP".to_string());
    };
    let address = |bytes: [u8; 16]| -> IpAddr {
        if event.family == FAMILY_IPV4 {
            IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]])
        } else {
            IpAddr::from(bytes)
        }
    };
    let copied = (
        event.family,
        address(event.src_addr),
        event.src_port,
        address(event.dst_addr),
        event.dst_port,
    );
    let (src_port, dst_port) = packet.ports.unwrap_or_default();
    let sent = (packet.family, packet.src, src_port, packet.dst, dst_port);
    if copied != sent {
        return Some(format!(
            "family, source and destination {copied:?} copied for {sent:?}"
        ));
    }
    None
}

/// The datapath's verdict on one frame, with the change of the counters of the platforms `ids`
/// and of every pass reason.
fn observe(datapath: &mut Datapath, probe: &Probe, ids: &[u16], frame: &[u8]) -> (u32, Tally) {
    let before = probe.counters(ids).unwrap();
    let action = datapath.test_run(frame).unwrap();
    let after = probe.counters(ids).unwrap();
    (action, Tally::delta(&before, &after))
}

/// Whether the datapath, loaded with `generated`, disagrees with the reference on `frame`.
fn disagrees(
    datapath: &mut Datapath,
    probe: &mut Probe,
    generated: &GeneratedPolicy,
    frame: &[u8],
) -> bool {
    if compile_generated(generated).is_err() {
        return false;
    }
    apply(datapath, generated);
    !check_frames(datapath, probe, &Model::new(generated), &[frame.to_vec()]).agrees()
}

/// Removes platforms, entries, prefixes, addresses and port ranges while the disagreement on
/// `frame` stays, so that the report shows only what matters.
fn shrink(
    datapath: &mut Datapath,
    probe: &mut Probe,
    generated: &GeneratedPolicy,
    frame: &[u8],
) -> GeneratedPolicy {
    let mut current = generated.clone();
    'smaller: loop {
        for candidate in shrink_candidates(&current) {
            if disagrees(datapath, probe, &candidate, frame) {
                current = candidate;
                continue 'smaller;
            }
        }
        return current;
    }
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
            Decision::Held => "held",
            Decision::NameBlocked { .. } => "name blocked",
            Decision::Match { action, .. } if action == ACTION_DROP => "drop",
            Decision::Match { action, .. } if action == ACTION_MONITOR => "monitor",
            Decision::Match { .. } => "allow",
        };
        *self.by_outcome.entry(outcome).or_default() += 1;
    }

    fn count(&self, outcome: &str) -> usize {
        self.by_outcome.get(outcome).copied().unwrap_or(0)
    }
}

/// A random policy that the compiler accepts (it limits the rules per prefix, see `limits`),
/// and how many were drawn again for exceeding that.
fn compilable_policy(rng: &mut StdRng) -> (GeneratedPolicy, CompiledPolicy, usize) {
    let mut redrawn = 0;
    loop {
        let generated = random_policy(rng);
        match compile_generated(&generated) {
            Ok(compiled) => return (generated, compiled, redrawn),
            Err(CompileError::TooManyRules { .. }) => redrawn += 1,
            Err(e) => panic!("compiling\n{}: {e}", describe(&generated)),
        }
    }
}

#[test]
fn datapath_agrees_with_reference() {
    let Some((mut datapath, mut probe)) = load() else {
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
        let (generated, compiled, redrawn) = compilable_policy(&mut rng);
        too_many_rules += redrawn;
        let stats = datapath
            .apply(&compiled)
            .unwrap_or_else(|e| panic!("seed {seed}: applying\n{}: {e}", describe(&generated)));
        let frames: Vec<Vec<u8>> = (0..FRAMES_PER_POLICY)
            .map(|_| random_frame(&mut rng))
            .collect();
        let comparison = check_frames(&mut datapath, &mut probe, &Model::new(&generated), &frames);
        for decision in &comparison.decisions {
            coverage.add(*decision);
        }
        frames_run += frames.len();
        println!(
            "policy #{round}: {} platforms (ids {:?}), {} resolved addresses, applied {stats:?}; \
             {} frames, {} disagree",
            generated.policy.platforms.len(),
            ids(&generated.policy),
            generated.addresses.len(),
            frames.len(),
            comparison.mismatches.len(),
        );
        if comparison.agrees() {
            continue;
        }
        let mut message = comparison.report(
            &format!("seed {seed}, policy #{round}"),
            &describe(&generated),
        );
        if let Some(first) = comparison.mismatches.first() {
            let small = shrink(&mut datapath, &mut probe, &generated, &first.frame);
            apply(&mut datapath, &small);
            let again = check_frames(
                &mut datapath,
                &mut probe,
                &Model::new(&small),
                std::slice::from_ref(&first.frame),
            );
            message.push_str(&format!(
                "\nthe smallest policy that still disagrees on the first frame:\n{}",
                again.report("alone", &describe(&small)),
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
        let count = coverage.count(outcome);
        assert!(
            count >= 100,
            "seed {seed}: only {count} frames ended as {outcome}: the generator needs tuning"
        );
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
    let Some((mut datapath, probe)) = load() else {
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
    let ids = ids(&policy);
    for (what, frame, want) in &cases {
        assert_eq!(matcher.decide(frame), *want, "reference: {what}");
        let want_action = if matches!(want, Decision::Match { action, .. } if *action == ACTION_DROP)
        {
            XDP_DROP
        } else {
            XDP_PASS
        };
        let (action, tally) = observe(&mut datapath, &probe, &ids, frame);
        assert_eq!(action, want_action, "datapath verdict: {what}");
        assert_eq!(
            tally,
            Tally::single(*want, frame.len()),
            "datapath counters: {what}"
        );
    }
}
