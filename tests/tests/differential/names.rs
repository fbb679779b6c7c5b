//! Name-level blocking against the reference: random name tables (exact and wildcard patterns of
//! every action, several platforms) and random DNS queries (UDP and TCP, both families, VLAN
//! tags, EDNS or not, mixed case, names that match, that sit under a pattern, that do not, and
//! malformed ones: two questions, compression, long labels, long names, cut frames, fragments).
//! Per frame: the XDP action, the answer frame byte for byte when the program sends one back, the
//! blocked-query counters and the other counters must be what the reference says.

use std::collections::BTreeMap;

use enforcer::reference::NamePattern;
use enforcer_common::{
    ACTION_ALLOW, ACTION_DROP, ACTION_MONITOR, NameKey, NameRule, NameVerdict, action_precedence,
    name_hash,
};
use rand::seq::IndexedRandom;

use super::*;

const ROUNDS: usize = 5;
const QUERIES: usize = 400;

/// The wire form of a dotted name, without the root label.
fn wire(name: &str) -> Vec<u8> {
    let mut w = Vec::new();
    for label in name.split('.') {
        w.push(u8::try_from(label.len()).unwrap());
        w.extend_from_slice(label.as_bytes());
    }
    w
}

/// The name table the daemon must write for `patterns` (what the reference reads them as).
fn table(patterns: &[NamePattern]) -> BTreeMap<NameKey, NameRule> {
    let mut table: BTreeMap<NameKey, NameRule> = BTreeMap::new();
    for p in patterns {
        let key = NameKey {
            hash: name_hash(&wire(&p.suffix)),
            labels: u8::try_from(p.suffix.split('.').count()).unwrap(),
            _pad: [0; 7],
        };
        let rule = table.entry(key).or_default();
        let side = if p.wildcard {
            &mut rule.wildcard
        } else {
            &mut rule.exact
        };
        let better = side.present == 0
            || (action_precedence(p.action), u16::MAX - p.rank)
                > (action_precedence(side.action), u16::MAX - side.rank);
        if better {
            *side = NameVerdict {
                platform: p.platform,
                rank: p.rank,
                action: p.action,
                present: 1,
                _pad: [0; 2],
            };
        }
    }
    table
}

const LABELS: [&str; 8] = ["zoom", "us", "meet", "google", "com", "teams", "cdn", "x7"];

fn random_name(rng: &mut StdRng, labels: usize) -> String {
    (0..labels)
        .map(|_| *LABELS.choose(rng).unwrap())
        .collect::<Vec<_>>()
        .join(".")
}

/// Patterns of the platforms `ids` (those whose counters the probe reads): at least one exact
/// and one wildcard drop pattern, so that every round answers queries.
fn random_patterns(rng: &mut StdRng, ids: &[u16]) -> Vec<NamePattern> {
    let mut patterns = Vec::new();
    for wildcard in [false, true] {
        let labels = rng.random_range(1..=3);
        patterns.push(NamePattern {
            suffix: random_name(rng, labels),
            wildcard,
            platform: *ids.choose(rng).unwrap_or(&0),
            rank: rng.random_range(0..4),
            action: ACTION_DROP,
        });
    }
    patterns.extend(more_patterns(rng, ids));
    patterns
}

fn more_patterns(rng: &mut StdRng, ids: &[u16]) -> Vec<NamePattern> {
    (0..rng.random_range(0..10))
        .map(|_| NamePattern {
            suffix: {
                let labels = rng.random_range(1..=3);
                random_name(rng, labels)
            },
            wildcard: rng.random_bool(0.5),
            platform: *ids.choose(rng).unwrap_or(&0),
            rank: rng.random_range(0..4),
            action: *[ACTION_DROP, ACTION_DROP, ACTION_MONITOR, ACTION_ALLOW]
                .choose(rng)
                .unwrap(),
        })
        .collect()
}

