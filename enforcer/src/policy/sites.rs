//! Sites: the named client prefixes behind the gateway (ministries, agencies, buildings), from
//! `sites:` in the config file or a `--sites` file. Counters say which site a matched packet's
//! client is in, and a platform may stage its action per site (`action-by-site`).
//!
//! Site prefixes are client addresses, usually private ones, so the never-block list does not
//! apply to them; they may not overlap between sites, so a client is in one site at most.

use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;

use super::yaml::{self, Node, Value};
use super::{Diagnostic, Location, PolicyError, values};

/// The site of clients outside every site.
pub const OTHER_SITE: &str = "other";

/// One site: its name, its id in the datapath's counters, and its client prefixes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Site {
    pub name: String,
    /// `site_id(name)`: the same for the same name across reloads and restarts.
    pub id: u32,
    pub prefixes: Vec<IpNet>,
    pub location: Location,
}

/// Every site, in name order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sites {
    pub sites: Vec<Site>,
}

/// The datapath id of a site name: FNV-1a, never 0 (`SITE_OTHER`). Two names of one
/// configuration with the same id are refused when it is read.
pub fn site_id(name: &str) -> u32 {
    let hash = name.bytes().fold(0x811C_9DC5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    if hash == enforcer_common::SITE_OTHER {
        1
    } else {
        hash
    }
}

impl Sites {
    /// The site a client address is in.
    pub fn site_of(&self, ip: IpAddr) -> Option<&Site> {
        self.sites
            .iter()
            .find(|s| s.prefixes.iter().any(|p| p.contains(&ip)))
    }

    pub fn get(&self, name: &str) -> Option<&Site> {
        self.sites.iter().find(|s| s.name == name)
    }

    /// The name of a site id (`other` for 0), if it is one of these sites.
    pub fn name_of(&self, id: u32) -> Option<&str> {
        if id == enforcer_common::SITE_OTHER {
            return Some(OTHER_SITE);
        }
        self.sites
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.name.as_str())
    }

    /// Every site name, `other` last.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.sites
            .iter()
            .map(|s| s.name.as_str())
            .chain(std::iter::once(OTHER_SITE))
    }

    /// Every `action-by-site` of `policy` that names no configured site.
    pub fn check_policy(&self, policy: &super::Policy) -> Vec<Diagnostic> {
        let known = || {
            let names: Vec<&str> = self.sites.iter().map(|s| s.name.as_str()).collect();
            if names.is_empty() {
                "no sites are configured (`sites:` in the config file, or --sites)".to_owned()
            } else {
                format!("configured sites: {}", names.join(", "))
            }
        };
        policy
            .platforms
            .iter()
            .flat_map(|p| &p.action_by_site)
            .filter(|a| self.get(&a.site).is_none())
            .map(|a| Diagnostic {
                location: a.location.clone(),
                message: format!("unknown site `{}` ({})", a.site, known()),
            })
            .collect()
    }

    /// Reads a `--sites` file: a mapping of site names to lists of prefixes.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text).map_err(PolicyError::Invalid)
    }

    /// Sites from the text of a sites file (`path` names it in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Self, Vec<Diagnostic>> {
        let at = |line, column, message: String| Diagnostic {
            location: Location {
                path: path.to_path_buf(),
                line,
                column,
            },
            message,
        };
        let docs = yaml::parse(text).map_err(|e| vec![at(e.pos.line, e.pos.column, e.message)])?;
        match docs.first() {
            None => Ok(Self::default()),
            Some(doc) if doc.root.is_null() => Ok(Self::default()),
            Some(doc) => Self::from_node(path, &doc.root),
        }
    }

    /// Sites from a YAML mapping `NAME: [CIDR, ...]` read from `path` (a sites file, or the
    /// `sites:` value of a config file). Every problem is reported, at its key or value.
    pub fn from_node(path: &Path, node: &Node) -> Result<Self, Vec<Diagnostic>> {
        let mut problems = Vec::new();
        let location = |pos: yaml::Pos| Location {
            path: path.to_path_buf(),
            line: pos.line,
            column: pos.column,
        };
        let mut problem = |pos: yaml::Pos, message: String| {
            problems.push(Diagnostic {
                location: location(pos),
                message,
            });
        };
        let Value::Map(pairs) = &node.value else {
            problem(
                node.pos,
                format!(
                    "expected sites (a mapping of site names to lists of client prefixes), found {}",
                    node.kind()
                ),
            );
            return Err(problems);
        };
        let mut sites: Vec<Site> = Vec::new();
        // (prefix, its site, where it was written), to find overlaps between sites.
        let mut written: Vec<(IpNet, String, yaml::Pos)> = Vec::new();
        for (key, value) in pairs {
            let Some(name) = key.as_str() else {
                problem(
                    key.pos,
                    format!("expected a site name, found {}", key.kind()),
                );
                continue;
            };
            let name = match values::parse_platform_name(name) {
                Ok(_) if name == OTHER_SITE => {
                    problem(
                        key.pos,
                        format!(
                            "`{OTHER_SITE}` is the site of clients outside every site; choose \
                             another name"
                        ),
                    );
                    continue;
                }
                Ok(name) => name.to_owned(),
                Err(message) => {
                    problem(key.pos, message.replace("platform", "site"));
                    continue;
                }
            };
            if let Some(first) = sites.iter().find(|s| s.name == name) {
                problem(
                    key.pos,
                    format!("duplicate site `{name}` (first at {})", first.location),
                );
                continue;
            }
            let id = site_id(&name);
            if let Some(other) = sites.iter().find(|s| s.id == id) {
                problem(
                    key.pos,
                    format!(
                        "site `{name}` has the same datapath id as site `{}`; rename one",
                        other.name
                    ),
                );
                continue;
            }
            let items: Vec<&Node> = match &value.value {
                Value::Seq(items) => items.iter().collect(),
                _ if value.as_str().is_some() => vec![value],
                _ => {
                    problem(
                        if value.is_null() { key.pos } else { value.pos },
                        format!("site `{name}`: expected a list of client prefixes"),
                    );
                    continue;
                }
            };
            if items.is_empty() {
                problem(
                    value.pos,
                    format!("site `{name}` has no prefixes; give it at least one"),
                );
            }
            let mut prefixes = Vec::new();
            for item in items {
                let Some(text) = item.as_str() else {
                    problem(
                        item.pos,
                        format!("expected a prefix (CIDR), found {}", item.kind()),
                    );
                    continue;
                };
                match values::parse_prefix(text) {
                    Ok(net) => {
                        if let Some((other, other_site, at)) = written
                            .iter()
                            .find(|(p, s, _)| *s != name && (p.contains(&net) || net.contains(p)))
                        {
                            problem(
                                item.pos,
                                format!(
                                    "{net} of site `{name}` overlaps {other} of site \
                                     `{other_site}` (at line {}, column {}): a client belongs \
                                     to one site",
                                    at.line, at.column
                                ),
                            );
                        } else {
                            written.push((net, name.clone(), item.pos));
                            prefixes.push(net);
                        }
                    }
                    Err(message) => problem(item.pos, message),
                }
            }
            sites.push(Site {
                name,
                id,
                prefixes,
                location: location(key.pos),
            });
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        sites.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Self { sites })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Sites, Vec<String>> {
        Sites::parse(Path::new("sites.yaml"), text)
            .map_err(|d| d.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn sites_are_read_in_name_order_and_find_their_clients() {
        let sites =
            parse("ministry-b: [10.2.0.0/16, \"fd00:b::/48\"]\nministry-a:\n  - 10.1.0.0/16\n")
                .unwrap();
        let names: Vec<&str> = sites.names().collect();
        assert_eq!(names, ["ministry-a", "ministry-b", "other"]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(sites.site_of(ip("10.1.2.3")).unwrap().name, "ministry-a");
        assert_eq!(sites.site_of(ip("fd00:b::9")).unwrap().name, "ministry-b");
        assert!(sites.site_of(ip("10.3.0.1")).is_none());
        let a = sites.get("ministry-a").unwrap();
        assert_eq!(sites.name_of(a.id), Some("ministry-a"));
        assert_eq!(sites.name_of(0), Some("other"));
        assert_ne!(a.id, sites.get("ministry-b").unwrap().id);
    }

    #[test]
    fn every_problem_is_reported_where_it_was_written() {
        let problems = parse(
            "a: [10.1.0.0/16]\nb: [10.1.2.0/24, 10.9.0.0/33]\nOther: [10.3.0.0/16]\nother: [10.4.0.0/16]\na: [10.5.0.0/16]\nc:\n",
        )
        .unwrap_err();
        assert_eq!(problems.len(), 6, "{problems:#?}");
        assert!(
            problems[0].starts_with(
                "sites.yaml:2:5: 10.1.2.0/24 of site `b` overlaps 10.1.0.0/16 of site `a`"
            ),
            "{}",
            problems[0]
        );
        assert!(
            problems[1].starts_with("sites.yaml:2:18: "),
            "{}",
            problems[1]
        );
        assert!(
            problems[2].starts_with("sites.yaml:3:1: invalid site name `Other`"),
            "{}",
            problems[2]
        );
        assert!(
            problems[3].starts_with("sites.yaml:4:1: `other` is the site of clients"),
            "{}",
            problems[3]
        );
        assert!(
            problems[4].starts_with("sites.yaml:5:1: duplicate site `a`"),
            "{}",
            problems[4]
        );
        assert!(
            problems[5].starts_with("sites.yaml:6:1: site `c`: expected a list"),
            "{}",
            problems[5]
        );
    }

    #[test]
    fn site_ids_are_stable_and_never_other() {
        assert_eq!(site_id("ministry-a"), site_id("ministry-a"));
        assert_ne!(site_id("ministry-a"), site_id("ministry-b"));
        assert_ne!(site_id(""), enforcer_common::SITE_OTHER);
    }
}
