//! The reference matcher: what the XDP program decides for a frame, computed the slow and obvious
//! way straight from the [`Policy`] (a linear scan over every platform, entry and prefix).
//!
//! It exists for two reasons: the differential test runs it next to the real datapath on random
//! policies and frames, and `explain` uses [`Matcher::matches_for_ip`] to show an operator every
//! entry that covers an address. It is deliberately written without tries or compiled tables so
//! that it can be checked by reading it.

use std::cmp::{Ordering, Reverse};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use enforcer_common::{
    ACTION_DROP, DIRECTION_EGRESS, DIRECTION_INGRESS, DNS_CAPTURE_BYTES, DNS_EVENT_FRAGMENT,
    DNS_EVENT_QUERY, DNS_EVENT_RESPONSE, DNS_HOLD_MAX_FRAME, DNS_PORT, DNS_STAT_NOT_HELD,
    DNS_STAT_UNSOLICITED, DNS_STAT_UNTRUSTED, DNS_STATS, FAMILY_IPV4, FAMILY_IPV6,
    MAX_PATTERN_LABELS, PASS_NO_MATCH, PASS_NOT_IP, PASS_UNPARSED, PROTOCOL_TCP, PROTOCOL_UDP,
    PROTOCOL_UNKNOWN, ROLE_BOTH, ROLE_INSIDE, ROLE_OUTSIDE, SITE_NONE, SITE_OTHER, TRUST_CLIENT,
    TRUST_GATEWAY, TRUST_SERVER, action_precedence,
};
use ipnet::IpNet;

use crate::compile::EntryAddress;
use crate::policy::Sites;
use crate::policy::model::{Action, Entry, Platform, Policy, PortRange, Protocol};

/// XDP return codes (from `enum xdp_action` in the kernel UAPI).
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;

const ETHERNET_HEADER_LEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88A8;
/// The datapath skips at most this many VLAN tags.
const MAX_VLAN_TAGS: usize = 2;
/// The datapath walks at most this many IPv6 extension headers.
const MAX_IPV6_EXTENSION_HEADERS: usize = 8;

const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AUTH: u8 = 51;
const IPV6_DEST_OPTIONS: u8 = 60;

/// Bytes of a TCP or UDP header that hold the ports: all that must be in the packet to know them.
const PORT_BYTES: usize = 4;
/// Length of a UDP header: a DNS message starts right after it.
const UDP_HEADER_LEN: usize = 8;
/// IPv4 flags and fragment offset: the more-fragments flag and the offset (in 8-byte units).
const IPV4_MORE_FRAGMENTS: u16 = 0x2000;
const IPV4_FRAGMENT_OFFSET: u16 = 0x1FFF;
/// A fragment at this offset (8 bytes) can overwrite the ports of the first one (RFC 1858).
const OVERLAPPING_OFFSET: u16 = 1;

/// What the datapath's parser makes of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParsedFrame {
    /// A well-formed Ethernet frame that carries neither IPv4 nor IPv6.
    NotIp,
    /// Too short, too many VLAN tags, or a malformed IP header.
    Unparsed,
    Ip(Packet),
}

/// The fields of an IP packet that matching looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    /// `FAMILY_IPV4` or `FAMILY_IPV6`.
    pub family: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Upper-layer protocol; `PROTOCOL_UNKNOWN` when the IPv6 header chain could not be walked.
    pub protocol: u8,
    /// `(source port, destination port)` of a TCP or UDP packet whose first four header bytes
    /// are in the packet and that is not a non-first fragment.
    pub ports: Option<(u16, u16)>,
    /// The ports are unknown because they may be hidden on purpose: a first fragment too short
    /// to hold them, or a fragment at offset 1 that can overwrite them (RFC 1858): such a packet
    /// matches drop entries of its protocol whatever their ports; or an IPv6 header chain that
    /// cannot be walked (too many extension headers, or one cut off; `protocol` is then
    /// `PROTOCOL_UNKNOWN`): such a packet matches drop entries of any protocol and ports.
    pub hidden_ports: bool,
    /// Offset of the IP header in the frame.
    pub l3: usize,
    /// Offset of the TCP or UDP header in the frame, when `ports` are known.
    pub l4: Option<usize>,
}

/// What the datapath does with a frame, and which counter it bumps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Decision {
    /// Passed without a match; the reason is one of `PASS_*`.
    Pass(u32),
    /// Matched: the winning platform's id, its action (`ACTION_*`), the direction (`DIRECTION_*`)
    /// and the packet's family (`FAMILY_*`).
    Match {
        platform: u16,
        action: u8,
        direction: u8,
        family: u8,
        /// The client's site id (`SITE_OTHER` outside every site): the per-site counter.
        site: u32,
    },
    /// A DNS response held while holding is on: dropped here and counted under `PASS_DNS_HELD`;
    /// the daemon sends it on once what it teaches is enforced.
    Held,
    /// A DNS query for a name blocked by name, counted under the platform and the query's family
    /// in the blocked-query counters: answered NXDOMAIN (sent back) or, when no answer can be
    /// built, dropped.
    NameBlocked {
        platform: u16,
        family: u8,
        answered: bool,
    },
}

impl Decision {
    /// The XDP action the program returns: a winning `drop` and a held response drop.
    pub fn xdp_action(&self) -> u32 {
        match self {
            Decision::Match { action, .. } if *action == ACTION_DROP => XDP_DROP,
            Decision::Held => XDP_DROP,
            Decision::NameBlocked { answered, .. } => {
                if *answered {
                    XDP_TX
                } else {
                    XDP_DROP
                }
            }
            _ => XDP_PASS,
        }
    }
}

/// Which fragment of a packet an IP packet is, as far as its ports are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fragment {
    /// Not fragmented, or an IPv6 atomic fragment (offset 0, no more to come).
    Whole,
    /// Offset 0 with more to come: holds the transport header's start.
    First,
    /// A later fragment, at this offset in 8-byte units.
    Later(u16),
}

impl Fragment {
    fn new(offset: u16, more: bool) -> Self {
        match (offset, more) {
            (0, false) => Fragment::Whole,
            (0, true) => Fragment::First,
            (offset, _) => Fragment::Later(offset),
        }
    }
}

/// What the datapath copies into its ring buffer for user space about one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsCopy {
    /// `DNS_EVENT_QUERY`, `DNS_EVENT_RESPONSE` or `DNS_EVENT_FRAGMENT`.
    pub kind: u8,
    /// Offset in the frame of the IP header.
    pub l3: usize,
    /// Bytes copied: the frame, cut at `DNS_CAPTURE_BYTES`.
    pub captured: usize,
    /// The frame's length.
    pub length: usize,
    /// Offset in the frame of the DNS message, just after the UDP header (0 for a fragment).
    pub payload_offset: usize,
    /// The frame is held: dropped, for the daemon to put back.
    pub held: bool,
    /// For a response: who asked and on which interface (else unspecified and 0).
    pub query_client: Option<IpAddr>,
    pub query_ifindex: u32,
}

/// The datapath's DNS configuration and memory, as the program keeps them (its `dns` module):
/// what decides which responses are believed, copied and held.
#[derive(Clone, Debug, Default)]
pub struct DnsModel {
    /// The hold deadline is ahead.
    pub holding: bool,
    /// Trust prefixes and their `TRUST_*` bits: an address has the bits of every prefix that
    /// contains it.
    pub trust: Vec<(IpNet, u32)>,
    /// Interface roles (`ROLE_*`) by ifindex; an interface without one is both.
    pub roles: std::collections::HashMap<u32, u32>,
    /// Outstanding queries by (family, server, client port, DNS id): who asked, and where.
    pub queries: std::collections::HashMap<(u8, IpAddr, u16, u16), (IpAddr, u32)>,
    /// Responses passed without being held, by `DNS_STAT_*` (as the program counts them,
    /// assuming its ring buffer has room).
    pub stats: [u64; DNS_STATS as usize],
}

impl DnsModel {
    fn bits(&self, address: IpAddr) -> u32 {
        self.trust
            .iter()
            .filter(|(net, _)| net.contains(&address))
            .fold(0, |acc, (_, b)| acc | b)
    }

    fn role(&self, ifindex: u32) -> u32 {
        self.roles.get(&ifindex).copied().unwrap_or(ROLE_BOTH)
    }
}

fn be16(frame: &[u8], at: usize) -> Option<u16> {
    let bytes = frame.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([bytes[0], bytes[1]]))
}

/// True when `len` bytes starting at `at` lie inside the frame.
fn fits(frame: &[u8], at: usize, len: usize) -> bool {
    at.checked_add(len).is_some_and(|end| end <= frame.len())
}

