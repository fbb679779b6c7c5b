//! The last verified bundle, kept in STATE-DIR/bundle: `current.json` (its version and
//! contents, written atomically once verified and applied), `policy/` (its rule files, the
//! `--rules` of a gateway in bundle mode) and `tuf/` (tough's datastore).
//!
//! A cold start enforces `current.json` as it was verified, without verifying it again: the
//! state directory is the daemon's own (root-only, like the pins that enforce it anyway), and
//! verifying again would fail once the timestamp expired during a long outage, the very case a
//! cold start without the server must survive. The policy in it is still validated like any.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::follow::Verified;
use super::{Bundle, BundleError};

/// The directories and files of STATE-DIR/bundle.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    version: u64,
    bundle: Bundle,
}

impl Store {
    pub fn new(state_dir: &Path) -> Store {
        Store {
            dir: state_dir.join("bundle"),
        }
    }

    /// The rule files of the bundle in force.
    pub fn policy_dir(&self) -> PathBuf {
        self.dir.join("policy")
    }

    /// tough's datastore.
    pub fn datastore(&self) -> PathBuf {
        self.dir.join("tuf")
    }

    fn current(&self) -> PathBuf {
        self.dir.join("current.json")
    }

    /// The last verified bundle; `Ok(None)` when there is none yet.
    pub fn load(&self) -> Result<Option<Verified>, BundleError> {
        let path = self.current();
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(BundleError::Io { path, source }),
        };
        let stored: Stored = serde_json::from_slice(&bytes)
            .map_err(|e| BundleError::Invalid(format!("{}: {e}", path.display())))?;
        stored
            .bundle
            .check()
            .map_err(|e| BundleError::Invalid(format!("{}: {e}", path.display())))?;
        Ok(Some(Verified {
            version: stored.version,
            bundle: stored.bundle,
        }))
    }

    /// Keeps `verified` as the bundle in force.
    pub fn save(&self, verified: &Verified) -> Result<(), BundleError> {
        let path = self.current();
        let bytes = serde_json::to_vec(&Stored {
            version: verified.version,
            bundle: verified.bundle.clone(),
        })
        .map_err(|e| BundleError::Invalid(format!("encoding {}: {e}", path.display())))?;
        crate::fsutil::write_atomically(&path, &bytes)
            .map_err(|source| BundleError::Io { path, source })
    }

    /// Makes the policy directory hold exactly the files of `bundle`.
    pub fn write_policy(&self, bundle: &Bundle) -> Result<(), BundleError> {
        let dir = self.policy_dir();
        std::fs::create_dir_all(&dir)
            .and_then(|()| crate::daemon::write_rule_files(&dir, &bundle.files).map(|_| ()))
            .map_err(|source| BundleError::Io { path: dir, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_verified_bundle_round_trips_and_damage_is_named() {
        let dir =
            std::env::temp_dir().join(format!("enforcer-bundle-store-{}", std::process::id()));
        let store = Store::new(&dir);
        assert!(store.load().unwrap().is_none());
        let verified = Verified {
            version: 3,
            bundle: Bundle {
                format: super::super::FORMAT,
                digest: "abc".into(),
                built: 7,
                files: [("a.yaml".to_owned(), "platform: a\n".to_owned())].into(),
            },
        };
        store.save(&verified).unwrap();
        assert_eq!(store.load().unwrap(), Some(verified.clone()));
        store.write_policy(&verified.bundle).unwrap();
        assert_eq!(
            std::fs::read_to_string(store.policy_dir().join("a.yaml")).unwrap(),
            "platform: a\n"
        );
        std::fs::write(dir.join("bundle/current.json"), b"{\"version\": 1}").unwrap();
        let error = store.load().unwrap_err().to_string();
        assert!(error.contains("current.json"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
