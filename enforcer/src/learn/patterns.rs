//! Which platform entries a DNS name belongs to.

use std::collections::{HashMap, HashSet};

use crate::policy::{DomainPattern, Policy};
use crate::resolve::Use;

/// The policy's domains by name: exact names, and wildcard suffixes (`*.zoom.us` is stored as
/// `zoom.us` and covers every name strictly below it). A lookup costs one hash probe per label.
#[derive(Clone, Debug, Default)]
pub struct DomainPatterns {
    exact: HashMap<String, Vec<Use>>,
    wildcard: HashMap<String, Vec<Use>>,
    uses: HashSet<Use>,
}

impl DomainPatterns {
    pub fn from_policy(policy: &Policy) -> Self {
        let mut patterns = Self::default();
        for platform in &policy.platforms {
            for entry in &platform.entries {
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
            "platform: zoom\nmatch:\n  - domains: [\"*.zoom.us\"]\n  - domains: [zoom.com]\n",
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

    #[test]
    fn ten_thousand_patterns_stay_fast() {
        let mut yaml = String::from("platform: big\nmatch:\n  - domains: [");
        for i in 0..10_000 {
            yaml.push_str(&format!("\"*.s{i}.example.com\", "));
        }
        yaml.push_str("example.org]\n");
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
