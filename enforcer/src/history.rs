//! The policy history (STATE-DIR/history): every applied policy, one JSON file per version named
//! `SEQ-DIGEST.json`, holding its digest, time, source, user and the policy files as applied
//! (file name -> text), so that `enforcer rollback` can write a version back. Files are written
//! atomically (hidden temporary, rename); a damaged one is skipped with a log line. Only the
//! newest `--history N` are kept.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file layout version of a history entry.
const VERSION: u32 = 1;

/// Where a policy change came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    Start,
    Reload,
    Watcher,
    RulesAdd,
    RulesRemove,
    Feeds,
    Rollback,
    Bundle,
}

impl Source {
    const ALL: [Source; 8] = [
        Self::Start,
        Self::Reload,
        Self::Watcher,
        Self::RulesAdd,
        Self::RulesRemove,
        Self::Feeds,
        Self::Rollback,
        Self::Bundle,
    ];

    /// The source named `name` (`feeds`, `rules-add`, ...), for requests that say where they
    /// come from.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Reload => "reload",
            Self::Watcher => "watcher",
            Self::RulesAdd => "rules-add",
            Self::RulesRemove => "rules-remove",
            Self::Feeds => "feeds",
            Self::Rollback => "rollback",
            Self::Bundle => "bundle",
        }
    }
}

/// The policy files as applied: file name -> text (one entry for a single-file `--rules`).
pub type Files = BTreeMap<String, String>;

/// Who applied a policy and from where, with the files it was read from.
#[derive(Clone, Debug)]
pub struct Origin {
    pub source: Source,
    /// The control connection's user name (its uid when it has no name); `daemon` for the
    /// daemon's own changes.
    pub user: String,
    pub files: Files,
}

impl Origin {
    pub fn daemon(source: Source, files: Files) -> Self {
        Self {
            source,
            user: DAEMON_USER.to_owned(),
            files,
        }
    }
}

/// The user recorded for changes the daemon makes on its own (start, watcher).
pub const DAEMON_USER: &str = "daemon";

/// One stored version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub digest: String,
    /// Unix seconds.
    pub time: u64,
    pub source: Source,
    pub user: String,
    pub files: Files,
}

/// The on-disk entry: the layout version, then the version.
#[derive(Serialize, Deserialize)]
struct Stored {
    version: u32,
    #[serde(flatten)]
    entry: Version,
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("encoding a history entry: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("no version in the history starts with `{0}` (see `enforcer history`)")]
    Unknown(String),
    #[error("`{prefix}` is ambiguous: it starts {}", .digests.join(", "))]
    Ambiguous {
        prefix: String,
        digests: Vec<String>,
    },
    #[error("no earlier version to roll back to (the history holds no other policy)")]
    NoEarlier,
}

/// The history directory and how many versions it keeps.
#[derive(Clone, Debug)]
pub struct History {
    dir: PathBuf,
    keep: usize,
}

impl History {
    pub const DIR: &str = "history";

    /// The history of the state directory `state_dir`, keeping the newest `keep` versions.
    pub fn new(state_dir: &Path, keep: usize) -> Self {
        Self {
            dir: state_dir.join(Self::DIR),
            keep: keep.max(1),
        }
    }

    /// Every readable version, oldest first. Damaged entries are logged and skipped.
    pub fn versions(&self) -> Vec<Version> {
        let mut versions = Vec::new();
        for (_, path) in self.files() {
            match read_entry(&path) {
                Ok(version) => versions.push(version),
                // Pruned since it was listed: not damage.
                Err(_) if !path.exists() => {}
                Err(problem) => tracing::warn!(
                    path = %path.display(),
                    %problem,
                    "policy history: a damaged entry is skipped"
                ),
            }
        }
        versions
    }

