//! DNS for learning: the program decides here which answers user space may believe, copies them
//! (and the queries they answer) into a ring buffer, and holds a believed response (drops the
//! frame after the copy) while the daemon is alive; the daemon puts it back into the receive
//! path once what it teaches is enforced, so that no client connects to an answer before it is
//! blocked. Everything else is passed untouched, never held, and counted.
//!
//! Believed (docs/reference.md, "Learning and holding DNS answers"): a response that arrives on
//! an outside interface (any interface when no roles are set, but never the one its query came
//! in on) from port 53, answering a query seen arriving on an inside interface within 10 s (same
//! server, client port and DNS id; the question is compared by user space), whose server is a
//! `--learn-from` server or whose client is a `--learn-for` client. The client is the query's
//! source, or the response may be addressed to the gateway itself (NAT).

use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    helpers::{bpf_ktime_get_ns, generated::bpf_xdp_load_bytes},
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf, lpm_trie::Key},
    programs::XdpContext,
};
use enforcer_common::{
    DNS_CAPTURE_BYTES, DNS_EVENT_FRAGMENT, DNS_EVENT_HEADER_BYTES, DNS_EVENT_QUERY,
    DNS_EVENT_RESPONSE, DNS_HOLD_DEADLINE, DNS_HOLD_MAX_FRAME, DNS_PORT, DNS_QUERY_WINDOW_NS,
    DNS_RING_BYTES, DNS_STAT_NOT_HELD, DNS_STAT_UNSOLICITED, DNS_STAT_UNTRUSTED, DNS_STATS,
    DnsEvent, DnsQueryKey, DnsQuerySeen, FAMILY_IPV4, FAMILY_IPV6, MAX_DNS_QUERIES, MAX_INTERFACES,
    MAX_TRUST_PREFIXES, PROTOCOL_UDP, ROLE_ARRAY_ENTRIES, ROLE_BOTH, ROLE_INSIDE, ROLE_OUTSIDE,
    TRUST_CLIENT, TRUST_GATEWAY, TRUST_SERVER,
};

use crate::parse::{Addresses, Packet};

/// Records for user space: a `DnsEventHeader` followed by the frame's first bytes.
#[map]
static DNS_EVENTS: RingBuf = RingBuf::with_byte_size(DNS_RING_BYTES, 0);

/// Per-CPU room where a record is built before its used part is copied into `DNS_EVENTS`.
#[map]
static DNS_SCRATCH: PerCpuArray<DnsEvent> = PerCpuArray::with_max_entries(1, 0);

/// `[DNS_HOLD_DEADLINE]`: responses are held while `bpf_ktime_get_ns()` is below this.
#[map]
static DNS_HOLD: Array<u64> = Array::with_max_entries(1, 0);

/// Outstanding queries of trusted clients or to trusted servers, by what their answer carries.
#[map]
static DNS_QUERIES: LruHashMap<DnsQueryKey, DnsQuerySeen> =
    LruHashMap::with_max_entries(MAX_DNS_QUERIES, 0);

/// IPv4 trust: `TRUST_SERVER`, `TRUST_CLIENT` and `TRUST_GATEWAY` bits per prefix.
#[map]
static DNS_TRUST_V4: LpmTrie<[u8; 4], u32> = LpmTrie::with_max_entries(MAX_TRUST_PREFIXES, 0);

/// IPv6 trust, as `DNS_TRUST_V4`.
#[map]
static DNS_TRUST_V6: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(MAX_TRUST_PREFIXES, 0);

/// Role (`ROLE_INSIDE`, `ROLE_OUTSIDE`) of each attached interface whose ifindex is below
/// `ROLE_ARRAY_ENTRIES`, at its ifindex; 0: both. An array: every packet reads it, and an array
/// read is a few instructions where a hash lookup is a function call and a hash.
#[map]
static IFACE_ROLES: Array<u64> = Array::with_max_entries(ROLE_ARRAY_ENTRIES, BPF_F_MMAPABLE);

/// Roles of interfaces with larger ifindexes (none: both).
#[map]
static IFACE_ROLES_HIGH: HashMap<u32, u32> = HashMap::with_max_entries(MAX_INTERFACES, 0);

/// Per-CPU counts of responses not held, by `DNS_STAT_*`.
#[map]
static DNS_STATS_MAP: PerCpuArray<u64> = PerCpuArray::with_max_entries(DNS_STATS, 0);

const UDP_HEADER: usize = 8;

#[inline(always)]
fn count(stat: u32) {
    if let Some(counter) = DNS_STATS_MAP.get_ptr_mut(stat) {
        // SAFETY: per-CPU map value, only this CPU writes it while the program runs.
        unsafe { *counter += 1 };
    }
}

