//! Lasting datapath ids for platforms. Packet counters are keyed by platform id in the pinned
//! maps, so a platform must keep its id when others are added or removed (and across restarts),
//! or Prometheus would see its counters jump to another platform's.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use enforcer_common::MAX_PLATFORMS;

use crate::policy::Policy;

/// The file in `--state-dir` that keeps the ids.
pub const IDS_FILE: &str = "platform-ids.json";

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlatformIds {
    ids: BTreeMap<String, u16>,
}

#[derive(Debug, thiserror::Error)]
pub enum IdsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a platform id file: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("more than {} platforms", MAX_PLATFORMS - 1)]
    Full,
}

impl PlatformIds {
    /// Gives every platform of `policy` its lasting id (new names get one never used, or, when
    /// all are taken, one of a name that neither `policy` nor `running` has). Returns the ids
    /// handed over from such names: their counters must be cleared before use.
    pub fn assign(&mut self, policy: &mut Policy, running: &Policy) -> Result<Vec<u16>, IdsError> {
        let needed: BTreeSet<String> = policy
            .platforms
            .iter()
            .chain(&running.platforms)
            .map(|p| p.name.clone())
            .collect();
        let mut reused = Vec::new();
        for platform in &mut policy.platforms {
            if let Some(&id) = self.ids.get(&platform.name) {
                platform.id = id;
                continue;
            }
            let taken: BTreeSet<u16> = self.ids.values().copied().collect();
            let last = u16::try_from(MAX_PLATFORMS).unwrap_or(u16::MAX);
            let id = match (1..last).find(|id| !taken.contains(id)) {
                Some(id) => id,
                None => {
                    let (name, id) = self
                        .ids
                        .iter()
                        .find(|(name, _)| !needed.contains(*name))
                        .map(|(n, id)| (n.clone(), *id))
                        .ok_or(IdsError::Full)?;
                    self.ids.remove(&name);
                    reused.push(id);
                    id
                }
            };
            self.ids.insert(platform.name.clone(), id);
            platform.id = id;
        }
        Ok(reused)
    }

    /// Reads the ids from `dir` (none when the file is missing). Each one is checked on its own:
    /// an id outside 1..MAX_PLATFORMS, or one already given to another name, is left out with a
    /// message, and its platform gets a new id from `assign`.
    pub fn load(dir: &Path) -> Result<(Self, Vec<String>), IdsError> {
        let path = dir.join(IDS_FILE);
        let raw: BTreeMap<String, serde_json::Value> = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| IdsError::Corrupt {
                path: path.clone(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((Self::default(), Vec::new()));
            }
            Err(source) => return Err(IdsError::Io { path, source }),
        };
        let mut ids = Self::default();
        let mut taken = BTreeSet::new();
        let mut problems = Vec::new();
        for (name, value) in raw {
            let id = value
                .as_u64()
                .and_then(|id| u16::try_from(id).ok())
                .filter(|&id| id >= 1 && u32::from(id) < MAX_PLATFORMS);
            match id {
                Some(id) if taken.insert(id) => {
                    ids.ids.insert(name, id);
                }
                Some(id) => problems.push(format!(
                    "{}: {name}: id {id} is already another platform's; a new one is given",
                    path.display()
                )),
                None => problems.push(format!(
                    "{}: {name}: {value} is not a platform id (1 to {}); a new one is given",
                    path.display(),
                    MAX_PLATFORMS - 1
                )),
            }
        }
        Ok((ids, problems))
    }

    /// Writes the ids through a temporary file and a rename.
    pub fn save(&self, dir: &Path) -> Result<(), IdsError> {
        let path = dir.join(IDS_FILE);
        let io = |source| IdsError::Io {
            path: path.clone(),
            source,
        };
        let json = serde_json::to_vec(&self.ids).map_err(|source| IdsError::Corrupt {
            path: path.clone(),
            source,
        })?;
        crate::fsutil::write_atomically(&path, &json).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::policy::{LoadOptions, parse_policy_str};

    fn policy(names: &[&str]) -> Policy {
        let mut policy = Policy::default();
        for name in names {
            let one = parse_policy_str(
                Path::new("p.yaml"),
                &format!("platform: {name}\nmatch:\n  - prefixes: [198.18.0.0/24]\n"),
                &LoadOptions::default(),
            )
            .unwrap();
            policy.platforms.extend(one.platforms);
        }
        policy.platforms.sort_by(|a, b| a.name.cmp(&b.name));
        policy
    }

    #[test]
    fn ids_last_when_platforms_come_and_go() {
        let mut ids = PlatformIds::default();
        let mut first = policy(&["teams", "zoom"]);
        assert!(
            ids.assign(&mut first, &Policy::default())
                .unwrap()
                .is_empty()
        );
        let zoom = first.platforms[1].id;
        // A platform that sorts before zoom: zoom keeps its id (its position changed).
        let mut second = policy(&["aaa", "teams", "zoom"]);
        ids.assign(&mut second, &first).unwrap();
        assert_eq!(second.platforms[2].name, "zoom");
        assert_eq!(second.platforms[2].id, zoom);
        assert_eq!(second.platform_id(2), zoom);
        let new = second.platforms[0].id;
        assert!(new != zoom && new != first.platforms[0].id);

        let dir = std::env::temp_dir().join(format!("ids-{}", std::process::id()));
        ids.save(&dir).unwrap();
        assert_eq!(PlatformIds::load(&dir).unwrap(), (ids, Vec::new()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// An id the datapath has no counters for (65535), 0, a repeated id and a non-number are
    /// each reported and replaced; the valid ids stay.
    #[test]
    fn ids_outside_the_datapath_range_are_replaced() {
        let dir = std::env::temp_dir().join(format!("ids-range-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(IDS_FILE),
            r#"{"aaa": 5, "meet": 0, "teams": 2, "webex": 5, "x": "1", "zoom": 65535}"#,
        )
        .unwrap();
        let (mut ids, problems) = PlatformIds::load(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(
            problems.iter().any(|p| p.contains("zoom: 65535")),
            "{problems:?}"
        );
        assert!(problems[0].contains(IDS_FILE), "{problems:?}");
        let mut p = policy(&["aaa", "meet", "teams", "webex", "zoom"]);
        ids.assign(&mut p, &Policy::default()).unwrap();
        let got: Vec<u16> = p.platforms.iter().map(|p| p.id).collect();
        assert_eq!(got[0], 5);
        assert_eq!(got[2], 2);
        let distinct: BTreeSet<u16> = got.iter().copied().collect();
        assert_eq!(distinct.len(), got.len(), "{got:?}");
        assert!(
            got.iter()
                .all(|&id| id >= 1 && u32::from(id) < MAX_PLATFORMS),
            "{got:?}"
        );
    }
}
