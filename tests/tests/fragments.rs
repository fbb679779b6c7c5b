//! Fragments that could hide their ports (RFC 1858): a first fragment too short to hold the
//! transport header's first four bytes, or a fragment at offset 1 (8 bytes) that may overwrite
//! them, is dropped toward an address with a drop rule for its protocol, whatever that rule's
//! ports; an allow rule without ports still wins. Crafted frames run through the XDP program
//! (BPF_PROG_TEST_RUN) and through the reference matcher, which must both give the verdict and
//! the counter written here.
//!
//! Needs root (BPF).

use std::net::IpAddr;

use enforcer::compile::compile;
use enforcer::datapath::{Datapath, MatchKey};
use enforcer::policy::model::{Action, Policy, Protocol};
use enforcer::reference::{Decision, Matcher};
use enforcer_common::{
    ACTION_ALLOW, ACTION_DROP, DIRECTION_EGRESS, DIRECTION_INGRESS, FAMILY_IPV4, FAMILY_IPV6,
    PASS_NO_MATCH,
};
use tests::r#gen::build::{entry, ip, is_root, matched, platform};

const UDP: u8 = 17;
const TCP: u8 = 6;
/// IPv4 flags and fragment offset: more fragments follow.
const MORE_FRAGMENTS: u16 = 0x2000;
/// The shortest Ethernet frame on a wire (without its checksum): shorter ones are padded.
const MIN_WIRE_FRAME: usize = 60;

fn udp(sport: u16, dport: u16) -> Vec<u8> {
    let mut h = sport.to_be_bytes().to_vec();
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&[0, 8, 0, 0]);
    h
}

/// Ethernet, an IPv4 header whose total length covers `l4`, then `l4`, padded with zeros to
/// `pad_to` bytes as a NIC pads a short frame.
fn ipv4(src: IpAddr, dst: IpAddr, protocol: u8, frag: u16, l4: &[u8], pad_to: usize) -> Vec<u8> {
    let (IpAddr::V4(src), IpAddr::V4(dst)) = (src, dst) else {
        panic!("ipv4 frame with IPv6 addresses");
    };
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&(20 + l4.len() as u16).to_be_bytes());
    f.extend_from_slice(&[0, 1]);
    f.extend_from_slice(&frag.to_be_bytes());
    f.extend_from_slice(&[64, protocol, 0, 0]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(l4);
    if f.len() < pad_to {
        f.resize(pad_to, 0);
    }
    f
}

/// Ethernet, an IPv6 header whose payload length covers the rest, a Fragment header (offset in
/// 8-byte units, more-fragments flag) when `fragment` is given, then `l4`, padded to `pad_to`.
fn ipv6(
    src: IpAddr,
    dst: IpAddr,
    protocol: u8,
    fragment: Option<(u16, bool)>,
    l4: &[u8],
    pad_to: usize,
) -> Vec<u8> {
    let (IpAddr::V6(src), IpAddr::V6(dst)) = (src, dst) else {
        panic!("ipv6 frame with IPv4 addresses");
    };
    let mut payload = Vec::new();
    let next = match fragment {
        Some((offset, more)) => {
            payload.extend_from_slice(&[protocol, 0]);
            payload.extend_from_slice(&((offset << 3) | u16::from(more)).to_be_bytes());
            payload.extend_from_slice(&[0, 0, 0, 7]);
            44
        }
        None => protocol,
    };
    payload.extend_from_slice(l4);
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x86, 0xDD];
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    f.extend_from_slice(&[next, 64]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&payload);
    if f.len() < pad_to {
        f.resize(pad_to, 0);
    }
    f
}