/// Parses a frame exactly as the datapath does (see the module docs of the XDP program and
/// docs/reference.md, "Matching"): Ethernet, up to two VLAN tags, IPv4 or IPv6 with its
/// extension headers, and the ports of TCP and UDP.
pub fn parse_frame(frame: &[u8]) -> ParsedFrame {
    if frame.len() < ETHERNET_HEADER_LEN {
        return ParsedFrame::Unparsed;
    }
    let mut offset = 12;
    let Some(mut ethertype) = be16(frame, offset) else {
        return ParsedFrame::Unparsed;
    };
    offset += 2;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETHERTYPE_VLAN && ethertype != ETHERTYPE_QINQ {
            break;
        }
        // A tag is TCI (2 bytes) then the inner ethertype (2 bytes).
        if !fits(frame, offset, 4) {
            return ParsedFrame::Unparsed;
        }
        let Some(inner) = be16(frame, offset + 2) else {
            return ParsedFrame::Unparsed;
        };
        ethertype = inner;
        offset += 4;
    }
    match ethertype {
        ETHERTYPE_VLAN | ETHERTYPE_QINQ => ParsedFrame::Unparsed,
        ETHERTYPE_IPV4 => parse_ipv4(frame, offset),
        ETHERTYPE_IPV6 => parse_ipv6(frame, offset),
        _ => ParsedFrame::NotIp,
    }
}

fn parse_ipv4(frame: &[u8], l3: usize) -> ParsedFrame {
    let Some(header) = frame.get(l3..l3 + 20) else {
        return ParsedFrame::Unparsed;
    };
    let version = header[0] >> 4;
    let ihl = usize::from(header[0] & 0x0F);
    if version != 4 || ihl < 5 || !fits(frame, l3, ihl * 4) {
        return ParsedFrame::Unparsed;
    }
    let protocol = header[9];
    let src = Ipv4Addr::new(header[12], header[13], header[14], header[15]);
    let dst = Ipv4Addr::new(header[16], header[17], header[18], header[19]);
    let packet = ip_packet(
        frame,
        l3,
        usize::from(u16::from_be_bytes([header[2], header[3]])),
    );
    let flags = u16::from_be_bytes([header[6], header[7]]);
    let fragment = Fragment::new(
        flags & IPV4_FRAGMENT_OFFSET,
        flags & IPV4_MORE_FRAGMENTS != 0,
    );
    let l4 = l3 + ihl * 4;
    let (ports, hidden_ports) = transport(packet, l4, protocol, fragment);
    ParsedFrame::Ip(Packet {
        family: FAMILY_IPV4,
        src: IpAddr::V4(src),
        dst: IpAddr::V4(dst),
        protocol,
        ports,
        hidden_ports,
        l3,
        l4: ports.map(|_| l4),
    })
}

/// The frame up to the end of the IP packet that starts at `l3` and is `length` bytes long by
/// its header: bytes after it (Ethernet padding) are not the packet's. A length of 0 (as large
/// offloaded packets carry) or one beyond the frame leaves the frame's end.
fn ip_packet(frame: &[u8], l3: usize, length: usize) -> &[u8] {
    match length {
        0 => frame,
        length => &frame[..frame.len().min(l3 + length)],
    }
}

/// The ports of the transport header at `l4` in `packet`, and whether the fragment hides them.
fn transport(
    packet: &[u8],
    l4: usize,
    protocol: u8,
    fragment: Fragment,
) -> (Option<(u16, u16)>, bool) {
    match fragment {
        // A later fragment carries no transport header; at offset 1 it can overwrite the ports.
        Fragment::Later(offset) => (None, offset == OVERLAPPING_OFFSET),
        Fragment::First => {
            let ports = l4_ports(packet, l4, protocol);
            (ports, ports.is_none())
        }
        Fragment::Whole => (l4_ports(packet, l4, protocol), false),
    }
}

fn parse_ipv6(frame: &[u8], l3: usize) -> ParsedFrame {
    let Some(header) = frame.get(l3..l3 + 40) else {
        return ParsedFrame::Unparsed;
    };
    if header[0] >> 4 != 6 {
        return ParsedFrame::Unparsed;
    }
    let mut src = [0u8; 16];
    src.copy_from_slice(&header[8..24]);
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&header[24..40]);
    // The payload length counts from the end of the fixed header; 0 is a jumbogram's.
    let packet = match usize::from(u16::from_be_bytes([header[4], header[5]])) {
        0 => frame,
        payload => ip_packet(frame, l3, 40 + payload),
    };
    let (protocol, ports, hidden_ports, l4) = walk_ipv6_chain(packet, header[6], l3 + 40);
    ParsedFrame::Ip(Packet {
        family: FAMILY_IPV6,
        src: IpAddr::V6(Ipv6Addr::from(src)),
        dst: IpAddr::V6(Ipv6Addr::from(dst)),
        protocol,
        ports,
        hidden_ports,
        l3,
        l4: ports.map(|_| l4),
    })
}

/// Follows the IPv6 extension headers from `cursor` in `frame` (cut at the end of the IP packet)
/// and returns the upper-layer protocol, the ports, whether a fragment hides them, and the
/// offset where the upper-layer header starts (meaningful only with ports).
fn walk_ipv6_chain(
    frame: &[u8],
    first: u8,
    mut cursor: usize,
) -> (u8, Option<(u16, u16)>, bool, usize) {
    // Unwalkable (too many extension headers, or one cut off): protocol and ports unknown, and
    // possibly hidden on purpose.
    const UNKNOWN: (u8, Option<(u16, u16)>, bool, usize) = (PROTOCOL_UNKNOWN, None, true, 0);
    let mut next = first;
    let mut fragment = Fragment::Whole;
    let mut walked = 0;
    while matches!(
        next,
        IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTIONS | IPV6_AUTH | IPV6_FRAGMENT
    ) {
        if walked == MAX_IPV6_EXTENSION_HEADERS {
            // More headers than the datapath is willing to walk.
            return UNKNOWN;
        }
        walked += 1;
        let length = if next == IPV6_FRAGMENT {
            if !fits(frame, cursor, 8) {
                return UNKNOWN;
            }
            let inner = frame[cursor];
            let field = u16::from_be_bytes([frame[cursor + 2], frame[cursor + 3]]);
            match Fragment::new(field >> 3, field & 1 != 0) {
                // A non-first fragment: the protocol is known, its header is not here.
                later @ Fragment::Later(_) => {
                    let (ports, hidden) = transport(frame, cursor, inner, later);
                    return (inner, ports, hidden, cursor);
                }
                Fragment::First => fragment = Fragment::First,
                Fragment::Whole => {}
            }
            next = inner;
            8
        } else {
            if !fits(frame, cursor, 2) {
                return UNKNOWN;
            }
            let units = usize::from(frame[cursor + 1]);
            let length = if next == IPV6_AUTH {
                (units + 2) * 4
            } else {
                (units + 1) * 8
            };
            next = frame[cursor];
            length
        };
        // A header that would extend past the end of the frame is truncated.
        if !fits(frame, cursor, length) {
            return UNKNOWN;
        }
        cursor += length;
    }
    let (ports, hidden) = transport(frame, cursor, next, fragment);
    (next, ports, hidden, cursor)
}

/// Ports of a TCP or UDP header at `l4`, when its first four bytes are inside the packet.
fn l4_ports(packet: &[u8], l4: usize, protocol: u8) -> Option<(u16, u16)> {
    if !matches!(protocol, PROTOCOL_TCP | PROTOCOL_UDP) || !fits(packet, l4, PORT_BYTES) {
        return None;
    }
    Some((be16(packet, l4)?, be16(packet, l4 + 2)?))
}

/// Where a matching prefix comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PrefixSource {
    /// Written in the entry's `prefixes`.
    Published,
    /// An address resolved or learned for one of the entry's domains.
    Address,
}

/// One entry prefix that contains an address (see [`Matcher::matches_for_ip`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpMatch<'a> {
    /// Datapath id.
    pub platform_id: u16,
    /// Position of the platform in the policy (name order).
    pub index: usize,
    pub platform: &'a str,
    pub action: Action,
    /// Position of the entry in the platform's `match` list.
    pub entry: usize,
    pub prefix: IpNet,
    pub source: PrefixSource,
    pub protocol: Protocol,
    /// Empty: every port.
    pub ports: &'a [PortRange],
}

/// One entry prefix that matched one side of a packet.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    /// Datapath id: what the packet is counted under.
    platform: u16,
    /// Name order: what ties are broken by.
    order: u16,
    action: Action,
    prefix_len: u8,
    direction: u8,
    /// The client's site id.
    site: u32,
}

impl Candidate {
    /// Greater wins: action precedence, then the longer prefix, then the platform first in name
    /// order, then egress before ingress.
    fn rank(&self) -> (u8, u8, Reverse<u16>, bool) {
        (
            self.action.precedence(),
            self.prefix_len,
            Reverse(self.order),
            self.direction == DIRECTION_EGRESS,
        )
    }
}

