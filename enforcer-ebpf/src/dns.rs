//! Copying DNS packets to user space, which learns the addresses of banned names from them.
//! Responses are also held (the frame is dropped after the copy) while the daemon is alive, and
//! the daemon sends them on once what they teach is enforced: a client cannot connect to an
//! answer before it is blocked.

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, generated::bpf_xdp_load_bytes},
    macros::map,
    maps::{Array, RingBuf},
    programs::XdpContext,
};
use enforcer_common::{
    DNS_CAPTURE_BYTES, DNS_HOLD_DEADLINE, DNS_PORT, DNS_RING_BYTES, DnsEvent, FAMILY_IPV4,
    FAMILY_IPV6, PROTOCOL_UDP,
};

use crate::parse::{Addresses, Packet};

/// UDP DNS packets (queries and responses) seen on the attached interfaces, for user space.
#[map]
static DNS_EVENTS: RingBuf = RingBuf::with_byte_size(DNS_RING_BYTES, 0);

/// `[DNS_HOLD_DEADLINE]`: responses are held while `bpf_ktime_get_ns()` is below this.
#[map]
static DNS_HOLD: Array<u64> = Array::with_max_entries(1, 0);

const UDP_HEADER: usize = 8;

/// Whether `packet` is a UDP message to or from port 53.
#[inline(always)]
pub fn is_dns(packet: &Packet) -> bool {
    packet.protocol == PROTOCOL_UDP
        && packet.ports.known
        && (packet.ports.src == DNS_PORT || packet.ports.dst == DNS_PORT)
}

#[inline(always)]
fn holding() -> bool {
    let deadline = DNS_HOLD.get(DNS_HOLD_DEADLINE).copied().unwrap_or(0);
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    now < deadline
}

/// Copies the packet into the ring buffer; returns whether the frame is to be held (dropped
/// here, sent on by the daemon). When the buffer is full nothing is copied and nothing held.
#[inline(always)]
pub fn capture(ctx: &XdpContext, packet: &Packet) -> bool {
    let frame_len = ctx.data_end() - ctx.data();
    let l3 = packet.l3;
    let payload = packet.ports.l4 + UDP_HEADER;
    if payload >= frame_len || l3 >= payload {
        return false;
    }
    let length = frame_len - l3;
    let whole = length <= DNS_CAPTURE_BYTES;
    let captured = if whole { length } else { DNS_CAPTURE_BYTES };
    // The same value (1..=DNS_CAPTURE_BYTES, a power of two), in a form whose lower bound the
    // verifier can see: the helper refuses a length that might be zero.
    let captured = ((captured - 1) & (DNS_CAPTURE_BYTES - 1)) + 1;
    // Only a whole response can be sent on.
    let hold = whole && packet.ports.src == DNS_PORT && holding();
    let Some(mut entry) = DNS_EVENTS.reserve::<DnsEvent>(0) else {
        return false;
    };
    let event = entry.as_mut_ptr();
    let (family, src, dst) = match &packet.addresses {
        Addresses::V4 { src, dst } => {
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s[..4].copy_from_slice(src);
            d[..4].copy_from_slice(dst);
            (FAMILY_IPV4, s, d)
        }
        Addresses::V6 { src, dst } => (FAMILY_IPV6, *src, *dst),
    };
    // SAFETY: `event` points at a reserved, writable DnsEvent in the ring buffer; the copy from
    // the frame is bounds-checked by the helper, and `captured` is in 1..=DNS_CAPTURE_BYTES.
    // Lengths and offsets are within the frame's first DNS_CAPTURE_BYTES + headers (a few KB),
    // so they fit the u16/u32 fields and helper arguments they are cast to.
    #[allow(clippy::cast_possible_truncation)]
    let copied = unsafe {
        (*event).src_addr = src;
        (*event).dst_addr = dst;
        (*event).src_port = packet.ports.src;
        (*event).dst_port = packet.ports.dst;
        (*event).family = family;
        (*event).held = hold as u8;
        (*event).captured = captured as u16;
        (*event).length = length as u16;
        (*event).payload_offset = (payload - l3) as u16;
        (*event).ifindex = (*ctx.ctx).ingress_ifindex;
        bpf_xdp_load_bytes(
            ctx.ctx,
            l3 as u32,
            (*event).packet.as_mut_ptr().cast(),
            captured as u32,
        )
    };
    if copied < 0 {
        entry.discard(0);
        return false;
    }
    entry.submit(0);
    hold
}
