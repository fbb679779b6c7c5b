//! The name table: every domain pattern of an entry that enforces by name, keyed as the
//! datapath looks a query name up (the hash of a suffix's wire form and its label count), with
//! the entry that wins for names equal to that suffix (`exact`) and for names under it
//! (`wildcard`).

use std::collections::BTreeMap;

use enforcer_common::{MAX_NAMES, NameKey, NameRule, NameVerdict, action_precedence, name_hash};

use super::CompileError;
use crate::policy::{Action, DomainPattern, Policy};

/// The entry that decides a DNS query for a name, as the datapath decides it from the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameMatch {
    /// Index into `Policy::platforms`.
    pub platform: usize,
    /// Index into that platform's `entries`.
    pub entry: usize,
    pub action: Action,
    pub pattern: DomainPattern,
}

/// How a covering pattern ranks: action precedence, labels, then earlier platform first.
type Rank = (u8, usize, std::cmp::Reverse<usize>);

/// What a DNS query for `name` gets from the name table (any case, with or without the final
/// dot): of the patterns that enforce by name and cover it, the best action (allow, drop,
/// monitor), then the pattern with the most labels, then the platform first in name order.
/// `None` when no such pattern covers it (the query is forwarded).
pub fn name_verdict(policy: &Policy, name: &str) -> Option<NameMatch> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let mut best: Option<(Rank, NameMatch)> = None;
    for (index, platform) in policy.platforms.iter().enumerate() {
        for entry in platform.entries.iter().filter(|e| e.enforce.by_name()) {
            for pattern in &entry.domains {
                let (covers, suffix) = match pattern {
                    DomainPattern::Exact(d) => (*d == name, d),
                    DomainPattern::Wildcard(d) => (
                        name.strip_suffix(d.as_str())
                            .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
                        d,
                    ),
                };
                if !covers {
                    continue;
                }
                let labels = suffix.split('.').count();
                let order = (
                    platform.action.precedence(),
                    labels,
                    std::cmp::Reverse(index),
                );
                if best.as_ref().is_none_or(|(b, _)| order > *b) {
                    best = Some((
                        order,
                        NameMatch {
                            platform: index,
                            entry: entry.index,
                            action: platform.action,
                            pattern: pattern.clone(),
                        },
                    ));
                }
            }
        }
    }
    best.map(|(_, m)| m)
}

/// Compiles the patterns of every entry with `enforce: name` or `both`, whatever the action:
/// `monitor` names are counted and `allow` names are exceptions, exactly as for addresses.
pub fn compile_names(policy: &Policy) -> Result<BTreeMap<NameKey, NameRule>, CompileError> {
    let mut names: BTreeMap<NameKey, NameRule> = BTreeMap::new();
    for (index, platform) in policy.platforms.iter().enumerate() {
        let verdict = NameVerdict {
            platform: policy.platform_id(index),
            rank: Policy::platform_rank(index),
            action: platform.action.code(),
            present: 1,
            _pad: [0; 2],
        };
        let patterns = platform
            .entries
            .iter()
            .filter(|e| e.enforce.by_name())
            .flat_map(|e| &e.domains);
        for pattern in patterns {
            let (suffix, wildcard) = match pattern {
                DomainPattern::Exact(name) => (name, false),
                DomainPattern::Wildcard(name) => (name, true),
            };
            let rule = names.entry(name_key(suffix)).or_default();
            let side = if wildcard {
                &mut rule.wildcard
            } else {
                &mut rule.exact
            };
            if beats(&verdict, side) {
                *side = verdict;
            }
        }
    }
    if names.len() > MAX_NAMES as usize {
        return Err(CompileError::TooManyNames {
            count: names.len(),
            limit: MAX_NAMES,
        });
    }
    Ok(names)
}

