//! Frame parsing with a bounds-checked cursor: every read is checked against the frame's end.
//!
//! Reads are whole windows of two bytes or more, each checked with a pointer comparison the
//! verifier understands; checks that need no read compare plain lengths. The IP packet's own
//! length (bytes after it are Ethernet padding) is checked where a result leaves the parser,
//! not at every read: headers only move forward, so a chain that ran into the padding ends
//! there too, and the verifier's states in the extension-header walk stay as few as before.

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
/// Bytes of a TCP or UDP header that hold the ports: all that must be in the packet to know them.
const PORT_BYTES: usize = 4;
/// IPv4 flags and fragment offset: the more-fragments flag and the offset (in 8-byte units).
const IPV4_MORE_FRAGMENTS: u16 = 0x2000;
const IPV4_FRAGMENT_OFFSET: u16 = 0x1FFF;
/// A fragment at this offset (8 bytes) can overwrite the ports of the first one (RFC 1858).
const OVERLAPPING_OFFSET: u16 = 1;

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
    /// Unknown because a fragment may hide them (RFC 1858): a first fragment too short to hold
    /// them, or a fragment at offset 1 that can overwrite them. Drop rules of the packet's
    /// protocol then match whatever their ports.
    /// 1 or 0, computed without branches so that the verifier need not tell paths apart by it.
    pub hidden: u8,
    pub src: u16,
    pub dst: u16,
    /// Offset of the transport header in the frame, when `known`.
    pub l4: usize,
}

const UNKNOWN_PORTS: Ports = Ports {
    known: false,
    hidden: 0,
    src: 0,
    dst: 0,
    l4: 0,
};

const HIDDEN_PORTS: Ports = Ports {
    hidden: 1,
    ..UNKNOWN_PORTS
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
    /// Offset where the IP packet ends by its length field (past the frame until known): bytes
    /// after it are padding, never taken for headers or ports.
    limit: usize,
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

    /// The same frame, for the IP packet at `l3` whose length field says `length` bytes; a
    /// length of 0 (as large offloaded packets and jumbograms carry) counts as 65,536, beyond
    /// any frame: the frame's end decides. Computed without branches, so that every packet
    /// gives the verifier the same kind of value.
    #[inline(always)]
    fn packet(&self, l3: usize, length: u16) -> Cursor {
        let length = (length.wrapping_sub(1) as usize) + 1;
        Cursor {
            start: self.start,
            end: self.end,
            limit: l3 + length,
        }
    }

    /// Whether the IP packet ends before `offset`.
    #[inline(always)]
    fn past_packet(&self, offset: usize) -> bool {
        offset > self.limit
    }
}

