//! Random Ethernet frames aimed at the parser's edges: VLAN stacks, IPv4 options and fragments
//! (first fragments too short for the ports, fragments at offset 1), IPv6 extension-header
//! chains, truncation at every header boundary, IP length fields shorter or longer than the
//! frame, bad versions and lengths.

use std::net::IpAddr;

use rand::Rng;
use rand::seq::IndexedRandom;

use super::policy::{random_address, random_port};

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86DD;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_QINQ: u16 = 0x88A8;
/// BPF_PROG_TEST_RUN refuses XDP input shorter than an Ethernet header.
pub const MIN_FRAME: usize = 14;

/// Ethertypes that are neither IP nor VLAN (ARP, LLDP, MPLS, PTP, ...) and near misses.
const OTHER_ETHERTYPES: &[u16] = &[
    0x0806, 0x88CC, 0x8847, 0x88F7, 0x8035, 0x0000, 0xFFFF, 0x0801, 0x86DC, 0x9100, 0x05DC,
];
/// IPv6 extension headers the datapath walks.
const EXTENSION_HEADERS: &[u8] = &[0, 43, 60, 51, 44];
/// Upper-layer protocols other than TCP and UDP.
const OTHER_PROTOCOLS: &[u8] = &[1, 58, 47, 50, 132, 59, 0, 255, 4, 41];

/// A frame under construction, remembering the offsets where a header starts or ends (and a few
/// fields inside them) as places to cut it short.
#[derive(Default)]
struct Builder {
    bytes: Vec<u8>,
    boundaries: Vec<usize>,
}

impl Builder {
    fn mark(&mut self) {
        self.boundaries.push(self.bytes.len());
    }

    /// Marks the current offset plus each of `offsets`.
    fn mark_within(&mut self, offsets: &[usize]) {
        let start = self.bytes.len();
        self.boundaries.extend(offsets.iter().map(|o| start + o));
    }

    fn put(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }

    fn put16(&mut self, value: u16) {
        self.put(&value.to_be_bytes());
    }

    /// Writes the 16-bit length field at `at` for the packet that started at `start` with
    /// `header` bytes not counted: mostly the true length, else one that ends the packet early
    /// (inside its transport header, say, with the rest as padding), 0 (length unknown) or any.
    fn patch_length(&mut self, rng: &mut impl Rng, at: usize, start: usize, header: usize) {
        let actual = self.bytes.len().saturating_sub(start + header);
        let length = match rng.random_range(0..20) {
            0..=10 => actual,
            11..=15 => rng.random_range(0..=actual),
            16..=17 => 0,
            _ => usize::from(rng.random::<u16>()),
        };
        let length = u16::try_from(length).unwrap_or(u16::MAX);
        self.bytes[at..at + 2].copy_from_slice(&length.to_be_bytes());
    }

    fn random_bytes(&mut self, rng: &mut impl Rng, len: usize) {
        for _ in 0..len {
            let byte = rng.random();
            self.bytes.push(byte);
        }
    }
}

/// Picks source and destination so that either, both or neither is inside the pool.
fn addresses(rng: &mut impl Rng, v6: bool) -> (IpAddr, IpAddr) {
    let (src_inside, dst_inside) = match rng.random_range(0..8) {
        0..=2 => (false, true),
        3..=4 => (true, false),
        5..=6 => (true, true),
        _ => (false, false),
    };
    (
        random_address(rng, v6, src_inside),
        random_address(rng, v6, dst_inside),
    )
}

fn upper_protocol(rng: &mut impl Rng) -> u8 {
    match rng.random_range(0..20) {
        0..=7 => 6,
        8..=15 => 17,
        16..=18 => OTHER_PROTOCOLS.choose(rng).copied().unwrap_or(1),
        _ => rng.random(),
    }
}

/// A version nibble that is wrong for `right`.
fn bad_version(rng: &mut impl Rng, right: u8) -> u8 {
    let wrong = [0, 4, 5, 6, 7, 15];
    wrong
        .iter()
        .copied()
        .filter(|&v| v != right)
        .collect::<Vec<u8>>()
        .choose(rng)
        .copied()
        .unwrap_or(0)
}