/// The key of a name suffix (`zoom.us`, without `*.` or a final dot).
pub fn name_key(suffix: &str) -> NameKey {
    let labels = suffix.split('.').filter(|l| !l.is_empty());
    NameKey {
        hash: name_hash(&wire(suffix)),
        // The loader refuses patterns of more than MAX_PATTERN_LABELS labels.
        labels: u8::try_from(labels.count()).unwrap_or(u8::MAX),
        _pad: [0; 7],
    }
}

/// The DNS wire form of `name` without the final root label: each label as its length and its
/// bytes, lower-cased (`\x04zoom\x02us`).
pub fn wire(name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 1);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        // Labels are at most 63 bytes (checked by the loader).
        out.push(u8::try_from(label.len()).unwrap_or(u8::MAX));
        out.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
    }
    out
}

/// Whether `new` wins over `old`: the better action (allow, drop, monitor), then the platform
/// first in name order; anything beats an empty side.
fn beats(new: &NameVerdict, old: &NameVerdict) -> bool {
    if old.present == 0 {
        return true;
    }
    (action_precedence(new.action), std::cmp::Reverse(new.rank))
        > (action_precedence(old.action), std::cmp::Reverse(old.rank))
}

#[cfg(test)]
mod tests {
    use enforcer_common::{ACTION_ALLOW, ACTION_DROP, ACTION_MONITOR};

    use super::*;
    use crate::policy::policy_of;

    fn side(names: &BTreeMap<NameKey, NameRule>, suffix: &str, wildcard: bool) -> NameVerdict {
        let rule = names.get(&name_key(suffix)).copied().unwrap_or_default();
        if wildcard { rule.wildcard } else { rule.exact }
    }

    #[test]
    fn wire_form_is_length_prefixed_lower_case_without_the_root() {
        assert_eq!(wire("Meet.Google.com"), b"\x04meet\x06google\x03com");
        let key = name_key("meet.google.com");
        assert_eq!(key.labels, 3);
        assert_eq!(key.hash, name_hash(b"\x04meet\x06google\x03com"));
        assert_eq!(key._pad, [0; 7]);
    }

    #[test]
    fn exact_and_wildcard_patterns_fill_their_side_of_one_key() {
        let web = policy_of(&[
            "platform: web\nmatch:\n  - domains: [teams.microsoft.com, \"*.teams.microsoft.com\"]\n    enforce: name\n",
        ]);
        let names = compile_names(&web).unwrap();
        assert_eq!(super::super::compile(&web).unwrap().names, names);
        assert_eq!(names.len(), 1, "both patterns share the suffix's key");
        let key = name_key("teams.microsoft.com");
        assert_eq!(key.labels, 3);
        let exact = side(&names, "teams.microsoft.com", false);
        let wildcard = side(&names, "teams.microsoft.com", true);
        for verdict in [exact, wildcard] {
            assert_eq!(
                (
                    verdict.platform,
                    verdict.rank,
                    verdict.action,
                    verdict.present
                ),
                (1, 1, ACTION_DROP, 1)
            );
        }
    }