    /// Appends `version`, unless the newest readable version has the same digest and the change
    /// is not a rollback (a reload of unchanged files is not a new version). Then only the newest
    /// `keep` entries stay. True when it was written.
    pub fn record(&self, version: &Version) -> Result<bool, HistoryError> {
        let files = self.files();
        let newest = files
            .iter()
            .rev()
            .find_map(|(_, path)| read_entry(path).ok());
        if version.source != Source::Rollback
            && newest.is_some_and(|newest| newest.digest == version.digest)
        {
            return Ok(false);
        }
        let seq = files.last().map_or(1, |(seq, _)| seq + 1);
        let path = self.dir.join(format!("{seq:010}-{}.json", version.digest));
        let bytes = serde_json::to_vec(&Stored {
            version: VERSION,
            entry: version.clone(),
        })?;
        crate::fsutil::write_atomically(&path, &bytes).map_err(|source| HistoryError::Write {
            path: path.clone(),
            source,
        })?;
        let mut files = self.files();
        let excess = files.len().saturating_sub(self.keep);
        for (_, old) in files.drain(..excess) {
            if let Err(error) = std::fs::remove_file(&old) {
                tracing::warn!(path = %old.display(), %error, "policy history: cannot remove an old entry");
            }
        }
        Ok(true)
    }

    /// The entry files with their sequence numbers, in order; hidden (temporary) files and
    /// names that are not `SEQ-DIGEST.json` are ignored.
    fn files(&self) -> Vec<(u64, PathBuf)> {
        let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let path = e.path();
                let name = path.file_name()?.to_str()?;
                let stem = name.strip_suffix(".json")?;
                let seq = stem.split_once('-')?.0.parse().ok()?;
                Some((seq, path))
            })
            .collect();
        files.sort();
        files
    }
}

/// One entry file; the message says what is wrong with it.
fn read_entry(path: &Path) -> Result<Version, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let stored: Stored = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    if stored.version != VERSION {
        return Err(format!(
            "version {}, this enforcer reads version {VERSION}",
            stored.version
        ));
    }
    if stored.entry.files.is_empty() {
        return Err("no policy files".to_owned());
    }
    Ok(stored.entry)
}

/// The version a digest prefix names among `versions` (the newest with that digest): a prefix
/// matching two different digests is ambiguous, none is unknown.
pub fn find<'a>(versions: &'a [Version], prefix: &str) -> Result<&'a Version, HistoryError> {
    let prefix = prefix.trim().to_ascii_lowercase();
    let mut digests: Vec<&str> = versions
        .iter()
        .map(|v| v.digest.as_str())
        .filter(|d| !prefix.is_empty() && d.starts_with(&prefix))
        .collect();
    digests.sort_unstable();
    digests.dedup();
    match digests.as_slice() {
        [] => Err(HistoryError::Unknown(prefix)),
        [digest] => versions
            .iter()
            .rev()
            .find(|v| v.digest == *digest)
            .ok_or(HistoryError::Unknown(prefix)),
        more => Err(HistoryError::Ambiguous {
            prefix,
            digests: more.iter().map(|d| (*d).to_owned()).collect(),
        }),
    }
}

/// The default rollback target: the newest version whose digest is not `current`'s, looking back
/// from the newest (so a second rollback undoes the first).
pub fn previous<'a>(versions: &'a [Version], current: &str) -> Result<&'a Version, HistoryError> {
    versions
        .iter()
        .rev()
        .find(|v| v.digest != current)
        .ok_or(HistoryError::NoEarlier)
}