/// A DNS query message for `name` (wire form given, so malformed ones can be made).
fn query_message(rng: &mut StdRng, qname: &[u8], edns: bool, qdcount: u16) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend(rng.random::<u16>().to_be_bytes());
    m.extend([if rng.random_bool(0.5) { 0x01 } else { 0x00 }, 0]);
    m.extend(qdcount.to_be_bytes());
    m.extend([0, 0, 0, 0, 0, u8::from(edns)]);
    m.extend_from_slice(qname);
    m.extend([0, *[1u8, 28, 65].choose(rng).unwrap(), 0, 1]);
    if edns {
        m.extend([0, 0, 41, 0x10, 0, 0, 0, 0x80, 0, 0, 0]);
    }
    m
}

/// A query frame: UDP (mostly) or TCP to port 53, from a random client, behind 0-2 VLAN tags.
fn query_frame(rng: &mut StdRng, patterns: &[NamePattern]) -> Vec<u8> {
    let v6 = rng.random_bool(0.4);
    let client = tests::r#gen::random_address(rng, v6, true);
    let server = tests::r#gen::random_address(rng, v6, false);
    // A name: a pattern's, one under it, another, in random case.
    let mut name = match (rng.random_range(0..4), patterns.choose(rng)) {
        (0, Some(p)) => p.suffix.clone(),
        (1, Some(p)) => format!("{}.{}", random_name(rng, 1), p.suffix),
        (2, Some(p)) => format!("{}.{}", random_name(rng, 2), p.suffix),
        _ => {
            let labels = rng.random_range(1..4);
            random_name(rng, labels)
        }
    };
    if rng.random_bool(0.3) {
        name = name
            .chars()
            .map(|c| {
                if rng.random_bool(0.5) {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect();
    }
    let mut qname = wire(&name);
    qname.push(0);
    let mut qdcount = 1;
    match rng.random_range(0..20) {
        0 => qdcount = 2,
        1 => qname = vec![0xC0, 0x0C],
        2 => {
            qname = vec![64];
            qname.extend([b'a'; 64]);
            qname.push(0);
        }
        3 => {
            qname = (0..60).flat_map(|_| [4, b'a', b'b', b'c', b'd']).collect();
            qname.push(0);
        }
        4 => qname = vec![0],
        _ => {}
    }
    let edns = rng.random_bool(0.5);
    let message = query_message(rng, &qname, edns, qdcount);
    let tcp = rng.random_bool(0.15);
    let port = rng.random_range(1024..65535);
    let mut frame = if tcp {
        let mut f = simple_frame(client, server, 6, port, 53);
        let mut payload = u16::try_from(message.len()).unwrap().to_be_bytes().to_vec();
        payload.extend(&message);
        fix_lengths(&mut f, &payload);
        f
    } else {
        let mut f = simple_frame(client, server, 17, port, 53);
        fix_lengths(&mut f, &message);
        f
    };
    if rng.random_bool(0.1) {
        // Cut anywhere after the headers.
        let keep = rng.random_range(frame.len() - message.len()..frame.len());
        frame.truncate(keep);
    }
    if !v6 && rng.random_bool(0.05) {
        // The first fragment of a larger datagram.
        frame[14 + 6] |= 0x20;
    }
    for _ in 0..rng.random_range(0..=2u8).saturating_sub(1) {
        frame.splice(12..12, [0x81, 0x00, 0x00, 0x07]);
    }
    frame
}

/// Appends `payload` to a `simple_frame` and sets the IP and UDP length fields.
fn fix_lengths(frame: &mut Vec<u8>, payload: &[u8]) {
    let v4 = frame[12..14] == [0x08, 0x00];
    frame.extend_from_slice(payload);
    let l3 = 14;
    if v4 {
        let total = u16::try_from(frame.len() - l3).unwrap();
        frame[l3 + 2..l3 + 4].copy_from_slice(&total.to_be_bytes());
        let l4 = l3 + usize::from(frame[l3] & 0x0F) * 4;
        if frame[l3 + 9] == 17 {
            let len = u16::try_from(frame.len() - l4).unwrap();
            frame[l4 + 4..l4 + 6].copy_from_slice(&len.to_be_bytes());
        }
    } else {
        let payload_len = u16::try_from(frame.len() - l3 - 40).unwrap();
        frame[l3 + 4..l3 + 6].copy_from_slice(&payload_len.to_be_bytes());
        if frame[l3 + 6] == 17 {
            frame[l3 + 44..l3 + 46].copy_from_slice(&payload_len.to_be_bytes());
        }
    }
}

#[test]
fn name_blocking_matches_reference() {
    let Some((mut datapath, mut probe)) = load() else {
        return;
    };
    let seed = seed();
    println!("names seed: {seed} (rerun with ENFORCER_DIFF_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    for round in 0..ROUNDS {
        let (generated, mut compiled, _) = compilable_policy(&mut rng);
        let ids = ids(&generated.policy);
        let patterns = random_patterns(&mut rng, &ids);
        compiled.names = table(&patterns);
        datapath
            .apply(&compiled)
            .unwrap_or_else(|e| panic!("seed {seed}: applying: {e}"));
        let ttl = rng.random_range(1..100_000);
        datapath.set_dns_block_ttl(ttl).unwrap();
        let matcher =
            Matcher::with_addresses(&generated.policy, generated.addresses.iter().copied())
                .with_sites(lab_sites())
                .with_names(patterns.clone());
        let platforms = ids.iter().max().map_or(1, |m| m + 1);
        for _ in 0..QUERIES {
            let frame = query_frame(&mut rng, &patterns);
            let mut dns = DnsModel::default();
            let (want, _) = matcher.decide_dns(&frame, LOOPBACK, &mut dns);
            let answer = matcher.name_answer(&frame, LOOPBACK, &DnsModel::default(), ttl);
            let blocked_before = datapath.dns_blocked(platforms).unwrap();
            let before = probe.counters(&ids).unwrap();
            let (action, out) = datapath.test_run_output(&frame).unwrap();
            let after = probe.counters(&ids).unwrap();
            let blocked_after = datapath.dns_blocked(platforms).unwrap();
            probe.dns_events().unwrap();
            let context = || {
                format!(
                    "seed {seed}, round {round}: {want:?}\npatterns {patterns:?}\nframe:\n{}",
                    hex(&frame)
                )
            };
            assert_eq!(action, want.xdp_action(), "{}", context());
            match want {
                Decision::NameBlocked {
                    platform,
                    family,
                    answered,
                } => {
                    *outcomes
                        .entry(if answered { "answered" } else { "dropped" })
                        .or_default() += 1;
                    let moved: Vec<(u16, u8)> = blocked_after
                        .iter()
                        .zip(&blocked_before)
                        .filter(|(a, b)| a.2.packets != b.2.packets)
                        .map(|(a, _)| (a.0, a.1))
                        .collect();
                    assert_eq!(moved, vec![(platform, family)], "{}", context());
                    if answered {
                        assert_eq!(
                            Some(&out),
                            answer.as_ref(),
                            "the answer differs:\n{}\n{}",
                            hex(&out),
                            context()
                        );
                    }
                    assert!(
                        Tally::delta(&before, &after) == Tally::default(),
                        "a blocked query counted elsewhere: {}",
                        context()
                    );
                }
                other => {
                    *outcomes.entry("forwarded").or_default() += 1;
                    assert_eq!(answer, None, "{}", context());
                    assert_eq!(
                        Tally::delta(&before, &after),
                        Tally::single(other, frame.len()),
                        "{}",
                        context()
                    );
                    assert_eq!(blocked_after, blocked_before, "{}", context());
                }
            }
        }
    }
    println!("names: {outcomes:?}");
    assert!(
        outcomes.get("answered").copied().unwrap_or(0) >= 100
            && outcomes.get("dropped").copied().unwrap_or(0) >= 5
            && outcomes.get("forwarded").copied().unwrap_or(0) >= 100,
        "seed {seed}: {outcomes:?}: the generator needs tuning"
    );
}
