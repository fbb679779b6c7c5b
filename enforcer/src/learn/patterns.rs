//! Which platform entries a DNS name belongs to.

use std::collections::{HashMap, HashSet};

use crate::policy::{Action, DomainPattern, Enforce, Entry, Platform, Policy};
use crate::resolve::Use;

/// The policy's domains by name: exact names, and wildcard suffixes (`*.zoom.us` is stored as
/// `zoom.us` and covers every name strictly below it). A lookup costs one hash probe per label.
#[derive(Clone, Debug, Default)]
pub struct DomainPatterns {
    exact: HashMap<String, Vec<Use>>,
    wildcard: HashMap<String, Vec<Use>>,
    uses: HashSet<Use>,
}

/// Whether answers for `entry`'s names are learned. Names enforced by name are never turned
/// into addresses; under `both` a `drop` platform's names are answered by the gateway itself, so
/// no answer crosses it to learn from (its exact names are still resolved by the daemon).
pub fn learns(platform: &Platform, entry: &Entry) -> bool {
    match entry.enforce {
        Enforce::Address => true,
        Enforce::Both => platform.action != Action::Drop,
        Enforce::Name => false,
    }
}

impl DomainPatterns {
    pub fn from_policy(policy: &Policy) -> Self {
        let mut patterns = Self::default();
        for platform in &policy.platforms {
            for entry in platform.entries.iter().filter(|e| learns(platform, e)) {
                for domain in &entry.domains {
                    let u = Use {
                        platform: platform.name.clone(),
                        entry: entry.index,
                    };
                    let (map, name) = match domain {
                        DomainPattern::Exact(name) => (&mut patterns.exact, name),
                        DomainPattern::Wildcard(suffix) => (&mut patterns.wildcard, suffix),
                    };
                    let list = map.entry(name.clone()).or_default();
                    if !list.contains(&u) {
                        list.push(u.clone());
                    }
                    patterns.uses.insert(u);
                }
            }
        }
        patterns
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty()
    }

    /// Whether any pattern of the policy belongs to `u`.
    pub fn has_use(&self, u: &Use) -> bool {
        self.uses.contains(u)
    }

    /// The entries whose domains cover `name` (any case, with or without the final dot).
    pub fn uses_of(&self, name: &str) -> Vec<Use> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let mut uses: Vec<Use> = self.exact.get(&name).cloned().unwrap_or_default();
        // Every proper suffix: for a.b.zoom.us try b.zoom.us, zoom.us, us.
        let mut rest = name.as_str();
        while let Some((_, parent)) = rest.split_once('.') {
            if let Some(list) = self.wildcard.get(parent) {
                uses.extend(list.iter().cloned());
            }
            rest = parent;
        }
        uses.sort();
        uses.dedup();
        uses
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::policy::{LoadOptions, parse_policy_str};

    fn patterns(yaml: &str) -> DomainPatterns {
        let policy = parse_policy_str(Path::new("p.yaml"), yaml, &LoadOptions::default()).unwrap();
        DomainPatterns::from_policy(&policy)
    }

    fn platforms(p: &DomainPatterns, name: &str) -> Vec<(String, usize)> {
        p.uses_of(name)
            .into_iter()
            .map(|u| (u.platform, u.entry))
            .collect()
    }

    #[test]
    fn wildcards_cover_names_below_not_the_apex() {
        let p = patterns(
            "platform: zoom\nmatch:\n  - domains: [\"*.zoom.us\"]\n    enforce: address\n  - domains: [zoom.com]\n    enforce: address\n",
        );
        assert_eq!(platforms(&p, "us01web.zoom.us"), [("zoom".into(), 0)]);
        assert_eq!(platforms(&p, "A.B.ZOOM.US."), [("zoom".into(), 0)]);
        assert!(
            platforms(&p, "zoom.us").is_empty(),
            "the apex is not covered"
        );
        assert!(platforms(&p, "notzoom.us").is_empty());
        assert!(platforms(&p, "zoom.us.evil.example").is_empty());
        assert_eq!(platforms(&p, "zoom.com"), [("zoom".into(), 1)]);
        assert!(platforms(&p, "www.zoom.com").is_empty(), "exact names only");
    }

    /// Only what may become addresses is learned: `address` entries, and `both` entries of
    /// platforms whose names the gateway does not answer (monitor, allow).
    #[test]
    fn names_enforced_by_name_are_not_learned() {
        let banned = patterns(
            "platform: banned\nmatch:\n  - domains: [\"*.a.example\"]\n    enforce: address\n  \
             - domains: [\"*.b.example\"]\n    enforce: name\n  - domains: [\"*.c.example\"]\n",
        );
        assert_eq!(platforms(&banned, "x.a.example"), [("banned".into(), 0)]);
        assert!(
            platforms(&banned, "x.b.example").is_empty(),
            "enforce: name"
        );
        assert!(
            platforms(&banned, "x.c.example").is_empty(),
            "both, answered by the gateway"
        );
        let watched = patterns(
            "platform: watched\naction: monitor\nmatch:\n  - domains: [\"*.d.example\"]\n  \
             - domains: [\"*.e.example\"]\n    enforce: name\n",
        );
        assert_eq!(platforms(&watched, "x.d.example"), [("watched".into(), 0)]);
        assert!(
            platforms(&watched, "x.e.example").is_empty(),
            "enforce: name"
        );
    }

    #[test]
    fn ten_thousand_patterns_stay_fast() {
        let mut yaml = String::from("platform: big\nmatch:\n  - domains: [");
        for i in 0..10_000 {
            yaml.push_str(&format!("\"*.s{i}.example.com\", "));
        }
        yaml.push_str("example.org]\n    enforce: address\n");
        let p = patterns(&yaml);
        let started = std::time::Instant::now();
        for i in 0..10_000 {
            assert_eq!(p.uses_of(&format!("host.s{i}.example.com")).len(), 1);
        }
        assert!(p.uses_of("host.s10000.example.com").is_empty());
        // One hash probe per label: 10k lookups take well under a second even in debug builds.
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }
}