/// The reference matcher over one policy (and optionally the addresses resolved for its domains).
#[derive(Clone, Debug)]
pub struct Matcher<'a> {
    policy: &'a Policy,
    /// `(platform index, entry index in `entries`, address)`.
    addresses: Vec<(usize, usize, IpNet)>,
    /// Name patterns of entries that enforce by name.
    names: Vec<NamePattern>,
    /// The sites behind the gateway: a client's site may have its own action for a platform.
    sites: Sites,
}

/// A name pattern of an entry that enforces by name, as the name table holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamePattern {
    /// The name (`zoom.us`), or for a wildcard the name under which it matches (`*.zoom.us`:
    /// `zoom.us`); lowercase, without a final dot.
    pub suffix: String,
    pub wildcard: bool,
    pub platform: u16,
    /// Platform name order (lower wins a tie).
    pub rank: u16,
    pub action: u8,
}

/// Where a query's question ends, and what the reference needs to answer it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct QueryQuestion {
    /// Offset of the DNS message in the frame.
    message: usize,
    /// Offset just after QTYPE and QCLASS.
    end: usize,
    edns: bool,
}

impl<'a> Matcher<'a> {
    /// A matcher over the policy's published prefixes (domains match nothing).
    pub fn new(policy: &'a Policy) -> Self {
        Self {
            policy,
            addresses: Vec::new(),
            names: Vec::new(),
            sites: Sites::default(),
        }
    }

    /// The same matcher, with these sites (their `action-by-site` overrides and counters).
    pub fn with_sites(mut self, sites: Sites) -> Self {
        self.sites = sites;
        self
    }

    /// A client's site: its id (`SITE_OTHER` outside every site) and name.
    fn site_of(&self, client: IpAddr) -> (u32, Option<&str>) {
        // Without sites the datapath neither looks one up nor counts by site.
        if self.sites.sites.is_empty() {
            return (SITE_NONE, None);
        }
        match self.sites.site_of(client) {
            Some(site) => (site.id, Some(site.name.as_str())),
            None => (SITE_OTHER, None),
        }
    }

    /// The action a name-table verdict (platform id, action code) takes for a client, and the
    /// client's site id.
    fn name_action_for(&self, platform: u16, action: u8, client: IpAddr) -> (u8, u32) {
        let (id, name) = self.site_of(client);
        let own = (0..self.policy.platforms.len())
            .find(|&i| self.policy.platform_id(i) == platform)
            .and_then(|i| self.policy.platforms.get(i));
        // Only an override that differs from the platform's own action changes the verdict
        // (the site's variant holds no other).
        match own.map(|p| (p.action, p.action_for(name))) {
            Some((own, for_site)) if for_site != own => (for_site.code(), id),
            _ => (action, id),
        }
    }

    /// The same matcher, with these name patterns (entries that enforce by name).
    pub fn with_names(mut self, names: Vec<NamePattern>) -> Self {
        self.names = names;
        self
    }

    /// A matcher that also treats each resolved address as a prefix of its entry, like
    /// `compile::compile_with`. Addresses naming a missing platform or entry are ignored.
    pub fn with_addresses(
        policy: &'a Policy,
        addresses: impl IntoIterator<Item = EntryAddress>,
    ) -> Self {
        let addresses = addresses
            .into_iter()
            .filter(|a| {
                policy
                    .platforms
                    .get(a.platform)
                    .is_some_and(|p| a.entry < p.entries.len())
            })
            .map(|a| (a.platform, a.entry, a.net))
            .collect();
        Self {
            policy,
            addresses,
            names: Vec::new(),
            sites: Sites::default(),
        }
    }

    /// Every (platform, entry, prefix) of the policy with where the prefix came from.
    fn prefixes(
        &self,
    ) -> impl Iterator<Item = (usize, &'a Platform, &'a Entry, IpNet, PrefixSource)> {
        let policy = self.policy;
        let published = policy
            .platforms
            .iter()
            .enumerate()
            .flat_map(|(p, platform)| {
                platform.entries.iter().flat_map(move |entry| {
                    entry
                        .prefixes
                        .iter()
                        .map(move |net| (p, platform, entry, *net, PrefixSource::Published))
                })
            });
        let addresses = self.addresses.iter().filter_map(move |&(p, e, net)| {
            let platform = policy.platforms.get(p)?;
            let entry = platform.entries.get(e)?;
            Some((p, platform, entry, net, PrefixSource::Address))
        });
        published.chain(addresses)
    }

    /// The datapath's decision for a raw Ethernet frame.
    pub fn decide(&self, frame: &[u8]) -> Decision {
        match parse_frame(frame) {
            ParsedFrame::NotIp => Decision::Pass(PASS_NOT_IP),
            ParsedFrame::Unparsed => Decision::Pass(PASS_UNPARSED),
            ParsedFrame::Ip(packet) => self.decide_packet(&packet),
        }
    }

    /// The datapath's decision for a raw frame arriving on interface `ifindex`, and the copy it
    /// makes for user space (assuming its ring buffer has room), given its DNS state `dns`, which
    /// a query changes (it is remembered) and an answer too (its query is forgotten). See the
    /// XDP program's `dns` module: only UDP the policy does not drop is looked at; a query to a
    /// trusted server (or from a trusted client) not arriving outside is remembered and copied;
    /// a response is believed when it arrives not inside, from a trusted server (or to a trusted
    /// client), answering a remembered query (same server, client port and id; addressed to its
    /// client or to the gateway) that came in on another interface; a believed response is
    /// copied and, while holding, held when its frame can be put back; a later fragment from a
    /// trusted server (or to a trusted client) not arriving inside is copied and passed.
    pub fn decide_dns(
        &self,
        frame: &[u8],
        ifindex: u32,
        dns: &mut DnsModel,
    ) -> (Decision, Option<DnsCopy>) {
        let ParsedFrame::Ip(packet) = parse_frame(frame) else {
            return (self.decide(frame), None);
        };
        let role = dns.role(ifindex);
        let mut decision = self.decide_packet_on(&packet, role);
        // A query from a client side that the policy does not drop: the name table first.
        if decision.xdp_action() != XDP_DROP
            && is_query_candidate(&packet)
            && role != ROLE_OUTSIDE
            && let Some((platform, action, question)) = self.name_verdict(frame, &packet)
        {
            // The client's site may have its own action for the platform.
            let (action, site) = self.name_action_for(platform, action, packet.src);
            if action == ACTION_DROP {
                let answered = question.is_some_and(|q| {
                    nxdomain_answer(frame, &packet, &q, DEFAULT_BLOCK_TTL).is_some()
                });
                let blocked = Decision::NameBlocked {
                    platform,
                    family: packet.family,
                    answered,
                };
                return (blocked, None);
            }
            decision = Decision::Match {
                platform,
                action,
                direction: DIRECTION_EGRESS,
                family: packet.family,
                site,
            };
        }
        if packet.protocol != PROTOCOL_UDP || decision.xdp_action() == XDP_DROP {
            return (decision, None);
        }
        let copy =
            |kind: u8, payload_offset: usize, held: bool, query: Option<(IpAddr, u32)>| DnsCopy {
                kind,
                l3: packet.l3,
                captured: frame.len().min(DNS_CAPTURE_BYTES),
                length: frame.len(),
                payload_offset,
                held,
                query_client: query.map(|(client, _)| client),
                query_ifindex: query.map_or(0, |(_, i)| i),
            };
        let (Some((src_port, dst_port)), Some(l4)) = (packet.ports, packet.l4) else {
            let from_trusted = dns.bits(packet.src) & TRUST_SERVER != 0
                || dns.bits(packet.dst) & TRUST_CLIENT != 0;
            if !packet.hidden_ports && role != ROLE_INSIDE && from_trusted {
                return (decision, Some(copy(DNS_EVENT_FRAGMENT, 0, false, None)));
            }
            return (decision, None);
        };
        let payload = l4 + UDP_HEADER_LEN;
        let id = be16(frame, payload);
        if dst_port == DNS_PORT && src_port != DNS_PORT {
            let to_trusted = dns.bits(packet.dst) & TRUST_SERVER != 0
                || dns.bits(packet.src) & TRUST_CLIENT != 0;
            let Some(id) = id else {
                return (decision, None);
            };
            if role == ROLE_OUTSIDE || !to_trusted {
                return (decision, None);
            }
            dns.queries.insert(
                (packet.family, packet.dst, src_port, id),
                (packet.src, ifindex),
            );
            return (decision, Some(copy(DNS_EVENT_QUERY, payload, false, None)));
        }
        if src_port != DNS_PORT {
            return (decision, None);
        }
        let dst_bits = dns.bits(packet.dst);
        let passed = |dns: &mut DnsModel, stat: u32| {
            dns.stats[stat as usize] += 1;
            (decision, None)
        };
        if role == ROLE_INSIDE
            || (dns.bits(packet.src) & TRUST_SERVER == 0 && dst_bits & TRUST_CLIENT == 0)
        {
            return passed(dns, DNS_STAT_UNTRUSTED);
        }
        let Some(id) = id else {
            return passed(dns, DNS_STAT_UNSOLICITED);
        };
        let key = (packet.family, packet.src, dst_port, id);
        let Some(&(client, query_if)) = dns.queries.get(&key) else {
            return passed(dns, DNS_STAT_UNSOLICITED);
        };
        if client != packet.dst && dst_bits & TRUST_GATEWAY == 0 {
            return passed(dns, DNS_STAT_UNSOLICITED);
        }
        // An answer forged on the client's link arrives where its query came in.
        if query_if == ifindex {
            return passed(dns, DNS_STAT_UNTRUSTED);
        }
        dns.queries.remove(&key);
        let held = dns.holding && frame.len() <= DNS_HOLD_MAX_FRAME;
        if !held {
            dns.stats[DNS_STAT_NOT_HELD as usize] += 1;
        }
        let copied = copy(DNS_EVENT_RESPONSE, payload, held, Some((client, query_if)));
        (if held { Decision::Held } else { decision }, Some(copied))
    }

