//! DNS trust, holding and interface roles against the reference's `decide_dns`, in a network
//! namespace of the test's own with two interfaces (the program's test runs say which one a
//! frame arrived on; random frames too, so the roles' one-sided lookups are compared):
//! random trust prefixes and interface roles; queries from clients to servers, trusted or not,
//! arriving inside or outside; their answers (and altered ones: another id, port or client, the
//! wrong interface) arriving anywhere; later fragments; frames at and around the size that can
//! be put back; VLAN tags. Every frame's verdict, counters and ring-buffer record must agree.
//! Also: nothing is held while the ring buffer is full, and holding stops with its deadline.

use std::process::Command;

use enforcer::datapath::Datapath;
use enforcer_common::{
    DNS_HOLD_MAX_FRAME, ROLE_BOTH, ROLE_INSIDE, ROLE_OUTSIDE, TRUST_CLIENT, TRUST_GATEWAY,
    TRUST_SERVER,
};
use ipnet::IpNet;
use rand::seq::IndexedRandom;
use tests::r#gen::policy::random_port;
use tests::r#gen::random_address;

use super::*;

const ROUNDS: usize = 6;
const RANDOM_FRAMES: usize = 400;
const EXCHANGES: usize = 200;
/// Far enough ahead that holding does not stop during the test.
const HOLD_FOR_NS: u64 = 600 * 1_000_000_000;

/// The two interfaces of the test's own network namespace: (inside, outside) ifindexes.
fn own_interfaces() -> (u32, u32) {
    // SAFETY: unshare(2) of this thread's network namespace; the test's frames run from this
    // thread, and the namespace goes with it.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "unshare(CLONE_NEWNET): {}",
        std::io::Error::last_os_error()
    );
    let ip = tests::tools::require(tests::tools::IP);
    let status = Command::new(&ip)
        // The inside end above ROLE_ARRAY_ENTRIES (its role in the program's hash), the outside
        // end numbered by the kernel (in its array).
        .args([
            "link", "add", "din", "index", "5000", "type", "veth", "peer", "name", "dout",
        ])
        .status()
        .unwrap();
    assert!(status.success(), "creating the test's veth pair");
    let index = |name: &str| {
        let path = format!("/sys/class/net/{name}/ifindex");
        // /sys shows the namespace of whoever mounted it: ask `ip` instead.
        let out = Command::new(&ip)
            .args(["-o", "link", "show", name])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.split(':')
            .next()
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no ifindex for {name} ({path}): {text}"))
    };
    (index("din"), index("dout"))
}

/// A UDP datagram to (query) or from port 53 behind `tags` VLAN tags, carrying DNS id `id`, its
/// frame `len` bytes long (or a little payload when `None`).
fn dns_frame(
    rng: &mut StdRng,
    (client, port): (IpAddr, u16),
    server: IpAddr,
    response: bool,
    id: u16,
    len: Option<usize>,
) -> Vec<u8> {
    let mut frame = if response {
        simple_frame(server, client, 17, 53, port)
    } else {
        simple_frame(client, server, 17, port, 53)
    };
    frame.extend(id.to_be_bytes());
    let extra = match len {
        Some(len) => len.saturating_sub(frame.len()),
        None => rng.random_range(0..=40),
    };
    frame.extend((0..extra).map(|_| rng.random::<u8>()));
    frame
}

/// The DNS configuration of a round: trusted servers and clients, a gateway address, roles.
struct Config {
    trust: Vec<(IpNet, u32)>,
    roles: Vec<(u32, u32)>,
    servers: Vec<IpAddr>,
    clients: Vec<IpAddr>,
}

fn random_config(rng: &mut StdRng, (inside, outside): (u32, u32)) -> Config {
    let addresses = |rng: &mut StdRng, n: usize| -> Vec<IpAddr> {
        (0..n)
            .map(|_| {
                let (v6, inside) = (rng.random_bool(0.5), rng.random_bool(0.5));
                random_address(rng, v6, inside)
            })
            .collect()
    };
    let servers = addresses(rng, 6);
    let clients = addresses(rng, 6);
    let mut trust = Vec::new();
    for (i, s) in servers.iter().enumerate() {
        if i % 2 == 0 {
            let len = if s.is_ipv4() { 32 } else { 128 };
            let len = len - rng.random_range(0..=8);
            trust.push((IpNet::new(*s, len).unwrap().trunc(), TRUST_SERVER));
        }
    }
    for (i, c) in clients.iter().enumerate() {
        match i {
            0 => trust.push((IpNet::from(*c), TRUST_CLIENT)),
            1 => trust.push((IpNet::from(*c), TRUST_GATEWAY)),
            _ => {}
        }
    }
    let roles = [ROLE_BOTH, ROLE_INSIDE, ROLE_OUTSIDE];
    let roles = if rng.random_bool(0.3) {
        vec![(inside, ROLE_BOTH), (outside, ROLE_BOTH)]
    } else {
        vec![
            (inside, *roles.choose(rng).unwrap()),
            (outside, *roles.choose(rng).unwrap()),
        ]
    };
    Config {
        trust,
        roles,
        servers,
        clients,
    }
}

