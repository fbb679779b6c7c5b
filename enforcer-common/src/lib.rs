//! Types shared by the XDP program and user space.
//!
//! Everything that crosses the kernel boundary is a plain `#[repr(C)]` struct of integers and byte
//! arrays with explicit padding; sizes are checked at compile time so that both sides agree.
#![no_std]

use core::mem::{offset_of, size_of};

/// Rules applying to one prefix live in one slot of the rule table.
pub const RULES_PER_SLOT: usize = 32;
/// Number of rule slots. Each distinct rule list uses one; a policy change writes its new lists into
/// slots no prefix points at, so the table holds two policies' worth of lists at once.
pub const RULE_SLOTS: u32 = 4096;
/// Capacity of each family's prefix trie.
pub const MAX_PREFIXES_V4: u32 = 262_144;
pub const MAX_PREFIXES_V6: u32 = 262_144;
/// Platform ids are 1..MAX_PLATFORMS; 0 is never a platform.
pub const MAX_PLATFORMS: u32 = 1024;

pub const ACTION_DROP: u8 = 0;
pub const ACTION_MONITOR: u8 = 1;
pub const ACTION_ALLOW: u8 = 2;
pub const ACTIONS: u32 = 3;
/// The name of each action code (indexed by code): the policy keyword and the metrics label.
pub const ACTION_NAMES: [&str; ACTIONS as usize] = ["drop", "monitor", "allow"];

/// Precedence of an action when several rules match: allow, then drop, then monitor (0 for a
/// code that is no action). The XDP program turns this into a lookup table at compile time.
pub const fn action_precedence(action: u8) -> u8 {
    match action {
        ACTION_ALLOW => 3,
        ACTION_DROP => 2,
        ACTION_MONITOR => 1,
        _ => 0,
    }
}

/// The packet's destination matched (traffic leaving towards the platform).
pub const DIRECTION_EGRESS: u8 = 0;
/// The packet's source matched (return traffic from the platform).
pub const DIRECTION_INGRESS: u8 = 1;
pub const DIRECTIONS: u32 = 2;
/// The metrics label of each direction code (indexed by code).
pub const DIRECTION_NAMES: [&str; DIRECTIONS as usize] = ["egress", "ingress"];

pub const FAMILY_IPV4: u8 = 0;
pub const FAMILY_IPV6: u8 = 1;
pub const FAMILIES: u32 = 2;
/// The metrics label of each family code (indexed by code).
pub const FAMILY_NAMES: [&str; FAMILIES as usize] = ["ipv4", "ipv6"];

/// Rule protocol meaning "every IP protocol, ports ignored".
pub const PROTOCOL_ANY: u8 = 0;
pub const PROTOCOL_TCP: u8 = 6;
pub const PROTOCOL_UDP: u8 = 17;
/// Packet protocol used when the IPv6 extension-header walk could not reach the upper layer:
/// only `PROTOCOL_ANY` rules can match it. 255 is reserved by IANA, so no real packet carries it.
pub const PROTOCOL_UNKNOWN: u8 = 255;

/// Why a frame passed without matching: it matched no rule.
pub const PASS_NO_MATCH: u32 = 0;
/// Why a frame passed without matching: its ether type is neither IPv4 nor IPv6.
pub const PASS_NOT_IP: u32 = 1;
/// Why a frame passed without matching: a header was truncated or malformed.
pub const PASS_UNPARSED: u32 = 2;
/// The metrics label of each pass reason (indexed by code; `PASS_DNS_HELD` is no reason).
pub const PASS_REASON_NAMES: [&str; 3] = ["no_match", "not_ip", "unparsed"];
/// Not a pass: the slot of the pass counters that counts DNS responses held until the daemon
/// has enforced their answers and sent them on.
pub const PASS_DNS_HELD: u32 = 3;
/// Entries in the pass counter array: the reasons, then `PASS_DNS_HELD`.
pub const PASS_REASONS: u32 = 4;

