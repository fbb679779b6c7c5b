//! What the fuzz targets share: a small fixed policy and a learner over it, built the way the
//! daemon builds them.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use enforcer::learn::{DomainPatterns, Learner, Trust};
use enforcer::never_block::NeverBlock;
use enforcer::policy::{LoadOptions, Policy, parse_policy_str};
use enforcer::resolve::{BookSettings, Guard};

/// Every action, both families, port-restricted entries and domains (exact and wildcard): one
/// rule file each, in name order (the order of a loaded policy).
pub const POLICY_FILES: [&str; 3] = [
    "platform: meet
action: monitor
match:
  - domains: [\"*.meet.example\"]
  - prefixes: [198.51.100.128/25]
",
    "platform: office
action: allow
match:
  - prefixes: [198.51.100.7/32, \"2001:db8:1::7/128\"]
",
    "platform: zoom
action: drop
match:
  - domains: [zoom.us, \"*.zoom.us\"]
  - prefixes: [198.51.100.0/24, \"2001:db8:1::/48\"]
  - prefixes: [203.0.113.0/24]
    protocol: udp
    ports: [3478, 8801-8810]
  - prefixes: [\"2001:db8:2::/48\"]
    protocol: tcp
    ports: [443]
",
];

/// The fixed policy, parsed once; its files are known to be valid, so a failure here is a bug
/// of the harness.
pub fn policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| {
        let mut platforms = Vec::new();
        for text in POLICY_FILES {
            match parse_policy_str(Path::new("fuzz.yaml"), text, &LoadOptions::default()) {
                Ok(policy) => platforms.extend(policy.platforms),
                Err(error) => panic!("a fuzz policy file is invalid: {error}"),
            }
        }
        Policy { platforms }
    })
}

/// A learner over [`policy`], with the daemon's default TTL bounds and address cap, that
/// believes answers from any server (no interface roles), so that every answer reaches the
/// learning code.
pub fn learner(policy: &Policy) -> Learner {
    let anyone = ["0.0.0.0/0", "::/0"]
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect();
    Learner::new(
        DomainPatterns::from_policy(policy),
        Guard::new(NeverBlock::builtin(), 64, &[]),
        Trust::new(HashMap::new(), anyone, Vec::new()),
        BookSettings {
            ttl_floor: Duration::from_secs(60),
            ttl_ceiling: Duration::from_secs(86_400),
            grace: Duration::from_secs(3_600),
        },
    )
}
