//! The validated policy: what `check` accepts and everything downstream consumes.

use std::fmt;
use std::path::PathBuf;

use ipnet::IpNet;

/// What happens to a packet that matches a platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Drop,
    Monitor,
    Allow,
}

impl Action {
    /// Every action, in code order.
    pub const ALL: [Action; 3] = [Action::Drop, Action::Monitor, Action::Allow];

    /// The policy keyword and metrics label (`enforcer_common::ACTION_NAMES`).
    pub fn as_str(self) -> &'static str {
        enforcer_common::ACTION_NAMES[usize::from(self.code())]
    }

    /// The value shared with the datapath (`enforcer_common::ACTION_*`).
    pub fn code(self) -> u8 {
        match self {
            Action::Drop => enforcer_common::ACTION_DROP,
            Action::Monitor => enforcer_common::ACTION_MONITOR,
            Action::Allow => enforcer_common::ACTION_ALLOW,
        }
    }

    /// Precedence when several entries match one packet: allow, then drop, then monitor
    /// (`enforcer_common::action_precedence`, the datapath's own order).
    pub fn precedence(self) -> u8 {
        enforcer_common::action_precedence(self.code())
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Any,
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Any => "any",
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    /// IP protocol number shared with the datapath (`enforcer_common::PROTOCOL_*`).
    pub fn code(self) -> u8 {
        match self {
            Protocol::Any => enforcer_common::PROTOCOL_ANY,
            Protocol::Tcp => enforcer_common::PROTOCOL_TCP,
            Protocol::Udp => enforcer_common::PROTOCOL_UDP,
        }
    }
}

/// An inclusive port range; a single port has `first == last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// How an entry's domains are enforced: turned into addresses (`address`), blocked as names by
/// the datapath's DNS answer (`name`), or both (the default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Enforce {
    Name,
    Address,
    #[default]
    Both,
}

impl Enforce {
    /// Every value, in the order of the metrics' `enforce` label.
    pub const ALL: [Enforce; 3] = [Enforce::Name, Enforce::Address, Enforce::Both];

    /// The policy keyword and metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Enforce::Name => "name",
            Enforce::Address => "address",
            Enforce::Both => "both",
        }
    }

    /// Whether the domains go into the datapath's name table.
    pub fn by_name(self) -> bool {
        matches!(self, Enforce::Name | Enforce::Both)
    }

    /// Whether the domains are resolved and learned into address sets.
    pub fn by_address(self) -> bool {
        matches!(self, Enforce::Address | Enforce::Both)
    }
}

impl fmt::Display for Enforce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A domain of a rule: `Exact("zoom.us")` or `Wildcard("zoom.us")` for `*.zoom.us`.
/// Stored lower-case, without a trailing dot.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DomainPattern {
    Exact(String),
    Wildcard(String),
}

impl fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DomainPattern::Exact(d) => f.write_str(d),
            DomainPattern::Wildcard(d) => write!(f, "*.{d}"),
        }
    }
}

/// Where something was written in a rule file, for messages that point back at it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Location {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.path.display(), self.line, self.column)
    }
}

/// One item of a platform's `match` list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Position in the platform's `match` list, from 0.
    pub index: usize,
    pub domains: Vec<DomainPattern>,
    /// Normalised (host bits are an error, so these are exactly as written).
    pub prefixes: Vec<IpNet>,
    pub protocol: Protocol,
    /// Empty means every port of `protocol` (or no port check at all for `Any`).
    pub ports: Vec<PortRange>,
    /// How `domains` are enforced (meaningless without domains; `Both` then).
    pub enforce: Enforce,
    pub location: Location,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub name: String,
    /// Datapath id (counters are keyed by it); 0 until the daemon assigns a lasting one, and
    /// then the platform's position in name order plus one is used.
    pub id: u16,
    pub description: Option<String>,
    pub reference: Option<String>,
    pub action: Action,
    /// The action for clients of named sites, where it differs from `action` (in site name
    /// order; `action-by-site`).
    pub action_by_site: Vec<SiteAction>,
    pub entries: Vec<Entry>,
    pub location: Location,
}

/// A platform's action for the clients of one site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteAction {
    pub site: String,
    pub action: Action,
    pub location: Location,
}

impl Platform {
    /// The platform's action for a client of `site` (`None`: outside every site).
    pub fn action_for(&self, site: Option<&str>) -> Action {
        site.and_then(|s| self.action_by_site.iter().find(|a| a.site == s))
            .map_or(self.action, |a| a.action)
    }
}

/// A validated policy. Platforms are sorted by name; a platform's id in the datapath is its index
/// here plus one, so "ties go to platform name order" and "lower id wins" are the same rule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub platforms: Vec<Platform>,
}

impl Policy {
    /// Datapath id of the platform at `index` in `platforms`: its assigned id, else its
    /// position in name order plus one.
    pub fn platform_id(&self, index: usize) -> u16 {
        match self.platforms.get(index).map(|p| p.id) {
            Some(id) if id != 0 => id,
            _ => Self::platform_rank(index),
        }
    }

    /// Position in name order plus one: how ties between platforms are broken.
    pub fn platform_rank(index: usize) -> u16 {
        u16::try_from(index + 1).unwrap_or(u16::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keywords and the order an operator reads about: allow beats drop beats monitor.
    #[test]
    fn action_names_and_precedence() {
        let names: Vec<&str> = [Action::Drop, Action::Monitor, Action::Allow]
            .iter()
            .map(|a| a.as_str())
            .collect();
        assert_eq!(names, ["drop", "monitor", "allow"]);
        assert!(Action::Allow.precedence() > Action::Drop.precedence());
        assert!(Action::Drop.precedence() > Action::Monitor.precedence());
    }
}
