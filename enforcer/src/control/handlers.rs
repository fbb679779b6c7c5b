//! What the daemon answers on the control socket: each request goes to the daemon's method for
//! it, and its typed reply (docs/reference.md, "JSON outputs") or its errors go back.

use ipnet::IpNet;

use super::protocol::PolicyChange;
use super::{Request, Response};
use crate::daemon::Daemon;
use crate::history::Source;
use crate::policy::managed::Addition;
use crate::policy::{self, DomainPattern};

/// Answers one request from `user` (the connection's peer, for the policy history). Runs on a
/// blocking thread: a reload may compile a large policy.
pub fn handle(daemon: &Daemon, request: Request, user: &str) -> Response {
    // A gateway following a bundle repository takes its policy from there only.
    let local_edit = match &request {
        Request::RulesAdd { .. } | Request::RulesRemove { .. } => Some("changing the rules"),
        Request::Rollback { .. } => Some("rollback"),
        Request::Reload { source: Some(_) } => Some("a feeds reload"),
        _ => None,
    };
    if let Some(what) = local_edit
        && let Some(refusal) = daemon.bundle_refusal(what)
    {
        return Response::failure(refusal);
    }
    match request {
        Request::Status => Response::from_result(daemon.with(|s| {
            s.status()
                .map_err(|e| vec![format!("reading the counters: {e}")])
        })),
        Request::Reload { source } => match source.as_deref() {
            None if daemon.bundle_refusal("reload").is_some() => {
                Response::from_result(daemon.reapply_bundle(user))
            }
            None => Response::from_result(daemon.reload("reload requested", Source::Reload, user)),

            Some("feeds") => {
                Response::from_result(daemon.reload("feeds update", Source::Feeds, user))
            }
            Some(other) => Response::failure(vec![format!(
                "unknown reload source `{other}` (expected feeds, or none)"
            )]),
        },
        Request::Explain {
            target,
            site,
            client,
        } => Response::from_result(daemon.with(|s| s.explain_for(&target, site, client))),
        Request::RulesList => Response::from_result(daemon.with(|s| Ok(s.rules_list()))),
        Request::RulesAdd {
            platform,
            domains,
            prefixes,
            action,
            enforce,
        } => Response::from_result(rules_add(
            daemon,
            &platform,
            &domains,
            &prefixes,
            action.as_deref(),
            enforce.as_deref(),
            user,
        )),
        Request::RulesRemove {
            platform,
            domains,
            prefixes,
        } => Response::from_result(rules_remove(daemon, &platform, &domains, &prefixes, user)),
        Request::Collateral => Response::from_result(daemon.with(|s| Ok(s.collateral_reply()))),
        Request::Plan { path } => Response::from_result(plan(daemon, &path)),
        Request::History => Response::from_result(daemon.history()),
        Request::Rollback { to } => Response::from_result(daemon.rollback(to.as_deref(), user)),
        Request::Top => Response::from_result(daemon.with(|s| {
            s.top()
                .map_err(|e| vec![format!("reading the counters: {e}")])
        })),
    }
}

/// Reads the candidate policy as a reload would (without holding the state), then asks the
/// state what it would change. Nothing is applied.
fn plan(daemon: &Daemon, path: &str) -> Result<super::protocol::PlanReply, Vec<String>> {
    let (_, options) = daemon.with(|s| Ok(s.reload_source()))?;
    let candidate = crate::daemon::read_policy(&[std::path::PathBuf::from(path)], &options)
        .map_err(|e| e.to_string().lines().map(str::to_owned).collect::<Vec<_>>())?;
    daemon.with(|s| {
        let unknown = s.sites().check_policy(&candidate);
        if !unknown.is_empty() {
            return Err(unknown.iter().map(ToString::to_string).collect());
        }
        Ok(s.plan(&candidate))
    })
}

/// Parses the CLI's domains and prefixes with the rule files' vocabulary, so that `rules add`
/// refuses exactly what the loader would; every bad one is reported, naming its flag.
fn parse_items(
    domains: &[String],
    prefixes: &[String],
) -> Result<(Vec<DomainPattern>, Vec<IpNet>), Vec<String>> {
    let mut errors = Vec::new();
    let domains = parse_all("--domain", domains, policy::parse_domain, &mut errors);
    let prefixes = parse_all("--prefix", prefixes, policy::parse_prefix, &mut errors);
    if errors.is_empty() {
        Ok((domains, prefixes))
    } else {
        Err(errors)
    }
}

/// Every text `parse` accepts; an error for each it refuses, naming `flag`.
fn parse_all<T>(
    flag: &str,
    texts: &[String],
    parse: fn(&str) -> Result<T, String>,
    errors: &mut Vec<String>,
) -> Vec<T> {
    texts
        .iter()
        .filter_map(|text| {
            parse(text)
                .map_err(|message| errors.push(format!("{flag}: {message}")))
                .ok()
        })
        .collect()
}

fn rules_add(
    daemon: &Daemon,
    platform: &str,
    domains: &[String],
    prefixes: &[String],
    action: Option<&str>,
    enforce: Option<&str>,
    user: &str,
) -> Result<PolicyChange, Vec<String>> {
    let (domains, prefixes) = parse_items(domains, prefixes)?;
    let action = action
        .map(policy::parse_action)
        .transpose()
        .map_err(|message| vec![format!("--action: {message}")])?;
    let enforce = enforce
        .map(policy::parse_enforce)
        .transpose()
        .map_err(|message| vec![format!("--enforce: {message}")])?;
    daemon.rules_add(
        platform,
        action,
        Addition {
            domains,
            prefixes,
            enforce,
        },
        user,
    )
}

fn rules_remove(
    daemon: &Daemon,
    platform: &str,
    domains: &[String],
    prefixes: &[String],
    user: &str,
) -> Result<PolicyChange, Vec<String>> {
    let (domains, prefixes) = parse_items(domains, prefixes)?;
    daemon.rules_remove(platform, &domains, &prefixes, user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_items_are_parsed_like_rule_files() {
        // A rule file refuses `_` in a domain: `rules add` must refuse it too, naming the flag,
        // rather than write it into the managed file for the loader to reject there.
        assert_eq!(
            parse_items(&["a_b.example.com".into()], &[]).unwrap_err(),
            vec![
                "--domain: invalid domain `a_b.example.com`: character `_` is not allowed \
                 (only letters, digits and `-`)"
            ]
        );
        // Every bad item is reported, each with the rule files' words.
        assert_eq!(
            parse_items(&["*.com".into()], &["10.0.0.1/8".into(), "zoom".into()]).unwrap_err(),
            vec![
                "--domain: invalid domain `*.com`: a wildcard must cover a domain of at least two \
                 labels, like `*.example.com`, not a whole top-level domain",
                "--prefix: prefix `10.0.0.1/8` has host bits set; did you mean `10.0.0.0/8`?",
                "--prefix: invalid prefix `zoom`: expected an address or a CIDR like \
                 192.0.2.0/24 or 2001:db8::/32",
            ]
        );
        let (domains, prefixes) = parse_items(
            &["Zoom.US.".into(), "*.zoom.us".into()],
            &["198.51.100.7".into()],
        )
        .unwrap();
        assert_eq!(
            domains,
            vec![
                DomainPattern::Exact("zoom.us".into()),
                DomainPattern::Wildcard("zoom.us".into())
            ]
        );
        assert_eq!(prefixes, vec!["198.51.100.7/32".parse::<IpNet>().unwrap()]);
    }
}
