//! The managed file (`enforcer-managed.yaml`) that `enforcer rules add|remove` maintains: its
//! model, the two edits, and its text. Every edit is validated against the whole policy by the
//! caller before the file is written.

use std::fmt::Write as _;

use ipnet::IpNet;

use super::{Action, DomainPattern, Enforce, Entry, Platform, PortRange, Protocol};

/// One platform of the managed file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagedPlatform {
    pub name: String,
    /// Written only when given (a platform that extends another file takes that file's action).
    pub action: Option<Action>,
    pub entries: Vec<ManagedEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagedEntry {
    pub domains: Vec<DomainPattern>,
    pub prefixes: Vec<IpNet>,
    pub protocol: Protocol,
    pub ports: Vec<PortRange>,
    /// How `domains` are enforced; written only when the entry has domains and it is not the
    /// default.
    pub enforce: Enforce,
}

impl From<&Entry> for ManagedEntry {
    fn from(entry: &Entry) -> Self {
        Self {
            domains: entry.domains.clone(),
            prefixes: entry.prefixes.clone(),
            protocol: entry.protocol,
            ports: entry.ports.clone(),
            enforce: entry.enforce,
        }
    }
}

/// The managed file's platforms as read by [`super::read_managed`].
pub fn from_parsed(parsed: Vec<(Platform, bool)>) -> Vec<ManagedPlatform> {
    parsed
        .into_iter()
        .map(|(p, action_written)| ManagedPlatform {
            action: action_written.then_some(p.action),
            entries: p.entries.iter().map(ManagedEntry::from).collect(),
            name: p.name,
        })
        .collect()
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManagedError {
    #[error("{0}")]
    InvalidPlatform(String),
    #[error("give at least one --domain or --prefix")]
    NothingGiven,
    #[error("--enforce says how domains are blocked: give at least one --domain with it")]
    EnforceWithoutDomains,
    #[error("platform `{0}` has no rules added with `enforcer rules add`")]
    UnknownPlatform(String),
    #[error("`{item}` was not added to platform `{platform}` with `enforcer rules add`")]
    NotManaged { platform: String, item: String },
}

/// What `rules add` adds: domains (enforced as `enforce` says, default both) and prefixes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Addition {
    pub domains: Vec<DomainPattern>,
    pub prefixes: Vec<IpNet>,
    pub enforce: Option<Enforce>,
}

/// Adds one entry of `items` (every protocol and port) to `platform`, whose name must be one
/// the loader accepts: it is written into the file as it is.
pub fn add(
    platforms: &mut Vec<ManagedPlatform>,
    platform: &str,
    action: Option<Action>,
    items: Addition,
) -> Result<(), ManagedError> {
    super::parse_platform_name(platform).map_err(ManagedError::InvalidPlatform)?;
    if items.domains.is_empty() && items.prefixes.is_empty() {
        return Err(ManagedError::NothingGiven);
    }
    if items.domains.is_empty() && items.enforce.is_some() {
        return Err(ManagedError::EnforceWithoutDomains);
    }
    let entry = ManagedEntry {
        domains: items.domains,
        prefixes: items.prefixes,
        protocol: Protocol::Any,
        ports: Vec::new(),
        enforce: items.enforce.unwrap_or_default(),
    };
    match platforms.iter_mut().find(|p| p.name == platform) {
        Some(existing) => {
            if action.is_some() {
                existing.action = action;
            }
            existing.entries.push(entry);
        }
        None => platforms.push(ManagedPlatform {
            name: platform.to_owned(),
            action,
            entries: vec![entry],
        }),
    }
    Ok(())
}

