//! Fragmented responses: the datapath holds a believed response's first fragment (the one with
//! the UDP header) and copies the later ones, passing them on (the client keeps them until the
//! first arrives). Here the pieces are put together into the DNS message, so that it can be
//! learned before the held first fragment goes back; one that does not come together in time
//! goes back unlearned rather than being lost.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::datapath::DnsPacket;

/// How long a held first fragment waits for the rest.
pub const FRAGMENT_WAIT: Duration = Duration::from_millis(300);
/// Most held first fragments waiting at once; beyond it the oldest goes back unlearned.
const MAX_PENDING: usize = 256;
/// Most later fragments kept while their first has not been seen (they may come first).
const MAX_ORPHANS: usize = 1024;
/// Largest message put together (a UDP datagram's limit).
const MAX_DATAGRAM: usize = 65_535;
/// Most IPv6 extension headers walked to find the Fragment header (as the datapath).
const MAX_EXTENSION_HEADERS: usize = 8;

/// Which datagram a fragment belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DatagramKey {
    src: IpAddr,
    dst: IpAddr,
    id: u32,
}

/// One fragment: where its data goes in the datagram, and whether more follow.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Piece {
    key: DatagramKey,
    offset: usize,
    more: bool,
    data: Vec<u8>,
}

/// The fragment an IP packet is, if it is one (IPv4 flags and offset, or an IPv6 Fragment header).
fn piece(ip: &[u8]) -> Option<Piece> {
    match ip.first()? >> 4 {
        4 => {
            let header_len = usize::from(ip.first()? & 0x0F) * 4;
            let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
            let field = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]);
            let (more, offset) = (field & 0x2000 != 0, usize::from(field & 0x1FFF) * 8);
            if !more && offset == 0 {
                return None;
            }
            let src: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
            let dst: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
            Some(Piece {
                key: DatagramKey {
                    src: IpAddr::from(src),
                    dst: IpAddr::from(dst),
                    id: u32::from(u16::from_be_bytes([*ip.get(4)?, *ip.get(5)?])),
                },
                offset,
                more,
                data: ip.get(header_len..total.min(ip.len()))?.to_vec(),
            })
        }
        6 => {
            let length = 40 + usize::from(u16::from_be_bytes([*ip.get(4)?, *ip.get(5)?]));
            let ip = ip.get(..length.min(ip.len()))?;
            let src: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
            let dst: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            let (mut next, mut at) = (*ip.get(6)?, 40);
            for _ in 0..MAX_EXTENSION_HEADERS {
                match next {
                    44 => {
                        let h = ip.get(at..at + 8)?;
                        let field = u16::from_be_bytes([h[2], h[3]]);
                        return Some(Piece {
                            key: DatagramKey {
                                src: IpAddr::from(src),
                                dst: IpAddr::from(dst),
                                id: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
                            },
                            offset: usize::from(field >> 3) * 8,
                            more: field & 1 != 0,
                            data: ip.get(at + 8..)?.to_vec(),
                        });
                    }
                    0 | 43 | 60 => {
                        next = *ip.get(at)?;
                        at += (usize::from(*ip.get(at + 1)?) + 1) * 8;
                    }
                    51 => {
                        next = *ip.get(at)?;
                        at += (usize::from(*ip.get(at + 1)?) + 2) * 4;
                    }
                    _ => return None,
                }
            }
            None
        }
        _ => None,
    }
}

/// Whether a held response is the first fragment of several (the rest must be waited for).
pub fn is_first_fragment(packet: &DnsPacket) -> bool {
    piece(packet.ip_packet()).is_some_and(|p| p.offset == 0 && p.more)
}

/// What the learner does next with a held first fragment.
#[derive(Debug)]
pub enum Ready {
    /// The whole DNS message came together: learn from it, then put `held` back.
    Whole { held: DnsPacket, message: Vec<u8> },
    /// It did not (too late, pieces that overlap or run too long): put `held` back unlearned.
    Incomplete { held: DnsPacket },
}

struct Pending {
    held: DnsPacket,
    key: DatagramKey,
    since: Instant,
    pieces: Vec<Piece>,
}

/// Held first fragments waiting for the rest, and later fragments waiting for their first.
#[derive(Default)]
pub struct Reassembly {
    pending: VecDeque<Pending>,
    orphans: VecDeque<(Instant, Piece)>,
}

impl Reassembly {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether anything waits (the caller then wakes up within [`FRAGMENT_WAIT`]).
    pub fn is_waiting(&self) -> bool {
        !self.pending.is_empty()
    }