    #[test]
    fn only_entries_that_enforce_by_name_are_compiled() {
        let names = compile_names(&policy_of(&[
            "platform: p\nmatch:\n  - domains: [a.example]\n  - domains: [b.example]\n    enforce: name\n  \
             - domains: [c.example]\n    enforce: address\n  - prefixes: [198.18.0.0/16]\n",
        ]))
        .unwrap();
        assert_eq!(side(&names, "a.example", false).present, 1, "both");
        assert_eq!(side(&names, "b.example", false).present, 1, "name");
        assert!(!names.contains_key(&name_key("c.example")), "address");
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn allow_beats_drop_beats_monitor_then_name_order() {
        let names = compile_names(&policy_of(&[
            "platform: b-drop\nmatch:\n  - domains: [x.example, \"*.y.example\", z.example]\n",
            "platform: a-watch\naction: monitor\nmatch:\n  - domains: [x.example, z.example]\n",
            "platform: c-allow\naction: allow\nmatch:\n  - domains: [\"*.y.example\"]\n",
            "platform: d-drop\nmatch:\n  - domains: [z.example]\n",
            "platform: e-watch\naction: monitor\nmatch:\n  - domains: [w.example]\n",
            "platform: f-watch\naction: monitor\nmatch:\n  - domains: [w.example]\n",
        ]))
        .unwrap();
        // Ids follow name order here: a-watch 1, b-drop 2, c-allow 3, d-drop 4, ...
        let winner = |suffix, wildcard| {
            let v = side(&names, suffix, wildcard);
            (v.platform, v.action)
        };
        assert_eq!(winner("x.example", false), (2, ACTION_DROP));
        assert_eq!(winner("y.example", true), (3, ACTION_ALLOW));
        assert_eq!(winner("z.example", false), (2, ACTION_DROP), "b before d");
        assert_eq!(
            winner("w.example", false),
            (5, ACTION_MONITOR),
            "e before f"
        );
    }

    #[test]
    fn assigned_platform_ids_are_used_and_ranks_follow_name_order() {
        let mut p = policy_of(&[
            "platform: a\nmatch:\n  - domains: [x.example]\n",
            "platform: b\nmatch:\n  - domains: [x.example]\n",
        ]);
        p.platforms[0].id = 40;
        p.platforms[1].id = 7;
        let v = side(&compile_names(&p).unwrap(), "x.example", false);
        assert_eq!(
            (v.platform, v.rank),
            (40, 1),
            "a wins the tie by name order"
        );
    }

    #[test]
    fn a_query_gets_the_best_action_then_the_most_labels_then_name_order() {
        let p = policy_of(&[
            "platform: a-watch\naction: monitor\nmatch:\n  - domains: [\"*.x.t.test\"]\n",
            "platform: b-web\nmatch:\n  - domains: [\"*.t.test\"]\n  \
             - domains: [\"*.deep.x.t.test\"]\n    enforce: name\n  \
             - domains: [addr.t.test]\n    enforce: address\n",
            "platform: c-keep\naction: allow\nmatch:\n  - domains: [ok.x.t.test]\n",
            "platform: d-web\nmatch:\n  - domains: [\"*.deep.x.t.test\"]\n",
        ]);
        let verdict = |name: &str| {
            name_verdict(&p, name).map(|m| {
                (
                    p.platforms[m.platform].name.clone(),
                    m.entry,
                    m.action,
                    m.pattern.to_string(),
                )
            })
        };
        let drop = |platform: &str, entry, pattern: &str| {
            Some((platform.to_owned(), entry, Action::Drop, pattern.to_owned()))
        };
        assert_eq!(
            verdict("Host.X.T.Test."),
            drop("b-web", 0, "*.t.test"),
            "drop beats monitor"
        );
        assert_eq!(
            verdict("ok.x.t.test"),
            Some((
                "c-keep".to_owned(),
                0,
                Action::Allow,
                "ok.x.t.test".to_owned()
            )),
            "an allow name under a banned wildcard"
        );
        assert_eq!(
            verdict("a.deep.x.t.test"),
            drop("b-web", 1, "*.deep.x.t.test"),
            "most labels, then name order"
        );
        assert_eq!(
            verdict("addr.t.test"),
            drop("b-web", 0, "*.t.test"),
            "an address entry takes no part"
        );
        assert_eq!(verdict("t.test"), None);
        assert_eq!(verdict("x.t.test"), drop("b-web", 0, "*.t.test"));
        assert_eq!(
            verdict("nott.test"),
            None,
            "a suffix of the text is not a parent"
        );
        assert_eq!(verdict("other.test"), None);
    }

    #[test]
    fn more_names_than_the_table_holds_is_an_error() {
        let mut text = String::from("platform: big\nmatch:\n  - domains: [");
        for i in 0..=MAX_NAMES {
            text.push_str(&format!("n{i}.example, "));
        }
        text.push_str("last.example]\n");
        let err = compile_names(&policy_of(&[&text])).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{} name patterns exceed the datapath's name table of {MAX_NAMES}",
                MAX_NAMES + 2
            )
        );
    }
}
