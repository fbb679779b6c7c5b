//! DNS holding switched on (`Datapath::set_dns_hold` with a deadline ahead): every UDP response
//! from port 53 that the policy lets through and that fits one copy is dropped after being copied
//! to the ring buffer, for the daemon to send on; the reference's `decide_dns` says which. Also
//! checks that nothing is held while the ring buffer is full (nothing could be sent on), and that
//! holding stops when the deadline is cleared or has passed.

use rand::seq::IndexedRandom;
use tests::r#gen::policy::random_port;
use tests::r#gen::random_address;

use super::*;

const ROUNDS: usize = 6;
const RANDOM_FRAMES: usize = 600;
const DNS_FRAMES: usize = 300;
/// Far enough ahead that holding does not stop during the test.
const HOLD_FOR_NS: u64 = 600 * 1_000_000_000;

/// A UDP message to (`response` false) or from port 53 behind `tags` VLAN tags, its IP packet
/// `ip_len` bytes long (or just the headers plus a little payload when `None`).
fn dns_frame(rng: &mut StdRng, response: bool, tags: usize, ip_len: Option<usize>) -> Vec<u8> {
    let v6 = rng.random_bool(0.5);
    let (server_inside, client_inside) = (rng.random_bool(0.6), rng.random_bool(0.3));
    let server = random_address(rng, v6, server_inside);
    let client = random_address(rng, v6, client_inside);
    let port = random_port(rng);
    let mut frame = if response {
        simple_frame(server, client, 17, 53, port)
    } else {
        simple_frame(client, server, 17, port, 53)
    };
    let headers = frame.len() - 14;
    let payload = match ip_len {
        Some(len) => len.saturating_sub(headers),
        None => rng.random_range(0..=64),
    };
    frame.extend((0..payload).map(|_| rng.random::<u8>()));
    for _ in 0..tags {
        frame.splice(12..12, [0x81, 0x00, 0x00, 0x07]);
    }
    frame
}

/// DNS messages of every kind that matters for holding: responses and queries, with and without
/// VLAN tags, without payload, and with IP packets at and around the copy's size.
fn dns_frames(rng: &mut StdRng, count: usize) -> Vec<Vec<u8>> {
    let sizes = [
        DNS_CAPTURE - 1,
        DNS_CAPTURE,
        DNS_CAPTURE + 1,
        DNS_CAPTURE + 700,
    ];
    (0..count)
        .map(|_| {
            let response = rng.random_bool(0.75);
            let tags = rng.random_range(0..=2);
            let ip_len = match rng.random_range(0..10) {
                0..=1 => sizes.choose(rng).copied(),
                2 => Some(0), // the UDP header alone
                _ => None,
            };
            dns_frame(rng, response, tags, ip_len)
        })
        .collect()
}

const DNS_CAPTURE: usize = enforcer_common::DNS_CAPTURE_BYTES;