/// Entries in the per-CPU match counter array.
pub const MATCH_COUNTERS: u32 = MAX_PLATFORMS * ACTIONS * DIRECTIONS * FAMILIES;

/// Value stored in the prefix tries: which rule slot applies, how many rules it holds, the
/// length of the policy prefix each rule came from, and the order in which to try the rules
/// (best first: allow, drop, monitor; then longest prefix; then platform name order), so the
/// first rule that matches a packet is the winner. Lengths and order live here rather than in
/// the rules so that prefixes of different lengths share one rule list.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RuleRef {
    pub slot: u32,
    pub count: u32,
    pub prefix_lens: [u8; RULES_PER_SLOT],
    pub order: [u8; RULES_PER_SLOT],
}

/// One match condition of one platform entry. The user-space compiler gives each prefix the rules
/// of every enclosing prefix too, so one longest-prefix lookup finds all rules for an address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rule {
    pub platform: u16,
    pub action: u8,
    /// `PROTOCOL_ANY`, `PROTOCOL_TCP` or `PROTOCOL_UDP`.
    pub protocol: u8,
    pub port_first: u16,
    pub port_last: u16,
    /// 1 when the rule names ports; a packet whose ports are unknown cannot match it.
    pub has_ports: u8,
    pub _pad0: u8,
    /// The platform's position in name order, plus one: breaks ties between platforms (ids
    /// last for counters, so they do not follow name order once platforms come and go).
    pub rank: u16,
    pub _pad: [u8; 4],
}

/// One slot of the rule table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleSlot {
    pub rules: [Rule; RULES_PER_SLOT],
}

impl Default for RuleSlot {
    fn default() -> Self {
        Self {
            rules: [Rule::default(); RULES_PER_SLOT],
        }
    }
}

/// Packets and bytes, one per CPU in the counter maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// Index of a match counter; the layout is shared by the program and the metrics reader.
pub const fn match_counter_index(platform: u16, action: u8, direction: u8, family: u8) -> u32 {
    ((platform as u32 * ACTIONS + action as u32) * DIRECTIONS + direction as u32) * FAMILIES
        + family as u32
}

/// UDP port of DNS: messages to or from it are copied to user space for learning.
pub const DNS_PORT: u16 = 53;
/// Bytes of a DNS packet (from its IP header) copied into an event; a longer packet is cut, and
/// then neither held nor, usually, readable (user space counts it as malformed).
pub const DNS_CAPTURE_BYTES: usize = 2048;
/// Size of the ring buffer of DNS events (a power-of-two number of pages): ~1,000 packets.
pub const DNS_RING_BYTES: u32 = 1 << 21;
/// Index of the hold deadline in `DNS_HOLD`: while `bpf_ktime_get_ns()` is below it, DNS
/// responses are held (dropped after copying) and the daemon sends them on once it has enforced
/// what they teach. The daemon keeps pushing it a few seconds ahead; if the daemon dies, holding
/// stops by itself and responses flow again.
pub const DNS_HOLD_DEADLINE: u32 = 0;

/// One UDP DNS packet seen by the program, from its IP header, with its addresses and ports.
/// IPv4 addresses fill the first four bytes of the address arrays.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DnsEvent {
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
    /// `FAMILY_IPV4` or `FAMILY_IPV6`.
    pub family: u8,
    /// 1 when the program dropped the frame and the daemon must send the packet on.
    pub held: u8,
    /// Bytes of `packet` that hold the IP packet.
    pub captured: u16,
    /// The IP packet's length in the frame (more than `captured` when it was cut).
    pub length: u16,
    /// Offset of the DNS message in `packet`.
    pub payload_offset: u16,
    /// The interface the frame arrived on (its ifindex).
    pub ifindex: u32,
    pub packet: [u8; DNS_CAPTURE_BYTES],
}

