//! Name-level blocking: a DNS query for a name that a `drop` entry blocks by name is answered
//! here, NXDOMAIN, in the same frame sent back (XDP_TX), and never forwarded.
//!
//! The main program hands a query candidate (UDP or TCP to port 53 arriving on a non-outside
//! interface, not dropped by address) to the `enforcer_dns` program by tail call, with what it
//! parsed and decided in a per-CPU stash, so that the name walk below is verified once, not once
//! per parse path.
//!
//! The question name is copied into a per-CPU buffer, walked forward once for its labels (at most
//! 63 bytes each, 255 in all, no compression), then backward once to hash every suffix of up to
//! `MAX_PATTERN_LABELS` labels (`enforcer_common::name_hash`); each suffix is looked up in the
//! name table of the stashed generation: `exact` applies to the whole name, `wildcard` to a proper
//! suffix. Allow beats drop beats monitor, then the suffix with most labels, then platform order.
//! Anything malformed passes untouched.

// Every offset here is masked below 0x4000 and every length below 512 before it is narrowed;
// scores and keys are unpacked from fields packed a few lines away.
#![allow(clippy::cast_possible_truncation)]

use aya_ebpf::{
    bindings::xdp_action,
    helpers::generated::{
        bpf_xdp_adjust_head, bpf_xdp_adjust_tail, bpf_xdp_get_buff_len, bpf_xdp_load_bytes,
        bpf_xdp_store_bytes,
    },
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
    programs::XdpContext,
};
use enforcer_common::{
    ACTION_ALLOW, ACTION_DROP, ACTION_MONITOR, DNS_CONFIG_BLOCK_TTL, DNS_CONFIG_ENTRIES,
    FAMILY_IPV4, MAX_NAMES, MAX_PATTERN_LABELS, NAME_HASH_BASE, NameKey, NameRule, PROTOCOL_TCP,
    PROTOCOL_UDP, action_precedence,
};

use crate::parse::{Addresses, Packet, Ports};

/// Name table, generation 0: suffix (hash, labels) to what exact names and names under it get.
#[map]
static NAMES_0: HashMap<NameKey, NameRule> = HashMap::with_max_entries(MAX_NAMES, 0);

/// Name table, generation 1 (switched with the prefixes by `ACTIVE_GENERATION`).
#[map]
static NAMES_1: HashMap<NameKey, NameRule> = HashMap::with_max_entries(MAX_NAMES, 0);

/// `[DNS_CONFIG_BLOCK_TTL]`: TTL and SOA minimum of synthesized answers, in seconds.
#[map]
static DNS_CONFIG: Array<u32> = Array::with_max_entries(DNS_CONFIG_ENTRIES, 0);

/// Room for the question name of the query being looked at (per CPU).
#[map]
static NAME_BUFFER: PerCpuArray<NameBuffer> = PerCpuArray::with_max_entries(1, 0);

const NAME_BYTES: usize = 256;
/// `--dns-block-ttl`'s default, used until the daemon sets one.
const DEFAULT_BLOCK_TTL: u32 = 300;
const MAX_LABELS: usize = 128;
const DNS_HEADER: usize = 12;
const UDP_HEADER: usize = 8;
/// Bound on offsets (as parse's), so the verifier can prove packet reads safe.
const MAX_OFFSET: usize = 0x3FFF;

#[repr(C)]
pub struct NameBuffer {
    name: [u8; NAME_BYTES],
    /// Offset in `name` of each label's length byte.
    starts: [u8; MAX_LABELS],
    /// `name_hash` of the name from each position on.
    hash_from: [u64; NAME_BYTES],
}

/// What the name table says about a query.
pub enum NameOutcome {
    /// No entry, or the query is not one we read (malformed, not a standard query).
    None,
    /// The winning entry's platform and action.
    Matched { platform: u16, action: u8 },
}

/// What the question of a query ends with: its end offset in the frame, and whether an OPT
/// record follows (EDNS).
pub struct Question {
    pub end: usize,
    pub edns: bool,
    /// Offset of the DNS message in the frame.
    pub message: usize,
}

