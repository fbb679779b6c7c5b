//! Copying DNS messages to user space, which learns the addresses of banned names from them.
//! The frame itself passes untouched: this only reads it.

use aya_ebpf::{
    helpers::generated::bpf_xdp_load_bytes, macros::map, maps::RingBuf, programs::XdpContext,
};
use enforcer_common::{
    DNS_CAPTURE_BYTES, DNS_PORT, DNS_RING_BYTES, DnsEvent, FAMILY_IPV4, FAMILY_IPV6, PROTOCOL_UDP,
};

use crate::parse::{Addresses, Packet};

/// UDP DNS messages (queries and responses) seen on the attached interfaces, for user space.
#[map]
static DNS_EVENTS: RingBuf = RingBuf::with_byte_size(DNS_RING_BYTES, 0);

const UDP_HEADER: usize = 8;

/// Whether `packet` is a UDP message to or from port 53.
#[inline(always)]
pub fn is_dns(packet: &Packet) -> bool {
    packet.protocol == PROTOCOL_UDP
        && packet.ports.known
        && (packet.ports.src == DNS_PORT || packet.ports.dst == DNS_PORT)
}

/// Copies the message into the ring buffer. When the buffer is full the message is not
/// copied (and not learned from); the frame is never held back for it.
#[inline(always)]
pub fn capture(ctx: &XdpContext, packet: &Packet) {
    let frame_len = ctx.data_end() - ctx.data();
    let payload = packet.ports.l4 + UDP_HEADER;
    if payload >= frame_len {
        return;
    }
    let length = frame_len - payload;
    let captured = if length > DNS_CAPTURE_BYTES {
        DNS_CAPTURE_BYTES
    } else {
        length
    };
    // The same value (1..=DNS_CAPTURE_BYTES, a power of two), in a form whose lower bound the
    // verifier can see: the helper refuses a length that might be zero.
    let captured = ((captured - 1) & (DNS_CAPTURE_BYTES - 1)) + 1;
    let Some(mut entry) = DNS_EVENTS.reserve::<DnsEvent>(0) else {
        return;
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
    let copied = unsafe {
        (*event).src_addr = src;
        (*event).dst_addr = dst;
        (*event).src_port = packet.ports.src;
        (*event).dst_port = packet.ports.dst;
        (*event).family = family;
        (*event)._pad0 = 0;
        (*event).captured = captured as u16;
        (*event).length = length as u16;
        (*event)._pad1 = [0; 6];
        bpf_xdp_load_bytes(
            ctx.ctx,
            payload as u32,
            (*event).payload.as_mut_ptr().cast(),
            captured as u32,
        )
    };
    if copied < 0 {
        entry.discard(0);
    } else {
        entry.submit(0);
    }
}