#[test]
fn dns_holding_matches_reference() {
    let Some((mut datapath, mut probe)) = load() else {
        return;
    };
    let seed = seed();
    println!("DNS holding seed: {seed} (rerun with ENFORCER_DIFF_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut coverage = Coverage::default();
    let mut last = None;
    datapath
        .set_dns_hold(monotonic_ns() + HOLD_FOR_NS)
        .unwrap_or_else(|e| panic!("switching holding on: {e}"));
    for round in 0..ROUNDS {
        let (generated, compiled, _) = compilable_policy(&mut rng);
        datapath
            .apply(&compiled)
            .unwrap_or_else(|e| panic!("seed {seed}: applying: {e}"));
        let mut frames: Vec<Vec<u8>> = (0..RANDOM_FRAMES).map(|_| random_frame(&mut rng)).collect();
        frames.extend(dns_frames(&mut rng, DNS_FRAMES));
        let mut model = Model::new(&generated);
        model.holding = true;
        let comparison = check_frames(&mut datapath, &mut probe, &model, &frames);
        for decision in &comparison.decisions {
            coverage.add(*decision);
        }
        if !comparison.agrees() {
            panic!(
                "{}",
                comparison.report(
                    &format!("seed {seed}, round {round}, holding DNS responses"),
                    &describe(&generated)
                )
            );
        }
        last = Some(generated);
    }
    println!("holding: outcomes {:?}", coverage.by_outcome);
    assert!(
        coverage.count("held") >= 100,
        "seed {seed}: only {} frames held: the generator needs tuning",
        coverage.count("held")
    );

    // Holding stops when the deadline is cleared, and when it has passed.
    let generated = last.unwrap_or_default();
    let frames = dns_frames(&mut rng, DNS_FRAMES);
    let past = monotonic_ns().saturating_sub(1);
    for (what, deadline) in [("cleared", 0), ("passed", past)] {
        datapath
            .set_dns_hold(deadline)
            .unwrap_or_else(|e| panic!("setting the deadline: {e}"));
        let comparison = check_frames(&mut datapath, &mut probe, &Model::new(&generated), &frames);
        if !comparison.agrees() {
            panic!(
                "{}",
                comparison.report(
                    &format!("seed {seed}, hold deadline {what}"),
                    &describe(&generated)
                )
            );
        }
    }
    datapath
        .set_dns_hold(monotonic_ns() + HOLD_FOR_NS)
        .unwrap_or_else(|e| panic!("switching holding on: {e}"));
    ring_full_holds_nothing(&mut datapath, &mut probe, &mut rng, seed);
}

/// While the ring buffer is full nothing is copied, so nothing is held: responses flow as the
/// policy says until the daemon reads the buffer again.
fn ring_full_holds_nothing(
    datapath: &mut Datapath,
    probe: &mut Probe,
    rng: &mut StdRng,
    seed: u64,
) {
    let empty = GeneratedPolicy::default();
    datapath
        .apply(&compile_generated(&empty).unwrap())
        .unwrap_or_else(|e| panic!("applying an empty policy: {e}"));
    let mut model = Model::new(&empty);
    probe.dns_events().unwrap();
    // More responses than the buffer holds (2 MiB of ~2 KiB records), none read meanwhile.
    model.holding = true;
    let frames: Vec<Vec<u8>> = (0..1_200)
        .map(|_| dns_frame(rng, true, 0, Some(100)))
        .collect();
    assert!(frames.iter().all(|f| model.expect(f).0 == Decision::Held));
    let mut held = Vec::new();
    for frame in &frames {
        model.holding = true;
        let (holding, _) = model.expect(frame);
        model.holding = false;
        let (passing, _) = model.expect(frame);
        let (action, tally) = observe(datapath, probe, &model.ids, frame);
        let got = if (action, &tally) == (XDP_DROP, &Tally::single(holding, frame.len())) {
            true
        } else if (action, &tally) == (passing.xdp_action(), &Tally::single(passing, frame.len())) {
            false
        } else {
            panic!(
                "seed {seed}: with the ring buffer filling up, a response got action {action} and \
                 counters {}\n{}",
                tally.render(),
                hex(frame)
            );
        };
        held.push(got);
    }
    let count = held.iter().filter(|h| **h).count();
    assert!(
        held[..count].iter().all(|h| *h) && (900..1_200).contains(&count),
        "seed {seed}: expected the first ~1000 responses held and the rest passed once the ring \
         buffer is full; held: {count}, first passed at {:?}, last held at {:?}",
        held.iter().position(|h| !*h),
        held.iter().rposition(|h| *h),
    );
    assert_eq!(
        probe.dns_events().unwrap().len(),
        count,
        "one copy per held response"
    );
    // Read, the buffer has room again.
    let frame = &frames[0];
    let (action, _) = observe(datapath, probe, &model.ids, frame);
    assert_eq!(
        action, XDP_DROP,
        "seed {seed}: not held again after the buffer was read"
    );
    probe.dns_events().unwrap();
}