    /// The answer the datapath sends back for a query it blocks by name (with the SOA TTL
    /// `ttl`), or `None` when it sends none (not blocked by name, or no answer can be built).
    pub fn name_answer(
        &self,
        frame: &[u8],
        ifindex: u32,
        dns: &DnsModel,
        ttl: u32,
    ) -> Option<Vec<u8>> {
        let ParsedFrame::Ip(packet) = parse_frame(frame) else {
            return None;
        };
        let role = dns.role(ifindex);
        if self.decide_packet_on(&packet, role).xdp_action() == XDP_DROP
            || !is_query_candidate(&packet)
            || role == ROLE_OUTSIDE
        {
            return None;
        }
        let (platform, action, question) = self.name_verdict(frame, &packet)?;
        match (
            self.name_action_for(platform, action, packet.src).0,
            question,
        ) {
            (ACTION_DROP, Some(question)) => nxdomain_answer(frame, &packet, &question, ttl),
            _ => None,
        }
    }

    /// The winning name pattern for the query in `frame` (platform, action) and its question;
    /// `None` when the query is not one the datapath reads or no pattern matches it.
    fn name_verdict(
        &self,
        frame: &[u8],
        packet: &Packet,
    ) -> Option<(u16, u8, Option<QueryQuestion>)> {
        let question = query_question(frame, packet)?;
        let name = question_name(frame, question.message + 12)?;
        // A question cut short is passed untouched, whatever its name.
        let question = question_end(frame, question)?;
        // (precedence, labels of the pattern's name, reversed platform order): highest wins.
        let mut best: Option<((u8, usize, u16), u16, u8)> = None;
        for p in &self.names {
            // Compared label by label: a label may hold a dot of its own.
            let pattern: Vec<Vec<u8>> = p
                .suffix
                .split('.')
                .map(|l| l.as_bytes().to_ascii_lowercase())
                .collect();
            let p_labels = pattern.len();
            if p_labels > MAX_PATTERN_LABELS {
                continue;
            }
            let matched = if p.wildcard {
                name.len() > p_labels && name.ends_with(&pattern)
            } else {
                name == pattern
            };
            if !matched {
                continue;
            }
            let key = (action_precedence(p.action), p_labels, u16::MAX - p.rank);
            if best.is_none_or(|(k, _, _)| key > k) {
                best = Some((key, p.platform, p.action));
            }
        }
        best.map(|(_, platform, action)| (platform, action, Some(question)))
    }

    /// The datapath's decision for a parsed IP packet.
    pub fn decide_packet(&self, packet: &Packet) -> Decision {
        self.decide_packet_on(packet, ROLE_BOTH)
    }

    /// The datapath's decision for a parsed IP packet arriving on an interface of `role`: one
    /// arriving inside is looked up by its destination only (egress), one arriving outside by
    /// its source only (ingress), one on an interface of both roles by both.
    pub fn decide_packet_on(&self, packet: &Packet, role: u32) -> Decision {
        let mut best: Option<Candidate> = None;
        for (p, platform, entry, net, _) in self.prefixes() {
            // Each side with its client (the inside address): the source of an egress match,
            // the destination of an ingress one.
            let sides = [
                (
                    packet.dst,
                    packet.src,
                    DIRECTION_EGRESS,
                    packet.ports.map(|(_, dst)| dst),
                    role != ROLE_OUTSIDE,
                ),
                (
                    packet.src,
                    packet.dst,
                    DIRECTION_INGRESS,
                    packet.ports.map(|(src, _)| src),
                    role != ROLE_INSIDE,
                ),
            ];
            for (addr, client, direction, port, looked_up) in sides {
                if !looked_up || !net.contains(&addr) {
                    continue;
                }
                let (site, site_name) = self.site_of(client);
                let action = platform.action_for(site_name);
                if !entry_accepts(entry, action, packet, port) {
                    continue;
                }
                let candidate = Candidate {
                    platform: self.policy.platform_id(p),
                    order: Policy::platform_rank(p),
                    action,
                    prefix_len: net.prefix_len(),
                    direction,
                    site,
                };
                if best.is_none_or(|b| candidate.rank().cmp(&b.rank()) == Ordering::Greater) {
                    best = Some(candidate);
                }
            }
        }
        match best {
            None => Decision::Pass(PASS_NO_MATCH),
            Some(c) => Decision::Match {
                platform: c.platform,
                action: c.action.code(),
                direction: c.direction,
                family: packet.family,
                site: c.site,
            },
        }
    }

    /// Every entry prefix containing `ip`, whatever its protocol and ports, best first (in the
    /// order the datapath ranks them: action precedence, longer prefix, earlier platform).
    pub fn matches_for_ip(&self, ip: IpAddr) -> Vec<IpMatch<'a>> {
        let mut matches: Vec<IpMatch<'a>> = self
            .prefixes()
            .filter(|(_, _, _, net, _)| net.contains(&ip))
            .map(|(p, platform, entry, net, source)| IpMatch {
                platform_id: self.policy.platform_id(p),
                index: p,
                platform: platform.name.as_str(),
                action: platform.action,
                entry: entry.index,
                prefix: net,
                source,
                protocol: entry.protocol,
                ports: entry.ports.as_slice(),
            })
            .collect();
        matches.sort_by_key(|m| {
            (
                Reverse(m.action.precedence()),
                Reverse(m.prefix.prefix_len()),
                m.index,
                m.entry,
            )
        });
        matches
    }
}

/// Whether an entry (of a platform with `action`) accepts a packet by its protocol and ports,
/// given the port on the matched side.
fn entry_accepts(entry: &Entry, action: Action, packet: &Packet, port: Option<u16>) -> bool {
    match entry.protocol {
        // `any` ignores ports altogether.
        Protocol::Any => true,
        Protocol::Tcp | Protocol::Udp => {
            // An unwalkable IPv6 chain may hide any protocol: a drop entry cannot be escaped
            // that way either.
            if packet.protocol == PROTOCOL_UNKNOWN && packet.hidden_ports {
                return action == Action::Drop;
            }
            if packet.protocol != entry.protocol.code() {
                return false;
            }
            if entry.ports.is_empty() {
                return true;
            }
            match port {
                Some(port) => entry.ports.iter().any(|range| range.contains(port)),
                // Ports a fragment may hide could be any: a drop entry's ports cannot be
                // escaped that way.
                None if packet.hidden_ports => action == Action::Drop,
                // Otherwise unknown ports (non-first fragment, truncated header) match no list.
                None => false,
            }
        }
    }
}

/// The SOA TTL of synthesized answers when none is configured (`--dns-block-ttl`'s default).
pub const DEFAULT_BLOCK_TTL: u32 = 300;

/// Whether the datapath looks at this packet's name: UDP or TCP to port 53, not from it.
fn is_query_candidate(packet: &Packet) -> bool {
    (packet.protocol == PROTOCOL_UDP || packet.protocol == PROTOCOL_TCP)
        && packet
            .ports
            .is_some_and(|(src, dst)| dst == DNS_PORT && src != DNS_PORT)
}

/// The DNS message of a standard query with one question: where it starts, with its question's
/// end and EDNS left to `question_end`.
fn query_question(frame: &[u8], packet: &Packet) -> Option<QueryQuestion> {
    let l4 = packet.l4?;
    let message = if packet.protocol == PROTOCOL_UDP {
        l4 + UDP_HEADER_LEN
    } else {
        let data_offset = usize::from(*frame.get(l4 + 12)? >> 4) * 4;
        if data_offset < 20 {
            return None;
        }
        l4 + data_offset + 2
    };
    let flags = *frame.get(message + 2)?;
    let qdcount = be16(frame, message + 4)?;
    be16(frame, message + 10)?;
    if flags & 0xF8 != 0 || qdcount != 1 {
        return None;
    }
    Some(QueryQuestion {
        message,
        end: 0,
        edns: false,
    })
}