/// Whether the packet is a query the name table may answer: UDP or TCP to port 53 (not from it).
#[inline(always)]
pub fn is_candidate(packet: &Packet) -> bool {
    let ports: &Ports = &packet.ports;
    (packet.protocol == PROTOCOL_UDP || packet.protocol == PROTOCOL_TCP)
        && ports.known
        && ports.dst == 53
        && ports.src != 53
}

/// The `N` bytes at `offset` of the frame, through the helper (no packet-pointer proofs).
#[inline(always)]
fn load<const N: usize>(ctx: &XdpContext, offset: usize) -> Option<[u8; N]> {
    let mut bytes = [0u8; N];
    // SAFETY: the helper checks the frame's bounds and writes N bytes into `bytes`.
    let rc = unsafe {
        bpf_xdp_load_bytes(
            ctx.ctx,
            (offset & MAX_OFFSET) as u32,
            bytes.as_mut_ptr().cast(),
            N as u32,
        )
    };
    (rc == 0).then_some(bytes)
}

#[inline(always)]
fn byte_at(ctx: &XdpContext, offset: usize) -> Option<u8> {
    load::<1>(ctx, offset).map(|b| b[0])
}

#[inline(always)]
fn be16_at(ctx: &XdpContext, offset: usize) -> Option<u16> {
    load::<2>(ctx, offset).map(u16::from_be_bytes)
}

/// Where the DNS message starts: after the UDP header, or after the TCP header and the 2-byte
/// length of DNS over TCP.
#[inline(always)]
fn message_offset(ctx: &XdpContext, packet: &Packet) -> Option<usize> {
    let l4 = packet.ports.l4 & MAX_OFFSET;
    if packet.protocol == PROTOCOL_UDP {
        return Some(l4 + UDP_HEADER);
    }
    let data_offset = (byte_at(ctx, l4 + 12)? >> 4) as usize * 4;
    if data_offset < 20 {
        return None;
    }
    Some(l4 + data_offset + 2)
}

/// The name table's answer for the query in `packet` (generation `generation`), and where its
/// question ends.
#[inline(always)]
pub fn lookup(
    ctx: &XdpContext,
    packet: &Packet,
    generation: u32,
) -> (NameOutcome, Option<Question>) {
    let Some(message) = message_offset(ctx, packet) else {
        return (NameOutcome::None, None);
    };
    let message = message & MAX_OFFSET;
    // A standard query (QR 0, opcode 0) with exactly one question.
    let (Some(flags), Some(qdcount), Some(arcount)) = (
        byte_at(ctx, message + 2),
        be16_at(ctx, message + 4),
        be16_at(ctx, message + 10),
    ) else {
        return (NameOutcome::None, None);
    };
    if flags & 0xF8 != 0 || qdcount != 1 {
        return (NameOutcome::None, None);
    }
    let qname = message + DNS_HEADER;
    let frame_len = ctx.data_end() - ctx.data();
    if qname >= frame_len {
        return (NameOutcome::None, None);
    }
    let available = frame_len - qname;
    let wanted = if available < NAME_BYTES {
        available
    } else {
        NAME_BYTES
    };
    // 1..=NAME_BYTES in a form the verifier can see.
    let wanted = ((wanted - 1) & (NAME_BYTES - 1)) + 1;
    let Some(buffer) = NAME_BUFFER.get_ptr_mut(0) else {
        return (NameOutcome::None, None);
    };
    // SAFETY: this CPU's buffer, used only while this program runs; the helper checks the frame
    // bounds and `wanted` fits the buffer.
    let loaded = unsafe {
        bpf_xdp_load_bytes(
            ctx.ctx,
            qname as u32,
            (*buffer).name.as_mut_ptr().cast(),
            wanted as u32,
        )
    };
    if loaded < 0 {
        return (NameOutcome::None, None);
    }
    // The walk and the lookups are global functions: verified once each, and what they return
    // is an opaque number here (as `best_rule`'s), so the verifier's paths do not multiply.
    let walked = walk_name(wanted as u64);
    if walked == 0 {
        return (NameOutcome::None, None);
    }
    let (labels, end, found) = (
        (walked & 0xFF) as usize,
        ((walked >> 8) & 0xFFFF) as usize,
        (walked >> 24) & 0xFF,
    );
    // QTYPE and QCLASS must be there too.
    let question_end = qname + end + 1 + 4;
    if question_end > frame_len {
        return (NameOutcome::None, None);
    }
    let edns = arcount >= 1
        && byte_at(ctx, question_end) == Some(0)
        && be16_at(ctx, question_end + 1) == Some(41);
    let question = Question {
        end: question_end,
        edns,
        message,
    };
    let best = name_verdict(generation as u64, found, labels as u64);
    if best == 0 {
        return (NameOutcome::None, Some(question));
    }
    (
        NameOutcome::Matched {
            platform: ((best >> 8) & 0xFFFF) as u16,
            action: (best & 0xFF) as u8,
        },
        Some(question),
    )
}

