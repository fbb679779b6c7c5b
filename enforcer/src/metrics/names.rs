//! The name-level blocking metrics: `enforcer_names` (patterns per platform and enforce value)
//! and `enforcer_dns_blocked_total` (queries the gateway answered itself). Every platform's
//! series is written, at 0 when there is nothing to count.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use enforcer_common::FAMILY_NAMES;

use super::{header, labelled};
use crate::policy::{Enforce, Platform, Policy};

/// Queries answered by the gateway: `(platform id, family code, count)`, as the datapath's
/// blocked-query counters give them (summed over CPUs).
pub type BlockedCounts = [(u16, u8, u64)];

/// How many domain patterns `platform` enforces each way.
pub fn name_counts(platform: &Platform) -> BTreeMap<Enforce, usize> {
    let mut counts: BTreeMap<Enforce, usize> = Enforce::ALL.into_iter().map(|e| (e, 0)).collect();
    for entry in &platform.entries {
        *counts.entry(entry.enforce).or_default() += entry.domains.len();
    }
    counts
}

/// `enforcer_names{platform, enforce}`.
pub fn render_names(policy: &Policy, out: &mut String) {
    header(
        out,
        "enforcer_names",
        "gauge",
        "Domain patterns per platform, by how they are enforced (name, address, both).",
    );
    for platform in &policy.platforms {
        for (enforce, count) in name_counts(platform) {
            let _ = writeln!(
                out,
                "enforcer_names{{platform=\"{}\",enforce=\"{enforce}\"}} {count}",
                platform.name
            );
        }
    }
}

/// `enforcer_dns_blocked_total{platform, family}`; counts of platforms not in the policy are
/// left out (their ids are no longer in use).
pub fn render_dns_blocked(policy: &Policy, blocked: &BlockedCounts, out: &mut String) {
    header(
        out,
        "enforcer_dns_blocked_total",
        "counter",
        "DNS queries for names blocked by name that the gateway answered itself, by the \
         query's transport family.",
    );
    let mut totals: BTreeMap<(u16, u8), u64> = BTreeMap::new();
    for &(platform, family, count) in blocked {
        let total = totals.entry((platform, family)).or_default();
        *total = total.saturating_add(count);
    }
    for (index, platform) in policy.platforms.iter().enumerate() {
        let id = policy.platform_id(index);
        for (family, family_name) in labelled(FAMILY_NAMES) {
            let count = totals.get(&(id, family)).copied().unwrap_or_default();
            let _ = writeln!(
                out,
                "enforcer_dns_blocked_total{{platform=\"{}\",family=\"{family_name}\"}} {count}",
                platform.name
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use enforcer_common::{FAMILY_IPV4, FAMILY_IPV6};

    use super::*;
    use crate::policy::policy_of;

    fn lines(out: &str) -> Vec<&str> {
        out.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn names_are_counted_per_platform_and_enforce_with_every_series_present() {
        let policy = policy_of(&[
            "platform: meet\nmatch:\n  - domains: [meet.google.com]\n    enforce: name\n  \
             - domains: [a.turns.goog, b.turns.goog]\n  - domains: [\"*.c.example\"]\n    enforce: address\n",
            "platform: media\nmatch:\n  - prefixes: [198.18.0.0/16]\n",
        ]);
        let mut out = String::new();
        render_names(&policy, &mut out);
        assert!(out.contains("# TYPE enforcer_names gauge"), "{out}");
        assert_eq!(
            lines(&out),
            [
                "enforcer_names{platform=\"media\",enforce=\"name\"} 0",
                "enforcer_names{platform=\"media\",enforce=\"address\"} 0",
                "enforcer_names{platform=\"media\",enforce=\"both\"} 0",
                "enforcer_names{platform=\"meet\",enforce=\"name\"} 1",
                "enforcer_names{platform=\"meet\",enforce=\"address\"} 1",
                "enforcer_names{platform=\"meet\",enforce=\"both\"} 2",
            ]
        );
    }

    #[test]
    fn blocked_queries_are_rendered_per_platform_and_family_from_start_up() {
        let mut policy = policy_of(&[
            "platform: a\nmatch:\n  - domains: [a.example]\n",
            "platform: b\nmatch:\n  - domains: [b.example]\n",
        ]);
        policy.platforms[1].id = 9;
        let mut out = String::new();
        render_dns_blocked(&policy, &[], &mut out);
        assert!(out.contains("# TYPE enforcer_dns_blocked_total counter"));
        assert_eq!(
            lines(&out),
            [
                "enforcer_dns_blocked_total{platform=\"a\",family=\"ipv4\"} 0",
                "enforcer_dns_blocked_total{platform=\"a\",family=\"ipv6\"} 0",
                "enforcer_dns_blocked_total{platform=\"b\",family=\"ipv4\"} 0",
                "enforcer_dns_blocked_total{platform=\"b\",family=\"ipv6\"} 0",
            ]
        );
        let mut out = String::new();
        render_dns_blocked(
            &policy,
            &[
                (9, FAMILY_IPV6, 5),
                (1, FAMILY_IPV4, 2),
                (9, FAMILY_IPV6, 1),
                (4, FAMILY_IPV4, 70),
            ],
            &mut out,
        );
        assert_eq!(
            lines(&out),
            [
                "enforcer_dns_blocked_total{platform=\"a\",family=\"ipv4\"} 2",
                "enforcer_dns_blocked_total{platform=\"a\",family=\"ipv6\"} 0",
                "enforcer_dns_blocked_total{platform=\"b\",family=\"ipv4\"} 0",
                "enforcer_dns_blocked_total{platform=\"b\",family=\"ipv6\"} 6",
            ]
        );
    }
}
