//! Frame parsing with a bounds-checked cursor: every read is checked against the frame's end.
//!
//! Reads are whole windows of two bytes or more, each checked with a pointer comparison the
//! verifier understands; checks that need no read compare plain lengths.

use aya_ebpf::programs::XdpContext;
use enforcer_common::{PROTOCOL_TCP, PROTOCOL_UDP, PROTOCOL_UNKNOWN};

const ETH_HEADER: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88A8;
const MAX_VLAN_TAGS: usize = 2;
const MAX_IPV6_EXTENSION_HEADERS: usize = 8;
/// No frame reaches this size; bounding offsets by it lets the verifier prove reads safe.
const MAX_OFFSET: usize = 0x3FFF;

pub enum Parsed {
    NotIp,
    Unparsed,
    Ip(Packet),
}

pub enum Addresses {
    V4 { src: [u8; 4], dst: [u8; 4] },
    V6 { src: [u8; 16], dst: [u8; 16] },
}

#[derive(Clone, Copy)]
pub struct Ports {
    pub known: bool,
    pub src: u16,
    pub dst: u16,
    /// Offset of the transport header in the frame, when `known`.
    pub l4: usize,
}

const UNKNOWN_PORTS: Ports = Ports {
    known: false,
    src: 0,
    dst: 0,
    l4: 0,
};

pub struct Packet {
    pub addresses: Addresses,
    pub protocol: u8,
    pub ports: Ports,
    /// Offset of the IP header in the frame.
    pub l3: usize,
}

/// The frame being parsed.
struct Cursor {
    start: usize,
    end: usize,
}

impl Cursor {
    /// The `N` bytes at `offset`, or `None` when they are not all inside the frame.
    #[inline(always)]
    fn array_at<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        if offset > MAX_OFFSET {
            return None;
        }
        let at = self.start + offset;
        if at + N > self.end {
            return None;
        }
        // SAFETY: the N bytes at `at` lie inside the frame (checked above).
        Some(unsafe { core::ptr::read_unaligned(at as *const [u8; N]) })
    }

    fn len(&self) -> usize {
        self.end - self.start
    }
}

#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Parsed {
    let cursor = Cursor {
        start: ctx.data(),
        end: ctx.data_end(),
    };
    let Some(ethertype) = cursor.array_at::<2>(12) else {
        return Parsed::Unparsed;
    };
    let mut ethertype = u16::from_be_bytes(ethertype);
    let mut l3 = ETH_HEADER;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETHERTYPE_VLAN && ethertype != ETHERTYPE_QINQ {
            break;
        }
        // The tag is TCI (2 bytes) then the inner ether type.
        let Some(tag) = cursor.array_at::<4>(l3) else {
            return Parsed::Unparsed;
        };
        ethertype = u16::from_be_bytes([tag[2], tag[3]]);
        l3 += 4;
    }
    match ethertype {
        ETHERTYPE_IPV4 => parse_ipv4(&cursor, l3),
        ETHERTYPE_IPV6 => parse_ipv6(&cursor, l3),
        ETHERTYPE_VLAN | ETHERTYPE_QINQ => Parsed::Unparsed,
        _ => Parsed::NotIp,
    }
}

#[inline(always)]
fn parse_ipv4(cursor: &Cursor, l3: usize) -> Parsed {
    let Some(header) = cursor.array_at::<20>(l3) else {
        return Parsed::Unparsed;
    };
    let header_len = ((header[0] & 0x0F) as usize) * 4;
    if header[0] >> 4 != 4 || header_len < 20 || l3 + header_len > cursor.len() {
        return Parsed::Unparsed;
    }
    let protocol = header[9];
    let fragment_offset = u16::from_be_bytes([header[6], header[7]]) & 0x1FFF;
    let ports = if fragment_offset != 0 {
        UNKNOWN_PORTS
    } else {
        transport_ports(cursor, l3 + header_len, protocol)
    };
    Parsed::Ip(Packet {
        addresses: Addresses::V4 {
            src: [header[12], header[13], header[14], header[15]],
            dst: [header[16], header[17], header[18], header[19]],
        },
        protocol,
        ports,
        l3,
    })
}

#[inline(always)]
fn parse_ipv6(cursor: &Cursor, l3: usize) -> Parsed {
    let Some(header) = cursor.array_at::<40>(l3) else {
        return Parsed::Unparsed;
    };
    if header[0] >> 4 != 6 {
        return Parsed::Unparsed;
    }
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(&header[8..24]);
    dst.copy_from_slice(&header[24..40]);
    let (protocol, ports) = upper_layer(cursor, l3 + 40, header[6]);
    Parsed::Ip(Packet {
        addresses: Addresses::V6 { src, dst },
        protocol,
        ports,
        l3,
    })
}

/// Walks IPv6 extension headers from `offset`; returns the upper-layer protocol and ports.
#[inline(always)]
fn upper_layer(cursor: &Cursor, mut offset: usize, mut next: u8) -> (u8, Ports) {
    for _ in 0..MAX_IPV6_EXTENSION_HEADERS {
        let header_len = match next {
            0 | 43 | 60 => {
                let Some(h) = cursor.array_at::<2>(offset) else {
                    return (PROTOCOL_UNKNOWN, UNKNOWN_PORTS);
                };
                next = h[0];
                (h[1] as usize + 1) * 8
            }
            51 => {
                let Some(h) = cursor.array_at::<2>(offset) else {
                    return (PROTOCOL_UNKNOWN, UNKNOWN_PORTS);
                };
                next = h[0];
                (h[1] as usize + 2) * 4
            }
            44 => {
                let Some(h) = cursor.array_at::<8>(offset) else {
                    return (PROTOCOL_UNKNOWN, UNKNOWN_PORTS);
                };
                next = h[0];
                // A non-first fragment carries no transport header.
                if u16::from_be_bytes([h[2], h[3]]) >> 3 != 0 {
                    return (next, UNKNOWN_PORTS);
                }
                8
            }
            _ => return (next, transport_ports(cursor, offset, next)),
        };
        offset += header_len;
        // A header that runs past the end of the frame is truncated: nothing after it is known.
        if offset > MAX_OFFSET || offset > cursor.len() {
            return (PROTOCOL_UNKNOWN, UNKNOWN_PORTS);
        }
        // A no-op after the check above, but it gives every header kind the same offset range,
        // so the verifier sees one state per step instead of one per path.
        offset &= MAX_OFFSET;
    }
    match next {
        0 | 43 | 60 | 51 | 44 => (PROTOCOL_UNKNOWN, UNKNOWN_PORTS),
        _ => (next, transport_ports(cursor, offset, next)),
    }
}

/// Ports of a TCP or UDP header at `offset`, known only when the whole minimal header is there.
#[inline(always)]
fn transport_ports(cursor: &Cursor, offset: usize, protocol: u8) -> Ports {
    let header = match protocol {
        PROTOCOL_TCP => cursor
            .array_at::<20>(offset)
            .map(|h| [h[0], h[1], h[2], h[3]]),
        PROTOCOL_UDP => cursor
            .array_at::<8>(offset)
            .map(|h| [h[0], h[1], h[2], h[3]]),
        _ => None,
    };
    match header {
        Some(p) => Ports {
            known: true,
            src: u16::from_be_bytes([p[0], p[1]]),
            dst: u16::from_be_bytes([p[2], p[3]]),
            l4: offset,
        },
        None => UNKNOWN_PORTS,
    }
}