/// Queries and answers of every kind that matters, each with the interface it arrives on.
fn exchanges(
    rng: &mut StdRng,
    config: &Config,
    (inside, outside): (u32, u32),
    count: usize,
) -> Vec<(Vec<u8>, u32)> {
    // A test run cuts longer frames to this size, as a single-buffer XDP frame is at most.
    let sizes = [
        DNS_HOLD_MAX_FRAME - 1,
        DNS_HOLD_MAX_FRAME,
        DNS_HOLD_MAX_FRAME - 700,
    ];
    let mut frames = Vec::new();
    for _ in 0..count {
        let v6 = rng.random_bool(0.5);
        let pick = |rng: &mut StdRng, list: &[IpAddr]| -> IpAddr {
            let same: Vec<IpAddr> = list.iter().copied().filter(|a| a.is_ipv6() == v6).collect();
            same.choose(rng)
                .copied()
                .unwrap_or_else(|| random_address(rng, v6, false))
        };
        let client = pick(rng, &config.clients);
        let server = pick(rng, &config.servers);
        let port = random_port(rng);
        let id: u16 = rng.random();
        let query_if = if rng.random_bool(0.8) {
            inside
        } else {
            outside
        };
        frames.push((
            dns_frame(rng, (client, port), server, false, id, None),
            query_if,
        ));
        // The answer, or an altered one.
        let (mut a_client, mut a_port, mut a_id) = (client, port, id);
        match rng.random_range(0..10) {
            0 => a_id = a_id.wrapping_add(1),
            1 => a_port = a_port.wrapping_add(1),
            2 => a_client = pick(rng, &config.clients),
            _ => {}
        }
        let len = if rng.random_bool(0.15) {
            sizes.choose(rng).copied()
        } else {
            None
        };
        let answer_if = if rng.random_bool(0.8) {
            outside
        } else {
            inside
        };
        let answer = dns_frame(rng, (a_client, a_port), server, true, a_id, len);
        frames.push((answer, answer_if));
        if rng.random_bool(0.1) {
            // A later fragment from the server: no ports, copied when trusted.
            let mut fragment = simple_frame(server, client, 17, 53, port);
            if v6 {
                // Replace the UDP header by a Fragment header at offset 8 bytes.
                let at = 14 + 40;
                fragment[20] = 44;
                fragment.truncate(at);
                fragment.extend([17, 0, 0x05, 0xC8, 0, 0, 0, 7]); // offset 1480 bytes
                fragment.extend([0xAA; 24]);
                let payload = u16::try_from(fragment.len() - at).unwrap();
                fragment[18..20].copy_from_slice(&payload.to_be_bytes());
            } else {
                fragment[14 + 6] = 0;
                fragment[14 + 7] = 185; // offset 1480 bytes
            }
            frames.push((fragment, answer_if));
        }
    }
    // Some with VLAN tags.
    for (frame, _) in frames
        .iter_mut()
        .filter(|(f, _)| f.len() + 8 <= DNS_HOLD_MAX_FRAME)
    {
        for _ in 0..rng.random_range(0..=2u8).saturating_sub(1) {
            frame.splice(12..12, [0x81, 0x00, 0x00, 0x07]);
        }
    }
    frames
}

