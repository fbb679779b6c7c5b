//! The DNS packets the XDP program copies into its ring buffer (`DNS_EVENTS`): waiting for them
//! with poll(2) and decoding each `enforcer_common::DnsEvent` record into an owned [`DnsPacket`].

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd as _;
use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use enforcer_common::{DnsEvent, FAMILY_IPV4};

use crate::sys;

/// One UDP DNS packet the program saw, from its IP header on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsPacket {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// The IP packet as captured (whole when `held`; a longer packet is cut).
    pub packet: Vec<u8>,
    /// Where the DNS message starts in `packet`.
    pub payload_offset: usize,
    /// The program dropped the frame: the daemon must send `packet` on.
    pub held: bool,
    /// The interface the frame arrived on.
    pub ifindex: u32,
}

impl DnsPacket {
    /// Decodes one ring-buffer record; `None` when it is shorter than a `DnsEvent`.
    pub fn decode(record: &[u8]) -> Option<Self> {
        sys::read_pod(record).map(|event| Self::from_event(&event))
    }

    /// The packet an event describes.
    pub fn from_event(event: &DnsEvent) -> Self {
        let ip = |bytes: [u8; 16]| -> IpAddr {
            if event.family == FAMILY_IPV4 {
                IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]])
            } else {
                IpAddr::from(bytes)
            }
        };
        let captured = usize::from(event.captured).min(event.packet.len());
        Self {
            src: SocketAddr::new(ip(event.src_addr), event.src_port),
            dst: SocketAddr::new(ip(event.dst_addr), event.dst_port),
            packet: event.packet[..captured].to_vec(),
            payload_offset: usize::from(event.payload_offset).min(captured),
            held: event.held != 0,
            ifindex: event.ifindex,
        }
    }

    /// The DNS message (the UDP payload), as far as it was captured.
    pub fn payload(&self) -> &[u8] {
        &self.packet[self.payload_offset..]
    }
}

/// The single reader of the program's DNS ring buffer. `wait` blocks until packets are ready;
/// iterating yields the decoded packets in order and ends when the buffer is empty for now (it
/// yields again after the next `wait`).
pub struct DnsEvents {
    ring: RingBuf<MapData>,
}

impl DnsEvents {
    pub(super) fn new(ring: RingBuf<MapData>) -> Self {
        Self { ring }
    }

    /// Blocks until the ring buffer has data or `timeout` passes (a signal also ends the wait
    /// early); returns whether data is ready.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<bool> {
        sys::wait_readable(self.ring.as_fd(), timeout)
    }

    /// The next event as the program wrote it; records too short to be an event (none are
    /// written) are skipped.
    pub fn next_event(&mut self) -> Option<DnsEvent> {
        loop {
            let record = self.ring.next()?;
            match sys::read_pod(&record) {
                Some(event) => return Some(event),
                None => tracing::debug!(len = record.len(), "short DNS record skipped"),
            }
        }
    }
}

impl Iterator for DnsEvents {
    type Item = DnsPacket;

    /// The next packet; records too short to be an event (none are written) are skipped.
    fn next(&mut self) -> Option<DnsPacket> {
        self.next_event().map(|event| DnsPacket::from_event(&event))
    }
}

#[cfg(test)]
mod tests {
    use enforcer_common::{DNS_CAPTURE_BYTES, FAMILY_IPV6};

    use super::*;

    fn record(event: &DnsEvent) -> Vec<u8> {
        sys::pod_bytes(event).to_vec()
    }

    fn event(family: u8) -> DnsEvent {
        let mut event = DnsEvent {
            src_addr: [0; 16],
            dst_addr: [0; 16],
            src_port: 53,
            dst_port: 40000,
            family,
            held: 1,
            captured: 40,
            length: 40,
            payload_offset: 28,
            ifindex: 7,
            packet: [0; DNS_CAPTURE_BYTES],
        };
        event.packet[..40].copy_from_slice(&[7; 40]);
        event.packet[28] = 0xAB;
        event
    }

    #[test]
    fn ipv4_event_decodes_to_its_addresses_ports_and_packet() {
        let mut e = event(FAMILY_IPV4);
        e.src_addr[..4].copy_from_slice(&[198, 18, 2, 2]);
        e.dst_addr[..4].copy_from_slice(&[10, 0, 0, 1]);
        // Bytes after the first four of an IPv4 address are not part of it.
        e.src_addr[4] = 9;
        let p = DnsPacket::decode(&record(&e)).expect("a whole event");
        assert_eq!(p.src, "198.18.2.2:53".parse::<SocketAddr>().unwrap());
        assert_eq!(p.dst, "10.0.0.1:40000".parse::<SocketAddr>().unwrap());
        assert_eq!(p.packet.len(), 40);
        assert_eq!(p.payload().len(), 12);
        assert_eq!(p.payload()[0], 0xAB);
        assert!(p.held);
        assert_eq!(p.ifindex, 7);
    }

    #[test]
    fn ipv6_event_and_bounds() {
        let mut e = event(FAMILY_IPV6);
        e.src_addr = "2001:db8::53"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        e.dst_addr = "2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        e.held = 0;
        let p = DnsPacket::decode(&record(&e)).expect("a whole event");
        assert_eq!(p.src, "[2001:db8::53]:53".parse::<SocketAddr>().unwrap());
        assert_eq!(p.dst, "[2001:db8::1]:40000".parse::<SocketAddr>().unwrap());
        assert!(!p.held);
        // Lengths beyond the capture are clamped, never read past the record.
        e.captured = u16::MAX;
        e.payload_offset = u16::MAX;
        let p = DnsPacket::decode(&record(&e)).expect("a whole event");
        assert_eq!(p.packet.len(), DNS_CAPTURE_BYTES);
        assert!(p.payload().is_empty());
        // A record shorter than an event is refused.
        let short = record(&e);
        assert_eq!(DnsPacket::decode(&short[..short.len() - 1]), None);
    }
}