/// Ethernet and IPv6 with `headers` destination-options extension headers (8 bytes each) before
/// a UDP header `l4`.
fn ipv6_chain(src: IpAddr, dst: IpAddr, headers: usize, l4: &[u8]) -> Vec<u8> {
    const DEST_OPTIONS: u8 = 60;
    let mut chain = Vec::new();
    for i in 0..headers {
        let next = if i + 1 == headers { UDP } else { DEST_OPTIONS };
        // Next header, length 0 (8 bytes), one PadN option of 4 bytes.
        chain.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
    }
    chain.extend_from_slice(l4);
    let mut f = ipv6(src, dst, UDP, None, &chain, 0);
    if headers > 0 {
        f[14 + 6] = DEST_OPTIONS;
    }
    f
}

/// Platform ids follow name order: alpha 1, bravo 2, charlie 3, delta 4, echo 5, foxtrot 6.
fn policy() -> Policy {
    Policy {
        platforms: vec![
            // Drops only some UDP ports: what a hidden port would slip past.
            platform(
                "alpha",
                Action::Drop,
                vec![entry(
                    &["198.19.200.0/24", "2001:db8:200::/48"],
                    Protocol::Udp,
                    &[(3478, 3481)],
                )],
            ),
            // Allows all of UDP where charlie drops one port: the allow wins.
            platform(
                "bravo",
                Action::Allow,
                vec![entry(&["198.19.201.0/24"], Protocol::Udp, &[])],
            ),
            platform(
                "charlie",
                Action::Drop,
                vec![entry(
                    &["198.19.201.0/24", "198.19.202.0/24"],
                    Protocol::Udp,
                    &[(5000, 6000)],
                )],
            ),
            // Allows one port where charlie drops others: an unknown port is not the allowed one.
            platform(
                "delta",
                Action::Allow,
                vec![entry(&["198.19.202.0/24"], Protocol::Udp, &[(3478, 3478)])],
            ),
            // Monitors one TCP port: hidden ports are not counted under it.
            platform(
                "echo",
                Action::Monitor,
                vec![entry(&["198.19.203.0/24"], Protocol::Tcp, &[(443, 443)])],
            ),
            // A longer drop prefix inside alpha's: the best drop rule counts the packet.
            platform(
                "foxtrot",
                Action::Drop,
                vec![entry(&["198.19.200.128/25"], Protocol::Udp, &[(9, 9)])],
            ),
        ],
    }
}