#[test]
fn dns_trust_and_holding_match_reference() {
    let Some((mut datapath, mut probe)) = load() else {
        return;
    };
    let interfaces = own_interfaces();
    let seed = seed();
    println!("DNS holding seed: {seed} (rerun with ENFORCER_DIFF_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut coverage = Coverage::default();
    let mut copies = [0usize; 3];
    let mut queries = std::collections::HashMap::new();
    datapath
        .set_dns_hold(monotonic_ns() + HOLD_FOR_NS)
        .unwrap_or_else(|e| panic!("switching holding on: {e}"));
    for round in 0..ROUNDS {
        let (generated, compiled, _) = compilable_policy(&mut rng);
        datapath
            .apply(&compiled)
            .unwrap_or_else(|e| panic!("seed {seed}: applying: {e}"));
        let config = random_config(&mut rng, interfaces);
        datapath
            .set_dns_trust(&config.trust, &config.roles)
            .unwrap_or_else(|e| panic!("seed {seed}: setting trust: {e}"));
        let mut model = Model::new(&generated);
        {
            let mut dns = model.dns.borrow_mut();
            dns.holding = true;
            dns.trust = config.trust.clone();
            dns.roles = config.roles.iter().copied().collect();
        }
        let arriving = exchanges(&mut rng, &config, interfaces, EXCHANGES);
        let mut frames: Vec<Vec<u8>> = (0..RANDOM_FRAMES).map(|_| random_frame(&mut rng)).collect();
        // Most on the two interfaces of this round's roles: an inside one looks up destinations
        // only, an outside one sources only.
        for frame in &frames {
            match rng.random_range(0..3) {
                0 => {}
                1 => {
                    model.arrivals.insert(frame.clone(), interfaces.0);
                }
                _ => {
                    model.arrivals.insert(frame.clone(), interfaces.1);
                }
            }
        }
        for (frame, ifindex) in arriving {
            model.arrivals.insert(frame.clone(), ifindex);
            frames.push(frame);
        }
        // The program remembers unanswered queries of earlier rounds: so does the model.
        model.dns.borrow_mut().queries = std::mem::take(&mut queries);
        // What is copied, counted on a dry run over a copy of the model's memory.
        let mut dry = model.dns.borrow().clone();
        for frame in &frames {
            let ifindex = model.arrival(frame).unwrap_or(LOOPBACK);
            if let (_, Some(copy)) = model.matcher.decide_dns(frame, ifindex, &mut dry) {
                copies[usize::from(copy.kind).min(2)] += 1;
            }
        }
        let stats_before = datapath.dns_stats().unwrap();
        let comparison = check_frames(&mut datapath, &mut probe, &model, &frames);
        queries = std::mem::take(&mut model.dns.borrow_mut().queries);
        // The program's counts of answers it passed (untrusted, unsolicited, not held).
        let stats_after = datapath.dns_stats().unwrap();
        let counted: Vec<u64> = stats_after
            .iter()
            .zip(&stats_before)
            .map(|(a, b)| a - b)
            .collect();
        assert_eq!(
            counted,
            model.dns.borrow().stats.to_vec(),
            "seed {seed}, round {round}: untrusted, unsolicited, not held"
        );
        for decision in &comparison.decisions {
            coverage.add(*decision);
        }
        if !comparison.agrees() {
            panic!(
                "{}",
                comparison.report(
                    &format!("seed {seed}, round {round}, DNS trust and holding"),
                    &describe(&generated)
                )
            );
        }
    }
    println!(
        "holding: outcomes {:?}, copies (query, response, fragment) {copies:?}",
        coverage.by_outcome
    );
    assert!(
        coverage.count("held") >= 50 && copies.iter().all(|c| *c >= 10),
        "seed {seed}: only {} frames held, copies {copies:?}: the generator needs tuning",
        coverage.count("held")
    );
    ring_full_holds_nothing(&mut datapath, &mut probe, interfaces, seed);
    holding_stops_with_its_deadline(&mut datapath, &mut probe, interfaces, &mut rng, seed);
}

/// A trusted server and client and a query/answer pair of frames `len` bytes (the answer) long.
fn trusted_pair(
    datapath: &mut Datapath,
    model: &mut Model,
    (inside, outside): (u32, u32),
    i: u16,
    len: usize,
) -> (Vec<u8>, Vec<u8>) {
    let server: IpAddr = "198.18.200.53".parse().unwrap();
    let client: IpAddr = "198.18.100.2".parse().unwrap();
    let trust = vec![(IpNet::from(server), TRUST_SERVER)];
    let roles = vec![(inside, ROLE_INSIDE), (outside, ROLE_OUTSIDE)];
    datapath.set_dns_trust(&trust, &roles).unwrap();
    {
        let mut dns = model.dns.borrow_mut();
        dns.trust = trust;
        dns.roles = roles.into_iter().collect();
    }
    let mut rng = StdRng::seed_from_u64(u64::from(i));
    let query = dns_frame(&mut rng, (client, 40_000), server, false, i, None);
    let answer = dns_frame(&mut rng, (client, 40_000), server, true, i, Some(len));
    model.arrivals.insert(query.clone(), inside);
    model.arrivals.insert(answer.clone(), outside);
    (query, answer)
}

/// While the ring buffer is full nothing is copied, so nothing is held: responses flow as the
/// policy says until the daemon reads the buffer again.
fn ring_full_holds_nothing(
    datapath: &mut Datapath,
    probe: &mut Probe,
    interfaces: (u32, u32),
    seed: u64,
) {
    let empty = GeneratedPolicy::default();
    datapath
        .apply(&compile_generated(&empty).unwrap())
        .unwrap_or_else(|e| panic!("applying an empty policy: {e}"));
    let mut model = Model::new(&empty);
    model.dns.borrow_mut().holding = true;
    probe.dns_events().unwrap();
    // More answers than the buffer holds (4 MiB of ~3.5 KiB records), none read meanwhile.
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..1_400u16)
        .map(|i| trusted_pair(datapath, &mut model, interfaces, i, DNS_HOLD_MAX_FRAME))
        .collect();
    let mut held = Vec::new();
    for (query, answer) in &pairs {
        let (qa, _) = observe_on(datapath, probe, &model, query);
        assert_eq!(qa, XDP_PASS, "seed {seed}: a query was not passed");
        let (action, tally) = observe_on(datapath, probe, &model, answer);
        let got = if (action, &tally) == (XDP_DROP, &Tally::single(Decision::Held, answer.len())) {
            true
        } else if (action, &tally)
            == (
                XDP_PASS,
                &Tally::single(Decision::Pass(PASS_NO_MATCH), answer.len()),
            )
        {
            false
        } else {
            panic!(
                "seed {seed}: with the ring buffer filling up, a response got action {action} and \
                 counters {}\n{}",
                tally.render(),
                hex(answer)
            );
        };
        held.push(got);
    }
    let count = held.iter().filter(|h| **h).count();
    assert!(
        held[..count].iter().all(|h| *h) && (1_000..1_400).contains(&count),
        "seed {seed}: expected the first ~1,100 responses held and the rest passed once the ring \
         buffer is full; held: {count}, first passed at {:?}, last held at {:?}",
        held.iter().position(|h| !*h),
        held.iter().rposition(|h| *h),
    );
    let records = probe.dns_events().unwrap();
    let responses = records.iter().filter(|(h, _)| h.held != 0).count();
    assert_eq!(responses, count, "one copy per held response");
    // Read, the buffer has room again.
    let (query, answer) = trusted_pair(datapath, &mut model, interfaces, 9_999, 200);
    observe_on(datapath, probe, &model, &query);
    let (action, _) = observe_on(datapath, probe, &model, &answer);
    assert_eq!(
        action, XDP_DROP,
        "seed {seed}: not held again after the buffer was read"
    );
    probe.dns_events().unwrap();
}

