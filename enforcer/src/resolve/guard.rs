//! The safety checks an answer passes before it may block anything. Any failed check refuses the
//! whole answer for that name: a partly poisoned answer is not trusted for its other addresses.

use std::fmt;
use std::net::IpAddr;

use super::shared::{builtin_shared_suffixes, normalize, shared_suffix_of};
use crate::never_block::NeverBlock;

/// Why an answer was refused; the `reason` label of `enforcer_rejected_answers_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// An address inside the never-block list.
    NeverBlock,
    /// More addresses than `--max-addresses-per-name`.
    TooMany,
    /// The name or a CNAME chain member is at or below a shared suffix.
    Shared,
}

impl RejectReason {
    pub const ALL: [RejectReason; 3] = [Self::NeverBlock, Self::TooMany, Self::Shared];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NeverBlock => "never_block",
            Self::TooMany => "too_many",
            Self::Shared => "shared",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused answer: why, and a message naming the name, its CNAME chain and the offending part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub reason: RejectReason,
    /// The offending piece alone: an address, a chain member, or the address count.
    pub offending: String,
    /// One line for logs and `enforcer resolve`.
    pub detail: String,
    /// The CNAME chain of the refused answer (names after the queried one).
    pub cname_chain: Vec<String>,
    /// Every address of the refused answer, for the log.
    pub addresses: Vec<IpAddr>,
}

/// The checks, configured once per resolver.
#[derive(Clone, Debug)]
pub struct Guard {
    never_block: NeverBlock,
    max_addresses: usize,
    shared: Vec<String>,
}

impl Guard {
    /// `extra_shared` is added to the built-in shared suffixes.
    pub fn new(never_block: NeverBlock, max_addresses: usize, extra_shared: &[String]) -> Self {
        let mut shared = builtin_shared_suffixes();
        shared.extend(extra_shared.iter().map(|s| normalize(s)));
        shared.retain(|s| !s.is_empty());
        shared.sort();
        shared.dedup();
        Self {
            never_block,
            max_addresses,
            shared,
        }
    }

    pub fn never_block(&self) -> &NeverBlock {
        &self.never_block
    }

    pub fn shared_suffixes(&self) -> &[String] {
        &self.shared
    }

    pub fn max_addresses(&self) -> usize {
        self.max_addresses
    }

    /// Checks one name's whole answer. Order: never-block (the most dangerous), then shared names,
    /// then the address count; only the first failed check is reported.
    pub fn check(
        &self,
        name: &str,
        cname_chain: &[String],
        addresses: &[IpAddr],
    ) -> Result<(), Rejection> {
        let reject = |reason, offending: String, why: String| Rejection {
            reason,
            detail: format!("{}: {why}", display_chain(name, cname_chain)),
            offending,
            cname_chain: cname_chain.to_vec(),
            addresses: addresses.to_vec(),
        };
        for address in addresses {
            if let Some(range) = self.never_block.find(*address) {
                return Err(reject(
                    RejectReason::NeverBlock,
                    address.to_string(),
                    format!("answer {address} is inside never-block {range}"),
                ));
            }
        }
        for member in std::iter::once(name).chain(cname_chain.iter().map(String::as_str)) {
            if let Some(suffix) = shared_suffix_of(&normalize(member), &self.shared) {
                return Err(reject(
                    RejectReason::Shared,
                    member.to_owned(),
                    format!("{member} is under the shared suffix {suffix}"),
                ));
            }
        }
        if addresses.len() > self.max_addresses {
            return Err(reject(
                RejectReason::TooMany,
                addresses.len().to_string(),
                format!(
                    "answer has {} addresses, more than the cap of {}",
                    addresses.len(),
                    self.max_addresses
                ),
            ));
        }
        Ok(())
    }
}

/// `name → target → …` as shown in logs and by `enforcer resolve`.
pub(crate) fn display_chain(name: &str, cname_chain: &[String]) -> String {
    let mut out = name.to_owned();
    for member in cname_chain {
        out.push_str(" → ");
        out.push_str(member);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> Guard {
        let never_block =
            NeverBlock::builtin().with_resolvers(&["198.18.255.53:53".parse().unwrap()]);
        Guard::new(never_block, 4, &["Shared.Example.".to_owned()])
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn clean_answer_passes() {
        let g = guard();
        assert!(
            g.check(
                "video.example",
                &["edge.video.example".into()],
                &ips(&["198.18.0.1", "2001:db8::1"])
            )
            .is_ok()
        );
        assert!(g.check("video.example", &[], &[]).is_ok());
    }

    #[test]
    fn never_block_refuses_whole_answer() {
        let g = guard();
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "198.18.255.53",
            "::1",
            "fe80::1",
            "0.0.0.0",
        ] {
            let r = g
                .check("video.example", &[], &ips(&["198.18.0.1", bad]))
                .unwrap_err();
            assert_eq!(r.reason, RejectReason::NeverBlock, "{bad}");
            assert_eq!(r.offending, bad);
            assert!(r.detail.contains("video.example") && r.detail.contains(bad));
        }
    }

    #[test]
    fn dns_servers_clients_use_are_refused() {
        let g = guard();
        let answer = ips(&["198.18.7.53"]);
        assert!(g.check("video.example", &[], &answer).is_ok());
        // Seen by the learner through a clone of the same list.
        g.never_block()
            .clone()
            .note_dns_server("198.18.7.53".parse().unwrap());
        let r = g.check("video.example", &[], &answer).unwrap_err();
        assert_eq!(r.reason, RejectReason::NeverBlock);
        assert!(
            r.detail.contains("a DNS server clients use"),
            "{}",
            r.detail
        );
    }

    #[test]
    fn too_many() {
        let g = guard();
        let many = ips(&[
            "198.18.0.1",
            "198.18.0.2",
            "198.18.0.3",
            "198.18.0.4",
            "198.18.0.5",
        ]);
        let r = g.check("video.example", &[], &many).unwrap_err();
        assert_eq!(r.reason, RejectReason::TooMany);
        assert!(r.detail.contains("5 addresses"));
        assert!(g.check("video.example", &[], &many[..4]).is_ok());
    }

    #[test]
    fn shared_name_or_chain_member() {
        let g = guard();
        let r = g
            .check(
                "video.example",
                &[
                    "video.example.edgekey.net".into(),
                    "e1.a.akamaiedge.net".into(),
                ],
                &ips(&["198.18.0.1"]),
            )
            .unwrap_err();
        assert_eq!(r.reason, RejectReason::Shared);
        assert_eq!(r.offending, "video.example.edgekey.net");
        assert!(
            r.detail
                .contains("video.example → video.example.edgekey.net")
        );
        let r = g
            .check("www.shared.example", &[], &ips(&["198.18.0.1"]))
            .unwrap_err();
        assert_eq!(r.reason, RejectReason::Shared);
        // The never-block check wins over the shared one.
        let r = g
            .check("a.cloudfront.net", &[], &ips(&["127.0.0.1"]))
            .unwrap_err();
        assert_eq!(r.reason, RejectReason::NeverBlock);
    }
}