// The layout both sides rely on: sizes, and every field where it is expected, so that a field
// moved, resized or reordered fails the build instead of being misread across the boundary.
const _: () = assert!(size_of::<DnsEvent>() == 48 + DNS_CAPTURE_BYTES);
const _: () = assert!(offset_of!(DnsEvent, src_addr) == 0);
const _: () = assert!(offset_of!(DnsEvent, dst_addr) == 16);
const _: () = assert!(offset_of!(DnsEvent, src_port) == 32);
const _: () = assert!(offset_of!(DnsEvent, dst_port) == 34);
const _: () = assert!(offset_of!(DnsEvent, family) == 36);
const _: () = assert!(offset_of!(DnsEvent, held) == 37);
const _: () = assert!(offset_of!(DnsEvent, captured) == 38);
const _: () = assert!(offset_of!(DnsEvent, length) == 40);
const _: () = assert!(offset_of!(DnsEvent, payload_offset) == 42);
const _: () = assert!(offset_of!(DnsEvent, ifindex) == 44);
const _: () = assert!(offset_of!(DnsEvent, packet) == 48);

const _: () = assert!(size_of::<RuleRef>() == 8 + 2 * RULES_PER_SLOT);
const _: () = assert!(offset_of!(RuleRef, slot) == 0);
const _: () = assert!(offset_of!(RuleRef, count) == 4);
const _: () = assert!(offset_of!(RuleRef, prefix_lens) == 8);
const _: () = assert!(offset_of!(RuleRef, order) == 8 + RULES_PER_SLOT);

const _: () = assert!(size_of::<Rule>() == 16);
const _: () = assert!(offset_of!(Rule, platform) == 0);
const _: () = assert!(offset_of!(Rule, action) == 2);
const _: () = assert!(offset_of!(Rule, protocol) == 3);
const _: () = assert!(offset_of!(Rule, port_first) == 4);
const _: () = assert!(offset_of!(Rule, port_last) == 6);
const _: () = assert!(offset_of!(Rule, has_ports) == 8);
const _: () = assert!(offset_of!(Rule, _pad0) == 9);
const _: () = assert!(offset_of!(Rule, rank) == 10);
const _: () = assert!(offset_of!(Rule, _pad) == 12);

const _: () = assert!(size_of::<RuleSlot>() == 16 * RULES_PER_SLOT);
const _: () = assert!(offset_of!(RuleSlot, rules) == 0);

const _: () = assert!(size_of::<Counter>() == 16);
const _: () = assert!(offset_of!(Counter, packets) == 0);
const _: () = assert!(offset_of!(Counter, bytes) == 8);

// Every reason has its name, and the held-DNS slot follows them.
const _: () = assert!(PASS_REASON_NAMES.len() == PASS_DNS_HELD as usize);
const _: () = assert!(PASS_DNS_HELD + 1 == PASS_REASONS);
// Allow beats drop beats monitor, and every action outranks a code that is no action.
const _: () = assert!(
    action_precedence(ACTION_ALLOW) > action_precedence(ACTION_DROP)
        && action_precedence(ACTION_DROP) > action_precedence(ACTION_MONITOR)
        && action_precedence(ACTION_MONITOR) > 0
);
// MAX_PLATFORMS - 1 fits in u16 (checked on the line before).
const _: () = assert!(MAX_PLATFORMS <= 1 << 16);
#[allow(clippy::cast_possible_truncation)]
const _: () =
    assert!(match_counter_index((MAX_PLATFORMS - 1) as u16, 2, 1, 1) == MATCH_COUNTERS - 1);

#[cfg(feature = "user")]
mod pod {
    // SAFETY (each): a repr(C) struct of integers and byte arrays with explicit padding fields,
    // so it has no implicit padding and every bit pattern is a valid value; the size and offset
    // checks above hold both sides to that layout.
    // SAFETY: see above.
    unsafe impl aya::Pod for super::RuleRef {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::Rule {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::RuleSlot {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::Counter {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::DnsEvent {}
}