fn cases() -> Vec<(&'static str, Vec<u8>, Decision)> {
    let client = ip("10.0.0.1");
    let client6 = ip("fd00::1");
    let banned = ip("198.19.200.5");
    let banned6 = ip("2001:db8:200::5");
    let udp_to = |port: u16| udp(40000, port);
    let drop4 = matched(1, ACTION_DROP, DIRECTION_EGRESS, FAMILY_IPV4);
    let drop6 = matched(1, ACTION_DROP, DIRECTION_EGRESS, FAMILY_IPV6);
    let none = Decision::Pass(PASS_NO_MATCH);
    vec![
        // An IPv6 chain the walk cannot finish may hide any protocol and port: dropped toward a
        // prefix with any drop rule; one it can finish is judged by its real port.
        (
            "IPv6 with 9 extension headers to another port",
            ipv6_chain(client6, banned6, 9, &udp_to(80)),
            drop6,
        ),
        (
            "IPv6 with 8 extension headers to another port",
            ipv6_chain(client6, banned6, 8, &udp_to(80)),
            none,
        ),
        (
            "IPv6 with 8 extension headers to a dropped port",
            ipv6_chain(client6, banned6, 8, &udp_to(3478)),
            drop6,
        ),
        (
            "whole packet to a dropped port",
            ipv4(client, banned, UDP, 0, &udp_to(3478), 0),
            drop4,
        ),
        (
            "whole packet to another port",
            ipv4(client, banned, UDP, 0, &udp_to(80), 0),
            none,
        ),
        (
            "first fragment with 2 bytes of UDP, padded to the wire minimum",
            ipv4(
                client,
                banned,
                UDP,
                MORE_FRAGMENTS,
                &udp_to(80)[..2],
                MIN_WIRE_FRAME,
            ),
            drop4,
        ),
        (
            "first fragment whose total length ends inside the ports (the padding holds some)",
            with_length(
                ipv4(client, banned, UDP, MORE_FRAGMENTS, &udp_to(80), 0),
                16,
                20 + 2,
            ),
            drop4,
        ),
        (
            "bytes past the total length are not read",
            with_length(ipv4(client, banned, UDP, 0, &udp_to(3478), 0), 16, 20 + 2),
            none,
        ),
        (
            "first fragment with 3 bytes of UDP, unpadded",
            ipv4(client, banned, UDP, MORE_FRAGMENTS, &udp_to(80)[..3], 0),
            drop4,
        ),
        (
            "first fragment with the 4 port bytes: its ports decide (dropped port)",
            ipv4(client, banned, UDP, MORE_FRAGMENTS, &udp_to(3479)[..4], 0),
            drop4,
        ),
        (
            "first fragment with the 4 port bytes: its ports decide (other port)",
            ipv4(client, banned, UDP, MORE_FRAGMENTS, &udp_to(80)[..4], 0),
            none,
        ),
        (
            "fragment at offset 1 (8 bytes)",
            ipv4(client, banned, UDP, MORE_FRAGMENTS | 1, &[0; 16], 0),
            drop4,
        ),
        (
            "last fragment at offset 1",
            ipv4(client, banned, UDP, 1, &[0; 16], 0),
            drop4,
        ),
        (
            "fragment at offset 2 keeps unknown ports",
            ipv4(client, banned, UDP, MORE_FRAGMENTS | 2, &[0; 16], 0),
            none,
        ),
        (
            "a short packet that is no fragment",
            ipv4(client, banned, UDP, 0, &udp_to(3478)[..2], MIN_WIRE_FRAME),
            none,
        ),
        (
            "tiny fragment of TCP: the UDP drop rule is not its protocol",
            ipv4(client, banned, TCP, MORE_FRAGMENTS, &[0x9c, 0x40], 0),
            none,
        ),
        (
            "tiny fragment from the banned side: ingress",
            ipv4(banned, client, UDP, MORE_FRAGMENTS, &udp_to(80)[..2], 0),
            matched(1, ACTION_DROP, DIRECTION_INGRESS, FAMILY_IPV4),
        ),
        (
            "tiny fragment under the longer drop prefix counts there",
            ipv4(
                client,
                ip("198.19.200.200"),
                UDP,
                MORE_FRAGMENTS,
                &[0x9c],
                0,
            ),
            matched(6, ACTION_DROP, DIRECTION_EGRESS, FAMILY_IPV4),
        ),
        (
            "allow without ports still wins",
            ipv4(client, ip("198.19.201.5"), UDP, MORE_FRAGMENTS, &[0x9c], 0),
            matched(2, ACTION_ALLOW, DIRECTION_EGRESS, FAMILY_IPV4),
        ),
        (
            "allow with ports cannot vouch for a hidden port",
            ipv4(client, ip("198.19.202.5"), UDP, 1, &[0; 8], 0),
            matched(3, ACTION_DROP, DIRECTION_EGRESS, FAMILY_IPV4),
        ),
        (
            "monitor with ports does not count a hidden port",
            ipv4(
                client,
                ip("198.19.203.5"),
                TCP,
                MORE_FRAGMENTS,
                &[1, 187],
                0,
            ),
            none,
        ),
        (
            "ipv6 first fragment with 2 bytes of UDP",
            ipv6(client6, banned6, UDP, Some((0, true)), &udp_to(80)[..2], 0),
            drop6,
        ),
        (
            "ipv6 first fragment with the 4 port bytes (other port)",
            ipv6(client6, banned6, UDP, Some((0, true)), &udp_to(80)[..4], 0),
            none,
        ),
        (
            "ipv6 first fragment with the 4 port bytes (dropped port)",
            ipv6(
                client6,
                banned6,
                UDP,
                Some((0, true)),
                &udp_to(3481)[..4],
                0,
            ),
            drop6,
        ),
        (
            "ipv6 fragment at offset 1",
            ipv6(client6, banned6, UDP, Some((1, true)), &[0; 16], 0),
            drop6,
        ),
        (
            "ipv6 fragment at offset 2 keeps unknown ports",
            ipv6(client6, banned6, UDP, Some((2, false)), &[0; 16], 0),
            none,
        ),
        (
            "ipv6 atomic fragment (offset 0, no more) that is short is no fragment series",
            ipv6(
                client6,
                banned6,
                UDP,
                Some((0, false)),
                &udp_to(3478)[..2],
                0,
            ),
            none,
        ),
        (
            "ipv6 first fragment whose payload length ends inside the ports",
            with_length(
                ipv6(client6, banned6, UDP, Some((0, true)), &udp_to(80), 0),
                18,
                8 + 2,
            ),
            drop6,
        ),
        (
            "ipv6 bytes past the payload length are not read",
            with_length(ipv6(client6, banned6, UDP, None, &udp_to(3478), 0), 18, 2),
            none,
        ),
    ]
}

