//! Packets through the reference matcher: any frame parsed and decided for the fixed policy
//! (with and without learned addresses, DNS holding on and off). The reference must never panic.
#![no_main]

use enforcer::compile::EntryAddress;
use enforcer::reference::{Decision, DnsModel, Matcher, ParsedFrame, parse_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|frame: &[u8]| {
    let policy = enforcer_fuzz::policy();
    let parsed = parse_frame(frame);
    let plain = Matcher::new(policy);
    let decision = plain.decide(frame);
    if let ParsedFrame::Ip(packet) = parsed {
        assert_eq!(plain.decide_packet(&packet), decision);
    }
    // Everyone trusted, no roles: the frame as a query and then as an answer (arriving on
    // interfaces 1 and 2). Not holding, a DNS copy never changes the decision.
    let mut dns = DnsModel {
        trust: vec![
            ("0.0.0.0/0".parse().unwrap(), enforcer_common::TRUST_SERVER),
            ("::/0".parse().unwrap(), enforcer_common::TRUST_SERVER),
        ],
        ..DnsModel::default()
    };
    for ifindex in [1, 2] {
        let (not_held, copy) = plain.decide_dns(frame, ifindex, &mut dns);
        assert_eq!(not_held, decision);
        if let Some(copy) = copy {
            assert!(!copy.held);
            assert!(copy.payload_offset <= copy.length);
            assert!(copy.captured <= copy.length);
        }
    }
    dns.holding = true;
    let (held, _) = plain.decide_dns(frame, 2, &mut dns);
    assert!(held == decision || held == Decision::Held);
    // Learned addresses of the domain entries (platforms sort by name: meet, office, zoom),
    // and one naming no entry (ignored).
    let learned = [
        (0, 0, "192.0.2.0/24"),
        (2, 0, "2001:db8:9::/64"),
        (9, 9, "0.0.0.0/0"),
    ]
    .into_iter()
    .filter_map(|(platform, entry, net)| {
        Some(EntryAddress {
            platform,
            entry,
            net: net.parse().ok()?,
        })
    });
    let _ = Matcher::with_addresses(policy, learned).decide_dns(frame, 1, &mut dns);
});