/// Walks the question name in `NAME_BUFFER` (its first `wanted` bytes were loaded): forward for
/// the labels (their starts into `NAME_BUFFER.starts`), then backward hashing the name from every
/// position on into `NAME_BUFFER.hash_from`. Returns 0 for a malformed or cut name, else labels |
/// end (offset of the root label) << 8 | suffixes hashed << 24.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn walk_name(wanted: u64) -> u64 {
    let Some(buffer) = NAME_BUFFER.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's buffer, used only while this program runs.
    let buffer = unsafe { &mut *buffer };
    let wanted = (wanted as usize) & ((NAME_BYTES - 1) | NAME_BYTES);
    let mut position = 0usize;
    let mut labels = 0usize;
    let mut end = usize::MAX;
    for _ in 0..MAX_LABELS {
        if position >= wanted {
            break;
        }
        let length = buffer.name[position & (NAME_BYTES - 1)] as usize;
        if length == 0 {
            end = position;
            break;
        }
        // Over 63: a compression pointer or garbage.
        if length > 63 {
            return 0;
        }
        buffer.starts[labels & (MAX_LABELS - 1)] = position as u8;
        labels += 1;
        position += length + 1;
        // The whole name, root label included, is at most 255 bytes.
        if position >= NAME_BYTES - 1 {
            return 0;
        }
    }
    if end == usize::MAX || labels == 0 {
        return 0;
    }
    // A second global function: entered once, whatever path the walk above took.
    if hash_name(end as u64) != 0 {
        return 0;
    }
    let found = if labels < MAX_PATTERN_LABELS {
        labels
    } else {
        MAX_PATTERN_LABELS
    };
    labels as u64 | (end as u64) << 8 | (found as u64) << 24
}

/// Hashes the name in `NAME_BUFFER` (its root label at `end`) backward, one byte at a time and
/// without looking for labels (so the verifier sees one path): the hash of the name from every
/// position on, into `NAME_BUFFER.hash_from`. A suffix's hash is then the one at its label's
/// start. Returns 0, or 1 when the buffer is missing.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn hash_name(end: u64) -> u64 {
    let Some(buffer) = NAME_BUFFER.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's buffer, used only while this program runs.
    let buffer = unsafe { &mut *buffer };
    let end = (end as usize) & (NAME_BYTES - 1);
    let mut hash = 0u64;
    let mut power = 1u64;
    for step in 0..NAME_BYTES {
        if step >= end {
            break;
        }
        let i = (end - 1 - step) & (NAME_BYTES - 1);
        let byte = buffer.name[i];
        let lower = byte | (((byte.wrapping_sub(b'A') < 26) as u8) << 5);
        hash = hash.wrapping_add((lower as u64 + 1).wrapping_mul(power));
        power = power.wrapping_mul(NAME_HASH_BASE);
        buffer.hash_from[i] = hash;
    }
    0
}

