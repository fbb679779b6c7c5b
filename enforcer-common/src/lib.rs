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
/// Most prefixes of each family one policy may hold by default (`--max-prefixes-v4`/`-v6`; both
/// generations fit at once).
pub const MAX_PREFIXES_V4: u32 = 1_000_000;
pub const MAX_PREFIXES_V6: u32 = 1_000_000;
/// The largest capacity of a family the daemon accepts.
pub const MAX_CAPACITY: u32 = 2_000_000;

// The lookup table (see the maps `LOOKUP_*` in the XDP program, built by the daemon's
// `datapath::table`). A family's address is reduced to a 64-bit key (IPv4: the address in the
// top 32 bits; IPv6: its top 64 bits); the key's top 16 bits select an index entry, which either
// holds the leaf for its whole block or points at a sorted run of ranges over the other 48 bits.

/// Bits of the key that pick an index entry, per family. 16 for both: a 20-bit IPv4 index
/// (8 MiB a generation) was measured both ways: 33-70 ns faster at 1M prefixes on one host, but
/// on another (slower memory) every lookup then missed the caches even with no prefixes (+63 ns
/// against +14 at 0 prefixes, and slower at every size up to 1M: BENCHMARKS.md).
pub const INDEX_BITS: [u32; FAMILIES as usize] = [16, 16];
/// Index entries of one family in one generation.
pub const fn index_blocks(family: u8) -> u32 {
    1 << INDEX_BITS[family as usize & 1]
}
/// Index entries of one generation: IPv4's blocks, then IPv6's.
pub const INDEX_PER_GENERATION: u32 = index_blocks(FAMILY_IPV4) + index_blocks(FAMILY_IPV6);
/// Index entries in all, both generations.
pub const INDEX_ENTRIES: u32 = 2 * INDEX_PER_GENERATION;
/// Where the index entry of `block` of `family` in `generation` sits.
pub const fn index_slot(generation: u32, family: u8, block: u32) -> u32 {
    let family_start = if family == FAMILY_IPV4 {
        0
    } else {
        index_blocks(FAMILY_IPV4)
    };
    (generation & 1) * INDEX_PER_GENERATION + family_start + block
}
/// Bits of an index entry holding its run's length; 0 means the entry is a leaf itself (in its
/// low 16 bits), for a block that one leaf covers whole.
pub const INDEX_COUNT_SHIFT: u32 = 32;
pub const INDEX_COUNT_MASK: u64 = 0xFF_FFFF;
/// Ranges of one generation of `family` for a capacity of `prefixes`: two boundaries a prefix
/// at most, plus one a block.
pub const fn ranges_per_generation(family: u8, prefixes: u32) -> u32 {
    2 * prefixes + index_blocks(family)
}
/// Entries of `LOOKUP_RANGES_V4` at the default capacity (the daemon sizes the map for its own).
/// An IPv4 key's rest below the index is 16 bits, so a range packs into 32 bits (`RangeEntry for
/// u32`) and a block's run spans half the cache lines it would at 64 bits. Array map values
/// take 8 bytes at least, so two ranges share one: range i is half `i % 2` (low first) of value
/// `i / 2`. Generation g's ranges are `[g * ranges a generation, ..)` (an even count).
pub const RANGE_ENTRIES_V4: u32 = ranges_per_generation(FAMILY_IPV4, MAX_PREFIXES_V4);
/// Where IPv4 range `i` sits: the value and the shift of its half.
#[inline(always)]
pub const fn v4_range_slot(i: u32) -> (u32, u32) {
    (i / 2, (i % 2) * 32)
}
const _: () = assert!(ranges_per_generation(FAMILY_IPV4, 1).is_multiple_of(2));
/// Entries of `LOOKUP_RANGES` (IPv6, 48-bit rests in 64-bit ranges) at the default capacity.
pub const RANGE_ENTRIES_V6: u32 = 2 * ranges_per_generation(FAMILY_IPV6, MAX_PREFIXES_V6);
/// Steps of the binary search over one block's ranges: enough for a whole generation's at the
/// largest capacity.
pub const RANGE_SEARCH_STEPS: u32 = 24;
const _: () =
    assert!(1u64 << RANGE_SEARCH_STEPS >= ranges_per_generation(FAMILY_IPV6, MAX_CAPACITY) as u64);