/// The upper-layer header (and a little payload) of `protocol`.
fn put_l4(b: &mut Builder, rng: &mut impl Rng, protocol: u8) {
    match protocol {
        6 => {
            b.mark_within(&[1, 2, 3, 4, 19]);
            b.put16(random_port(rng));
            b.put16(random_port(rng));
            b.random_bytes(rng, 8); // sequence and acknowledgement numbers
            let options = 4 * rng.random_range(0..=2usize) * usize::from(rng.random_bool(0.3));
            b.put(&[((5 + options / 4) as u8) << 4, 0x02]);
            b.random_bytes(rng, 6);
            b.mark();
            b.random_bytes(rng, options);
        }
        17 => {
            b.mark_within(&[1, 2, 3, 4, 7]);
            b.put16(random_port(rng));
            b.put16(random_port(rng));
            b.random_bytes(rng, 4);
            b.mark();
        }
        _ => {
            b.mark_within(&[2, 4]);
            b.random_bytes(rng, 8);
        }
    }
    let payload = rng.random_range(0..=24);
    b.random_bytes(rng, payload);
}

fn put_ipv4(b: &mut Builder, rng: &mut impl Rng) {
    let (src, dst) = addresses(rng, false);
    let version = if rng.random_bool(0.95) {
        4
    } else {
        bad_version(rng, 4)
    };
    let ihl: u8 = match rng.random_range(0..20) {
        0..=15 => 5,
        16..=18 => rng.random_range(6..=15),
        _ => rng.random_range(0..5),
    };
    let fragment: u16 = match rng.random_range(0..20) {
        0..=8 => 0x4000,                                         // don't fragment
        9..=11 => 0,                                             // plain
        12..=14 => 0x2000, // first fragment (its length may end inside the ports)
        15 => 0x2001 & !(u16::from(rng.random_bool(0.3)) << 13), // offset 1, last or not
        16..=17 => 0x2000 | rng.random_range(2..=4),
        _ => (rng.random::<u16>() & 0xE000) | rng.random_range(1..=0x1FFF),
    };
    let protocol = upper_protocol(rng);
    let start = b.bytes.len();
    b.mark_within(&[1, 6, 8, 9, 10, 12, 16, 19]);
    b.put(&[(version << 4) | ihl, rng.random()]);
    b.put16(0); // total length, written once the packet is built
    b.put16(rng.random());
    b.put16(fragment);
    b.put(&[rng.random_range(1..=255), protocol, 0, 0]);
    if let (IpAddr::V4(s), IpAddr::V4(d)) = (src, dst) {
        b.put(&s.octets());
        b.put(&d.octets());
    }
    b.mark();
    // Options up to the header length the IHL announces.
    let options = usize::from(ihl).saturating_sub(5) * 4;
    b.random_bytes(rng, options);
    b.mark();
    put_l4(b, rng, protocol);
    b.patch_length(rng, start + 2, start, 0);
}