/// The question name at `at` as its labels (ASCII letters lowercased), read as the datapath
/// does: labels of at most 63 bytes, the whole name (root label included) under 255 bytes and
/// inside the frame; no compression; not the root name.
fn question_name(frame: &[u8], at: usize) -> Option<Vec<Vec<u8>>> {
    let mut position = 0usize;
    let mut labels = Vec::new();
    loop {
        let length = usize::from(*frame.get(at + position)?);
        if position >= 256 {
            return None;
        }
        if length == 0 {
            break;
        }
        if length > 63 {
            return None;
        }
        let label = frame.get(at + position + 1..at + position + 1 + length)?;
        labels.push(label.to_ascii_lowercase());
        position += length + 1;
        if position >= 255 {
            return None;
        }
    }
    if labels.is_empty() {
        return None;
    }
    Some(labels)
}

/// The question's end (after QTYPE and QCLASS) and whether an OPT record follows; `None` when
/// the frame stops before the end.
fn question_end(frame: &[u8], mut question: QueryQuestion) -> Option<QueryQuestion> {
    let qname = question.message + 12;
    let mut position = qname;
    loop {
        let length = usize::from(*frame.get(position)?);
        if length == 0 {
            break;
        }
        position += length + 1;
    }
    let end = position + 1 + 4;
    if end > frame.len() {
        return None;
    }
    let arcount = be16(frame, question.message + 10)?;
    question.end = end;
    question.edns = arcount >= 1 && frame.get(end) == Some(&0) && be16(frame, end + 1) == Some(41);
    Some(question)
}

/// The SOA of synthesized answers (owner ".", IN, RDLENGTH 22, MNAME and RNAME ".", serial 1,
/// refresh 3600, retry 600, expire 86400); TTL and minimum are set per answer.
const SOA_RECORD: [u8; 33] = [
    0, 0, 6, 0, 1, 0, 0, 0, 0, 0, 22, 0, 0, 0, 0, 0, 1, 0, 0, 0x0E, 0x10, 0, 0, 0x02, 0x58, 0, 1,
    0x51, 0x80, 0, 0, 0, 0,
];
/// OPT with Extended DNS Error 15 (Blocked), UDP size 1232.
const OPT_RECORD: [u8; 17] = [0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 6, 0, 15, 0, 2, 0, 15];
/// Largest answer frame the datapath builds.
const MAX_ANSWER_FRAME: usize = 512;

fn checksum(words: &[u8], mut sum: u32) -> u16 {
    for pair in words.chunks(2) {
        sum += u32::from(u16::from_be_bytes([
            pair[0],
            pair.get(1).copied().unwrap_or(0),
        ]));
    }
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !u16::try_from(sum).unwrap_or(0xFFFF)
}