/// Removes the given domains and prefixes from `platform`'s managed entries (all of its
/// managed entries when both lists are empty). Entries and platforms left empty go.
pub fn remove(
    platforms: &mut Vec<ManagedPlatform>,
    platform: &str,
    domains: &[DomainPattern],
    prefixes: &[IpNet],
) -> Result<(), ManagedError> {
    let index = platforms
        .iter()
        .position(|p| p.name == platform)
        .ok_or_else(|| ManagedError::UnknownPlatform(platform.to_owned()))?;
    if domains.is_empty() && prefixes.is_empty() {
        platforms.remove(index);
        return Ok(());
    }
    let managed = &mut platforms[index];
    let not_managed = |item: String| ManagedError::NotManaged {
        platform: platform.to_owned(),
        item,
    };
    for domain in domains {
        if !managed.entries.iter().any(|e| e.domains.contains(domain)) {
            return Err(not_managed(domain.to_string()));
        }
    }
    for prefix in prefixes {
        if !managed.entries.iter().any(|e| e.prefixes.contains(prefix)) {
            return Err(not_managed(prefix.to_string()));
        }
    }
    for entry in &mut managed.entries {
        entry.domains.retain(|d| !domains.contains(d));
        entry.prefixes.retain(|p| !prefixes.contains(p));
    }
    managed
        .entries
        .retain(|e| !e.domains.is_empty() || !e.prefixes.is_empty());
    if managed.entries.is_empty() {
        platforms.remove(index);
    }
    Ok(())
}

/// The file's text: one YAML document per platform.
pub fn render(platforms: &[ManagedPlatform]) -> String {
    let mut out =
        String::from("# Written by `enforcer rules add|remove`: change it with those commands.\n");
    for (i, platform) in platforms.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        // Quoted: a name like `null` is a valid platform name but a YAML null when plain.
        let _ = writeln!(out, "platform: \"{}\"", platform.name);
        if let Some(action) = platform.action {
            let _ = writeln!(out, "action: {action}");
        }
        out.push_str("match:\n");
        for entry in &platform.entries {
            let mut first = true;
            let mut key = |out: &mut String, text: String| {
                out.push_str(if first { "  - " } else { "    " });
                first = false;
                out.push_str(&text);
                out.push('\n');
            };
            if !entry.domains.is_empty() {
                key(&mut out, format!("domains: [{}]", quoted(&entry.domains)));
            }
            if !entry.prefixes.is_empty() {
                key(&mut out, format!("prefixes: [{}]", quoted(&entry.prefixes)));
            }
            if entry.protocol != Protocol::Any {
                key(&mut out, format!("protocol: {}", entry.protocol.as_str()));
            }
            if !entry.ports.is_empty() {
                key(&mut out, format!("ports: [{}]", quoted(&entry.ports)));
            }
            if !entry.domains.is_empty() && entry.enforce != Enforce::default() {
                key(&mut out, format!("enforce: {}", entry.enforce));
            }
        }
    }
    out
}

