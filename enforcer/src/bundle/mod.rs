//! Fleet bundles (issue 20): the policy published as a signed TUF repository (tough's layout,
//! `metadata/` and `targets/`) that gateways follow with `enforcer run --bundle-url`.
//!
//! A version is one target, `policy.json`: the rule files (name -> text), the policy digest as
//! `status` computes it and the build time. The bundle version is the targets version.
//! `publish` writes repositories (`bundle keygen`, `bundle build`), `follow` verifies them
//! against the pinned root, `store` keeps the last verified bundle in STATE-DIR/bundle.

pub mod follow;
pub mod publish;
pub mod store;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// The one target of every version.
pub const TARGET: &str = "policy.json";
/// The layout version of [`Bundle`].
pub const FORMAT: u32 = 1;
/// Most rule files a bundle may carry, and the largest bundle fetched or accepted.
pub const MAX_FILES: usize = 4096;
pub const MAX_BUNDLE_BYTES: u64 = 64 * 1024 * 1024;

/// What a version carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    pub format: u32,
    /// `policy_digest` of the policy the files make.
    pub digest: String,
    /// When it was built and signed (Unix seconds).
    pub built: u64,
    /// Rule file name -> text.
    pub files: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Tuf {
        what: String,
        source: Box<tough::error::Error>,
    },
}

impl Bundle {
    /// Parses and checks a bundle from untrusted bytes (a verified target is still checked: its
    /// file names become paths in the state directory).
    pub fn parse(bytes: &[u8]) -> Result<Bundle, BundleError> {
        let bundle: Bundle = serde_json::from_slice(bytes)
            .map_err(|e| BundleError::Invalid(format!("{TARGET}: not a policy bundle: {e}")))?;
        bundle.check()?;
        Ok(bundle)
    }

    /// The layout, the file count and every file name (a plain `NAME.yaml`, never hidden, never
    /// a path).
    pub fn check(&self) -> Result<(), BundleError> {
        if self.format != FORMAT {
            return Err(BundleError::Invalid(format!(
                "{TARGET}: format {} (this enforcer reads format {FORMAT})",
                self.format
            )));
        }
        if self.files.is_empty() || self.files.len() > MAX_FILES {
            return Err(BundleError::Invalid(format!(
                "{TARGET}: {} rule files (expected 1 to {MAX_FILES})",
                self.files.len()
            )));
        }
        if let Some(bad) = self.files.keys().find(|n| !safe_name(n)) {
            return Err(BundleError::Invalid(format!(
                "{TARGET}: file name {bad:?} is not a plain NAME.yaml"
            )));
        }
        Ok(())
    }

    /// Seconds since it was built (0 for a build time in the future).
    pub fn age(&self, now: SystemTime) -> Duration {
        let built = SystemTime::UNIX_EPOCH + Duration::from_secs(self.built);
        now.duration_since(built).unwrap_or_default()
    }
}

/// A rule file name the policy loader would read: `[A-Za-z0-9_-][A-Za-z0-9._-]*.yaml`.
fn safe_name(name: &str) -> bool {
    name.len() <= 255
        && name.ends_with(".yaml")
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Unix seconds of `time` (0 before the epoch).
pub fn unix(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod format_tests {
    use super::*;

    fn bundle(files: &[(&str, &str)]) -> Bundle {
        Bundle {
            format: FORMAT,
            digest: "0".into(),
            built: 1,
            files: files
                .iter()
                .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn file_names_are_plain_rule_files() {
        assert!(bundle(&[("zoom.yaml", "")]).check().is_ok());
        for bad in [
            "../x.yaml",
            "a/b.yaml",
            ".hidden.yaml",
            "x.yml",
            "x y.yaml",
            "",
        ] {
            let error = bundle(&[(bad, "")]).check().unwrap_err().to_string();
            assert!(error.contains("is not a plain NAME.yaml"), "{bad}: {error}");
        }
        assert!(bundle(&[]).check().is_err());
        let mut other = bundle(&[("a.yaml", "")]);
        other.format = 2;
        assert!(other.check().unwrap_err().to_string().contains("format 2"));
        assert!(Bundle::parse(b"{\"format\":1}").is_err());
    }
}