fn put_ipv6(b: &mut Builder, rng: &mut impl Rng) {
    let (src, dst) = addresses(rng, true);
    let version = if rng.random_bool(0.95) {
        6
    } else {
        bad_version(rng, 6)
    };
    let extensions = match rng.random_range(0..20) {
        0..=7 => 0,
        // A Fragment header alone: how fragmented IPv6 usually looks.
        8..=10 => usize::MAX,
        11..=15 => rng.random_range(1..=3),
        _ => rng.random_range(4..=10),
    };
    let chain: Vec<u8> = match extensions {
        usize::MAX => vec![44],
        n => (0..n)
            .map(|_| EXTENSION_HEADERS.choose(rng).copied().unwrap_or(0))
            .collect(),
    };
    let protocol = upper_protocol(rng);
    let first = chain.first().copied().unwrap_or(protocol);
    let start = b.bytes.len();
    b.mark_within(&[1, 6, 7, 8, 24, 39]);
    b.put(&[(version << 4) | (rng.random::<u8>() & 0x0F)]);
    b.random_bytes(rng, 3);
    b.put16(0); // payload length, written once the packet is built
    b.put(&[first, 64]);
    if let (IpAddr::V6(s), IpAddr::V6(d)) = (src, dst) {
        b.put(&s.octets());
        b.put(&d.octets());
    }
    b.mark();
    // Once a non-first fragment header is written, the rest is fragment payload.
    let mut upper = true;
    for (i, &header) in chain.iter().enumerate() {
        let next = chain.get(i + 1).copied().unwrap_or(protocol);
        b.mark_within(&[1, 2, 3, 4, 7]);
        match header {
            44 => {
                let offset: u16 = match rng.random_range(0..20) {
                    0..=11 => 0,
                    12..=15 => 1, // can overwrite the first fragment's ports
                    _ => rng.random_range(2..=0x1FFF),
                };
                let more = u16::from(rng.random_bool(0.5));
                b.put(&[next, rng.random()]);
                b.put16((offset << 3) | (rng.random::<u16>() & 0b110) | more);
                b.random_bytes(rng, 4);
                if offset != 0 {
                    upper = false;
                }
            }
            51 => {
                let units: u8 = rng.random_range(0..=4);
                b.put(&[next, units]);
                b.random_bytes(rng, (usize::from(units) + 2) * 4 - 2);
            }
            _ => {
                let units: u8 = if rng.random_bool(0.7) {
                    0
                } else {
                    rng.random_range(1..=3)
                };
                b.put(&[next, units]);
                b.random_bytes(rng, (usize::from(units) + 1) * 8 - 2);
            }
        }
        b.mark();
        if !upper {
            break;
        }
    }
    if upper {
        put_l4(b, rng, protocol);
    } else {
        let payload = rng.random_range(0..=32);
        b.random_bytes(rng, payload);
    }
    b.patch_length(rng, start + 4, start, 40);
}

/// A random frame of at least `MIN_FRAME` bytes.
pub fn random_frame(rng: &mut impl Rng) -> Vec<u8> {
    let mut b = Builder::default();
    b.random_bytes(rng, 12);
    let tags = match rng.random_range(0..20) {
        0..=11 => 0,
        12..=15 => 1,
        16..=18 => 2,
        _ => 3,
    };
    let kind = match rng.random_range(0..20) {
        0..=8 => ETHERTYPE_IPV4,
        9..=17 => ETHERTYPE_IPV6,
        _ => OTHER_ETHERTYPES.choose(rng).copied().unwrap_or(0x0806),
    };
    for _ in 0..tags {
        b.mark_within(&[1, 2, 3]);
        let tpid = if rng.random_bool(0.5) {
            ETHERTYPE_VLAN
        } else {
            ETHERTYPE_QINQ
        };
        b.put16(tpid);
        b.put16(rng.random()); // TCI
    }
    b.mark();
    b.put16(kind);
    b.mark();
    // Now and then the payload is the other IP version's header (a mislabelled frame).
    let crossed = rng.random_bool(0.03);
    match (kind, crossed) {
        (ETHERTYPE_IPV4, false) | (ETHERTYPE_IPV6, true) => put_ipv4(&mut b, rng),
        (ETHERTYPE_IPV6, false) | (ETHERTYPE_IPV4, true) => put_ipv6(&mut b, rng),
        _ => {
            let payload = rng.random_range(0..=46);
            b.random_bytes(rng, payload);
        }
    }
    let Builder {
        mut bytes,
        boundaries,
    } = b;
    match rng.random_range(0..100) {
        // Cut at a header boundary, or one byte either side of it.
        0..=14 => {
            if let Some(&at) = boundaries.choose(rng) {
                let at = (at + rng.random_range(0..=2)).saturating_sub(1);
                bytes.truncate(at.max(MIN_FRAME));
            }
        }
        15..=17 => {
            let at = rng.random_range(MIN_FRAME..=bytes.len().max(MIN_FRAME));
            bytes.truncate(at);
        }
        // Ethernet padding or trailing garbage.
        18..=25 => {
            let extra = rng.random_range(1..=40);
            let zero = rng.random_bool(0.5);
            for _ in 0..extra {
                bytes.push(if zero { 0 } else { rng.random() });
            }
        }
        _ => {}
    }
    if bytes.len() < MIN_FRAME {
        bytes.resize(MIN_FRAME, 0);
    }
    bytes
}