/// Holding stops when the deadline is cleared, and when it has passed: believed answers are
/// then copied and passed.
fn holding_stops_with_its_deadline(
    datapath: &mut Datapath,
    probe: &mut Probe,
    interfaces: (u32, u32),
    rng: &mut StdRng,
    seed: u64,
) {
    let empty = GeneratedPolicy::default();
    let past = monotonic_ns().saturating_sub(1);
    for (what, deadline) in [("cleared", 0), ("passed", past)] {
        datapath
            .set_dns_hold(deadline)
            .unwrap_or_else(|e| panic!("setting the deadline: {e}"));
        let mut model = Model::new(&empty);
        let (query, answer) = trusted_pair(datapath, &mut model, interfaces, rng.random(), 300);
        let frames = vec![query, answer];
        let comparison = check_frames(datapath, probe, &model, &frames);
        assert!(
            comparison.agrees() && !comparison.decisions.contains(&Decision::Held),
            "{}",
            comparison.report(&format!("seed {seed}, hold deadline {what}"), "")
        );
    }
}

/// The verdict and counter change for one frame, run on the interface the model says.
fn observe_on(datapath: &mut Datapath, probe: &Probe, model: &Model, frame: &[u8]) -> (u32, Tally) {
    let before = probe.counters(&model.ids).unwrap();
    let ifindex = model.arrival(frame).unwrap_or(LOOPBACK);
    let action = datapath.test_run_on(frame, ifindex).unwrap();
    model
        .matcher
        .decide_dns(frame, ifindex, &mut model.dns.borrow_mut());
    let after = probe.counters(&model.ids).unwrap();
    (action, Tally::delta(&before, &after))
}
