//! The DNS frames the XDP program copies into its ring buffer (`DNS_EVENTS`): waiting for them
//! with poll(2) and decoding each record (an `enforcer_common::DnsEventHeader` followed by the
//! frame's first bytes) into an owned [`DnsPacket`].

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd as _;
use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use enforcer_common::{
    DNS_EVENT_FRAGMENT, DNS_EVENT_HEADER_BYTES, DNS_EVENT_QUERY, DnsEventHeader, FAMILY_IPV4,
};

use crate::sys;

/// What the program saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsKind {
    /// A query it will match answers to.
    Query,
    /// A response it believes (held when `held`).
    Response,
    /// A later fragment that may belong to a fragmented response.
    Fragment,
}

/// One DNS frame the program saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsPacket {
    pub kind: DnsKind,
    /// Ports are 0 for a fragment.
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// The frame as captured (whole when `held`; a longer one is cut).
    pub frame: Vec<u8>,
    /// Where the IP header starts in `frame`.
    pub l3: usize,
    /// Where the DNS message starts in `frame` (0 for a fragment).
    pub payload_offset: usize,
    /// The program dropped the frame: the daemon must put it back.
    pub held: bool,
    /// The interface the frame arrived on.
    pub ifindex: u32,
    /// For a response: who sent the query (the destination, unless NAT) and where it came in.
    pub query_client: IpAddr,
    pub query_ifindex: u32,
}

/// Splits one ring-buffer record into its header and the frame bytes after it; `None` when it
/// is shorter than a header.
pub fn split_record(record: &[u8]) -> Option<(DnsEventHeader, &[u8])> {
    let header: DnsEventHeader = sys::read_pod(record)?;
    let frame = record.get(DNS_EVENT_HEADER_BYTES..).unwrap_or_default();
    Some((header, frame))
}

impl DnsPacket {
    /// Decodes one ring-buffer record; `None` when it is shorter than its header.
    pub fn decode(record: &[u8]) -> Option<Self> {
        split_record(record).map(|(header, frame)| Self::from_parts(&header, frame))
    }

    /// The packet a header and the bytes after it describe.
    pub fn from_parts(header: &DnsEventHeader, frame: &[u8]) -> Self {
        let ip = |bytes: [u8; 16]| -> IpAddr {
            if header.family == FAMILY_IPV4 {
                IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]])
            } else {
                IpAddr::from(bytes)
            }
        };
        let captured = usize::from(header.captured).min(frame.len());
        let kind = match header.kind {
            DNS_EVENT_QUERY => DnsKind::Query,
            DNS_EVENT_FRAGMENT => DnsKind::Fragment,
            _ => DnsKind::Response,
        };
        Self {
            kind,
            src: SocketAddr::new(ip(header.src_addr), header.src_port),
            dst: SocketAddr::new(ip(header.dst_addr), header.dst_port),
            frame: frame[..captured].to_vec(),
            l3: usize::from(header.l3_offset).min(captured),
            payload_offset: usize::from(header.payload_offset).min(captured),
            held: header.held != 0,
            ifindex: header.ifindex,
            query_client: ip(header.query_client),
            query_ifindex: header.query_ifindex,
        }
    }

    /// The DNS message (the UDP payload), as far as it was captured; empty for a fragment.
    pub fn payload(&self) -> &[u8] {
        match self.kind {
            DnsKind::Fragment => &[],
            _ => &self.frame[self.payload_offset..],
        }
    }

    /// The IP packet, from its header on.
    pub fn ip_packet(&self) -> &[u8] {
        &self.frame[self.l3..]
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

    /// The next record as the program wrote it (header, then frame bytes); records too short
    /// for a header (none are written) are skipped.
    pub fn next_record(&mut self) -> Option<Vec<u8>> {
        loop {
            let record = self.ring.next()?;
            if record.len() >= DNS_EVENT_HEADER_BYTES {
                return Some(record.to_vec());
            }
            tracing::debug!(len = record.len(), "short DNS record skipped");
        }
    }
}

