//! Persistence of the address book in `<state-dir>/addresses.json`, so a cold start enforces the
//! last known addresses before the first DNS answer arrives.
//!
//! The file is replaced atomically: written to a temporary file in the same directory, flushed to
//! disk, renamed over the old one, and the directory flushed, so a crash leaves either the old or
//! the new file, never a partial one. Times are wall-clock UNIX seconds (with milliseconds).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::book::{AddressBook, AddressState, BookSettings, NameState, Use, stamp};
use crate::state_file::{self, LayoutError};

/// The file name inside the state directory.
pub const STATE_FILE: &str = "addresses.json";
const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not a valid address state file: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: unsupported state file version {version} (this build reads {VERSION})")]
    Version { path: PathBuf, version: u32 },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileV1 {
    version: u32,
    saved_at: f64,
    names: Vec<FileName>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileName {
    name: String,
    uses: Vec<FileUse>,
    cname_chain: Vec<String>,
    /// Clamped TTL of the last good answer, seconds.
    ttl: Option<f64>,
    answered_at: Option<f64>,
    refresh_at: f64,
    failures: u32,
    addresses: Vec<FileAddress>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileUse {
    platform: String,
    entry: usize,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAddress {
    address: String,
    cname_chain: Vec<String>,
    seen_at: f64,
    expires_at: f64,
    missing_since: Option<f64>,
}

impl AddressBook {
    /// The path `save` and `load` use inside `dir`.
    pub fn state_path(dir: &Path) -> PathBuf {
        dir.join(STATE_FILE)
    }

    /// Writes the whole book to `<dir>/addresses.json` atomically, creating `dir` if needed.
    pub fn save(&self, dir: &Path) -> Result<(), StateError> {
        let path = Self::state_path(dir);
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::Io { path, source }
        };
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let file = self.to_file();
        let saved_at = serde_json::json!(file.saved_at);
        let bytes =
            state_file::render(file.version, &[("saved_at", saved_at)], "names", file.names)
                .map_err(|source| StateError::Corrupt {
                    path: path.clone(),
                    source,
                })?;
        crate::fsutil::write_atomically(&path, &bytes)
            .map_err(|source| StateError::Io { path, source })
    }

    /// Reads `<dir>/addresses.json` as [`AddressBook::load_checked`] does, logging each damaged
    /// part.
    pub fn load(dir: &Path, settings: BookSettings) -> Result<Self, StateError> {
        let (book, problems) = Self::load_checked(dir, settings, SystemTime::now())?;
        for problem in &problems {
            tracing::error!(%problem, "resolved addresses: a damaged entry");
        }
        Ok(book)
    }

    /// Reads `<dir>/addresses.json`: a missing file is an empty book; a file that cannot be read
    /// at all is an error naming it. Otherwise each name and each address is checked on its own:
    /// a bad one is left out (with a message naming the file and the place), the rest is kept.
    /// An expiry further ahead of `now` than any answer can give (TTL ceiling plus grace) is
    /// brought back to that.
    pub fn load_checked(
        dir: &Path,
        settings: BookSettings,
        now: SystemTime,
    ) -> Result<(Self, Vec<String>), StateError> {
        let path = Self::state_path(dir);
        let text = match fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok((Self::new(settings), Vec::new()));
            }
            Err(source) => return Err(StateError::Io { path, source }),
        };
        let items = state_file::parse(&text, VERSION, "names").map_err(|e| match e {
            LayoutError::Version(version, _) => StateError::Version {
                path: path.clone(),
                version: u32::try_from(version).unwrap_or(u32::MAX),
            },
            other => StateError::Invalid {
                path: path.clone(),
                message: other.to_string(),
            },
        })?;
        let longest = settings.ttl_ceiling.saturating_add(settings.grace);
        let latest =
            stamp(now).saturating_add(u64::try_from(longest.as_millis()).unwrap_or(u64::MAX));
        let shown = path.display().to_string();
        let mut problems: Vec<String> = items
            .problems
            .iter()
            .map(|p| format!("{shown}: {p}"))
            .collect();
        let mut names = BTreeMap::new();
        for item in items.items {
            let mut report =
                |what: String| problems.push(format!("{shown}: {}: {what}", item.place));
            let name: FileName = match serde_json::from_value(item.value) {
                Ok(name) => name,
                Err(error) => {
                    report(format!("left out: {error}"));
                    continue;
                }
            };
            if names.contains_key(&name.name) {
                report(format!("{} is listed twice; the first is kept", name.name));
                continue;
            }
            match from_file_name(name, latest, &mut report) {
                Ok((key, state)) => {
                    names.insert(key, state);
                }
                Err(what) => report(format!("left out: {what}")),
            }
        }
        Ok((Self::from_names(settings, names), problems))
    }

    fn to_file(&self) -> FileV1 {
        let names = self
            .names
            .iter()
            .map(|(name, s)| FileName {
                name: name.clone(),
                uses: s
                    .uses
                    .iter()
                    .map(|u| FileUse {
                        platform: u.platform.clone(),
                        entry: u.entry,
                    })
                    .collect(),
                cname_chain: s.cname_chain.clone(),
                ttl: s.ttl_ms.map(secs),
                answered_at: s.answered_at.map(secs),
                refresh_at: secs(s.refresh_at),
                failures: s.failures,
                addresses: s
                    .addresses
                    .iter()
                    .map(|(address, a)| FileAddress {
                        address: address.to_string(),
                        cname_chain: a.cname_chain.clone(),
                        seen_at: secs(a.seen_at),
                        expires_at: secs(a.expires_at),
                        missing_since: a.missing_since.map(secs),
                    })
                    .collect(),
            })
            .collect();
        FileV1 {
            version: VERSION,
            saved_at: secs(stamp(SystemTime::now())),
            names,
        }
    }
}