/// The NXDOMAIN answer frame for a UDP query, built the obvious way: the frame up to the end of
/// its question, MACs, addresses and ports swapped, IPv4 TTL or IPv6 hop limit 64, lengths, DNS
/// flags (QR, opcode and RD kept, RA, RCODE 3) and counts (1 question, 1 authority, 1 additional
/// with EDNS), the SOA, the OPT with EDE 15 when the query had EDNS, then the IPv4 header and UDP
/// checksums. `None` when the datapath cannot answer it: TCP, a fragment, IPv6 with extension
/// headers, or an answer over 512 bytes.
fn nxdomain_answer(
    frame: &[u8],
    packet: &Packet,
    question: &QueryQuestion,
    ttl: u32,
) -> Option<Vec<u8>> {
    let l4 = packet.l4?;
    let l3 = packet.l3;
    if packet.protocol != PROTOCOL_UDP {
        return None;
    }
    let v4 = packet.family == FAMILY_IPV4;
    if v4 {
        if be16(frame, l3 + 6)? & 0x3FFF != 0 {
            return None;
        }
    } else if l4 != l3 + 40 {
        return None;
    }
    let opt = if question.edns { OPT_RECORD.len() } else { 0 };
    let new_len = question.end + SOA_RECORD.len() + opt;
    if new_len > MAX_ANSWER_FRAME {
        return None;
    }
    let mut out = frame.get(..question.end)?.to_vec();
    let (dst_mac, src_mac) = (out[0..6].to_vec(), out[6..12].to_vec());
    out[0..6].copy_from_slice(&src_mac);
    out[6..12].copy_from_slice(&dst_mac);
    let (at, len) = if v4 { (l3 + 12, 4) } else { (l3 + 8, 16) };
    let (a, b) = (
        out[at..at + len].to_vec(),
        out[at + len..at + 2 * len].to_vec(),
    );
    out[at..at + len].copy_from_slice(&b);
    out[at + len..at + 2 * len].copy_from_slice(&a);
    let udp_len = new_len - l4;
    let udp_len16 = u16::try_from(udp_len).ok()?;
    if v4 {
        let total = u16::try_from(new_len - l3).ok()?;
        out[l3 + 2..l3 + 4].copy_from_slice(&total.to_be_bytes());
        out[l3 + 8] = 64;
    } else {
        out[l3 + 4..l3 + 6].copy_from_slice(&udp_len16.to_be_bytes());
        out[l3 + 7] = 64;
    }
    let (sport, dport) = packet.ports?;
    out[l4..l4 + 2].copy_from_slice(&dport.to_be_bytes());
    out[l4 + 2..l4 + 4].copy_from_slice(&sport.to_be_bytes());
    out[l4 + 4..l4 + 6].copy_from_slice(&udp_len16.to_be_bytes());
    out[l4 + 6..l4 + 8].copy_from_slice(&[0, 0]);
    let m = question.message;
    out[m + 2] = 0x80 | (out[m + 2] & 0x79);
    out[m + 3] = 0x80 | 3;
    out[m + 4..m + 12].copy_from_slice(&[0, 1, 0, 0, 0, 1, 0, u8::from(question.edns)]);
    let mut soa = SOA_RECORD;
    soa[5..9].copy_from_slice(&ttl.to_be_bytes());
    soa[29..33].copy_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&soa);
    if question.edns {
        out.extend_from_slice(&OPT_RECORD);
    }
    if v4 {
        let header_len = usize::from(out[l3] & 0x0F) * 4;
        out[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
        let c = checksum(&out[l3..l3 + header_len], 0);
        out[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
    }
    let mut pseudo = out[at..at + 2 * len].to_vec();
    pseudo.extend_from_slice(&[0, PROTOCOL_UDP]);
    pseudo.extend_from_slice(&udp_len16.to_be_bytes());
    let sum = u32::from(!checksum(&pseudo, 0));
    let c = match checksum(&out[l4..], sum) {
        0 => 0xFFFF,
        c => c,
    };
    out[l4 + 6..l4 + 8].copy_from_slice(&c.to_be_bytes());
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::Location;
    use enforcer_common::{ACTION_ALLOW, ACTION_MONITOR};

    fn eth(ethertype: u16) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        f.extend_from_slice(&ethertype.to_be_bytes());
        f
    }

    fn ipv4(src: [u8; 4], dst: [u8; 4], protocol: u8, frag: u16) -> Vec<u8> {
        let mut h = vec![0x45, 0, 0, 0, 0, 0];
        h.extend_from_slice(&frag.to_be_bytes());
        h.extend_from_slice(&[64, protocol, 0, 0]);
        h.extend_from_slice(&src);
        h.extend_from_slice(&dst);
        h
    }

    fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next: u8) -> Vec<u8> {
        let mut h = vec![0x60, 0, 0, 0, 0, 0, next, 64];
        h.extend_from_slice(&src.octets());
        h.extend_from_slice(&dst.octets());
        h
    }

    fn udp(src: u16, dst: u16) -> Vec<u8> {
        let mut h = src.to_be_bytes().to_vec();
        h.extend_from_slice(&dst.to_be_bytes());
        h.extend_from_slice(&[0, 8, 0, 0]);
        h
    }

    fn tcp(src: u16, dst: u16) -> Vec<u8> {
        let mut h = src.to_be_bytes().to_vec();
        h.extend_from_slice(&dst.to_be_bytes());
        h.extend_from_slice(&[0; 16]);
        h
    }

    fn v4_udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut f = eth(ETHERTYPE_IPV4);
        f.extend(ipv4(src, dst, 17, 0));
        f.extend(udp(sport, dport));
        f
    }

    fn v4_tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut f = eth(ETHERTYPE_IPV4);
        f.extend(ipv4(src, dst, 6, 0));
        f.extend(tcp(sport, dport));
        f
    }

    const CLIENT: [u8; 4] = [10, 0, 0, 1];
    const A: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    const B: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);

    fn packet(frame: &[u8]) -> Packet {
        match parse_frame(frame) {
            ParsedFrame::Ip(p) => p,
            other => panic!("expected an IP packet, got {other:?}"),
        }
    }

    #[test]
    fn short_and_non_ip_frames() {
        assert_eq!(parse_frame(&[]), ParsedFrame::Unparsed);
        assert_eq!(parse_frame(&[0; 13]), ParsedFrame::Unparsed);
        assert_eq!(parse_frame(&eth(0x0806)), ParsedFrame::NotIp);
        assert_eq!(parse_frame(&eth(0x88cc)), ParsedFrame::NotIp);
        // Exactly an Ethernet header announcing IPv4: the IP header is missing.
        assert_eq!(parse_frame(&eth(ETHERTYPE_IPV4)), ParsedFrame::Unparsed);
        assert_eq!(parse_frame(&eth(ETHERTYPE_IPV6)), ParsedFrame::Unparsed);
    }

    #[test]
    fn vlan_tags() {
        let inner = {
            let mut h = ipv4(CLIENT, [198, 18, 0, 1], 17, 0);
            h.extend(udp(1000, 53));
            h
        };
        for tags in [
            &[][..],
            &[ETHERTYPE_VLAN][..],
            &[ETHERTYPE_QINQ, ETHERTYPE_VLAN][..],
        ] {
            let mut f = eth(*tags.first().unwrap_or(&ETHERTYPE_IPV4));
            for i in 0..tags.len() {
                f.extend_from_slice(&[0, 5]);
                let next = tags.get(i + 1).copied().unwrap_or(ETHERTYPE_IPV4);
                f.extend_from_slice(&next.to_be_bytes());
            }
            f.extend_from_slice(&inner);
            assert_eq!(packet(&f).ports, Some((1000, 53)), "{} tags", tags.len());
        }
        // A third tag is not skipped.
        let mut f = eth(ETHERTYPE_VLAN);
        f.extend_from_slice(&[0, 5, 0x81, 0x00, 0, 6, 0x88, 0xa8, 0, 7, 0x08, 0x00]);
        f.extend_from_slice(&inner);
        assert_eq!(parse_frame(&f), ParsedFrame::Unparsed);
        // A truncated tag.
        let mut f = eth(ETHERTYPE_VLAN);
        f.extend_from_slice(&[0, 5, 0x08]);
        assert_eq!(parse_frame(&f), ParsedFrame::Unparsed);
        // A tag followed by something that is not IP.
        let mut f = eth(ETHERTYPE_QINQ);
        f.extend_from_slice(&[0, 5, 0x08, 0x06, 0, 0]);
        assert_eq!(parse_frame(&f), ParsedFrame::NotIp);
    }

    #[test]
    fn ipv4_header_checks() {
        let good = v4_udp(CLIENT, [198, 18, 0, 1], 1000, 53);
        assert_eq!(
            packet(&good),
            Packet {
                family: FAMILY_IPV4,
                src: IpAddr::from(CLIENT),
                dst: IpAddr::from([198, 18, 0, 1]),
                protocol: 17,
                ports: Some((1000, 53)),
                hidden_ports: false,
                l3: 14,
                l4: Some(34),
            }
        );
        let mut bad_version = good.clone();
        bad_version[14] = 0x65;
        assert_eq!(parse_frame(&bad_version), ParsedFrame::Unparsed);
        let mut short_ihl = good.clone();
        short_ihl[14] = 0x44;
        assert_eq!(parse_frame(&short_ihl), ParsedFrame::Unparsed);
        // IHL 15 = 60 bytes of header: longer than the frame.
        let mut long_ihl = good.clone();
        long_ihl[14] = 0x4f;
        assert_eq!(parse_frame(&long_ihl), ParsedFrame::Unparsed);
        // IHL 7: ports are read after the options.
        let mut options = eth(ETHERTYPE_IPV4);
        let mut h = ipv4(CLIENT, [198, 18, 0, 1], 17, 0);
        h[0] = 0x47;
        options.extend(h);
        options.extend_from_slice(&[1; 8]);
        options.extend(udp(7, 9));
        assert_eq!(packet(&options).ports, Some((7, 9)));
        // The IP header alone, 19 bytes of it: unparsed; 20: parsed without ports.
        assert_eq!(parse_frame(&good[..33]), ParsedFrame::Unparsed);
        assert_eq!(packet(&good[..34]).ports, None);
        // The ports are the first four bytes of UDP and TCP alike; the rest may be missing.
        assert_eq!(packet(&good[..37]).ports, None);
        assert_eq!(packet(&good[..38]).ports, Some((1000, 53)));
        let t = v4_tcp(CLIENT, [198, 18, 0, 1], 1000, 443);
        assert_eq!(packet(&t[..37]).ports, None);
        assert_eq!(packet(&t[..38]).ports, Some((1000, 443)));
        // Bytes past the total length are padding, not ports.
        let mut short = good.clone();
        short[16..18].copy_from_slice(&22u16.to_be_bytes());
        assert_eq!(packet(&short).ports, None);
        short[16..18].copy_from_slice(&24u16.to_be_bytes());
        assert_eq!(packet(&short).ports, Some((1000, 53)));
        // Ethernet padding after the packet is ignored.
        let mut padded = good.clone();
        padded.extend_from_slice(&[0; 20]);
        assert_eq!(packet(&padded).ports, Some((1000, 53)));
    }

    #[test]
    fn ipv4_fragments() {
        let mut f = eth(ETHERTYPE_IPV4);
        // More-fragments set, offset 0: the first fragment keeps its ports.
        f.extend(ipv4(CLIENT, [198, 18, 0, 1], 17, 0x2000));
        f.extend(udp(1, 2));
        assert_eq!(packet(&f).ports, Some((1, 2)));
        assert!(!packet(&f).hidden_ports);
        // A first fragment cut inside the ports hides them; a whole packet cut there does not.
        let tiny = &f[..f.len() - 5];
        assert_eq!(
            (packet(tiny).ports, packet(tiny).hidden_ports),
            (None, true)
        );
        let mut whole = tiny.to_vec();
        whole[20..22].copy_from_slice(&0u16.to_be_bytes());
        assert_eq!(
            (packet(&whole).ports, packet(&whole).hidden_ports),
            (None, false)
        );
        // Offset 1 (8 bytes): ports unknown and hidden, protocol still UDP; last or not.
        for field in [0x0001u16, 0x2001] {
            f[20..22].copy_from_slice(&field.to_be_bytes());
            let p = packet(&f);
            assert_eq!((p.protocol, p.ports, p.hidden_ports), (17, None, true));
        }
        // Offset 2: ports unknown, not hidden.
        f[20..22].copy_from_slice(&0x2002u16.to_be_bytes());
        assert_eq!((packet(&f).ports, packet(&f).hidden_ports), (None, false));
        // Don't-fragment alone is not a fragment.
        f[20..22].copy_from_slice(&0x4000u16.to_be_bytes());
        assert_eq!(packet(&f).ports, Some((1, 2)));
    }

    fn ext(next: u8, len_units: u8, total: usize) -> Vec<u8> {
        let mut h = vec![next, len_units];
        h.resize(total, 0);
        h
    }

    fn frag(next: u8, offset: u16) -> Vec<u8> {
        let mut h = vec![next, 0];
        h.extend_from_slice(&(offset << 3).to_be_bytes());
        h.extend_from_slice(&[0, 0, 0, 1]);
        h
    }

    #[test]
    fn ipv6_extension_headers() {
        let mut f = eth(ETHERTYPE_IPV6);
        f.extend(ipv6(A, B, IPV6_HOP_BY_HOP));
        f.extend(ext(IPV6_ROUTING, 1, 16));
        f.extend(ext(IPV6_AUTH, 0, 8));
        f.extend(ext(IPV6_FRAGMENT, 1, 12)); // AH: (1 + 2) * 4
        f.extend(frag(IPV6_DEST_OPTIONS, 0));
        f.extend(ext(17, 0, 8));
        f.extend(udp(5353, 3478));
        let p = packet(&f);
        assert_eq!((p.src, p.dst), (IpAddr::V6(A), IpAddr::V6(B)));
        assert_eq!((p.protocol, p.ports), (17, Some((5353, 3478))));
        // Cut inside the UDP ports: protocol known, ports unknown (the first fragment of this
        // chain is also its last, so nothing hides them).
        let cut = packet(&f[..f.len() - 5]);
        assert_eq!(
            (cut.protocol, cut.ports, cut.hidden_ports),
            (17, None, false)
        );
        // Cut inside the destination options: the chain cannot be walked.
        let cut = f.len() - 8 - 3;
        assert_eq!(packet(&f[..cut]).protocol, PROTOCOL_UNKNOWN);
        // Only the fixed header.
        assert_eq!(packet(&f[..54]).protocol, PROTOCOL_UNKNOWN);
        let mut bad_version = f.clone();
        bad_version[14] = 0x40;
        assert_eq!(parse_frame(&bad_version), ParsedFrame::Unparsed);
        assert_eq!(parse_frame(&f[..53]), ParsedFrame::Unparsed);
    }

    #[test]
    fn ipv6_fragments() {
        let mut f = eth(ETHERTYPE_IPV6);
        f.extend(ipv6(A, B, IPV6_FRAGMENT));
        f.extend(frag(6, 0));
        f.extend(tcp(1, 443));
        assert_eq!(packet(&f).ports, Some((1, 443)));
        let mut later = eth(ETHERTYPE_IPV6);
        later.extend(ipv6(A, B, IPV6_FRAGMENT));
        later.extend(frag(6, 185));
        later.extend(tcp(1, 443));
        assert_eq!((packet(&later).protocol, packet(&later).ports), (6, None));
        // A non-first fragment stops the walk even when its next header is another extension.
        let mut ext_next = eth(ETHERTYPE_IPV6);
        ext_next.extend(ipv6(A, B, IPV6_FRAGMENT));
        ext_next.extend(frag(IPV6_DEST_OPTIONS, 3));
        assert_eq!(packet(&ext_next).protocol, IPV6_DEST_OPTIONS);
        assert!(!packet(&ext_next).hidden_ports);
        // A first fragment (more to come) cut inside the ports hides them; an atomic fragment
        // (offset 0, no more) cut there does not.
        let mut first = frag(17, 0);
        first[3] |= 1;
        let mut tiny = eth(ETHERTYPE_IPV6);
        tiny.extend(ipv6(A, B, IPV6_FRAGMENT));
        tiny.extend(first);
        tiny.extend(&udp(1, 2)[..3]);
        assert_eq!(
            (packet(&tiny).ports, packet(&tiny).hidden_ports),
            (None, true)
        );
        tiny[14 + 40 + 3] &= !1;
        assert_eq!(
            (packet(&tiny).ports, packet(&tiny).hidden_ports),
            (None, false)
        );
        // Offset 1 hides the ports of the first fragment it overlaps.
        let mut overlap = eth(ETHERTYPE_IPV6);
        overlap.extend(ipv6(A, B, IPV6_FRAGMENT));
        overlap.extend(frag(17, 1));
        overlap.extend(udp(1, 2));
        let p = packet(&overlap);
        assert_eq!((p.protocol, p.ports, p.hidden_ports), (17, None, true));
    }

    #[test]
    fn ipv6_extension_limit() {
        for count in [7usize, 8, 9] {
            let mut f = eth(ETHERTYPE_IPV6);
            f.extend(ipv6(A, B, IPV6_DEST_OPTIONS));
            for i in 0..count {
                let next = if i + 1 == count {
                    17
                } else {
                    IPV6_DEST_OPTIONS
                };
                f.extend(ext(next, 0, 8));
            }
            f.extend(udp(1, 2));
            let expected = if count <= 8 {
                (17, Some((1, 2)))
            } else {
                (PROTOCOL_UNKNOWN, None)
            };
            let p = packet(&f);
            assert_eq!((p.protocol, p.ports), expected, "{count} headers");
        }
    }

    fn location() -> Location {
        Location {
            path: "test.yaml".into(),
            line: 1,
            column: 1,
        }
    }

    fn entry(index: usize, prefixes: &[&str], protocol: Protocol, ports: &[(u16, u16)]) -> Entry {
        Entry {
            index,
            domains: Vec::new(),
            prefixes: prefixes.iter().filter_map(|p| p.parse().ok()).collect(),
            protocol,
            ports: ports
                .iter()
                .map(|&(first, last)| PortRange { first, last })
                .collect(),
            enforce: crate::policy::Enforce::Both,
            location: location(),
        }
    }

    fn platform(name: &str, action: Action, entries: Vec<Entry>) -> Platform {
        Platform {
            data_date: None,
            feed: None,
            action_by_site: Vec::new(),
            name: name.to_string(),
            id: 0,
            description: None,
            reference: None,
            action,
            entries,
            location: location(),
        }
    }

    fn matched(platform: u16, action: u8, direction: u8, family: u8) -> Decision {
        Decision::Match {
            platform,
            action,
            direction,
            family,
            site: SITE_NONE,
        }
    }

    #[test]
    fn ports_select_between_platforms_on_one_prefix() {
        // Same prefix: "a" allows udp 3478, "b" drops everything.
        let policy = Policy {
            platforms: vec![
                platform(
                    "a",
                    Action::Allow,
                    vec![entry(0, &["198.18.0.0/24"], Protocol::Udp, &[(3478, 3478)])],
                ),
                platform(
                    "b",
                    Action::Drop,
                    vec![entry(0, &["198.18.0.0/24"], Protocol::Any, &[])],
                ),
            ],
        };
        let m = Matcher::new(&policy);
        let turn = m.decide(&v4_udp(CLIENT, [198, 18, 0, 9], 40000, 3478));
        assert_eq!(
            turn,
            matched(1, ACTION_ALLOW, DIRECTION_EGRESS, FAMILY_IPV4)
        );
        assert_eq!(turn.xdp_action(), XDP_PASS);
        let other = m.decide(&v4_udp(CLIENT, [198, 18, 0, 9], 40000, 3479));
        assert_eq!(
            other,
            matched(2, ACTION_DROP, DIRECTION_EGRESS, FAMILY_IPV4)
        );
        assert_eq!(other.xdp_action(), XDP_DROP);
        // TCP to 3478 is not the allowed UDP.
        let tcp = m.decide(&v4_tcp(CLIENT, [198, 18, 0, 9], 40000, 3478));
        assert_eq!(tcp.xdp_action(), XDP_DROP);
        // A non-first fragment has no ports: only the any-port drop applies.
        let mut frag = eth(ETHERTYPE_IPV4);
        frag.extend(ipv4(CLIENT, [198, 18, 0, 9], 17, 10));
        frag.extend(udp(40000, 3478));
        assert_eq!(m.decide(&frag).xdp_action(), XDP_DROP);
        // Outside the prefix.
        let miss = m.decide(&v4_udp(CLIENT, [198, 18, 1, 9], 40000, 3478));
        assert_eq!(miss, Decision::Pass(PASS_NO_MATCH));
        assert_eq!(miss.xdp_action(), XDP_PASS);
    }

    #[test]
    fn precedence_rules() {
        let policy = Policy {
            platforms: vec![
                platform(
                    "alpha",
                    Action::Drop,
                    vec![entry(
                        0,
                        &["198.18.0.0/16", "2001:db8::/32"],
                        Protocol::Any,
                        &[],
                    )],
                ),
                platform(
                    "beta",
                    Action::Allow,
                    vec![entry(0, &["198.18.5.0/24"], Protocol::Any, &[])],
                ),
                platform(
                    "gamma",
                    Action::Monitor,
                    vec![entry(
                        0,
                        &["198.18.5.7/32", "198.19.0.0/16"],
                        Protocol::Any,
                        &[],
                    )],
                ),
                platform(
                    "delta",
                    Action::Drop,
                    vec![entry(0, &["198.18.0.0/16"], Protocol::Tcp, &[])],
                ),
            ],
        };
        let m = Matcher::new(&policy);
        let v4 = |dst: [u8; 4]| m.decide(&v4_udp(CLIENT, dst, 1, 2));
        // Allow nested inside drop wins, even against a longer monitor prefix.
        assert_eq!(
            v4([198, 18, 5, 7]),
            matched(2, ACTION_ALLOW, DIRECTION_EGRESS, FAMILY_IPV4)
        );
        // Drop beats a longer monitor prefix.
        let m2 = Policy {
            platforms: vec![policy.platforms[0].clone(), policy.platforms[2].clone()],
        };
        let m2 = Matcher::new(&m2);
        assert_eq!(
            m2.decide(&v4_udp(CLIENT, [198, 18, 5, 7], 1, 2)),
            matched(1, ACTION_DROP, DIRECTION_EGRESS, FAMILY_IPV4)
        );
        // Monitor alone passes.
        let monitor = v4([198, 19, 1, 1]);
        assert_eq!(
            monitor,
            matched(3, ACTION_MONITOR, DIRECTION_EGRESS, FAMILY_IPV4)
        );
        assert_eq!(monitor.xdp_action(), XDP_PASS);
        // Equal action and length: the earlier platform (lower id) wins.
        assert_eq!(
            m.decide(&v4_tcp(CLIENT, [198, 18, 9, 9], 1, 2)),
            matched(1, ACTION_DROP, DIRECTION_EGRESS, FAMILY_IPV4)
        );
        // Source match: ingress. When both sides match with equal rank, egress wins.
        assert_eq!(
            m.decide(&v4_udp([198, 18, 9, 9], CLIENT, 1, 2)),
            matched(1, ACTION_DROP, DIRECTION_INGRESS, FAMILY_IPV4)
        );
        assert_eq!(
            m.decide(&v4_udp([198, 18, 9, 9], [198, 18, 9, 10], 1, 2)),
            matched(1, ACTION_DROP, DIRECTION_EGRESS, FAMILY_IPV4)
        );
        // A better source match beats a worse destination match.
        assert_eq!(
            m.decide(&v4_udp([198, 18, 5, 1], [198, 18, 9, 10], 1, 2)),
            matched(2, ACTION_ALLOW, DIRECTION_INGRESS, FAMILY_IPV4)
        );
        let mut f = eth(ETHERTYPE_IPV6);
        f.extend(ipv6(A, B, 58));
        f.extend_from_slice(&[128, 0, 0, 0]);
        assert_eq!(
            m.decide(&f),
            matched(1, ACTION_DROP, DIRECTION_EGRESS, FAMILY_IPV6)
        );
    }

    #[test]
    fn ingress_uses_the_source_port() {
        let policy = Policy {
            platforms: vec![platform(
                "voip",
                Action::Drop,
                vec![entry(
                    0,
                    &["198.18.0.0/15"],
                    Protocol::Udp,
                    &[(3478, 3481), (8801, 8801)],
                )],
            )],
        };
        let m = Matcher::new(&policy);
        assert_eq!(
            m.decide(&v4_udp([198, 18, 0, 1], CLIENT, 3480, 50000)),
            matched(1, ACTION_DROP, DIRECTION_INGRESS, FAMILY_IPV4)
        );
        assert_eq!(
            m.decide(&v4_udp([198, 18, 0, 1], CLIENT, 50000, 3480)),
            Decision::Pass(PASS_NO_MATCH)
        );
        assert_eq!(
            m.decide(&v4_udp(CLIENT, [198, 19, 0, 1], 50000, 8801)),
            matched(1, ACTION_DROP, DIRECTION_EGRESS, FAMILY_IPV4)
        );
        // Protocol unknown (an IPv6 chain cut off, which may hide its protocol): a drop entry
        // of any protocol matches it, other actions only with `any`.
        let mut f = eth(ETHERTYPE_IPV6);
        f.extend(ipv6(A, B, IPV6_HOP_BY_HOP));
        f.extend_from_slice(&[17, 0]);
        let any = Policy {
            platforms: vec![
                platform(
                    "a",
                    Action::Drop,
                    vec![entry(0, &["2001:db8::/48"], Protocol::Udp, &[])],
                ),
                platform(
                    "b",
                    Action::Monitor,
                    vec![entry(0, &["2001:db8::/32"], Protocol::Any, &[])],
                ),
            ],
        };
        assert_eq!(
            Matcher::new(&any).decide(&f),
            matched(1, ACTION_DROP, DIRECTION_INGRESS, FAMILY_IPV6)
        );
        let mut monitored = any.clone();
        monitored.platforms[0].action = Action::Monitor;
        // Both addresses are in the /32: equal rank, egress wins.
        assert_eq!(
            Matcher::new(&monitored).decide(&f),
            matched(2, ACTION_MONITOR, DIRECTION_EGRESS, FAMILY_IPV6)
        );
    }

    #[test]
    fn dns_copies_and_holding() {
        let policy = Policy {
            platforms: vec![platform(
                "banned",
                Action::Drop,
                vec![entry(0, &["198.18.9.0/24"], Protocol::Any, &[])],
            )],
        };
        let m = Matcher::new(&policy);
        let server = [192, 0, 2, 53];
        let (inside, outside) = (3, 4);
        let mut dns = DnsModel {
            holding: true,
            trust: vec![("192.0.2.53/32".parse().unwrap(), TRUST_SERVER)],
            roles: [(inside, ROLE_INSIDE), (outside, ROLE_OUTSIDE)].into(),
            ..DnsModel::default()
        };
        let with_id = |mut frame: Vec<u8>| {
            frame.extend([0x12, 0x34, 0x01]);
            frame
        };
        let query = with_id(v4_udp(CLIENT, server, 40000, 53));
        let response = with_id(v4_udp(server, CLIENT, 53, 40000));
        let passed = Decision::Pass(PASS_NO_MATCH);
        // No query seen: passed, not copied.
        assert_eq!(m.decide_dns(&response, outside, &mut dns), (passed, None));
        // A query arriving outside is not remembered; inside it is, and copied.
        assert_eq!(m.decide_dns(&query, outside, &mut dns), (passed, None));
        let (decision, copied) = m.decide_dns(&query, inside, &mut dns);
        assert_eq!(decision, passed);
        assert_eq!(
            copied.map(|c| (c.kind, c.held)),
            Some((DNS_EVENT_QUERY, false))
        );
        // Its answer arriving inside (forged on the client's link) is not believed.
        assert_eq!(m.decide_dns(&response, inside, &mut dns), (passed, None));
        // Arriving outside it is held, once.
        let (decision, copied) = m.decide_dns(&response, outside, &mut dns);
        assert_eq!(decision, Decision::Held);
        let copied = copied.unwrap();
        assert_eq!(
            (
                copied.kind,
                copied.held,
                copied.payload_offset,
                copied.query_ifindex
            ),
            (DNS_EVENT_RESPONSE, true, 42, inside)
        );
        assert_eq!(copied.query_client, Some(IpAddr::from(CLIENT)));
        assert_eq!(m.decide_dns(&response, outside, &mut dns), (passed, None));
        // Not holding: copied and passed.
        dns.holding = false;
        m.decide_dns(&query, inside, &mut dns);
        let (decision, copied) = m.decide_dns(&response, outside, &mut dns);
        assert_eq!((decision, copied.map(|c| c.held)), (passed, Some(false)));
        // An untrusted server's answer is never looked at.
        dns.holding = true;
        let other = [192, 0, 2, 54];
        m.decide_dns(&with_id(v4_udp(CLIENT, other, 40000, 53)), inside, &mut dns);
        let untrusted = with_id(v4_udp(other, CLIENT, 53, 40000));
        assert_eq!(m.decide_dns(&untrusted, outside, &mut dns), (passed, None));
        // Too long to put back: copied, passed.
        m.decide_dns(&query, inside, &mut dns);
        let mut long = response.clone();
        long.resize(DNS_HOLD_MAX_FRAME + 1, 0);
        let (decision, copied) = m.decide_dns(&long, outside, &mut dns);
        assert_eq!((decision, copied.map(|c| c.held)), (passed, Some(false)));
        // Dropped by the policy: neither copied nor held.
        let banned = with_id(v4_udp([198, 18, 9, 1], CLIENT, 53, 40000));
        let (decision, copied) = m.decide_dns(&banned, outside, &mut dns);
        assert_eq!((decision.xdp_action(), copied), (XDP_DROP, None));
        // TCP on port 53 is not looked at.
        let tcp = v4_tcp(server, CLIENT, 53, 40000);
        assert_eq!(m.decide_dns(&tcp, outside, &mut dns), (passed, None));
    }

    #[test]
    fn decisions_for_non_ip() {
        let empty = Policy::default();
        let m = Matcher::new(&empty);
        assert_eq!(m.decide(&eth(0x0806)), Decision::Pass(PASS_NOT_IP));
        assert_eq!(m.decide(&[0; 10]), Decision::Pass(PASS_UNPARSED));
        assert_eq!(Decision::Pass(PASS_UNPARSED).xdp_action(), XDP_PASS);
    }

    #[test]
    fn matches_for_ip_lists_every_covering_prefix() {
        let policy = Policy {
            platforms: vec![
                platform(
                    "a",
                    Action::Monitor,
                    vec![entry(0, &["198.18.0.0/15"], Protocol::Any, &[])],
                ),
                platform(
                    "b",
                    Action::Drop,
                    vec![
                        entry(0, &["198.18.0.0/16", "198.19.0.0/16"], Protocol::Any, &[]),
                        entry(1, &["198.18.4.0/22"], Protocol::Udp, &[(53, 53)]),
                    ],
                ),
            ],
        };
        let addresses = [EntryAddress {
            platform: 0,
            entry: 0,
            net: "198.18.4.4/32".parse().unwrap_or_else(|_| unreachable!()),
        }];
        let m = Matcher::with_addresses(&policy, addresses);
        let found: Vec<(u16, usize, String, PrefixSource)> = m
            .matches_for_ip(IpAddr::from([198, 18, 4, 4]))
            .into_iter()
            .map(|x| (x.platform_id, x.entry, x.prefix.to_string(), x.source))
            .collect();
        assert_eq!(
            found,
            vec![
                (2, 1, "198.18.4.0/22".to_string(), PrefixSource::Published),
                (2, 0, "198.18.0.0/16".to_string(), PrefixSource::Published),
                (1, 0, "198.18.4.4/32".to_string(), PrefixSource::Address),
                (1, 0, "198.18.0.0/15".to_string(), PrefixSource::Published),
            ]
        );
        assert!(m.matches_for_ip(IpAddr::from([192, 0, 2, 1])).is_empty());
        // The learned /32 makes monitor the longest match; drop still outranks it.
        assert_eq!(
            m.decide(&v4_tcp(CLIENT, [198, 18, 4, 4], 1, 2)),
            matched(2, ACTION_DROP, DIRECTION_EGRESS, FAMILY_IPV4)
        );
    }
}