/// The best entry over the `found` shortest suffixes (by their hashes in `NAME_BUFFER`) of a
/// name of `labels` labels, in the name table of `generation`: allow beats drop beats monitor, then the suffix
/// with most labels, then platform order. Returns 0 for none, else a score whose low bits are
/// platform << 8 | action.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn name_verdict(generation: u64, found: u64, labels: u64) -> u64 {
    let Some(buffer) = NAME_BUFFER.get(0) else {
        return 0;
    };
    let mut best = 0u64;
    for k in 0..MAX_PATTERN_LABELS {
        if k as u64 >= found {
            break;
        }
        // The suffix of k + 1 labels starts at label `labels - 1 - k`.
        let start = buffer.starts[(labels as usize).wrapping_sub(1 + k) & (MAX_LABELS - 1)];
        let hash = buffer.hash_from[start as usize];
        let exact = ((k + 1) as u64 == labels) as u64;
        let score = suffix_score(generation, hash, (k + 1) as u64 | exact << 8);
        best = if score > best { score } else { best };
    }
    best
}

/// What the name table of `generation` says about one suffix (its `hash`; `query` = its labels
/// | 1 << 8 when it is the whole name): a score as `name_verdict` returns, 0 for nothing. A
/// global function too: its result is opaque to the loop above, which keeps that loop to one
/// path per suffix.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn suffix_score(generation: u64, hash: u64, query: u64) -> u64 {
    let labels = query & 0xFF;
    let key = NameKey {
        hash,
        labels: labels as u8,
        _pad: [0; 7],
    };
    // SAFETY: the value is copied out at once.
    let rule = unsafe {
        if generation == 0 {
            NAMES_0.get(key).copied()
        } else {
            NAMES_1.get(key).copied()
        }
    };
    let Some(rule) = rule else {
        return 0;
    };
    let verdict = if query >> 8 & 1 == 1 {
        rule.exact
    } else {
        rule.wildcard
    };
    if verdict.present == 0 {
        return 0;
    }
    ((action_precedence(verdict.action) & 3) as u64) << 48
        | labels << 40
        | ((0xFFFF - verdict.rank) as u64) << 24
        | (verdict.platform as u64) << 8
        | verdict.action as u64
}

/// Whether `action` blocks, monitors or allows (for the caller's verdict).
#[inline(always)]
pub fn blocks(action: u8) -> bool {
    action == ACTION_DROP
}

#[inline(always)]
pub fn counts_as_match(action: u8) -> bool {
    action == ACTION_MONITOR || action == ACTION_ALLOW
}

/// The SOA of synthesized answers: owner ".", type SOA, class IN, TTL, RDLENGTH 22, MNAME and
/// RNAME ".", serial, refresh, retry, expire, minimum (TTL and minimum filled in).
const SOA: [u8; 33] = [
    0, 0, 6, 0, 1, 0, 0, 0, 0, 0, 22, 0, 0, 0, 0, 0, 1, 0, 0, 0x0E, 0x10, 0, 0, 0x02, 0x58, 0, 1,
    0x51, 0x80, 0, 0, 0, 0,
];
const SOA_TTL: usize = 5;
const SOA_MINIMUM: usize = 29;
/// OPT: owner ".", type 41, UDP size 1232, extended RCODE/version/flags 0, RDLENGTH 6, and
/// Extended DNS Error (option 15, length 2) 15, Blocked.
const OPT: [u8; 17] = [0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 6, 0, 15, 0, 2, 0, 15];