/// One name of the file; an address that is wrong is left out through `report`, a name whose
/// own fields are wrong is an error. Expiries past `latest` are brought back to it.
fn from_file_name(
    n: FileName,
    latest: u64,
    report: &mut impl FnMut(String),
) -> Result<(String, NameState), String> {
    let mut addresses = BTreeMap::new();
    for a in n.addresses {
        let parsed = a
            .address
            .parse::<IpAddr>()
            .map_err(|_| format!("`{}` is not an address", a.address))
            .and_then(|address| {
                let state = AddressState {
                    cname_chain: a.cname_chain,
                    seen_at: ms(a.seen_at)?,
                    expires_at: ms(a.expires_at)?,
                    missing_since: a.missing_since.map(ms).transpose()?,
                };
                Ok((address, state))
            });
        match parsed {
            Ok((address, mut state)) => {
                if state.expires_at > latest {
                    report(format!(
                        "{} {address}: expires_at {} is further ahead than TTL ceiling plus \
                         grace; brought back to that",
                        n.name, a.expires_at
                    ));
                    state.expires_at = latest;
                }
                addresses.insert(address, state);
            }
            Err(what) => report(format!("{} {}: left out: {what}", n.name, a.address)),
        }
    }
    let uses: BTreeSet<Use> = n
        .uses
        .into_iter()
        .map(|u| Use {
            platform: u.platform,
            entry: u.entry,
        })
        .collect();
    let state = NameState {
        uses,
        cname_chain: n.cname_chain,
        ttl_ms: n.ttl.map(ms).transpose()?,
        answered_at: n.answered_at.map(ms).transpose()?,
        refresh_at: ms(n.refresh_at)?.min(latest),
        failures: n.failures,
        addresses,
    };
    Ok((n.name, state))
}

/// Milliseconds to seconds; exact for any realistic time (well below 2^53 ms).
#[allow(clippy::cast_precision_loss)]
fn secs(ms: u64) -> f64 {
    ms as f64 / 1_000.0
}