#[inline(always)]
fn now() -> u64 {
    // SAFETY: a helper without arguments.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
fn holding() -> bool {
    now() < DNS_HOLD.get(DNS_HOLD_DEADLINE).copied().unwrap_or(0)
}

/// The interface a frame arrived on and its role, read once per frame.
#[derive(Clone, Copy)]
pub struct Arrival {
    pub ifindex: u32,
    pub role: u32,
}

impl Arrival {
    #[inline(always)]
    pub fn of(ctx: &XdpContext) -> Self {
        // SAFETY: reading a field of the program's context.
        let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
        Self {
            ifindex,
            role: role(ifindex),
        }
    }
}

#[inline(always)]
fn role(ifindex: u32) -> u32 {
    if ifindex < ROLE_ARRAY_ENTRIES {
        // 0 (no role set), or anything but inside or outside, is both.
        return match IFACE_ROLES.get(ifindex).copied().unwrap_or(0) {
            r if r == ROLE_INSIDE as u64 => ROLE_INSIDE,
            r if r == ROLE_OUTSIDE as u64 => ROLE_OUTSIDE,
            _ => ROLE_BOTH,
        };
    }
    // SAFETY: a plain read of a u32 value.
    unsafe { IFACE_ROLES_HIGH.get(ifindex) }
        .copied()
        .unwrap_or(ROLE_BOTH)
}

/// The trust bits of an address (16 bytes; IPv4 in the first four).
#[inline(always)]
fn trust(family: u8, addr: &[u8; 16]) -> u32 {
    let found = if family == FAMILY_IPV4 {
        DNS_TRUST_V4.get(Key::new(32, [addr[0], addr[1], addr[2], addr[3]]))
    } else {
        DNS_TRUST_V6.get(Key::new(128, *addr))
    };
    found.copied().unwrap_or(0)
}

/// The packet's family and addresses, IPv4 in the first four bytes.
#[inline(always)]
pub fn addresses(packet: &Packet) -> (u8, [u8; 16], [u8; 16]) {
    match &packet.addresses {
        Addresses::V4 { src, dst } => {
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s[..4].copy_from_slice(src);
            d[..4].copy_from_slice(dst);
            (FAMILY_IPV4, s, d)
        }
        Addresses::V6 { src, dst } => (FAMILY_IPV6, *src, *dst),
    }
}

/// Handles a UDP packet the policy does not drop, which arrived on `arrival` (see [`Arrival`]);
/// returns whether the frame is held.
#[inline(always)]
pub fn handle(ctx: &XdpContext, packet: &Packet, arrival: Arrival) -> bool {
    if packet.protocol != PROTOCOL_UDP {
        return false;
    }
    let Arrival { ifindex, role } = arrival;
    let (family, src, dst) = addresses(packet);
    let ports = packet.ports;
    if !ports.known {
        // The rest of a fragmented response from a trusted server: copied so that user space
        // can reassemble it, and passed (the client holds it until the held first one arrives).
        if ports.hidden == 0
            && role != ROLE_INSIDE
            && (trust(family, &src) & TRUST_SERVER != 0 || trust(family, &dst) & TRUST_CLIENT != 0)
        {
            let _ = copy(ctx, packet, DNS_EVENT_FRAGMENT, 0, &[0; 16], 0);
        }
        return false;
    }
    if ports.dst == DNS_PORT && ports.src != DNS_PORT {
        if role != ROLE_OUTSIDE
            && (trust(family, &dst) & TRUST_SERVER != 0 || trust(family, &src) & TRUST_CLIENT != 0)
        {
            query(ctx, packet, family, src, dst, ifindex);
        }
        return false;
    }
    if ports.src != DNS_PORT {
        return false;
    }
    response(ctx, packet, family, src, dst, ifindex, role)
}

/// The key a query is remembered by, and its answer found by: the server, the client's port,
/// the DNS id.
#[inline(always)]
fn query_key(family: u8, server: [u8; 16], client_port: u16, id: u16) -> DnsQueryKey {
    DnsQueryKey {
        server,
        client_port,
        id,
        family,
        _pad: [0; 3],
    }
}

/// The DNS id of the message after the UDP header at `l4`, when the frame holds it.
#[inline(always)]
fn dns_id(ctx: &XdpContext, l4: usize) -> Option<u16> {
    let at = ctx.data() + (l4 & 0x3FFF) + UDP_HEADER;
    if at + 2 > ctx.data_end() {
        return None;
    }
    // SAFETY: the two bytes at `at` lie inside the frame (checked above).
    Some(u16::from_be_bytes(unsafe {
        core::ptr::read_unaligned(at as *const [u8; 2])
    }))
}

#[inline(always)]
fn query(
    ctx: &XdpContext,
    packet: &Packet,
    family: u8,
    src: [u8; 16],
    dst: [u8; 16],
    ifindex: u32,
) {
    let Some(id) = dns_id(ctx, packet.ports.l4) else {
        return;
    };
    let key = query_key(family, dst, packet.ports.src, id);
    let seen = DnsQuerySeen {
        client: src,
        at_ns: now(),
        ifindex,
        _pad: 0,
    };
    // User space compares the question; a query it misses only makes the answer unsolicited.
    if DNS_QUERIES.insert(key, seen, 0).is_ok() {
        let _ = copy(ctx, packet, DNS_EVENT_QUERY, 0, &[0; 16], 0);
    }
}

#[inline(always)]
fn response(
    ctx: &XdpContext,
    packet: &Packet,
    family: u8,
    src: [u8; 16],
    dst: [u8; 16],
    ifindex: u32,
    role: u32,
) -> bool {
    let trusted = trust(family, &src) & TRUST_SERVER != 0;
    let dst_trust = trust(family, &dst);
    if role == ROLE_INSIDE || !(trusted || dst_trust & TRUST_CLIENT != 0) {
        count(DNS_STAT_UNTRUSTED);
        return false;
    }
    let Some(id) = dns_id(ctx, packet.ports.l4) else {
        count(DNS_STAT_UNSOLICITED);
        return false;
    };
    let key = query_key(family, src, packet.ports.dst, id);
    // SAFETY: the value is copied out at once.
    let Some(seen) = (unsafe { DNS_QUERIES.get(key) }).copied() else {
        count(DNS_STAT_UNSOLICITED);
        return false;
    };
    if now().wrapping_sub(seen.at_ns) > DNS_QUERY_WINDOW_NS
        || (seen.client != dst && dst_trust & TRUST_GATEWAY == 0)
    {
        count(DNS_STAT_UNSOLICITED);
        return false;
    }
    // A client that forges the answer on its own link: it arrives where the query came in.
    if seen.ifindex == ifindex {
        count(DNS_STAT_UNTRUSTED);
        return false;
    }
    // Each query is answered once.
    let _ = DNS_QUERIES.remove(key);
    let frame_len = ctx.data_end() - ctx.data();
    let hold = frame_len <= DNS_HOLD_MAX_FRAME && holding();
    let copied = copy(
        ctx,
        packet,
        DNS_EVENT_RESPONSE,
        hold as u8,
        &seen.client,
        seen.ifindex,
    );
    if hold && copied {
        return true;
    }
    count(DNS_STAT_NOT_HELD);
    false
}

/// Builds a record (header and the frame's first bytes) and copies it into the ring buffer;
/// returns whether it is there. When the buffer is full nothing is copied.
#[inline(always)]
fn copy(
    ctx: &XdpContext,
    packet: &Packet,
    kind: u8,
    held: u8,
    query_client: &[u8; 16],
    query_ifindex: u32,
) -> bool {
    let frame_len = ctx.data_end() - ctx.data();
    if frame_len == 0 {
        return false;
    }
    let whole = frame_len <= DNS_CAPTURE_BYTES;
    let captured = if whole { frame_len } else { DNS_CAPTURE_BYTES };
    // The same value (1..=DNS_CAPTURE_BYTES, a power of two), in a form whose bounds the verifier
    // can see: the helper refuses a length that might be zero or too long.
    let captured = ((captured - 1) & (DNS_CAPTURE_BYTES - 1)) + 1;
    let Some(event) = DNS_SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    let (family, src, dst) = addresses(packet);
    let payload = if kind == DNS_EVENT_FRAGMENT {
        0
    } else {
        packet.ports.l4 + UDP_HEADER
    };
    // SAFETY: `event` is this CPU's scratch value, written only here while the program runs;
    // the copy from the frame is bounds-checked by the helper, and `captured` is in
    // 1..=DNS_CAPTURE_BYTES, the room in `frame`. Offsets and lengths are below 0x4000 (parse's
    // bound) and DNS_CAPTURE_BYTES, so they fit the u16 fields they are cast to.
    #[allow(clippy::cast_possible_truncation)]
    let loaded = unsafe {
        let header = &mut (*event).header;
        header.src_addr = src;
        header.dst_addr = dst;
        header.query_client = *query_client;
        header.src_port = packet.ports.src;
        header.dst_port = packet.ports.dst;
        header.family = family;
        header.kind = kind;
        header.held = held;
        header._pad = 0;
        header.captured = captured as u16;
        header.length = frame_len as u16;
        header.l3_offset = packet.l3 as u16;
        header.payload_offset = payload as u16;
        header.ifindex = (*ctx.ctx).ingress_ifindex;
        header.query_ifindex = query_ifindex;
        bpf_xdp_load_bytes(
            ctx.ctx,
            0,
            (*event).frame.as_mut_ptr().cast(),
            captured as u32,
        )
    };
    if loaded < 0 {
        return false;
    }
    // SAFETY: the record is the scratch value's first DNS_EVENT_HEADER_BYTES + `captured` bytes,
    // all inside it.
    let record = unsafe {
        core::slice::from_raw_parts(
            event.cast::<u8>().cast_const(),
            DNS_EVENT_HEADER_BYTES + captured,
        )
    };
    DNS_EVENTS.output::<[u8]>(record, 0).is_ok()
}