/// Turns the UDP query in the frame into its NXDOMAIN answer, in place; returns whether it did
/// (when it cannot, the caller drops the query: a blocked query is never forwarded). The answer
/// is built in a per-CPU buffer (copied from the frame, rewritten, copied back), so that every
/// read and write is a bounded buffer access.
#[inline(always)]
pub fn answer_nxdomain(ctx: &XdpContext, packet: &Packet, question: &Question) -> bool {
    if packet.protocol != PROTOCOL_UDP {
        return false;
    }
    let l3 = packet.l3 & MAX_OFFSET;
    let l4 = packet.ports.l4 & MAX_OFFSET;
    let v4 = matches!(packet.addresses, Addresses::V4 { .. });
    // Only a whole datagram right after its IP header (no fragments, no IPv6 extension
    // headers) is rewritten.
    if v4 {
        let Some(flags) = be16_at(ctx, l3 + 6) else {
            return false;
        };
        if flags & 0x3FFF != 0 {
            return false;
        }
    } else if l4 != l3 + 40 {
        return false;
    }
    let opt = if question.edns { OPT.len() } else { 0 };
    let end = question.end & MAX_OFFSET;
    let new_len = end + SOA.len() + opt;
    if new_len > WORK_BYTES || end == 0 {
        return false;
    }
    let Some(work) = WORK.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's buffer, used only while this program runs.
    let work = unsafe { &mut (*work).bytes };
    // 1..=WORK_BYTES, visibly to the verifier.
    let copied = ((end - 1) & (WORK_BYTES - 1)) + 1;
    // SAFETY: the helper checks the frame's bounds; `copied` fits the buffer.
    if unsafe { bpf_xdp_load_bytes(ctx.ctx, 0, work.as_mut_ptr().cast(), copied as u32) } != 0 {
        return false;
    }
    let at = |i: usize| i & (WORK_BYTES - 1);
    // Ethernet: back to the sender.
    for i in 0..6 {
        let (a, b) = (work[at(i)], work[at(i + 6)]);
        work[at(i)] = b;
        work[at(i + 6)] = a;
    }
    // IP: addresses swapped, lengths, a fresh hop limit.
    let udp_len = new_len - l4;
    let (address_at, address_len) = if v4 { (l3 + 12, 4) } else { (l3 + 8, 16) };
    for i in 0..16 {
        if i < address_len {
            let (s, d) = (at(address_at + i), at(address_at + address_len + i));
            let (a, b) = (work[s], work[d]);
            work[s] = b;
            work[d] = a;
        }
    }
    if v4 {
        let header_len = ((work[at(l3)] & 0x0F) as usize) * 4;
        let total = ((new_len - l3) as u16).to_be_bytes();
        work[at(l3 + 2)] = total[0];
        work[at(l3 + 3)] = total[1];
        work[at(l3 + 8)] = 64;
        work[at(l3 + 10)] = 0;
        work[at(l3 + 11)] = 0;
        let mut sum = 0u32;
        for i in 0..30 {
            if 2 * i < header_len {
                sum += u16::from_be_bytes([work[at(l3 + 2 * i)], work[at(l3 + 2 * i + 1)]]) as u32;
            }
        }
        let checksum = fold(sum).to_be_bytes();
        work[at(l3 + 10)] = checksum[0];
        work[at(l3 + 11)] = checksum[1];
    } else {
        let payload = (udp_len as u16).to_be_bytes();
        work[at(l3 + 4)] = payload[0];
        work[at(l3 + 5)] = payload[1];
        work[at(l3 + 7)] = 64;
    }
    // UDP: ports swapped, length; the checksum below.
    let (sport, dport) = (
        packet.ports.src.to_be_bytes(),
        packet.ports.dst.to_be_bytes(),
    );
    let length = (udp_len as u16).to_be_bytes();
    let udp = [
        dport[0], dport[1], sport[0], sport[1], length[0], length[1], 0, 0,
    ];
    for (i, b) in udp.iter().enumerate() {
        work[at(l4 + i)] = *b;
    }
    // DNS header: QR, the opcode and RD kept, RA, NXDOMAIN; one question, one authority record
    // (the SOA), the OPT when the query had EDNS.
    let message = question.message & MAX_OFFSET;
    work[at(message + 2)] = 0x80 | (work[at(message + 2)] & 0x79);
    work[at(message + 3)] = 0x80 | 3;
    let counts = [0, 1, 0, 0, 0, 1, 0, question.edns as u8];
    for (i, b) in counts.iter().enumerate() {
        work[at(message + 4 + i)] = *b;
    }
    // 0 until the daemon sets it: the reference's default then.
    let ttl = match DNS_CONFIG.get(DNS_CONFIG_BLOCK_TTL).copied().unwrap_or(0) {
        0 => DEFAULT_BLOCK_TTL,
        ttl => ttl,
    }
    .to_be_bytes();
    for (i, b) in SOA.iter().enumerate() {
        let b = match i {
            SOA_TTL..=SOA_TTL_END => ttl[i - SOA_TTL],
            SOA_MINIMUM..=SOA_MINIMUM_END => ttl[i - SOA_MINIMUM],
            _ => *b,
        };
        work[at(end + i)] = b;
    }
    if question.edns {
        for (i, b) in OPT.iter().enumerate() {
            work[at(end + SOA.len() + i)] = *b;
        }
    }
    // UDP checksum: pseudo-header, then the datagram (its checksum field is 0 now).
    let mut sum = PROTOCOL_UDP as u32 + udp_len as u32;
    for i in 0..16 {
        if i < address_len {
            // Both addresses, as 16-bit words.
            let w = 2 * i;
            sum +=
                u16::from_be_bytes([work[at(address_at + w)], work[at(address_at + w + 1)]]) as u32;
        }
    }
    for i in 0..(WORK_BYTES / 2) {
        if 2 * i < udp_len {
            let hi = work[at(l4 + 2 * i)];
            let lo = if 2 * i + 1 < udp_len {
                work[at(l4 + 2 * i + 1)]
            } else {
                0
            };
            sum += u16::from_be_bytes([hi, lo]) as u32;
        }
    }
    let checksum = match fold(sum) {
        0 => 0xFFFF,
        c => c,
    }
    .to_be_bytes();
    work[at(l4 + 6)] = checksum[0];
    work[at(l4 + 7)] = checksum[1];
    // The frame takes the answer's length, then its bytes.
    // By the helper: a length computed from packet pointers would be folded into pointer
    // arithmetic on the frame's end, which the verifier refuses.
    // SAFETY: a helper reading the context.
    let old_len = unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as usize;
    // A longer answer takes its room at the head (XDP guarantees 256 bytes of headroom; the
    // tail room of a frame from a socket may be a few bytes), a shorter one gives up the tail.
    let grow = new_len as i32 - old_len as i32;
    // SAFETY: the helpers check the new bounds against the frame's room.
    let adjusted = unsafe {
        if grow > 0 {
            bpf_xdp_adjust_head(ctx.ctx, -grow)
        } else {
            bpf_xdp_adjust_tail(ctx.ctx, grow)
        }
    };
    if adjusted != 0 {
        return false;
    }
    let stored = ((new_len - 1) & (WORK_BYTES - 1)) + 1;
    // SAFETY: the helper checks the frame's bounds; `stored` bytes of the buffer are written.
    unsafe { bpf_xdp_store_bytes(ctx.ctx, 0, work.as_mut_ptr().cast(), stored as u32) == 0 }
}