    /// A held first fragment; what is ready (or pushed out by the bound) is returned.
    pub fn first(&mut self, held: DnsPacket, now: Instant) -> Vec<Ready> {
        let Some(first) = piece(held.ip_packet()) else {
            return vec![Ready::Incomplete { held }];
        };
        let key = first.key;
        let mut pieces = vec![first];
        // Later fragments that came before it.
        let mut i = 0;
        while i < self.orphans.len() {
            if self.orphans[i].1.key == key {
                if let Some((_, p)) = self.orphans.remove(i) {
                    pieces.push(p);
                }
            } else {
                i += 1;
            }
        }
        self.pending.push_back(Pending {
            held,
            key,
            since: now,
            pieces,
        });
        let mut ready = Vec::new();
        while self.pending.len() > MAX_PENDING {
            if let Some(p) = self.pending.pop_front() {
                ready.push(Ready::Incomplete { held: p.held });
            }
        }
        ready.extend(self.collect(now));
        ready
    }

    /// A later fragment the datapath copied; what is ready is returned.
    pub fn later(&mut self, packet: &DnsPacket, now: Instant) -> Vec<Ready> {
        let Some(piece) = piece(packet.ip_packet()) else {
            return Vec::new();
        };
        match self.pending.iter_mut().find(|p| p.key == piece.key) {
            Some(pending) => pending.pieces.push(piece),
            None => {
                self.orphans.push_back((now, piece));
                while self.orphans.len() > MAX_ORPHANS {
                    self.orphans.pop_front();
                }
            }
        }
        self.collect(now)
    }

    /// Messages that came together, and held fragments that waited too long.
    pub fn collect(&mut self, now: Instant) -> Vec<Ready> {
        while self
            .orphans
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > FRAGMENT_WAIT)
        {
            self.orphans.pop_front();
        }
        let mut ready = Vec::new();
        let mut waiting = VecDeque::new();
        while let Some(pending) = self.pending.pop_front() {
            match assemble(&pending.pieces) {
                Assembled::Whole(datagram) => ready.push(match datagram.get(8..) {
                    Some(message) => Ready::Whole {
                        held: pending.held,
                        message: message.to_vec(),
                    },
                    None => Ready::Incomplete { held: pending.held },
                }),
                Assembled::Broken => ready.push(Ready::Incomplete { held: pending.held }),
                Assembled::Missing if now.duration_since(pending.since) > FRAGMENT_WAIT => {
                    ready.push(Ready::Incomplete { held: pending.held });
                }
                Assembled::Missing => waiting.push_back(pending),
            }
        }
        self.pending = waiting;
        ready
    }
}

enum Assembled {
    /// The UDP datagram, header first.
    Whole(Vec<u8>),
    Missing,
    /// Pieces that overlap, disagree on the end, or run past a datagram's size.
    Broken,
}