/// A range of the lookup table: its first key (the bits of the key below the index) above a
/// 16-bit leaf. The one packing both the program and the daemon read and write.
pub trait RangeEntry: Copy {
    /// The range `[first, ..)` carrying `leaf`; `first` fits the entry's key bits.
    fn pack(first: u64, leaf: u16) -> Self;
    /// The first key of the range.
    fn first(self) -> u64;
    /// The leaf with its flags.
    fn leaf(self) -> u16;
    /// The same range with `flags` set on its leaf.
    fn with_flags(self, flags: u16) -> Self;
}

/// IPv4: 16 bits of key, 16 of leaf. The key below a 16-bit index has 48 bits, of which an
/// IPv4 address (in the top 32 bits of the key) fills the top 16: those are stored.
#[allow(clippy::cast_possible_truncation)]
impl RangeEntry for u32 {
    #[inline(always)]
    fn pack(first: u64, leaf: u16) -> Self {
        ((first >> 32) as u32) << 16 | leaf as u32
    }
    #[inline(always)]
    fn first(self) -> u64 {
        ((self >> 16) as u64) << 32
    }
    #[inline(always)]
    fn leaf(self) -> u16 {
        self as u16
    }
    #[inline(always)]
    fn with_flags(self, flags: u16) -> Self {
        self | flags as u32
    }
}

/// IPv6: 48 bits of key, 16 of leaf (the cast takes the leaf's bits).
#[allow(clippy::cast_possible_truncation)]
impl RangeEntry for u64 {
    #[inline(always)]
    fn pack(first: u64, leaf: u16) -> Self {
        first << 16 | leaf as u64
    }
    #[inline(always)]
    fn first(self) -> u64 {
        self >> 16
    }
    #[inline(always)]
    fn leaf(self) -> u16 {
        self as u16
    }
    #[inline(always)]
    fn with_flags(self, flags: u16) -> Self {
        self | flags as u64
    }
}

// An IPv4 range's key is what the index leaves of the 32-bit address.
const _: () = assert!(INDEX_BITS[0] == 16);
/// A leaf (16 bits in ranges and index entries): an index into `LOOKUP_LEAVES` of its
/// generation (0: no rule) and two flags that send the lookup to a table of exact entries first.
pub const LEAF_ID_MASK: u16 = 0x3FFF;
/// Some address in the range has an entry in `LEARNED_HOSTS` (learned since the last build).
pub const LEAF_HOSTS: u16 = 0x8000;
/// Some IPv6 address in the range is under a prefix longer than /64 (in `LONG_PREFIXES_V6`).
pub const LEAF_LONG: u16 = 0x4000;
/// Leaves of one generation, including the empty leaf 0.
pub const LEAVES_PER_GENERATION: u32 = LEAF_ID_MASK as u32 + 1;
/// Leaf entries in all; generation g uses `[g * LEAVES_PER_GENERATION, ..)`.
pub const LEAF_ENTRIES: u32 = 2 * LEAVES_PER_GENERATION;
/// IPv6 prefixes longer than /64 one policy may hold (they live in a kernel LPM trie).
pub const MAX_LONG_PREFIXES_V6: u32 = 1 << 16;
/// Hosts learned from DNS between two builds of the table (both generations).
pub const MAX_LEARNED_HOSTS: u32 = 1 << 17;

/// Key of `LEARNED_HOSTS`: the generation and family (`generation * 2 + family`) and the
/// address (IPv4 in the first four bytes, the rest zero).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostKey {
    pub tag: u32,
    pub address: [u8; 16],
}

/// Key data of `LONG_PREFIXES_V6` (after the LPM prefix length, which counts these 8 bits too):
/// the generation, then the address.
pub type LongKey = [u8; 17];
// Sites: the client prefixes behind the gateway, looked up (by the inside address) only for a
// packet that matched a platform, to count it by site and to apply the site's overrides.