fn quoted<T: ToString>(items: &[T]) -> String {
    items
        .iter()
        .map(|i| format!("\"{}\"", i.to_string()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::policy::read_managed;

    fn domains(names: &[&str]) -> Addition {
        Addition {
            domains: names.iter().map(|d| domain(d)).collect(),
            ..Addition::default()
        }
    }

    fn domain(d: &str) -> DomainPattern {
        match d.strip_prefix("*.") {
            Some(rest) => DomainPattern::Wildcard(rest.to_owned()),
            None => DomainPattern::Exact(d.to_owned()),
        }
    }

    /// Found by the control_request fuzz target (fuzz/corpus/control_request/
    /// platform_comment): the name is written unquoted, so `e #x` was read back as platform `e`
    /// and a newline could add keys. A name the loader refuses is refused before writing.
    #[test]
    fn a_platform_name_the_loader_refuses_is_not_written() {
        for name in ["e #x", "zoom\naction: allow", "Zoom", "", "-x", "a b"] {
            let mut platforms = Vec::new();
            let result = add(&mut platforms, name, None, domains(&["zoom.us"]));
            assert_eq!(
                result,
                Err(ManagedError::InvalidPlatform(format!(
                    "invalid platform name `{name}`: use lower-case letters, digits and `-`, \
                     starting with a letter or digit"
                ))),
                "{name:?}"
            );
            assert!(platforms.is_empty(), "{name:?}");
        }
        // Every name it takes is read back as written.
        for name in ["e", "zoom-2", "0x"] {
            let mut platforms = Vec::new();
            add(&mut platforms, name, None, domains(&["zoom.us"])).unwrap();
            let text = render(&platforms);
            let back = from_parsed(read_managed(Path::new("m.yaml"), &text).unwrap());
            assert_eq!(back, platforms, "{text}");
        }
    }

    /// Found by the control_request fuzz target (fuzz/corpus/control_request/platform_null):
    /// `null` is a valid platform name, but written plain it read back as no name at all.
    #[test]
    fn a_platform_named_like_a_yaml_null_reads_back() {
        for name in ["null", "~", "true", "1"] {
            let mut platforms = Vec::new();
            if add(&mut platforms, name, None, domains(&["zoom.us"])).is_err() {
                continue;
            }
            let text = render(&platforms);
            let back = from_parsed(read_managed(Path::new("m.yaml"), &text).unwrap());
            assert_eq!(back, platforms, "{text}");
        }
    }

    /// Found while changing the control_request fuzz target: the file is read back as written
    /// (a name under a shared suffix too); the whole policy check refuses such a name later,
    /// naming its place in the file.
    #[test]
    fn a_shared_name_reads_back_and_is_refused_by_the_policy_check() {
        let mut platforms = Vec::new();
        add(&mut platforms, "cdn", None, domains(&["d1.cloudfront.net"])).unwrap();
        let text = render(&platforms);
        let back = from_parsed(read_managed(Path::new("m.yaml"), &text).unwrap());
        assert_eq!(back, platforms, "{text}");
        let err = crate::policy::parse_policy_str(
            Path::new("m.yaml"),
            &text,
            &crate::policy::LoadOptions::default(),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("shared suffix `cloudfront.net`"),
            "{err}"
        );
    }

    #[test]
    fn add_render_read_back_and_remove() {
        let mut platforms = Vec::new();
        add(
            &mut platforms,
            "zoom",
            None,
            Addition {
                domains: vec![domain("zoom.us"), domain("*.zoom.us")],
                prefixes: vec!["198.18.5.0/24".parse().unwrap()],
                enforce: None,
            },
        )
        .unwrap();
        add(
            &mut platforms,
            "extra",
            Some(Action::Monitor),
            Addition {
                prefixes: vec!["2001:db8:5::/48".parse().unwrap()],
                ..Addition::default()
            },
        )
        .unwrap();
        add(
            &mut platforms,
            "web",
            None,
            Addition {
                domains: vec![domain("meet.google.com")],
                enforce: Some(Enforce::Name),
                ..Addition::default()
            },
        )
        .unwrap();
        let text = render(&platforms);
        assert!(text.contains("enforce: name"), "{text}");
        assert_eq!(
            text.matches("enforce:").count(),
            1,
            "the default is not written"
        );
        let back = from_parsed(read_managed(Path::new("m.yaml"), &text).unwrap());
        assert_eq!(back, platforms, "{text}");
        assert_eq!(back[2].entries[0].enforce, Enforce::Name);
        remove(&mut platforms, "web", &[], &[]).unwrap();

        remove(&mut platforms, "zoom", &[domain("*.zoom.us")], &[]).unwrap();
        assert_eq!(platforms[0].entries[0].domains, vec![domain("zoom.us")]);
        assert_eq!(
            remove(
                &mut platforms,
                "zoom",
                &[domain("teams.microsoft.com")],
                &[]
            ),
            Err(ManagedError::NotManaged {
                platform: "zoom".into(),
                item: "teams.microsoft.com".into()
            })
        );
        remove(
            &mut platforms,
            "zoom",
            &[domain("zoom.us")],
            &["198.18.5.0/24".parse().unwrap()],
        )
        .unwrap();
        assert_eq!(platforms.len(), 1, "an emptied platform goes");
        remove(&mut platforms, "extra", &[], &[]).unwrap();
        assert!(platforms.is_empty());
        assert_eq!(
            from_parsed(read_managed(Path::new("m.yaml"), &render(&platforms)).unwrap()),
            vec![]
        );
        assert_eq!(
            add(&mut platforms, "x", None, Addition::default()),
            Err(ManagedError::NothingGiven)
        );
        assert_eq!(
            add(
                &mut platforms,
                "x",
                None,
                Addition {
                    prefixes: vec!["198.18.5.0/24".parse().unwrap()],
                    enforce: Some(Enforce::Name),
                    ..Addition::default()
                }
            ),
            Err(ManagedError::EnforceWithoutDomains)
        );
    }
}
