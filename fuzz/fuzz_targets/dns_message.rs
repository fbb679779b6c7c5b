//! DNS messages: any UDP payload through the learner's parser, then a whole learning round: the
//! same bytes as a query from a client (the QR bit cleared) and as the server's answer to it.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use enforcer::learn::{Observed, parse_message};
use enforcer::resolve::ResolveMetrics;
use enforcer_fuzz::{learner, policy};
use libfuzzer_sys::fuzz_target;

const CLIENT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 1, 2)), 40000);
const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 2, 2)), 53);

fuzz_target!(|data: &[u8]| {
    let _ = parse_message(data);
    let mut learner = learner(policy());
    let metrics = ResolveMetrics::new();
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let mono = Instant::now();
    let mut query = data.to_vec();
    if let Some(flags) = query.get_mut(2) {
        *flags &= 0x7f;
    }
    let mut answer = data.to_vec();
    if let Some(flags) = answer.get_mut(2) {
        *flags |= 0x80;
    }
    // The query arrives on interface 1, the answer on interface 2 (as on a gateway).
    for (src, dst, payload, ifindex) in [(CLIENT, SERVER, &query, 1), (SERVER, CLIENT, &answer, 2)]
    {
        let observed = Observed {
            src,
            dst,
            payload,
            ifindex,
        };
        let seen = learner.observe(&observed, now, mono, &metrics);
        // Whatever it added is in the learned set, and expires.
        assert!(seen.added.len() <= learner.set.len());
    }
    let _ = learner.expire(now + Duration::from_secs(u64::from(u32::MAX)));
});
