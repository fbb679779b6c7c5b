//! Rule files: reading, validating and merging them into a [`Policy`].
//!
//! Every problem is reported as a [`Diagnostic`] (`PATH:LINE:COLUMN: message`), and all of them
//! are collected before giving up, so an operator can fix a policy in one pass.

mod load;
pub mod managed;
pub mod model;
mod sources;
mod values;
mod yaml;

use std::fmt;
use std::path::PathBuf;

use ipnet::IpNet;

pub use load::{load_policy, load_policy_with_managed, parse_policy_str, read_managed};
pub use model::*;
pub use sources::MANAGED_FILE;

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

#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Added to [`builtin_never_block`]: typically the resolvers' and the gateway's addresses.
    pub never_block: Vec<IpNet>,
}

/// Ranges no rule may ever block: local, private, link-local, multicast and broadcast space.
const BUILTIN_NEVER_BLOCK: [&str; 14] = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "255.255.255.255/32",
    "::/128",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

/// The built-in never-block list (without resolver or interface addresses: callers add those).
pub fn builtin_never_block() -> Vec<IpNet> {
    // The literals are checked by a unit test, so nothing is silently dropped here.
    BUILTIN_NEVER_BLOCK
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_list_is_complete() {
        let list = builtin_never_block();
        assert_eq!(list.len(), BUILTIN_NEVER_BLOCK.len());
        assert!(list.contains(&"255.255.255.255/32".parse().unwrap()));
        assert!(list.contains(&"ff00::/8".parse().unwrap()));
        // The test networks stand for the internet and must stay blockable.
        for internet in ["198.18.0.0/15", "2001:db8::/32"] {
            let net: IpNet = internet.parse().unwrap();
            assert!(list.iter().all(|n| !n.contains(&net) && !net.contains(n)));
        }
    }

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