impl Iterator for DnsEvents {
    type Item = DnsPacket;

    /// The next packet; records too short to be an event (none are written) are skipped.
    fn next(&mut self) -> Option<DnsPacket> {
        self.next_record().and_then(|r| DnsPacket::decode(&r))
    }
}

#[cfg(test)]
mod tests {
    use enforcer_common::{DNS_EVENT_RESPONSE, FAMILY_IPV6};

    use super::*;

    fn header(family: u8) -> DnsEventHeader {
        DnsEventHeader {
            src_addr: [0; 16],
            dst_addr: [0; 16],
            query_client: [0; 16],
            src_port: 53,
            dst_port: 40000,
            family,
            kind: DNS_EVENT_RESPONSE,
            held: 1,
            _pad: 0,
            captured: 60,
            length: 60,
            l3_offset: 14,
            payload_offset: 42,
            ifindex: 7,
            query_ifindex: 3,
        }
    }

    fn record(header: &DnsEventHeader, frame: &[u8]) -> Vec<u8> {
        let mut r = sys::pod_bytes(header).to_vec();
        r.extend_from_slice(frame);
        r
    }

    #[test]
    fn ipv4_record_decodes_to_its_addresses_ports_and_frame() {
        let mut h = header(FAMILY_IPV4);
        h.src_addr[..4].copy_from_slice(&[198, 18, 2, 2]);
        h.dst_addr[..4].copy_from_slice(&[10, 0, 0, 1]);
        h.query_client[..4].copy_from_slice(&[10, 0, 0, 9]);
        // Bytes after the first four of an IPv4 address are not part of it.
        h.src_addr[4] = 9;
        let mut frame = vec![7u8; 60];
        frame[42] = 0xAB;
        let p = DnsPacket::decode(&record(&h, &frame)).expect("a whole record");
        assert_eq!(p.kind, DnsKind::Response);
        assert_eq!(p.src, "198.18.2.2:53".parse::<SocketAddr>().unwrap());
        assert_eq!(p.dst, "10.0.0.1:40000".parse::<SocketAddr>().unwrap());
        assert_eq!(p.query_client, "10.0.0.9".parse::<IpAddr>().unwrap());
        assert_eq!((p.ifindex, p.query_ifindex), (7, 3));
        assert_eq!(p.frame.len(), 60);
        assert_eq!(p.ip_packet().len(), 46);
        assert_eq!(p.payload().len(), 18);
        assert_eq!(p.payload()[0], 0xAB);
        assert!(p.held);
    }

    #[test]
    fn ipv6_record_kinds_and_bounds() {
        let mut h = header(FAMILY_IPV6);
        h.src_addr = "2001:db8::53"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        h.dst_addr = "2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        h.held = 0;
        h.kind = DNS_EVENT_QUERY;
        let frame = vec![0u8; 60];
        let p = DnsPacket::decode(&record(&h, &frame)).expect("a whole record");
        assert_eq!(p.src, "[2001:db8::53]:53".parse::<SocketAddr>().unwrap());
        assert_eq!(p.dst, "[2001:db8::1]:40000".parse::<SocketAddr>().unwrap());
        assert_eq!(p.kind, DnsKind::Query);
        assert!(!p.held);
        // A fragment has no DNS message of its own.
        h.kind = DNS_EVENT_FRAGMENT;
        let p = DnsPacket::decode(&record(&h, &frame)).expect("a whole record");
        assert!(p.payload().is_empty());
        // Lengths beyond the record are clamped, never read past it.
        h.kind = DNS_EVENT_RESPONSE;
        h.captured = u16::MAX;
        h.l3_offset = u16::MAX;
        h.payload_offset = u16::MAX;
        let p = DnsPacket::decode(&record(&h, &frame[..20])).expect("a whole header");
        assert_eq!(p.frame.len(), 20);
        assert!(p.payload().is_empty() && p.ip_packet().is_empty());
        // A record shorter than a header is refused.
        let short = record(&h, &[]);
        assert_eq!(DnsPacket::decode(&short[..short.len() - 1]), None);
    }
}
