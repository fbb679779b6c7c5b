//! A DNS message reduced to what learning needs.

use std::net::IpAddr;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::RData;

/// The question, and for a response its CNAME chain and addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsMessage {
    pub id: u16,
    pub response: bool,
    /// The first question's name, lower-case, without the final dot.
    pub question: String,
    /// The names the question's CNAMEs lead to, in order.
    pub cname_chain: Vec<String>,
    /// Addresses of the chain's last name, with each record's TTL.
    pub addresses: Vec<(IpAddr, u32)>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MessageError {
    #[error("not a DNS message: {0}")]
    Parse(String),
    #[error("a DNS message without a question")]
    NoQuestion,
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Parses a UDP DNS payload. Only records that belong to the question's chain count: an answer
/// section may carry unrelated records (a poisoning classic), which are ignored.
pub fn parse_message(payload: &[u8]) -> Result<DnsMessage, MessageError> {
    let message = Message::from_vec(payload).map_err(|e| MessageError::Parse(e.to_string()))?;
    let question = message
        .queries()
        .first()
        .map(|q| normalize(&q.name().to_ascii()))
        .ok_or(MessageError::NoQuestion)?;
    let response = message.message_type() == MessageType::Response;
    let mut cname_chain = Vec::new();
    let mut addresses = Vec::new();
    if response && message.response_code() == ResponseCode::NoError {
        // Follow the chain from the question through the answer section's CNAMEs (bounded, so a
        // CNAME loop cannot spin).
        let mut current = question.clone();
        for _ in 0..16 {
            let next = message.answers().iter().find_map(|r| match r.data() {
                RData::CNAME(target) if normalize(&r.name().to_ascii()) == current => {
                    Some(normalize(&target.0.to_ascii()))
                }
                _ => None,
            });
            match next {
                Some(target) if !cname_chain.contains(&target) && target != question => {
                    cname_chain.push(target.clone());
                    current = target;
                }
                _ => break,
            }
        }
        for record in message.answers() {
            if normalize(&record.name().to_ascii()) != current {
                continue;
            }
            match record.data() {
                RData::A(a) => addresses.push((IpAddr::V4(a.0), record.ttl())),
                RData::AAAA(a) => addresses.push((IpAddr::V6(a.0), record.ttl())),
                _ => {}
            }
        }
    }
    addresses.sort();
    addresses.dedup_by_key(|(a, _)| *a);
    Ok(DnsMessage {
        id: message.id(),
        response,
        question,
        cname_chain,
        addresses,
    })
}

#[cfg(test)]
pub mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::str::FromStr;

    use hickory_proto::op::{Message, MessageType, Query};
    use hickory_proto::rr::rdata::{A, AAAA, CNAME};
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    use super::*;

    /// A response to `question` with `records` as (owner, data, ttl).
    pub fn response(id: u16, question: &str, records: &[(&str, RData, u32)]) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(id);
        m.set_message_type(MessageType::Response);
        m.add_query(Query::query(
            Name::from_str(question).unwrap(),
            RecordType::A,
        ));
        for (owner, data, ttl) in records {
            m.add_answer(Record::from_rdata(
                Name::from_str(owner).unwrap(),
                *ttl,
                data.clone(),
            ));
        }
        m.to_vec().unwrap()
    }

    pub fn query(id: u16, question: &str) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(id);
        m.set_message_type(MessageType::Query);
        m.add_query(Query::query(
            Name::from_str(question).unwrap(),
            RecordType::A,
        ));
        m.to_vec().unwrap()
    }

    pub fn a(ip: [u8; 4]) -> RData {
        RData::A(A(Ipv4Addr::from(ip)))
    }

    pub fn aaaa(ip: &str) -> RData {
        RData::AAAA(AAAA(Ipv6Addr::from_str(ip).unwrap()))
    }

    pub fn cname(target: &str) -> RData {
        RData::CNAME(CNAME(Name::from_str(target).unwrap()))
    }

    #[test]
    fn chain_and_addresses_of_the_question_only() {
        let bytes = response(
            9,
            "Meet.Zoom.US.",
            &[
                ("meet.zoom.us.", cname("edge.zoom.us."), 300),
                ("edge.zoom.us.", a([198, 19, 10, 5]), 60),
                ("edge.zoom.us.", aaaa("2001:db8:10::5"), 30),
                // Not on the chain: ignored.
                ("bank.example.", a([198, 19, 99, 1]), 60),
            ],
        );
        let m = parse_message(&bytes).unwrap();
        assert!(m.response);
        assert_eq!(m.id, 9);
        assert_eq!(m.question, "meet.zoom.us");
        assert_eq!(m.cname_chain, ["edge.zoom.us"]);
        assert_eq!(
            m.addresses,
            [
                (IpAddr::from([198, 19, 10, 5]), 60),
                (IpAddr::from_str("2001:db8:10::5").unwrap(), 30)
            ]
        );
        let q = parse_message(&query(3, "a.zoom.us")).unwrap();
        assert!(!q.response && q.addresses.is_empty());
        assert!(parse_message(&[1, 2, 3]).is_err());
        assert!(parse_message(&[]).is_err());
    }

    #[test]
    fn a_cname_loop_ends() {
        let bytes = response(
            1,
            "a.example.",
            &[
                ("a.example.", cname("b.example."), 60),
                ("b.example.", cname("a.example."), 60),
            ],
        );
        let m = parse_message(&bytes).unwrap();
        assert_eq!(m.cname_chain, ["b.example"]);
        assert!(m.addresses.is_empty());
    }
}
