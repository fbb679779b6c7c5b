//! Rule files: reading, validating and merging them into a [`Policy`].
//!
//! Every problem is reported as a [`Diagnostic`] (`PATH:LINE:COLUMN: message`), and all of them
//! are collected before giving up, so an operator can fix a policy in one pass.

mod load;
pub mod managed;
pub mod model;
pub mod sites;
mod sources;
mod values;
pub(crate) mod yaml;

use std::fmt;
use std::path::PathBuf;

pub use load::{
    RuleTexts, load_policy, load_policy_and_texts, load_policy_from_texts,
    load_policy_with_managed, load_policy_with_texts, parse_policy_str, read_managed,
    read_rule_files,
};

/// For unit tests: one policy of several rule files' texts (each a file `p.yaml`), platforms in
/// name order as a directory load gives them.
#[cfg(test)]
pub fn policy_of(files: &[&str]) -> Policy {
    let mut policy = Policy::default();
    for text in files {
        let one = parse_policy_str(
            std::path::Path::new("p.yaml"),
            text,
            &LoadOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        policy.platforms.extend(one.platforms);
    }
    policy.platforms.sort_by(|a, b| a.name.cmp(&b.name));
    policy
}
pub use model::*;
pub use sites::{OTHER_SITE, Site, Sites, site_id};
pub use sources::MANAGED_FILE;
pub use values::{
    parse_action, parse_data_date, parse_domain, parse_enforce, parse_feed_kind,
    parse_platform_name, parse_ports, parse_prefix, parse_protocol,
};

use crate::never_block::NeverBlock;

/// One problem in a rule file. A `line` of 0 means the problem concerns the whole path (a
/// directory without rule files), and the position is left out of the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub location: Location,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.location.line == 0 {
            write!(f, "{}: {}", self.location.path.display(), self.message)
        } else {
            write!(f, "{}: {}", self.location, self.message)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A path that cannot be read at all; nothing else was checked.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A path the daemon may not read once it has dropped its capabilities.
    #[error(
        "{path}: {source}: the daemon reads rule files without CAP_DAC_OVERRIDE or \
         CAP_DAC_READ_SEARCH, so their owner, group and mode must let its user read them (and \
         search their directories)"
    )]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Every problem found, in file order.
    #[error("{}", display_lines(.0))]
    Invalid(Vec<Diagnostic>),
}

fn display_lines(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// How a policy is validated.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// A prefix of a `drop` platform may not overlap it (the default: the built-in list alone;
    /// the daemon and `check` pass the one built at start-up).
    pub never_block: NeverBlock,
    /// Added to the built-in shared suffixes (`--shared-suffix`): a name at or below one of
    /// them may only be enforced by name.
    pub shared_suffixes: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnostics_display() {
        let d = Diagnostic {
            location: Location {
                path: "rules/zoom.yaml".into(),
                line: 3,
                column: 7,
            },
            message: "bad".into(),
        };
        assert_eq!(d.to_string(), "rules/zoom.yaml:3:7: bad");
        let whole = Diagnostic {
            location: Location {
                path: "rules".into(),
                line: 0,
                column: 0,
            },
            message: "no rule files".into(),
        };
        assert_eq!(whole.to_string(), "rules: no rule files");
        let err = PolicyError::Invalid(vec![d, whole]);
        assert_eq!(
            err.to_string(),
            "rules/zoom.yaml:3:7: bad\nrules: no rule files"
        );
    }
}