/// `frame` with the IP length field at `at` set to `length`: the bytes after it are padding.
fn with_length(mut frame: Vec<u8>, at: usize, length: u16) -> Vec<u8> {
    frame[at..at + 2].copy_from_slice(&length.to_be_bytes());
    frame
}

/// The reference matcher decides every case as written (no BPF needed).
#[test]
fn reference_drops_fragments_that_hide_ports() {
    let policy = policy();
    let matcher = Matcher::new(&policy);
    let mut wrong = Vec::new();
    for (what, frame, want) in cases() {
        let got = matcher.decide(&frame);
        if got != want {
            wrong.push(format!("{what}: reference {got:?}, want {want:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The XDP program returns the verdict and bumps exactly the counter of each case.
#[test]
fn datapath_drops_fragments_that_hide_ports() {
    if !is_root() {
        eprintln!("skipping: loading the XDP program needs root");
        return;
    }
    let policy = policy();
    let mut datapath = Datapath::load_unpinned().expect("loading the datapath");
    datapath
        .apply(&compile(&policy).expect("compiling"))
        .expect("applying");
    let below = u16::try_from(policy.platforms.len() + 1).unwrap();
    let mut wrong = Vec::new();
    for (what, frame, want) in cases() {
        let before = datapath.counters_up_to(Some(below)).unwrap();
        let action = datapath.test_run(&frame).unwrap();
        let after = datapath.counters_up_to(Some(below)).unwrap();
        let want_action = want.xdp_action();
        let counted = match want {
            // Holding is off here: no frame is held.
            Decision::Held => panic!("{what}: the reference holds a frame with holding off"),
            // No name table here: nothing is blocked by name.
            Decision::NameBlocked { .. } => panic!("{what}: the reference blocks a name"),
            Decision::Pass(reason) => {
                let r = reason as usize;
                after.passed[r].packets - before.passed[r].packets
            }
            Decision::Match {
                platform,
                action,
                direction,
                family,
                ..
            } => {
                let key = MatchKey {
                    platform,
                    action,
                    direction,
                    family,
                };
                let of = |s: &enforcer::datapath::CounterSnapshot| {
                    s.matches.get(&key).map_or(0, |c| c.packets)
                };
                of(&after) - of(&before)
            }
        };
        let total = |s: &enforcer::datapath::CounterSnapshot| {
            s.matches.values().map(|c| c.packets).sum::<u64>()
                + s.passed.iter().map(|c| c.packets).sum::<u64>()
        };
        if action != want_action || counted != 1 || total(&after) != total(&before) + 1 {
            wrong.push(format!(
                "{what}: action {action} (want {want_action}), counted {counted} under {want:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
