//! Addresses learned from DNS answers, per platform entry, with provenance and expiry.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::resolve::{FamilyCounts, Mapping, Use};

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
    #[error("{path}: not a learned-address file: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: version {found}, this enforcer reads version {VERSION}")]
    Version { path: PathBuf, found: u32 },
}

#[derive(Serialize, Deserialize)]
struct File {
    version: u32,
    entries: Vec<FileEntry>,
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
        let file = File {
            version: VERSION,
            entries: self
                .entries
                .iter()
                .map(|(m, e)| FileEntry {
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
                })
                .collect(),
        };
        let json = serde_json::to_vec(&file).map_err(|source| LearnedError::Corrupt {
            path: path.clone(),
            source,
        })?;
        crate::fsutil::write_atomically(&path, &json).map_err(io)
    }

    /// Reads `<dir>/learned.json`; a missing file is an empty set.
    pub fn load(dir: &Path) -> Result<Self, LearnedError> {
        let path = dir.join(LEARNED_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => return Err(LearnedError::Io { path, source }),
        };
        let file: File =
            serde_json::from_slice(&bytes).map_err(|source| LearnedError::Corrupt {
                path: path.clone(),
                source,
            })?;
        if file.version != VERSION {
            return Err(LearnedError::Version {
                path,
                found: file.version,
            });
        }
        let entries = file
            .entries
            .into_iter()
            .map(|e| {
                (
                    Mapping {
                        platform: e.platform,
                        entry: e.entry,
                        address: e.address,
                    },
                    LearnedEntry {
                        name: e.name,
                        cname_chain: e.cname_chain,
                        resolver: e.resolver,
                        remove_at: SystemTime::UNIX_EPOCH + Duration::from_secs(e.remove_at),
                    },
                )
            })
            .collect();
        Ok(Self { entries })
    }
}