/// Site prefixes in `SITES`, both generations.
pub const MAX_SITE_PREFIXES: u32 = 8_192;
/// Distinct sets of per-site overrides (variants) one policy may use; variant 0 is the policy's
/// own actions (sites without overrides, and clients outside every site).
pub const MAX_VARIANTS: u32 = 256;
/// Leaves whose verdict some variant changes, both generations (`SITE_LEAVES`).
pub const MAX_SITE_LEAVES: u32 = 16_384;
/// (site, platform, action) counters (`SITE_STATS`).
pub const MAX_SITE_COUNTERS: u32 = 16_384;
/// `SITE_ACTIONS` entries (variant, platform) that differ from the platform's action, both
/// generations.
pub const MAX_SITE_ACTIONS: u32 = 16_384;
/// The site id of clients outside every site (`other`); a site's own id is a hash of its name,
/// never 0, so counters keep their site across reloads without a registry.
pub const SITE_OTHER: u32 = 0;
/// The site of a matched packet when its generation has no sites at all: nothing is looked up
/// or counted by site (user space reads site `other` from the match counters then).
pub const SITE_NONE: u32 = u32::MAX;

/// Key data of `SITES` (after the LPM prefix length, which counts the first 32 bits too): the
/// generation, the family, two zero bytes, then the address (IPv4 in the first four bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SiteAddress {
    pub generation: u8,
    pub family: u8,
    pub _pad: [u8; 2],
    pub address: [u8; 16],
}

/// Value of `SITES`: the site's id and the variant of its overrides.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SiteValue {
    pub site: u32,
    pub variant: u32,
}

/// Key of `SITE_LEAVES`: `generation << 32 | variant << 16 | leaf id`.
pub const fn site_leaf_key(generation: u32, variant: u32, leaf: u16) -> u64 {
    ((generation as u64 & 1) << 32) | ((variant as u64 & 0xFFFF) << 16) | leaf as u64
}

/// Key of `SITE_ACTIONS`.
pub const fn site_action_index(generation: u32, variant: u32, platform: u16) -> u32 {
    ((generation & 1) * MAX_VARIANTS + (variant % MAX_VARIANTS)) * MAX_PLATFORMS
        + (platform as u32 % MAX_PLATFORMS)
}

/// Key of `SITE_STATS`: packets of one site's clients matched by one platform, by action.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SiteCounterKey {
    pub site: u32,
    pub platform: u16,
    pub action: u8,
    pub _pad: u8,
}

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
    /// The verdict itself (as `rule_score` gives it) when the best rule applies to every
    /// protocol and port, so it wins for any packet: the program then skips the rule list. 0
    /// when the rules must be tried.
    pub direct: u64,
    /// 1 when some site's overrides (`action-by-site`) change this leaf's verdict: the program
    /// then looks the client's variant up in `SITE_LEAVES`.
    pub by_site: u32,
    pub _pad: u32,
}

