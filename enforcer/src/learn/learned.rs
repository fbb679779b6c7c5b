//! Addresses learned from DNS answers, per platform entry, with provenance and expiry.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::resolve::{FamilyCounts, Mapping, Use};
use crate::state_file::{self, LayoutError};

/// The file in `--state-dir` that keeps learned addresses across restarts.
pub const LEARNED_FILE: &str = "learned.json";
const VERSION: u32 = 1;

/// Where a learned address came from and when it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LearnedEntry {
    /// The question that was answered.
    pub name: String,
    pub cname_chain: Vec<String>,
    /// The server that answered.
    pub resolver: IpAddr,
    /// The answer's TTL (clamped) plus the grace period after it was last seen.
    pub remove_at: SystemTime,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LearnedSet {
    entries: BTreeMap<Mapping, LearnedEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum LearnedError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Unreadable { path: PathBuf, source: LayoutError },
    #[error("{path}: {source}")]
    Encode {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// What [`LearnedSet::load`] read: the valid entries, and one message for each thing in the file
/// that was wrong and left out or corrected (each names the file and the place).
#[derive(Debug, Default)]
pub struct Loaded {
    pub set: LearnedSet,
    pub problems: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct FileEntry {
    platform: String,
    entry: usize,
    address: IpAddr,
    name: String,
    cname_chain: Vec<String>,
    resolver: IpAddr,
    /// UNIX seconds.
    remove_at: u64,
}

impl LearnedSet {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Records `addresses` for every use; returns the mappings that were not there before. An
    /// address seen again keeps the later removal time and the latest provenance.
    pub fn learn(
        &mut self,
        uses: &[Use],
        addresses: &[(IpAddr, u32)],
        learned: &LearnedEntry,
    ) -> Vec<Mapping> {
        let mut added = Vec::new();
        for u in uses {
            for (address, _) in addresses {
                let key = Mapping {
                    platform: u.platform.clone(),
                    entry: u.entry,
                    address: *address,
                };
                match self.entries.get_mut(&key) {
                    Some(existing) => {
                        let remove_at = existing.remove_at.max(learned.remove_at);
                        *existing = LearnedEntry {
                            remove_at,
                            ..learned.clone()
                        };
                    }
                    None => {
                        self.entries.insert(key.clone(), learned.clone());
                        added.push(key);
                    }
                }
            }
        }
        added
    }

    /// Keeps the entries whose use passes `keep`; returns the removed mappings.
    pub fn retain_uses(&mut self, keep: impl Fn(&Use) -> bool) -> Vec<Mapping> {
        let gone: Vec<Mapping> = self
            .entries
            .keys()
            .filter(|m| {
                !keep(&Use {
                    platform: m.platform.clone(),
                    entry: m.entry,
                })
            })
            .cloned()
            .collect();
        for m in &gone {
            self.entries.remove(m);
        }
        gone
    }

    /// Forgets `mappings` (addresses that could not be enforced).
    pub fn forget(&mut self, mappings: &[Mapping]) {
        for m in mappings {
            self.entries.remove(m);
        }
    }

    /// Removes what is due at `now`; returns the removed mappings.
    pub fn expire(&mut self, now: SystemTime) -> Vec<Mapping> {
        let gone: Vec<Mapping> = self
            .entries
            .iter()
            .filter(|(_, e)| e.remove_at <= now)
            .map(|(m, _)| m.clone())
            .collect();
        for m in &gone {
            self.entries.remove(m);
        }
        gone
    }

    pub fn next_expiry(&self) -> Option<SystemTime> {
        self.entries.values().map(|e| e.remove_at).min()
    }

    pub fn entries(&self) -> impl Iterator<Item = (&Mapping, &LearnedEntry)> {
        self.entries.iter()
    }

    pub fn mappings(&self) -> impl Iterator<Item = &Mapping> {
        self.entries.keys()
    }

    /// Distinct addresses per platform and family, for `enforcer_prefixes{source="learned"}`.
    pub fn counts(&self) -> BTreeMap<String, FamilyCounts> {
        let mut distinct: BTreeMap<&str, BTreeSet<IpAddr>> = BTreeMap::new();
        for m in self.entries.keys() {
            distinct.entry(&m.platform).or_default().insert(m.address);
        }
        distinct
            .into_iter()
            .map(|(platform, addresses)| {
                let ipv4 = addresses.iter().filter(|a| a.is_ipv4()).count();
                let counts = FamilyCounts {
                    ipv4,
                    ipv6: addresses.len() - ipv4,
                };
                (platform.to_owned(), counts)
            })
            .collect()
    }

    /// Writes `<dir>/learned.json` through a temporary file and a rename.
    pub fn save(&self, dir: &Path) -> Result<(), LearnedError> {
        let path = dir.join(LEARNED_FILE);
        let io = |source| LearnedError::Io {
            path: path.clone(),
            source,
        };
        let entries = self.entries.iter().map(|(m, e)| FileEntry {
            platform: m.platform.clone(),
            entry: m.entry,
            address: m.address,
            name: e.name.clone(),
            cname_chain: e.cname_chain.clone(),
            resolver: e.resolver,
            remove_at: e
                .remove_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default(),
        });
        let json = state_file::render(VERSION, &[], "entries", entries).map_err(|source| {
            LearnedError::Encode {
                path: path.clone(),
                source,
            }
        })?;
        crate::fsutil::write_atomically(&path, &json).map_err(io)
    }

    /// Reads `<dir>/learned.json`; a missing file is an empty set. Each entry is checked on its
    /// own: a bad one is left out and reported, the others are kept. A removal time later than
    /// `longest` after `now` (no answer can ask for more: TTL ceiling plus grace) is brought back
    /// to it, so a hostile file cannot block an address for ever.
    pub fn load(dir: &Path, now: SystemTime, longest: Duration) -> Result<Loaded, LearnedError> {
        let path = dir.join(LEARNED_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::default()),
            Err(source) => return Err(LearnedError::Io { path, source }),
        };
        let items = state_file::parse(&bytes, VERSION, "entries").map_err(|source| {
            LearnedError::Unreadable {
                path: path.clone(),
                source,
            }
        })?;
        let shown = path.display();
        let mut loaded = Loaded {
            set: LearnedSet::default(),
            problems: items
                .problems
                .into_iter()
                .map(|p| format!("{shown}: {p}"))
                .collect(),
        };
        let latest = now.checked_add(longest).unwrap_or(now);
        for item in items.items {
            let e: FileEntry = match serde_json::from_value(item.value) {
                Ok(e) => e,
                Err(error) => {
                    loaded
                        .problems
                        .push(format!("{shown}: {}: left out: {error}", item.place));
                    continue;
                }
            };
            let Some(mut remove_at) =
                SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(e.remove_at))
            else {
                loaded.problems.push(format!(
                    "{shown}: {}: left out: remove_at {} is not a time",
                    item.place, e.remove_at
                ));
                continue;
            };
            if remove_at > latest {
                loaded.problems.push(format!(
                    "{shown}: {}: remove_at {} is more than {} s ahead (TTL ceiling plus grace); \
                     brought back to that",
                    item.place,
                    e.remove_at,
                    longest.as_secs()
                ));
                remove_at = latest;
            }
            let mapping = Mapping {
                platform: e.platform,
                entry: e.entry,
                address: e.address,
            };
            let entry = LearnedEntry {
                name: e.name,
                cname_chain: e.cname_chain,
                resolver: e.resolver,
                remove_at,
            };
            // Listed twice: the later removal wins, as when an answer is seen again.
            let kept = loaded.set.entries.entry(mapping).or_insert(entry.clone());
            if kept.remove_at < entry.remove_at {
                *kept = entry;
            }
        }
        Ok(loaded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3_600);

    fn dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("learned-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// `n` addresses learned for zoom's first entry, due in a minute.
    fn set(n: u8, now: SystemTime) -> LearnedSet {
        let mut set = LearnedSet::default();
        let addresses: Vec<(IpAddr, u32)> = (1..=n)
            .map(|i| (IpAddr::from([198, 18, 0, i]), 60))
            .collect();
        let uses = [Use {
            platform: "zoom".into(),
            entry: 0,
        }];
        let learned = LearnedEntry {
            name: "a.zoom.us".into(),
            cname_chain: Vec::new(),
            resolver: IpAddr::from([198, 18, 2, 2]),
            remove_at: SystemTime::UNIX_EPOCH
                + Duration::from_secs(
                    now.duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap()
                        .as_secs(),
                )
                + Duration::from_secs(60),
        };
        set.learn(&uses, &addresses, &learned);
        set
    }

    fn addresses(set: &LearnedSet) -> Vec<u8> {
        set.mappings()
            .map(|m| match m.address {
                IpAddr::V4(a) => a.octets()[3],
                IpAddr::V6(_) => 0,
            })
            .collect()
    }

    #[test]
    fn a_truncated_file_keeps_every_whole_entry() {
        let (dir, now) = (dir("cut"), SystemTime::now());
        set(41, now).save(&dir).unwrap();
        let path = dir.join(LEARNED_FILE);
        let bytes = std::fs::read(&path).unwrap();
        // Cut inside the last entry, as a full disk or a crash of the writer would.
        std::fs::write(&path, &bytes[..bytes.len() - 40]).unwrap();
        let loaded = LearnedSet::load(&dir, now, HOUR).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(addresses(&loaded.set), (1..=40).collect::<Vec<u8>>());
        assert!(loaded.problems.iter().all(|p| p.contains(LEARNED_FILE)));
        assert!(
            loaded.problems.iter().any(|p| p.contains("line 42")),
            "{:?}",
            loaded.problems
        );
    }

    #[test]
    fn a_bad_entry_is_reported_and_the_others_are_kept() {
        let (dir, now) = (dir("bad"), SystemTime::now());
        set(3, now).save(&dir).unwrap();
        let path = dir.join(LEARNED_FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replacen("198.18.0.2", "nope", 1)).unwrap();
        let loaded = LearnedSet::load(&dir, now, HOUR).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(addresses(&loaded.set), vec![1, 3]);
        assert_eq!(loaded.problems.len(), 1, "{:?}", loaded.problems);
        assert!(
            loaded.problems[0].contains(LEARNED_FILE) && loaded.problems[0].contains("entry 2"),
            "{:?}",
            loaded.problems
        );
    }

    #[test]
    fn removal_times_far_ahead_are_refused_or_brought_back() {
        let (dir, now) = (dir("far"), SystemTime::now());
        set(2, now).save(&dir).unwrap();
        let path = dir.join(LEARNED_FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        let secs = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        let due = secs(now) + 60;
        let far = secs(now) + 10 * 365 * 86_400;
        let text = text
            .replacen(&due.to_string(), &u64::MAX.to_string(), 1)
            .replacen(&due.to_string(), &far.to_string(), 1);
        std::fs::write(&path, text).unwrap();
        let loaded = LearnedSet::load(&dir, now, HOUR).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        // u64::MAX seconds is no time at all: left out. Ten years is brought back to an hour.
        assert_eq!(addresses(&loaded.set), vec![2]);
        assert_eq!(loaded.set.next_expiry(), Some(now + HOUR));
        assert_eq!(loaded.problems.len(), 2, "{:?}", loaded.problems);
    }
}
