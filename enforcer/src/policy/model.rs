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

impl Entry {
    /// An entry `enforcer feeds update` may rewrite: prefixes on every port. The first such
    /// entry of a platform with a `feed` is its feed-managed entry.
    pub fn feed_managed(&self) -> bool {
        !self.prefixes.is_empty() && self.protocol == Protocol::Any && self.ports.is_empty()
    }
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
    /// When the vendor data was read (`data-date`).
    pub data_date: Option<DataDate>,
    /// The vendor feed the platform's feed-managed entry comes from (`feed`).
    pub feed: Option<Feed>,
}

/// A calendar date, `YYYY-MM-DD` (`data-date`); validated, so ordering is chronological.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DataDate {
    pub year: u16,
    pub month: u8,
    pub day: u8,
}

impl DataDate {
    /// The date, if it exists (years 1970 to 9999).
    pub fn new(year: u16, month: u8, day: u8) -> Option<DataDate> {
        let leap =
            year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
        let days = match month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap => 29,
            2 => 28,
            _ => return None,
        };
        ((1970..=9999).contains(&year) && (1..=days).contains(&day)).then_some(DataDate {
            year,
            month,
            day,
        })
    }

    /// The UTC date of a Unix time in seconds.
    pub fn from_unix(secs: u64) -> DataDate {
        let (y, m, d, _, _) = crate::report::clock::utc(secs.saturating_mul(1000));
        DataDate {
            year: u16::try_from(y).unwrap_or(9999),
            month: u8::try_from(m).unwrap_or(12),
            day: u8::try_from(d).unwrap_or(31),
        }
    }
}

impl fmt::Display for DataDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// The format of a vendor feed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FeedKind {
    /// Zoom's published txt lists: one CIDR a line.
    ZoomTxt,
    /// The Microsoft 365 endpoints web service (JSON endpoint sets).
    MicrosoftEndpoints,
    /// AWS ip-ranges.json.
    AwsIpRanges,
    /// One prefix a line, `#` comments.
    CidrList,
}

impl FeedKind {
    pub const ALL: [FeedKind; 4] = [
        FeedKind::ZoomTxt,
        FeedKind::MicrosoftEndpoints,
        FeedKind::AwsIpRanges,
        FeedKind::CidrList,
    ];

    /// The policy keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            FeedKind::ZoomTxt => "zoom-txt",
            FeedKind::MicrosoftEndpoints => "microsoft-endpoints",
            FeedKind::AwsIpRanges => "aws-ip-ranges",
            FeedKind::CidrList => "cidr-list",
        }
    }
}

impl fmt::Display for FeedKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `feed: {kind, url, select}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Feed {
    pub kind: FeedKind,
    pub url: String,
    pub select: FeedSelect,
    /// Where `feed` was written.
    pub location: Location,
}

/// What to take from a feed; which fields apply depends on the kind (checked when loading).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeedSelect {
    /// microsoft-endpoints: `serviceArea` (Exchange, SharePoint, Skype, Common).
    pub service_area: Option<String>,
    /// microsoft-endpoints: endpoint-set ids.
    pub ids: Vec<u32>,
    /// aws-ip-ranges: `service` (AMAZON, EC2, CLOUDFRONT, ...).
    pub service: Option<String>,
    /// aws-ip-ranges: `region` (us-east-1, GLOBAL, ...).
    pub region: Option<String>,
}

/// A platform's action for the clients of one site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteAction {
    pub site: String,
    pub action: Action,
    pub location: Location,
}

impl Platform {
    /// Whether the platform drops anywhere: by its own action or for some site.
    pub fn drops_anywhere(&self) -> bool {
        self.action == Action::Drop || self.action_by_site.iter().any(|a| a.action == Action::Drop)
    }

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