fn assemble(pieces: &[Piece]) -> Assembled {
    let mut sorted: Vec<&Piece> = pieces.iter().collect();
    sorted.sort_by_key(|p| p.offset);
    let mut datagram = Vec::new();
    let mut last = false;
    for p in sorted {
        if last || p.offset > datagram.len() {
            return if last {
                Assembled::Broken
            } else {
                Assembled::Missing
            };
        }
        if p.offset < datagram.len() || p.offset + p.data.len() > MAX_DATAGRAM {
            return Assembled::Broken;
        }
        datagram.extend_from_slice(&p.data);
        last = !p.more;
    }
    if last {
        Assembled::Whole(datagram)
    } else {
        Assembled::Missing
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::datapath::DnsKind;

    /// An IPv4 fragment of datagram `id` (198.18.2.2 -> 198.18.1.2) carrying `data` at `offset`.
    fn v4(id: u16, offset: usize, more: bool, data: &[u8]) -> DnsPacket {
        let total = u16::try_from(20 + data.len()).unwrap();
        let field = u16::try_from(offset / 8).unwrap() | if more { 0x2000 } else { 0 };
        let mut ip = vec![0x45, 0];
        ip.extend(total.to_be_bytes());
        ip.extend(id.to_be_bytes());
        ip.extend(field.to_be_bytes());
        ip.extend([64, 17, 0, 0, 198, 18, 2, 2, 198, 18, 1, 2]);
        ip.extend(data);
        let mut frame = vec![0u8; 14];
        frame.extend(ip);
        packet(frame, offset == 0)
    }

    /// An IPv6 fragment, behind a hop-by-hop header and the Fragment header.
    fn v6(id: u32, offset: usize, more: bool, data: &[u8]) -> DnsPacket {
        let mut ip = vec![0x60, 0, 0, 0];
        ip.extend(u16::try_from(16 + data.len()).unwrap().to_be_bytes());
        ip.extend([0, 64]);
        ip.extend(
            [0x20, 1, 0x0d, 0xb8]
                .iter()
                .chain([0u8; 11].iter())
                .chain([0x53].iter()),
        );
        ip.extend(
            [0x20, 1, 0x0d, 0xb8]
                .iter()
                .chain([0u8; 11].iter())
                .chain([0x01].iter()),
        );
        ip.extend([44, 0, 1, 4, 0, 0, 0, 0]); // hop-by-hop, 8 bytes, then Fragment
        let field = u16::try_from(offset / 8).unwrap() << 3 | u16::from(more);
        ip.extend([17, 0]);
        ip.extend(field.to_be_bytes());
        ip.extend(id.to_be_bytes());
        ip.extend(data);
        let mut frame = vec![0u8; 14];
        frame.extend(ip);
        packet(frame, offset == 0)
    }

    fn packet(frame: Vec<u8>, first: bool) -> DnsPacket {
        DnsPacket {
            kind: if first {
                DnsKind::Response
            } else {
                DnsKind::Fragment
            },
            src: SocketAddr::from(([198, 18, 2, 2], 53)),
            dst: SocketAddr::from(([198, 18, 1, 2], 40000)),
            frame,
            l3: 14,
            payload_offset: 0,
            held: first,
            ifindex: 2,
            query_client: IpAddr::from([198, 18, 1, 2]),
            query_ifindex: 3,
        }
    }

    /// A datagram of `len` bytes: the UDP header then a counting message.
    fn datagram(len: usize) -> Vec<u8> {
        let mut d = vec![0, 53, 0x9c, 0x40, 0, 0, 0, 0];
        d.extend((0..len - 8).map(|i| u8::try_from(i % 251).unwrap()));
        d
    }

    fn whole(ready: &[Ready]) -> Option<&Vec<u8>> {
        ready.iter().find_map(|r| match r {
            Ready::Whole { message, .. } => Some(message),
            Ready::Incomplete { .. } => None,
        })
    }

    #[test]
    fn three_ipv4_fragments_in_any_order_make_the_message() {
        let d = datagram(3000);
        let parts = [(0, &d[..1480]), (1480, &d[1480..2960]), (2960, &d[2960..])];
        for order in [[0, 1, 2], [2, 1, 0], [1, 0, 2]] {
            let mut r = Reassembly::new();
            let now = Instant::now();
            let mut ready = Vec::new();
            for i in order {
                let (offset, data) = parts[i];
                let p = v4(7, offset, i < 2, data);
                if offset == 0 {
                    assert!(is_first_fragment(&p));
                    ready.extend(r.first(p, now));
                } else {
                    ready.extend(r.later(&p, now));
                }
            }
            assert_eq!(whole(&ready), Some(&d[8..].to_vec()), "order {order:?}");
            assert!(!r.is_waiting());
        }
    }

    #[test]
    fn ipv6_fragments_behind_an_extension_header() {
        let d = datagram(2000);
        let mut r = Reassembly::new();
        let now = Instant::now();
        assert!(r.first(v6(9, 0, true, &d[..1232]), now).is_empty());
        let ready = r.later(&v6(9, 1232, false, &d[1232..]), now);
        assert_eq!(whole(&ready), Some(&d[8..].to_vec()));
    }

    #[test]
    fn a_missing_piece_goes_back_unlearned_after_the_wait() {
        let d = datagram(3000);
        let mut r = Reassembly::new();
        let now = Instant::now();
        assert!(r.first(v4(7, 0, true, &d[..1480]), now).is_empty());
        // Another datagram's piece does not complete it.
        assert!(r.later(&v4(8, 1480, false, &d[1480..]), now).is_empty());
        assert!(r.collect(now + FRAGMENT_WAIT / 2).is_empty());
        let ready = r.collect(now + FRAGMENT_WAIT * 2);
        assert!(matches!(ready.as_slice(), [Ready::Incomplete { held }] if held.held));
        assert!(!r.is_waiting());
    }

    #[test]
    fn overlapping_pieces_are_refused() {
        let d = datagram(3000);
        let mut r = Reassembly::new();
        let now = Instant::now();
        assert!(r.first(v4(7, 0, true, &d[..1480]), now).is_empty());
        // Rewrites bytes the first fragment carried (RFC 1858/5722 overlap).
        let ready = r.later(&v4(7, 1472, false, &d[1472..]), now);
        assert!(matches!(ready.as_slice(), [Ready::Incomplete { .. }]));
    }

    #[test]
    fn a_whole_packet_is_no_fragment() {
        let d = datagram(100);
        assert!(!is_first_fragment(&v4(7, 0, false, &d)));
        let mut r = Reassembly::new();
        let ready = r.first(v4(7, 0, false, &d), Instant::now());
        assert!(matches!(ready.as_slice(), [Ready::Incomplete { .. }]));
    }

    #[test]
    fn waiting_is_bounded() {
        let d = datagram(3000);
        let mut r = Reassembly::new();
        let now = Instant::now();
        let mut pushed_out = 0;
        for id in 0..u16::try_from(MAX_PENDING + 5).unwrap() {
            pushed_out += r.first(v4(id, 0, true, &d[..1480]), now).len();
        }
        assert_eq!(pushed_out, 5);
    }
}