#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Parsed {
    let cursor = Cursor {
        start: ctx.data(),
        end: ctx.data_end(),
        // Past every frame until an IP header says otherwise.
        limit: MAX_OFFSET + 1,
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
    let packet = cursor.packet(l3, u16::from_be_bytes([header[2], header[3]]));
    let flags = u16::from_be_bytes([header[6], header[7]]);
    let fragment_offset = flags & IPV4_FRAGMENT_OFFSET;
    let ports = if fragment_offset == OVERLAPPING_OFFSET {
        HIDDEN_PORTS
    } else if fragment_offset != 0 {
        UNKNOWN_PORTS
    } else {
        let ports = transport_ports(&packet, l3 + header_len, protocol);
        // A first fragment too short for its ports.
        let more = u8::from(flags & IPV4_MORE_FRAGMENTS != 0);
        Ports {
            hidden: more & !ports.known as u8,
            ..ports
        }
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
    // The payload length counts from the end of the fixed header.
    let packet = cursor.packet(l3 + 40, u16::from_be_bytes([header[4], header[5]]));
    let (protocol, ports) = upper_layer(&packet, l3 + 40, header[6]);
    Parsed::Ip(Packet {
        addresses: Addresses::V6 { src, dst },
        protocol,
        ports,
        l3,
    })
}

/// An IPv6 header chain that cannot be walked to its end (more extension headers than the walk
/// takes, or a header cut off by the frame or the packet's length): its protocol and ports are
/// unknown and may be hidden on purpose, so drop rules of any protocol and port match it.
const UNWALKABLE: (u8, Ports) = (PROTOCOL_UNKNOWN, HIDDEN_PORTS);

/// Walks IPv6 extension headers from `offset`; returns the upper-layer protocol and ports.
#[inline(always)]
fn upper_layer(cursor: &Cursor, mut offset: usize, mut next: u8) -> (u8, Ports) {
    // Whether a Fragment header said this is the first of several fragments.
    let mut first_fragment = 0u8;
    for _ in 0..MAX_IPV6_EXTENSION_HEADERS {
        let header_len = match next {
            0 | 43 | 60 => {
                let Some(h) = cursor.array_at::<2>(offset) else {
                    return UNWALKABLE;
                };
                next = h[0];
                (h[1] as usize + 1) * 8
            }
            51 => {
                let Some(h) = cursor.array_at::<2>(offset) else {
                    return UNWALKABLE;
                };
                next = h[0];
                (h[1] as usize + 2) * 4
            }
            44 => {
                let Some(h) = cursor.array_at::<8>(offset) else {
                    return UNWALKABLE;
                };
                if cursor.past_packet(offset + 8) {
                    return UNWALKABLE;
                }
                next = h[0];
                let field = u16::from_be_bytes([h[2], h[3]]);
                // A non-first fragment carries no transport header.
                match field >> 3 {
                    0 => first_fragment |= (field & 1) as u8,
                    OVERLAPPING_OFFSET => return (next, HIDDEN_PORTS),
                    _ => return (next, UNKNOWN_PORTS),
                }
                8
            }
            _ => return upper(cursor, offset, next, first_fragment),
        };
        offset += header_len;
        // A header that runs past the end of the frame is truncated: nothing after it is known.
        // (One that runs past the packet's length is found where the walk ends, see `upper`.)
        if offset > MAX_OFFSET || offset > cursor.len() {
            return UNWALKABLE;
        }
        // A no-op after the check above, but it gives every header kind the same offset range,
        // so the verifier sees one state per step instead of one per path.
        offset &= MAX_OFFSET;
    }
    match next {
        0 | 43 | 60 | 51 | 44 => UNWALKABLE,
        _ => upper(cursor, offset, next, first_fragment),
    }
}

/// The end of an IPv6 header chain at `offset`: the upper-layer protocol and its ports, hidden
/// when a first fragment is too short for them. A chain that ran past the packet's length is
/// truncated: unwalkable.
#[inline(always)]
fn upper(cursor: &Cursor, offset: usize, protocol: u8, first_fragment: u8) -> (u8, Ports) {
    if cursor.past_packet(offset) {
        return UNWALKABLE;
    }
    let ports = transport_ports(cursor, offset, protocol);
    (
        protocol,
        Ports {
            hidden: first_fragment & !ports.known as u8,
            ..ports
        },
    )
}

/// Ports of a TCP or UDP header at `offset`, known when its first four bytes are in the packet.
#[inline(always)]
fn transport_ports(cursor: &Cursor, offset: usize, protocol: u8) -> Ports {
    if protocol != PROTOCOL_TCP && protocol != PROTOCOL_UDP
        || cursor.past_packet(offset + PORT_BYTES)
    {
        return UNKNOWN_PORTS;
    }
    match cursor.array_at::<PORT_BYTES>(offset) {
        Some(p) => Ports {
            known: true,
            hidden: 0,
            src: u16::from_be_bytes([p[0], p[1]]),
            dst: u16::from_be_bytes([p[2], p[3]]),
            l4: offset,
        },
        None => UNKNOWN_PORTS,
    }
}