#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn ms(secs: f64) -> Result<u64, String> {
    if !(0.0..=1e13).contains(&secs) {
        return Err(format!("{secs} is not a time in UNIX seconds"));
    }
    Ok((secs * 1_000.0).round() as u64)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::resolve::dns::{Answer, LookupResult, NameResolution};

    fn settings() -> BookSettings {
        BookSettings {
            ttl_floor: Duration::from_secs(60),
            ttl_ceiling: Duration::from_secs(3_600),
            grace: Duration::from_secs(600),
        }
    }

    static SAVE_COUNTER: AtomicU64 = AtomicU64::new(0);

    fn tempdir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "enforcer-state-{tag}-{}-{}",
            std::process::id(),
            SAVE_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn book() -> AddressBook {
        let t0 = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let mut book = AddressBook::new(settings());
        book.set_uses(
            [
                (
                    Use {
                        platform: "zoom".into(),
                        entry: 0,
                    },
                    "zoom.us".to_owned(),
                ),
                (
                    Use {
                        platform: "meet".into(),
                        entry: 2,
                    },
                    "video.example".to_owned(),
                ),
            ],
            t0,
        );
        let answer = |addrs: &[&str], chain: &[&str]| {
            LookupResult::Ok(Answer {
                addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
                cname_chain: chain.iter().map(|s| (*s).to_owned()).collect(),
                ttl: Some(120),
                ipv4: true,
                ipv6: true,
            })
        };
        let res = |name: &str, outcome| NameResolution {
            name: name.into(),
            outcome,
            elapsed: Duration::ZERO,
        };
        book.apply(
            &res("zoom.us", answer(&["198.18.0.1", "2001:db8::1"], &[])),
            t0,
        );
        book.apply(
            &res(
                "video.example",
                answer(&["198.18.0.7"], &["edge.video.example"]),
            ),
            t0,
        );
        book.apply(
            &res(
                "video.example",
                answer(&["198.18.0.8"], &["edge.video.example"]),
            ),
            t0 + Duration::from_millis(1_500),
        );
        book
    }

    #[test]
    fn round_trip() {
        let dir = tempdir("rt");
        let book = book();
        book.save(&dir).unwrap();
        let loaded = AddressBook::load(&dir, settings()).unwrap();
        assert_eq!(loaded, book);
        assert_eq!(loaded.next_due(), book.next_due());
        // Nothing but the state file is left behind.
        let files: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(files, vec![std::ffi::OsString::from(STATE_FILE)]);
        // Saving again replaces it.
        book.save(&dir).unwrap();
        assert_eq!(AddressBook::load(&dir, settings()).unwrap(), book);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_is_empty_and_corrupt_is_an_error_naming_the_file() {
        let dir = tempdir("bad");
        assert!(AddressBook::load(&dir, settings()).unwrap().is_empty());
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(STATE_FILE);
        for bad in [
            "{\"version\": 1, \"names\": [",
            "not json",
            "{\"version\": 7}",
        ] {
            fs::write(&path, bad).unwrap();
            let err = AddressBook::load(&dir, settings()).unwrap_err();
            assert!(
                err.to_string().contains(&path.display().to_string()),
                "{err}"
            );
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A file cut short keeps every name written whole; the one cut is reported. A bad address
    /// is left out alone, and an expiry years ahead is brought back to TTL ceiling plus grace.
    #[test]
    fn a_damaged_file_keeps_every_valid_name_and_address() {
        let dir = tempdir("damaged");
        let book = book();
        book.save(&dir).unwrap();
        let path = dir.join(STATE_FILE);
        let text = fs::read_to_string(&path).unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        // Truncated inside the second (last) name.
        let cut = &text[..text.find("\"name\":\"zoom.us\"").unwrap() + 10];
        fs::write(&path, cut).unwrap();
        let (loaded, problems) = AddressBook::load_checked(&dir, settings(), now).unwrap();
        let names: Vec<String> = loaded.entries().map(|e| e.name.to_owned()).collect();
        assert_eq!(names, vec!["video.example", "video.example"]);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems.iter().all(|p| p.contains(STATE_FILE)),
            "{problems:?}"
        );

        // One bad address and one far expiry in an otherwise good file.
        let text: Vec<String> = text
            .lines()
            .map(|l| {
                if l.contains("\"zoom.us\"") {
                    l.replacen("1700000120.123", "9999999999", 1)
                } else {
                    l.replacen("\"198.18.0.7\"", "\"nope\"", 1)
                }
            })
            .collect();
        let text = text.join("\n");
        fs::write(&path, text).unwrap();
        let (loaded, problems) = AddressBook::load_checked(&dir, settings(), now).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        let addresses: Vec<String> = loaded.entries().map(|e| e.address.to_string()).collect();
        assert_eq!(addresses, vec!["198.18.0.8", "198.18.0.1", "2001:db8::1"]);
        assert_eq!(problems.len(), 2, "{problems:?}");
        let latest = 1_700_000_000_000 + 4_200_000;
        let first = loaded
            .names
            .get("zoom.us")
            .unwrap()
            .addresses
            .values()
            .next()
            .unwrap();
        assert_eq!(first.expires_at, latest);
    }

    #[test]
    fn file_shape() {
        let dir = tempdir("shape");
        book().save(&dir).unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.join(STATE_FILE)).unwrap()).unwrap();
        assert_eq!(v["version"], 1);
        let zoom = &v["names"][1];
        assert_eq!(zoom["name"], "zoom.us");
        assert_eq!(zoom["uses"][0]["platform"], "zoom");
        assert_eq!(zoom["addresses"][0]["address"], "198.18.0.1");
        assert_eq!(zoom["addresses"][0]["expires_at"], 1_700_000_120.123);
        fs::remove_dir_all(&dir).unwrap();
    }
}
