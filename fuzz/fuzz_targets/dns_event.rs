//! Captured events: any ring-buffer record decoded as the daemon decodes it, fed to the fragment
//! reassembly, and the packet's DNS message handed to the learner.
#![no_main]

use std::time::{Duration, Instant, SystemTime};

use enforcer::datapath::DnsPacket;
use enforcer::learn::Observed;
use enforcer::resolve::ResolveMetrics;
use enforcer_fuzz::{learner, policy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(packet) = DnsPacket::decode(data) else {
        return;
    };
    assert!(packet.payload_offset <= packet.frame.len() && packet.l3 <= packet.frame.len());
    // Fragments of any shape: put together or refused, never a panic.
    let mut fragments = enforcer::learn::Reassembly::new();
    let _ = fragments.later(&packet, Instant::now());
    let _ = fragments.first(packet.clone(), Instant::now());
    let mut learner = learner(policy());
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let observed = Observed::from(&packet);
    let _ = learner.observe(&observed, now, Instant::now(), &ResolveMetrics::new());
});