/// The score the XDP program's rule scan gives a matching rule, from the rule (its action,
/// platform and platform order `rank`) and the length of the prefix it came from: action
/// precedence, then prefix length, then platform order, above the platform id and the action.
pub const fn rule_score(rule: &Rule, prefix_len: u8) -> u64 {
    (action_precedence(rule.action) as u64 & 3) << 56
        | (prefix_len as u64) << 48
        | ((0xFFFF - rule.rank) as u64) << 32
        | (rule.platform as u64) << 8
        | rule.action as u64
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

/// UDP port of DNS.
pub const DNS_PORT: u16 = 53;
/// Bytes of a frame copied into an event (a power of two); a longer frame is cut, and then
/// neither held nor, usually, readable (user space counts it as malformed).
pub const DNS_CAPTURE_BYTES: usize = 4096;
/// The longest frame held: what BPF_PROG_TEST_RUN's live mode can put back into the receive
/// path in one page (4,096 less XDP headroom and skb tail room). A longer response is copied for
/// learning and passed at once.
pub const DNS_HOLD_MAX_FRAME: usize = 3520;
/// Size of the ring buffer of DNS events (a power-of-two number of pages). Records are as long
/// as their frame: ~30,000 queries or ~1,000 full-size responses.
pub const DNS_RING_BYTES: u32 = 1 << 22;
/// Index of the hold deadline in `DNS_HOLD`: while `bpf_ktime_get_ns()` is below it, believed
/// DNS responses are held (dropped after copying) and the daemon puts them back once it has
/// enforced what they teach. The daemon keeps pushing it a few seconds ahead; if the daemon
/// dies, holding stops by itself and responses flow again.
pub const DNS_HOLD_DEADLINE: u32 = 0;

/// A query from a client, seen arriving on an inside interface for a trusted server or client.
pub const DNS_EVENT_QUERY: u8 = 0;
/// A response to such a query, arriving on an outside interface from a trusted server.
pub const DNS_EVENT_RESPONSE: u8 = 1;
/// A non-first UDP fragment from a trusted server (or to a trusted client): the rest of a
/// fragmented response, copied (not held) so that user space can reassemble the message.
pub const DNS_EVENT_FRAGMENT: u8 = 2;

/// Bits of the values in the trust tries (`DNS_TRUST_V4`/`_V6`).
/// A `--learn-from` server: its answers may be believed.
pub const TRUST_SERVER: u32 = 1;
/// A `--learn-for` client: answers to it may be believed from any server.
pub const TRUST_CLIENT: u32 = 2;
/// An address of the gateway: an answer addressed to it (after NAT) may answer a client's query.
pub const TRUST_GATEWAY: u32 = 4;
/// Most entries of each trust trie.
pub const MAX_TRUST_PREFIXES: u32 = 4096;

/// Interface roles in `IFACE_ROLES` (an interface without an entry is both).
pub const ROLE_INSIDE: u32 = 1;
pub const ROLE_OUTSIDE: u32 = 2;
pub const ROLE_BOTH: u32 = 3;
/// Most attached interfaces with a role.
pub const MAX_INTERFACES: u32 = 256;
/// Interfaces with an ifindex below this have their role in an array (`IFACE_ROLES`), the
/// others in a hash (`IFACE_ROLES_HIGH`).
pub const ROLE_ARRAY_ENTRIES: u32 = 4096;

/// Outstanding queries the datapath remembers (least recently used forgotten first).
pub const MAX_DNS_QUERIES: u32 = 65_536;
/// How long a query can be answered, in nanoseconds (10 s, as the reference says).
pub const DNS_QUERY_WINDOW_NS: u64 = 10_000_000_000;

/// Slots of `DNS_STATS`, the datapath's per-CPU counts of responses it did not hold.
/// A UDP packet from port 53 that arrived on an inside interface, or whose server and client
/// are both untrusted, or that arrived on the interface its query came in on.
pub const DNS_STAT_UNTRUSTED: u32 = 0;
/// From a trusted server, but answering no query the datapath saw (or too late).
pub const DNS_STAT_UNSOLICITED: u32 = 1;
/// Believed, but not held: too long to put back, or the ring buffer was full.
pub const DNS_STAT_NOT_HELD: u32 = 2;
pub const DNS_STATS: u32 = 3;

// ---- Name-level blocking (docs/reference.md, "Name-level blocking") ----

/// Most name patterns in one generation of the name table.
pub const MAX_NAMES: u32 = 65_536;
/// Most labels in a name pattern (the loader refuses longer ones): the datapath looks up a query
/// name's suffixes of up to this many labels.
pub const MAX_PATTERN_LABELS: usize = 16;
/// The odd multiplier of [`name_hash`].
pub const NAME_HASH_BASE: u64 = 0x0000_0100_0000_01B3;
/// Index in `DNS_CONFIG` of the TTL (seconds) of the SOA in synthesized NXDOMAIN answers.
pub const DNS_CONFIG_BLOCK_TTL: u32 = 0;
pub const DNS_CONFIG_ENTRIES: u32 = 1;
/// Slots of the blocked-query counters: `platform * FAMILIES + family`.
pub const DNS_BLOCKED_COUNTERS: u32 = MAX_PLATFORMS * FAMILIES;

/// The hash of a name suffix as the datapath computes it: over its wire form without the final
/// root label (`\x04zoom\x02us` for `zoom.us`), ASCII letters lowercased, right to left:
/// `sum((byte + 1) * BASE^k)` where k counts from the last byte (0). Right to left, so that the
/// hash of every suffix of a name comes out of one backward pass; equal suffixes hash equally
/// whatever precedes them. Not a defence against crafted collisions: a client that crafts one
/// only changes the answer to its own made-up name.
pub const fn name_hash(wire: &[u8]) -> u64 {
    let mut hash = 0u64;
    let mut power = 1u64;
    let mut i = wire.len();
    while i > 0 {
        i -= 1;
        let mut byte = wire[i];
        if byte >= b'A' && byte <= b'Z' {
            byte += b'a' - b'A';
        }
        hash = hash.wrapping_add((byte as u64 + 1).wrapping_mul(power));
        power = power.wrapping_mul(NAME_HASH_BASE);
    }
    hash
}

/// Key of the name tables: a name suffix by its [`name_hash`] and its number of labels.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NameKey {
    pub hash: u64,
    pub labels: u8,
    pub _pad: [u8; 7],
}