/// Unix seconds now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("history-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn version(digest: &str, source: Source, text: &str) -> Version {
        Version {
            digest: digest.into(),
            time: 1_796_000_000,
            source,
            user: "root".into(),
            files: Files::from([("a.yaml".to_owned(), text.to_owned())]),
        }
    }

    #[test]
    fn versions_round_trip_in_order() {
        let dir = dir("round-trip");
        let history = History::new(&dir, 20);
        let one = version("aaaa000000000001", Source::Start, "platform: a\n");
        let two = version("bbbb000000000002", Source::RulesAdd, "platform: b\n# é\n");
        assert!(history.record(&one).unwrap());
        assert!(history.record(&two).unwrap());
        assert_eq!(history.versions(), vec![one.clone(), two.clone()]);
        // The same policy again is no new version; a rollback to it is.
        let again = version("bbbb000000000002", Source::Watcher, "platform: b\n");
        assert!(!history.record(&again).unwrap());
        let back = version("bbbb000000000002", Source::Rollback, "platform: b\n");
        assert!(history.record(&back).unwrap());
        assert_eq!(history.versions().len(), 3);
        // Nothing but the entries is left in the directory (no temporaries).
        assert_eq!(std::fs::read_dir(dir.join("history")).unwrap().count(), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_the_newest_n_are_kept() {
        let dir = dir("bound");
        let history = History::new(&dir, 3);
        for i in 0..7u32 {
            let v = version(&format!("{i:016x}"), Source::Reload, &format!("# {i}\n"));
            history.record(&v).unwrap();
        }
        let digests: Vec<String> = history.versions().into_iter().map(|v| v.digest).collect();
        assert_eq!(
            digests,
            ["0000000000000004", "0000000000000005", "0000000000000006"]
        );
        // Sequence numbers keep growing after pruning.
        history
            .record(&version("00000000000000ff", Source::Reload, "x"))
            .unwrap();
        assert_eq!(
            history.versions().last().unwrap().digest,
            "00000000000000ff"
        );
        assert_eq!(history.versions().len(), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_damaged_entry_is_skipped() {
        let dir = dir("damaged");
        let history = History::new(&dir, 20);
        for d in ["1111000000000000", "2222000000000000", "3333000000000000"] {
            history.record(&version(d, Source::Reload, d)).unwrap();
        }
        let files = history.files();
        // Truncated, not JSON at all, and an entry of another layout.
        let text = std::fs::read_to_string(&files[0].1).unwrap();
        std::fs::write(&files[0].1, &text[..text.len() / 2]).unwrap();
        std::fs::write(&files[1].1, "garbage").unwrap();
        std::fs::write(dir.join("history/0000000099-x.json"), "{\"version\":9}").unwrap();
        let digests: Vec<String> = history.versions().into_iter().map(|v| v.digest).collect();
        assert_eq!(digests, ["3333000000000000"]);
        // Still recorded after them.
        history
            .record(&version("4444000000000000", Source::Reload, "x"))
            .unwrap();
        assert_eq!(history.versions().len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_unique_prefix_names_a_version() {
        let versions = vec![
            version("abc1000000000000", Source::Start, "one"),
            version("abc2000000000000", Source::Reload, "two"),
            version("def0000000000000", Source::Reload, "three"),
            version("abc1000000000000", Source::Rollback, "one again"),
        ];
        // The newest with that digest.
        let found = find(&versions, "abc1").unwrap();
        assert_eq!(found.source, Source::Rollback);
        assert_eq!(find(&versions, "DEF").unwrap().digest, "def0000000000000");
        assert!(matches!(
            find(&versions, "abc"),
            Err(HistoryError::Ambiguous { .. })
        ));
        assert!(matches!(
            find(&versions, "9"),
            Err(HistoryError::Unknown(_))
        ));
        assert!(matches!(find(&versions, ""), Err(HistoryError::Unknown(_))));
        assert_eq!(Source::from_name("feeds"), Some(Source::Feeds));
        assert_eq!(Source::from_name("rules-add"), Some(Source::RulesAdd));
        assert_eq!(Source::from_name("rules_add"), None);
        // The one before the current: back past every entry of the current digest.
        assert_eq!(
            previous(&versions, "abc1000000000000").unwrap().digest,
            "def0000000000000"
        );
        assert!(matches!(
            previous(&versions[..1], "abc1000000000000"),
            Err(HistoryError::NoEarlier)
        ));
    }
}