/// A plain frame: Ethernet, an IPv4 or IPv6 header without options or extensions (source and
/// destination of the same family), and for TCP and UDP a header with the given ports; other
/// protocols get 8 bytes of zeros.
pub fn simple_frame(src: IpAddr, dst: IpAddr, protocol: u8, sport: u16, dport: u16) -> Vec<u8> {
    let mut b = Builder::default();
    b.put(&[0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2]);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            b.put16(ETHERTYPE_IPV4);
            b.put(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, protocol, 0, 0]);
            b.put(&s.octets());
            b.put(&d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            b.put16(ETHERTYPE_IPV6);
            b.put(&[0x60, 0, 0, 0, 0, 0, protocol, 64]);
            b.put(&s.octets());
            b.put(&d.octets());
        }
        // Mixed families: an IPv4 ethertype without a header, which does not parse.
        _ => b.put16(ETHERTYPE_IPV4),
    }
    match protocol {
        6 => {
            b.put16(sport);
            b.put16(dport);
            b.put(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
        }
        17 => {
            b.put16(sport);
            b.put16(dport);
            b.put(&[0, 8, 0, 0]);
        }
        _ => b.put(&[0; 8]),
    }
    b.bytes
}

/// A frame of `len` bytes (at least 14) with the given ethertype and zeros after it.
pub fn ethertype_frame(ethertype: u16, len: usize) -> Vec<u8> {
    let mut frame = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.resize(len.max(MIN_FRAME), 0);
    frame
}

/// Lower-case hex, 16 bytes a line with offsets: what a failure message shows.
pub fn hex(frame: &[u8]) -> String {
    frame
        .chunks(16)
        .enumerate()
        .map(|(i, chunk)| {
            let bytes: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
            format!("{:04x}: {}", i * 16, bytes.join(" "))
        })
        .collect::<Vec<String>>()
        .join("\n")
}

/// One continuous hex string (for pasting into a hand-written test).
pub fn hex_compact(frame: &[u8]) -> String {
    frame.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use enforcer::reference::{ParsedFrame, parse_frame};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    /// The generator must reach every outcome often enough to be worth running.
    #[test]
    fn frames_cover_every_outcome() {
        let mut rng = StdRng::seed_from_u64(3);
        let (mut not_ip, mut unparsed, mut ports, mut no_ports, mut v6, mut unknown) =
            (0, 0, 0, 0, 0, 0);
        let (mut hidden_v4, mut hidden_v6) = (0, 0);
        for _ in 0..20_000 {
            let frame = random_frame(&mut rng);
            assert!(frame.len() >= MIN_FRAME);
            match parse_frame(&frame) {
                ParsedFrame::NotIp => not_ip += 1,
                ParsedFrame::Unparsed => unparsed += 1,
                ParsedFrame::Ip(p) => {
                    if p.ports.is_some() {
                        ports += 1;
                    } else {
                        no_ports += 1;
                    }
                    if p.src.is_ipv6() {
                        v6 += 1;
                    }
                    if p.protocol == enforcer_common::PROTOCOL_UNKNOWN {
                        unknown += 1;
                    }
                    if p.hidden_ports && matches!(p.protocol, 6 | 17) {
                        if p.src.is_ipv6() {
                            hidden_v6 += 1;
                        } else {
                            hidden_v4 += 1;
                        }
                    }
                }
            }
        }
        for (what, count) in [
            ("not ip", not_ip),
            ("unparsed", unparsed),
            ("with ports", ports),
            ("without ports", no_ports),
            ("ipv6", v6),
            ("unknown protocol", unknown),
            ("tcp/udp ports hidden by an ipv4 fragment", hidden_v4),
            ("tcp/udp ports hidden by an ipv6 fragment", hidden_v6),
        ] {
            assert!(count > 200, "{what}: {count}");
        }
    }
}