/// The winning entry for names matched one way by a pattern; `present` 0 when none.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NameVerdict {
    pub platform: u16,
    /// Platform name order, as `Rule::rank` (lower wins a tie).
    pub rank: u16,
    /// `ACTION_*`.
    pub action: u8,
    pub present: u8,
    pub _pad: [u8; 2],
}

/// What the patterns for one suffix say: `exact` for a name equal to it (`zoom.us`), `wildcard`
/// for a name under it (`*.zoom.us`). Only entries that enforce by name are in the table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NameRule {
    pub exact: NameVerdict,
    pub wildcard: NameVerdict,
}

/// What the main XDP program parsed and decided about a DNS query it hands to the DNS program
/// by tail call: addresses (IPv4 in the first four bytes), offsets, the generation in force,
/// and its verdict (`kind` 0: pass with `reason`; 1: a match of `platform`, `action`,
/// `direction`, counted under the site whose id is in `reason`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct QueryStash {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub l3: u32,
    pub l4: u32,
    pub generation: u32,
    pub kind: u32,
    pub reason: u32,
    pub platform: u16,
    pub sport: u16,
    pub dport: u16,
    pub family: u8,
    pub protocol: u8,
    pub action: u8,
    pub direction: u8,
    pub _pad: [u8; 2],
}

const _: () = assert!(size_of::<QueryStash>() == 64);
const _: () = assert!(offset_of!(QueryStash, src) == 0);
const _: () = assert!(offset_of!(QueryStash, dst) == 16);
const _: () = assert!(offset_of!(QueryStash, l3) == 32);
const _: () = assert!(offset_of!(QueryStash, l4) == 36);
const _: () = assert!(offset_of!(QueryStash, generation) == 40);
const _: () = assert!(offset_of!(QueryStash, kind) == 44);
const _: () = assert!(offset_of!(QueryStash, reason) == 48);
const _: () = assert!(offset_of!(QueryStash, platform) == 52);
const _: () = assert!(offset_of!(QueryStash, sport) == 54);
const _: () = assert!(offset_of!(QueryStash, dport) == 56);
const _: () = assert!(offset_of!(QueryStash, family) == 58);
const _: () = assert!(offset_of!(QueryStash, protocol) == 59);
const _: () = assert!(offset_of!(QueryStash, action) == 60);
const _: () = assert!(offset_of!(QueryStash, direction) == 61);
const _: () = assert!(offset_of!(QueryStash, _pad) == 62);
const _: () = assert!(size_of::<NameKey>() == 16);
const _: () = assert!(offset_of!(NameKey, hash) == 0);
const _: () = assert!(offset_of!(NameKey, labels) == 8);
const _: () = assert!(offset_of!(NameKey, _pad) == 9);
const _: () = assert!(size_of::<NameVerdict>() == 8);
const _: () = assert!(offset_of!(NameVerdict, platform) == 0);
const _: () = assert!(offset_of!(NameVerdict, rank) == 2);
const _: () = assert!(offset_of!(NameVerdict, action) == 4);
const _: () = assert!(offset_of!(NameVerdict, present) == 5);
const _: () = assert!(offset_of!(NameVerdict, _pad) == 6);
const _: () = assert!(size_of::<NameRule>() == 16);
const _: () = assert!(offset_of!(NameRule, exact) == 0);
const _: () = assert!(offset_of!(NameRule, wildcard) == 8);
// Upper and lower case hash alike; a different suffix does not.
const _: () = assert!(name_hash(b"\x04Zoom\x02US") == name_hash(b"\x04zoom\x02us"));
const _: () = assert!(name_hash(b"\x04zoom\x02us") != name_hash(b"\x04zoom\x02uk"));