/// Room to build an answer in: Ethernet with two tags, IPv4 with options or IPv6, UDP, DNS
/// header, a 255-byte name, type and class, SOA and OPT fit.
const WORK_BYTES: usize = 512;

#[repr(C)]
pub struct Work {
    bytes: [u8; WORK_BYTES],
}

/// The per-CPU buffer answers are built in.
#[map]
static WORK: PerCpuArray<Work> = PerCpuArray::with_max_entries(1, 0);

const SOA_TTL_END: usize = SOA_TTL + 3;
const SOA_MINIMUM_END: usize = SOA_MINIMUM + 3;

/// The one's complement of the folded one's-complement sum.
#[inline(always)]
fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xFFFF) + (sum >> 16);
    sum = (sum & 0xFFFF) + (sum >> 16);
    !(sum as u16)
}

/// The family code of a packet.
#[inline(always)]
pub fn family(packet: &Packet) -> u8 {
    match packet.addresses {
        Addresses::V4 { .. } => FAMILY_IPV4,
        Addresses::V6 { .. } => enforcer_common::FAMILY_IPV6,
    }
}

/// XDP action for a blocked query: sent back when answered, else dropped.
#[inline(always)]
pub fn blocked_action(answered: bool) -> u32 {
    if answered {
        xdp_action::XDP_TX
    } else {
        xdp_action::XDP_DROP
    }
}
