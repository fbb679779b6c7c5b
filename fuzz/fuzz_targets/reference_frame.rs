//! Packets through the reference matcher: any frame parsed and decided for the fixed policy
//! (with and without learned addresses, DNS holding on and off). The reference must never panic.
#![no_main]

use enforcer::compile::EntryAddress;
use enforcer::reference::{Decision, Matcher, ParsedFrame, parse_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|frame: &[u8]| {
    let policy = enforcer_fuzz::policy();
    let parsed = parse_frame(frame);
    let plain = Matcher::new(policy);
    let decision = plain.decide(frame);
    if let ParsedFrame::Ip(packet) = parsed {
        assert_eq!(plain.decide_packet(&packet), decision);
    }
    // Not holding, a DNS copy never changes the decision.
    let (not_held, copy) = plain.decide_dns(frame, false);
    assert_eq!(not_held, decision);
    if let Some(copy) = copy {
        assert!(!copy.held);
        assert!(copy.payload_offset < copy.length);
        assert!(copy.captured <= copy.length);
    }
    let (held, _) = plain.decide_dns(frame, true);
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
    let _ = Matcher::with_addresses(policy, learned).decide_dns(frame, true);
});