/// An outstanding query, by what its response carries: the server, the client's port, the DNS
/// id. The client's address is in the value, so that an answer addressed to the gateway (NAT)
/// can still be matched.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsQueryKey {
    pub server: [u8; 16],
    pub client_port: u16,
    pub id: u16,
    pub family: u8,
    pub _pad: [u8; 3],
}

/// Who asked, where and when.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DnsQuerySeen {
    pub client: [u8; 16],
    /// `bpf_ktime_get_ns()` when the query arrived.
    pub at_ns: u64,
    /// The interface the query arrived on.
    pub ifindex: u32,
    pub _pad: u32,
}

/// What the program tells user space about one DNS frame; the record in the ring buffer is this
/// header followed by the first `captured` bytes of the frame. IPv4 addresses fill the first
/// four bytes of the address arrays.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DnsEventHeader {
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    /// For a response: the address that sent the query (the destination, unless NAT).
    pub query_client: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
    /// `FAMILY_IPV4` or `FAMILY_IPV6`.
    pub family: u8,
    /// `DNS_EVENT_QUERY`, `DNS_EVENT_RESPONSE` or `DNS_EVENT_FRAGMENT`.
    pub kind: u8,
    /// 1 when the program dropped the frame and the daemon must put it back.
    pub held: u8,
    pub _pad: u8,
    /// Bytes of the frame that follow the header.
    pub captured: u16,
    /// The frame's length (more than `captured` when it was cut).
    pub length: u16,
    /// Offset of the IP header in the frame.
    pub l3_offset: u16,
    /// Offset of the DNS message in the frame (0 for a fragment).
    pub payload_offset: u16,
    /// The interface the frame arrived on (its ifindex).
    pub ifindex: u32,
    /// For a response: the interface its query arrived on.
    pub query_ifindex: u32,
}

/// The header and room for the frame: the program builds a record here (a per-CPU scratch
/// value) and copies only its used part into the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DnsEvent {
    pub header: DnsEventHeader,
    pub frame: [u8; DNS_CAPTURE_BYTES],
}

/// Bytes of a record before the frame.
pub const DNS_EVENT_HEADER_BYTES: usize = size_of::<DnsEventHeader>();

// The layout both sides rely on: sizes, and every field where it is expected, so that a field
// moved, resized or reordered fails the build instead of being misread across the boundary.
const _: () = assert!(size_of::<DnsQueryKey>() == 24);
const _: () = assert!(offset_of!(DnsQueryKey, server) == 0);
const _: () = assert!(offset_of!(DnsQueryKey, client_port) == 16);
const _: () = assert!(offset_of!(DnsQueryKey, id) == 18);
const _: () = assert!(offset_of!(DnsQueryKey, family) == 20);
const _: () = assert!(offset_of!(DnsQueryKey, _pad) == 21);
const _: () = assert!(size_of::<DnsQuerySeen>() == 32);
const _: () = assert!(offset_of!(DnsQuerySeen, client) == 0);
const _: () = assert!(offset_of!(DnsQuerySeen, at_ns) == 16);
const _: () = assert!(offset_of!(DnsQuerySeen, ifindex) == 24);
const _: () = assert!(offset_of!(DnsQuerySeen, _pad) == 28);
const _: () = assert!(DNS_EVENT_HEADER_BYTES == 72);
const _: () = assert!(offset_of!(DnsEventHeader, src_addr) == 0);
const _: () = assert!(offset_of!(DnsEventHeader, dst_addr) == 16);
const _: () = assert!(offset_of!(DnsEventHeader, query_client) == 32);
const _: () = assert!(offset_of!(DnsEventHeader, src_port) == 48);
const _: () = assert!(offset_of!(DnsEventHeader, dst_port) == 50);
const _: () = assert!(offset_of!(DnsEventHeader, family) == 52);
const _: () = assert!(offset_of!(DnsEventHeader, kind) == 53);
const _: () = assert!(offset_of!(DnsEventHeader, held) == 54);
const _: () = assert!(offset_of!(DnsEventHeader, _pad) == 55);
const _: () = assert!(offset_of!(DnsEventHeader, captured) == 56);
const _: () = assert!(offset_of!(DnsEventHeader, length) == 58);
const _: () = assert!(offset_of!(DnsEventHeader, l3_offset) == 60);
const _: () = assert!(offset_of!(DnsEventHeader, payload_offset) == 62);
const _: () = assert!(offset_of!(DnsEventHeader, ifindex) == 64);
const _: () = assert!(offset_of!(DnsEventHeader, query_ifindex) == 68);
const _: () = assert!(size_of::<DnsEvent>() == DNS_EVENT_HEADER_BYTES + DNS_CAPTURE_BYTES);
const _: () = assert!(offset_of!(DnsEvent, frame) == DNS_EVENT_HEADER_BYTES);
const _: () =
    assert!(DNS_CAPTURE_BYTES.is_power_of_two() && DNS_HOLD_MAX_FRAME <= DNS_CAPTURE_BYTES);

const _: () = assert!(size_of::<RuleRef>() == 8 + 2 * RULES_PER_SLOT + 16);
const _: () = assert!(offset_of!(RuleRef, by_site) == 16 + 2 * RULES_PER_SLOT);
const _: () = assert!(size_of::<SiteAddress>() == 20);
const _: () = assert!(size_of::<SiteValue>() == 8);
const _: () = assert!(offset_of!(SiteValue, variant) == 4);
const _: () = assert!(size_of::<SiteCounterKey>() == 8);
const _: () = assert!(offset_of!(SiteCounterKey, platform) == 4);
const _: () = assert!(offset_of!(SiteCounterKey, action) == 6);
const _: () = assert!(size_of::<HostKey>() == 20);
const _: () = assert!(offset_of!(HostKey, tag) == 0);
const _: () = assert!(offset_of!(HostKey, address) == 4);
const _: () = assert!(offset_of!(RuleRef, direct) == 8 + 2 * RULES_PER_SLOT);
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
    // SAFETY: repr(C) integers and byte arrays, no padding (checked above).
    unsafe impl aya::Pod for super::SiteAddress {}
    // SAFETY: repr(C) integers, no padding (checked above).
    unsafe impl aya::Pod for super::SiteValue {}
    // SAFETY: repr(C) integers, explicit padding (checked above).
    unsafe impl aya::Pod for super::SiteCounterKey {}
    // SAFETY: repr(C), integers and bytes only, no padding.
    unsafe impl aya::Pod for super::HostKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::Rule {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::RuleSlot {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::Counter {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::DnsEventHeader {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::DnsQueryKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::NameKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::NameRule {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::DnsQuerySeen {}
}

/// Addresses the lookup benchmark's programs cycle through (`BENCH_ADDRS`, one a run; a power of
/// two). The object declares one: only the benchmark's loader sizes the map to this.
pub const BENCH_ADDRESSES: u32 = 65_536;
const _: () = assert!(BENCH_ADDRESSES.is_power_of_two());
/// Capacity of the benchmark's plain kernel LPM tries (baseline): 1,000,000 IPv4 and 250,000
/// IPv6 prefixes fit. Not preallocated: empty, they cost the daemon nothing.
pub const BENCH_LPM_V4_ENTRIES: u32 = 1 << 20;
pub const BENCH_LPM_V6_ENTRIES: u32 = 1 << 18;
