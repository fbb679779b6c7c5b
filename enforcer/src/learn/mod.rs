//! Learning addresses for the policy's domains (wildcards above all) from the DNS traffic that
//! crosses the gateway.
//!
//! The XDP program copies UDP DNS messages (port 53, either direction) into a ring buffer, which
//! `datapath::dns_events` reads and decodes into [`DnsPacket`]s. Here, one concern per module:
//! - `patterns`: which platform entries a name belongs to (exact names and `*.` wildcards), in a
//!   few hash lookups per name however many patterns there are;
//! - `correlate`: only a response to a query that crossed the gateway (same transaction id,
//!   addresses, ports and question, within a short window) is believed;
//! - `message`: the DNS message itself (hickory-proto), reduced to the question, the CNAME chain
//!   and the addresses with their TTL;
//! - `learned`: the learned addresses per platform entry with provenance and expiry, saved in the
//!   state directory;
//! - [`Learner`]: the pipeline, returning what changed and counting each answer's fate
//!   (`enforcer_dns_answers_total{result}`).

mod correlate;
mod fragments;
mod learned;
mod message;
pub mod observed;
mod patterns;
pub mod recent;
mod trust;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

pub use correlate::QueryTracker;
pub use fragments::{FRAGMENT_WAIT, Ready, Reassembly, is_first_fragment};
pub use learned::{LEARNED_FILE, LearnedEntry, LearnedError, LearnedSet, Loaded};
/// DNS messages built for tests.
#[cfg(test)]
pub(crate) use message::tests as fixtures;
pub use message::{DnsMessage, parse_message};
pub use patterns::{DomainPatterns, learns};
pub use trust::{Role, Trust};

use crate::datapath::{DnsKind, DnsPacket};
use crate::resolve::{BookSettings, Guard, Mapping, ResolveMetrics, Use};

/// What became of one DNS message; the `result` label of `enforcer_dns_answers_total` for
/// responses (queries are only remembered).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AnswerResult {
    /// Addresses were learned (or refreshed) for a platform.
    Learned,
    /// A believed response for names no rule covers.
    Unmatched,
    /// A response without a matching query that crossed the gateway.
    Unsolicited,
    /// A matching response from the wrong interface, or from a server not trusted for its
    /// client (`--iface` roles, `--learn-from`, `--learn-for`).
    Untrusted,
    /// A matching response the guards refused (never-block, too many, shared).
    Refused,
    /// Not a DNS message we can read.
    Malformed,
}

impl AnswerResult {
    pub const ALL: [AnswerResult; 6] = [
        Self::Learned,
        Self::Unmatched,
        Self::Unsolicited,
        Self::Untrusted,
        Self::Refused,
        Self::Malformed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Learned => "learned",
            Self::Unmatched => "unmatched",
            Self::Unsolicited => "unsolicited",
            Self::Untrusted => "untrusted",
            Self::Refused => "refused",
            Self::Malformed => "malformed",
        }
    }
}

/// `enforcer_dns_answers_total{result}`.
#[derive(Debug, Default)]
pub struct AnswerCounters([AtomicU64; 6]);

impl AnswerCounters {
    pub fn add(&self, result: AnswerResult) {
        self.0[result as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, result: AnswerResult) -> u64 {
        self.0[result as usize].load(Ordering::Relaxed)
    }

    /// Renders the counts, adding those the datapath keeps itself (`datapath`, by
    /// `enforcer_common::DNS_STAT_*`: responses it passed as untrusted or unsolicited without
    /// showing them to user space).
    pub fn render(&self, datapath: &crate::datapath::DnsStats, out: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(
            out,
            "# HELP enforcer_dns_answers_total DNS responses seen on the attached interfaces, by what became of them."
        );
        let _ = writeln!(out, "# TYPE enforcer_dns_answers_total counter");
        for result in AnswerResult::ALL {
            let in_datapath = match result {
                AnswerResult::Untrusted => datapath[enforcer_common::DNS_STAT_UNTRUSTED as usize],
                AnswerResult::Unsolicited => {
                    datapath[enforcer_common::DNS_STAT_UNSOLICITED as usize]
                }
                _ => 0,
            };
            let _ = writeln!(
                out,
                "enforcer_dns_answers_total{{result=\"{}\"}} {}",
                result.as_str(),
                self.get(result).wrapping_add(in_datapath)
            );
        }
    }
}

/// One UDP DNS message as the datapath saw it.
#[derive(Clone, Debug)]
pub struct Observed<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub payload: &'a [u8],
    /// The interface it arrived on.
    pub ifindex: u32,
}

impl<'a> Observed<'a> {
    /// The message `payload` that `packet` carried (reassembled when it came in fragments). A
    /// response is matched to its query by who asked: under NAT it is addressed to the gateway.
    pub fn new(packet: &DnsPacket, payload: &'a [u8]) -> Self {
        let dst = match packet.kind {
            DnsKind::Response => SocketAddr::new(packet.query_client, packet.dst.port()),
            DnsKind::Query | DnsKind::Fragment => packet.dst,
        };
        Observed {
            src: packet.src,
            dst,
            payload,
            ifindex: packet.ifindex,
        }
    }
}

impl<'a> From<&'a DnsPacket> for Observed<'a> {
    fn from(packet: &'a DnsPacket) -> Self {
        Self::new(packet, packet.payload())
    }
}

/// What observing one DNS message did: how it was counted and what it taught.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    /// The fate of a response; `None` for a query.
    pub result: Option<AnswerResult>,
    /// Mappings that are new (the datapath must add them).
    pub added: Vec<Mapping>,
}

/// Observed (address, name) pairs kept by default (`--observed-names`).
pub const DEFAULT_OBSERVED_NAMES: usize = 1_000_000;

/// The learning pipeline.
pub struct Learner {
    patterns: DomainPatterns,
    tracker: QueryTracker,
    guard: Guard,
    trust: Trust,
    settings: BookSettings,
    pub set: LearnedSet,
    pub counters: AnswerCounters,
    /// Every believed answer's names by address (for `collateral`).
    pub observed: observed::ObservedNames,
    /// The last names learned, for `enforcer top`.
    pub recent: recent::RecentLearned,
}

impl Learner {
    pub fn new(
        patterns: DomainPatterns,
        guard: Guard,
        trust: Trust,
        settings: BookSettings,
    ) -> Self {
        Self {
            patterns,
            tracker: QueryTracker::new(),
            guard,
            trust,
            settings,
            set: LearnedSet::default(),
            counters: AnswerCounters::default(),
            observed: observed::ObservedNames::new(DEFAULT_OBSERVED_NAMES),
            recent: recent::RecentLearned::new(crate::control::protocol::TOP_LEARNED),
        }
    }

    /// Bounds the observed names (`--observed-names`).
    pub fn set_observed_limit(&mut self, limit: usize) {
        self.observed = observed::ObservedNames::new(limit);
    }

    /// Installs a new policy's patterns with the learned set already filtered for it.
    pub fn replace(&mut self, patterns: DomainPatterns, set: LearnedSet) {
        self.patterns = patterns;
        self.set = set;
    }

    /// Sets whose answers are believed (the daemon knows the interfaces once attached).
    pub fn set_trust(&mut self, trust: Trust) {
        self.trust = trust;
    }

    pub fn patterns(&self) -> &DomainPatterns {
        &self.patterns
    }

    /// Handles one message seen at `now` (wall clock for expiry, monotonic for the query window).
    pub fn observe(
        &mut self,
        observed: &Observed<'_>,
        now: SystemTime,
        mono: Instant,
        rejects: &ResolveMetrics,
    ) -> Observation {
        let Ok(message) = parse_message(observed.payload) else {
            self.counters.add(AnswerResult::Malformed);
            return Observation {
                result: Some(AnswerResult::Malformed),
                added: Vec::new(),
            };
        };
        if !message.response {
            self.tracker.query(
                observed.src,
                observed.dst,
                message.id,
                &message.question,
                mono,
                observed.ifindex,
            );
            return Observation::default();
        }
        let result = |r: AnswerResult, added: Vec<Mapping>| Observation {
            result: Some(r),
            added,
        };
        // The response goes server -> client: its destination asked, its source answered.
        let Some(query_if) = self.tracker.answer(
            observed.dst,
            observed.src,
            message.id,
            &message.question,
            mono,
        ) else {
            self.counters.add(AnswerResult::Unsolicited);
            return result(AnswerResult::Unsolicited, Vec::new());
        };
        // Checked before its server is noted below: an untrusted answer teaches nothing at all.
        if !self.trust.believes(
            observed.dst.ip(),
            observed.src.ip(),
            query_if,
            observed.ifindex,
        ) {
            self.counters.add(AnswerResult::Untrusted);
            return result(AnswerResult::Untrusted, Vec::new());
        }
        // It answered a client's query that crossed the gateway: a DNS server clients use, which
        // no answer may make blocked (this one included), for learning and resolution alike.
        self.guard.never_block().note_dns_server(observed.src.ip());
        // Every name a believed answer gives, matched or not: what a block may also hit.
        let given: Vec<IpAddr> = message.addresses.iter().map(|(a, _)| *a).collect();
        self.observed
            .record(&message.question, &message.cname_chain, &given, now);
        let uses = self.uses_of(&message);
        if uses.is_empty() || message.addresses.is_empty() {
            self.counters.add(AnswerResult::Unmatched);
            return result(AnswerResult::Unmatched, Vec::new());
        }
        let addresses: Vec<IpAddr> = message.addresses.iter().map(|(a, _)| *a).collect();
        if let Err(rejection) =
            self.guard
                .check(&message.question, &message.cname_chain, &addresses)
        {
            tracing::warn!(
                name = %message.question,
                answer = ?rejection.addresses,
                reason = rejection.reason.as_str(),
                "{}; not learned",
                rejection.detail
            );
            rejects.count_rejection(rejection.reason);
            self.counters.add(AnswerResult::Refused);
            return result(AnswerResult::Refused, Vec::new());
        }
        let ttl = message.addresses.iter().map(|(_, ttl)| *ttl).min();
        let keep = self.settings.clamp(ttl) + self.settings.grace;
        let added = self.set.learn(
            &uses,
            &message.addresses,
            &LearnedEntry {
                name: message.question.clone(),
                cname_chain: message.cname_chain.clone(),
                resolver: observed.src.ip(),
                remove_at: now + keep,
            },
        );
        for u in &uses {
            for (address, _) in &message.addresses {
                self.recent.record(recent::Recent {
                    name: message.question.clone(),
                    platform: u.platform.clone(),
                    address: *address,
                    time: now,
                });
            }
        }
        self.counters.add(AnswerResult::Learned);
        result(AnswerResult::Learned, added)
    }

    /// Every use covering the question or a name of its CNAME chain.
    fn uses_of(&self, message: &DnsMessage) -> Vec<Use> {
        let mut uses: Vec<Use> = std::iter::once(&message.question)
            .chain(message.cname_chain.iter())
            .flat_map(|name| self.patterns.uses_of(name))
            .collect();
        uses.sort();
        uses.dedup();
        uses
    }

    /// Removes what expired; returns the mappings that went.
    pub fn expire(&mut self, now: SystemTime) -> Vec<Mapping> {
        self.set.expire(now)
    }

    /// When the next learned address expires.
    pub fn next_expiry(&self) -> Option<SystemTime> {
        self.set.next_expiry()
    }
}

/// The query window: a response must come within this time of its query.
pub const QUERY_WINDOW: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::message::tests::{a, cname, query, response};
    use super::*;
    use crate::never_block::NeverBlock;
    use crate::policy::{LoadOptions, parse_policy_str};
    use crate::resolve::{RejectReason, Resolver, ResolverConfig};

    type Case<'a> = (
        &'a str,
        Vec<(&'a str, hickory_proto::rr::RData, u32)>,
        AnswerResult,
    );

    const CLIENT: &str = "198.18.1.2:40000";
    const SERVER: &str = "198.18.2.2:53";
    const IN: u32 = 1;
    const OUT: u32 = 2;

    fn learner() -> Learner {
        learner_with(NeverBlock::builtin())
    }

    fn learner_with(never_block: NeverBlock) -> Learner {
        let policy = parse_policy_str(
            Path::new("p.yaml"),
            "platform: zoom\nmatch:\n  - domains: [\"*.zoom.us\"]\n    enforce: address\n",
            &LoadOptions::default(),
        )
        .unwrap();
        Learner::new(
            DomainPatterns::from_policy(&policy),
            Guard::new(never_block, 4, &[]),
            Trust::anyone(),
            BookSettings {
                ttl_floor: Duration::from_secs(60),
                ttl_ceiling: Duration::from_secs(3600),
                grace: Duration::from_secs(30),
            },
        )
    }

    fn see(l: &mut Learner, from: &str, to: &str, payload: &[u8]) -> Observation {
        see_counted(l, from, to, payload, &ResolveMetrics::new())
    }

    fn see_counted(
        l: &mut Learner,
        from: &str,
        to: &str,
        payload: &[u8],
        metrics: &ResolveMetrics,
    ) -> Observation {
        // Queries arrive on interface 1, answers (from port 53) on interface 2.
        let src: SocketAddr = from.parse().unwrap();
        let observed = Observed {
            src,
            dst: to.parse().unwrap(),
            payload,
            ifindex: if src.port() == 53 { OUT } else { IN },
        };
        l.observe(
            &observed,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
            Instant::now(),
            metrics,
        )
    }

    #[test]
    fn answers_to_queries_that_crossed_are_learned() {
        let mut l = learner();
        let q = query(5, "x1.zoom.us");
        assert_eq!(see(&mut l, CLIENT, SERVER, &q), Observation::default());
        let r = response(5, "x1.zoom.us", &[("x1.zoom.us", a([198, 19, 10, 5]), 5)]);
        let out = see(&mut l, SERVER, CLIENT, &r);
        assert_eq!(out.result, Some(AnswerResult::Learned));
        assert_eq!(out.added.len(), 1);
        assert_eq!(out.added[0].address, IpAddr::from([198, 19, 10, 5]));
        let (_, entry) = l.set.entries().next().unwrap();
        assert_eq!(entry.resolver, "198.18.2.2".parse::<IpAddr>().unwrap());
        // TTL 5 is raised to the 60 s floor, plus 30 s grace.
        assert_eq!(
            entry.remove_at,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + 90)
        );
        // The same response again is not an answer to anything any more.
        assert_eq!(
            see(&mut l, SERVER, CLIENT, &r).result,
            Some(AnswerResult::Unsolicited)
        );
        assert_eq!(l.counters.get(AnswerResult::Learned), 1);
        assert_eq!(l.counters.get(AnswerResult::Unsolicited), 1);
    }

    fn see_on(l: &mut Learner, from: &str, to: &str, payload: &[u8], ifindex: u32) -> Observation {
        let observed = Observed {
            src: from.parse().unwrap(),
            dst: to.parse().unwrap(),
            payload,
            ifindex,
        };
        l.observe(
            &observed,
            SystemTime::UNIX_EPOCH,
            Instant::now(),
            &ResolveMetrics::new(),
        )
    }

    fn prefixes(list: &[&str]) -> Vec<ipnet::IpNet> {
        list.iter().map(|p| p.parse().unwrap()).collect()
    }

    /// Interfaces 1 and 3 face clients, 2 faces servers; SERVER alone is trusted.
    fn with_roles(learn_for: &[&str]) -> Learner {
        let mut l = learner();
        let roles = [(IN, Role::Inside), (OUT, Role::Outside), (3, Role::Inside)];
        l.set_trust(Trust::new(
            roles.into_iter().collect(),
            prefixes(&["198.18.2.2/32"]),
            prefixes(learn_for),
        ));
        l
    }

    /// A query for `name` from CLIENT to `server` on `query_if`, its answer on `answer_if`.
    fn exchange(l: &mut Learner, server: &str, query_if: u32, answer_if: u32) -> Observation {
        let name = "t.zoom.us";
        see_on(l, CLIENT, server, &query(40, name), query_if);
        let r = response(40, name, &[(name, a([198, 19, 10, 40]), 60)]);
        see_on(l, server, CLIENT, &r, answer_if)
    }

    #[test]
    fn an_answer_from_a_server_not_learned_from_is_untrusted() {
        let mut l = with_roles(&[]);
        let out = exchange(&mut l, "198.18.3.3:53", IN, OUT);
        assert_eq!(out.result, Some(AnswerResult::Untrusted));
        assert!(out.added.is_empty() && l.set.is_empty());
        assert_eq!(l.counters.get(AnswerResult::Untrusted), 1);
        // It does not make its server one no answer may block either.
        assert!(
            !l.guard
                .never_block()
                .contains("198.18.3.3".parse().unwrap())
        );
        // The trusted server is believed.
        assert_eq!(
            exchange(&mut l, SERVER, IN, OUT).result,
            Some(AnswerResult::Learned)
        );
    }

    #[test]
    fn an_answer_on_the_querys_interface_or_an_inside_one_is_untrusted() {
        let mut l = with_roles(&[]);
        // Forged on the client's own link.
        assert_eq!(
            exchange(&mut l, SERVER, IN, IN).result,
            Some(AnswerResult::Untrusted)
        );
        // Arriving from another client-facing interface.
        assert_eq!(
            exchange(&mut l, SERVER, IN, 3).result,
            Some(AnswerResult::Untrusted)
        );
        // A query that came in from the servers' side.
        assert_eq!(
            exchange(&mut l, SERVER, OUT, 3).result,
            Some(AnswerResult::Untrusted)
        );
        assert!(l.set.is_empty());
        assert_eq!(l.counters.get(AnswerResult::Untrusted), 3);
        assert_eq!(l.counters.get(AnswerResult::Learned), 0);
    }

    #[test]
    fn a_client_learned_for_is_believed_from_any_server() {
        let mut l = with_roles(&["198.18.1.0/24"]);
        let out = exchange(&mut l, "198.18.3.3:53", IN, OUT);
        assert_eq!(out.result, Some(AnswerResult::Learned));
        assert_eq!(out.added.len(), 1);
        // Still only from the outside.
        assert_eq!(
            exchange(&mut l, "198.18.3.3:53", IN, IN).result,
            Some(AnswerResult::Untrusted)
        );
    }

    #[test]
    fn without_roles_any_other_interface_is_believed() {
        let mut l = learner();
        l.set_trust(Trust::new(
            [(IN, Role::Both), (OUT, Role::Both)].into_iter().collect(),
            prefixes(&["198.18.2.0/24"]),
            Vec::new(),
        ));
        assert_eq!(
            exchange(&mut l, SERVER, OUT, IN).result,
            Some(AnswerResult::Learned)
        );
        assert_eq!(
            exchange(&mut l, SERVER, IN, IN).result,
            Some(AnswerResult::Untrusted)
        );
        assert_eq!(
            exchange(&mut l, "198.18.3.3:53", IN, OUT).result,
            Some(AnswerResult::Untrusted)
        );
    }

    #[test]
    fn apex_unrelated_poisoned_cdn_and_garbage_are_not_learned() {
        let mut l = learner();
        let cases: [Case; 4] = [
            (
                "zoom.us",
                vec![("zoom.us", a([198, 19, 10, 6]), 60)],
                AnswerResult::Unmatched,
            ),
            (
                "bank.example",
                vec![("bank.example", a([198, 19, 10, 7]), 60)],
                AnswerResult::Unmatched,
            ),
            (
                "p.zoom.us",
                vec![("p.zoom.us", a([127, 0, 0, 1]), 60)],
                AnswerResult::Refused,
            ),
            (
                "c.zoom.us",
                vec![
                    ("c.zoom.us", cname("d1.cloudfront.net"), 60),
                    ("d1.cloudfront.net", a([198, 19, 10, 8]), 60),
                ],
                AnswerResult::Refused,
            ),
        ];
        for (i, (name, records, expected)) in cases.into_iter().enumerate() {
            let id = 100 + u16::try_from(i).unwrap();
            see(&mut l, CLIENT, SERVER, &query(id, name));
            let out = see(&mut l, SERVER, CLIENT, &response(id, name, &records));
            assert_eq!(out.result, Some(expected), "{name}");
            assert!(out.added.is_empty(), "{name}");
        }
        // More addresses than the cap (4).
        see(&mut l, CLIENT, SERVER, &query(200, "many.zoom.us"));
        let records: Vec<_> = (1..=5u8)
            .map(|i| ("many.zoom.us", a([198, 19, 11, i]), 60))
            .collect();
        let out = see(
            &mut l,
            SERVER,
            CLIENT,
            &response(200, "many.zoom.us", &records),
        );
        assert_eq!(out.result, Some(AnswerResult::Refused));
        // An unsolicited answer is ignored even for a banned name.
        let out = see(
            &mut l,
            SERVER,
            CLIENT,
            &response(300, "u.zoom.us", &[("u.zoom.us", a([198, 19, 10, 9]), 60)]),
        );
        assert_eq!(out.result, Some(AnswerResult::Unsolicited));
        assert_eq!(
            see(&mut l, SERVER, CLIENT, b"\x00\x01garbage").result,
            Some(AnswerResult::Malformed)
        );
        assert!(l.set.is_empty());
    }

    #[test]
    fn an_answer_naming_its_own_server_is_refused() {
        let mut l = learner();
        let metrics = ResolveMetrics::new();
        see(&mut l, CLIENT, SERVER, &query(7, "self.zoom.us"));
        // SERVER is 198.18.2.2: outside the built-in list, so only the rule about servers
        // refuses it.
        let r = response(
            7,
            "self.zoom.us",
            &[("self.zoom.us", a([198, 18, 2, 2]), 60)],
        );
        let out = see_counted(&mut l, SERVER, CLIENT, &r, &metrics);
        assert_eq!(out.result, Some(AnswerResult::Refused));
        assert!(out.added.is_empty());
        assert!(l.set.is_empty());
        assert_eq!(l.counters.get(AnswerResult::Refused), 1);
        assert_eq!(metrics.rejected(RejectReason::NeverBlock), 1);
    }

    #[test]
    fn an_answer_naming_a_server_clients_use_is_refused() {
        const OTHER_SERVER: &str = "198.18.3.3:53";
        let mut l = learner();
        let metrics = ResolveMetrics::new();
        // Clients use OTHER_SERVER too (for a name no rule covers).
        see(&mut l, CLIENT, OTHER_SERVER, &query(8, "news.example"));
        let r = response(
            8,
            "news.example",
            &[("news.example", a([198, 19, 1, 1]), 60)],
        );
        assert_eq!(
            see(&mut l, OTHER_SERVER, CLIENT, &r).result,
            Some(AnswerResult::Unmatched)
        );
        // An answer from SERVER naming it is refused and counted; a clean one still learns.
        see(&mut l, CLIENT, SERVER, &query(9, "x.zoom.us"));
        let r = response(9, "x.zoom.us", &[("x.zoom.us", a([198, 18, 3, 3]), 60)]);
        let out = see_counted(&mut l, SERVER, CLIENT, &r, &metrics);
        assert_eq!(out.result, Some(AnswerResult::Refused));
        assert_eq!(metrics.rejected(RejectReason::NeverBlock), 1);
        see(&mut l, CLIENT, SERVER, &query(10, "y.zoom.us"));
        let r = response(10, "y.zoom.us", &[("y.zoom.us", a([198, 18, 3, 4]), 60)]);
        assert_eq!(
            see(&mut l, SERVER, CLIENT, &r).result,
            Some(AnswerResult::Learned)
        );
        // An unsolicited response does not make its source a server clients use.
        let r = response(11, "z.zoom.us", &[("z.zoom.us", a([198, 19, 1, 1]), 60)]);
        see(&mut l, "198.18.9.9:53", CLIENT, &r);
        assert!(
            !l.guard
                .never_block()
                .contains("198.18.9.9".parse().unwrap())
        );
    }

    #[test]
    fn the_daemons_resolver_refuses_servers_the_learner_saw() {
        // The daemon hands clones of one list to the learner and to its resolver.
        let never_block = NeverBlock::builtin();
        let resolver = Resolver::new(&ResolverConfig {
            servers: vec!["127.0.0.1:53".parse().unwrap()],
            never_block: never_block.clone(),
            ..ResolverConfig::default()
        })
        .unwrap();
        let server: IpAddr = "198.18.2.2".parse().unwrap();
        assert!(resolver.guard().check("a.example", &[], &[server]).is_ok());
        let mut l = learner_with(never_block);
        see(&mut l, CLIENT, SERVER, &query(12, "news.example"));
        let r = response(
            12,
            "news.example",
            &[("news.example", a([198, 19, 1, 1]), 60)],
        );
        see(&mut l, SERVER, CLIENT, &r);
        let rejection = resolver
            .guard()
            .check("a.example", &[], &[server])
            .unwrap_err();
        assert_eq!(rejection.reason, RejectReason::NeverBlock);
    }

    #[test]
    fn expiry_and_state_round_trip() {
        let mut l = learner();
        see(&mut l, CLIENT, SERVER, &query(1, "e.zoom.us"));
        see(
            &mut l,
            SERVER,
            CLIENT,
            &response(1, "e.zoom.us", &[("e.zoom.us", a([198, 19, 10, 5]), 60)]),
        );
        let dir = std::env::temp_dir().join(format!("learned-test-{}", std::process::id()));
        l.set.save(&dir).unwrap();
        let back = LearnedSet::load(&dir, SystemTime::now(), Duration::from_secs(3600)).unwrap();
        assert_eq!(back.set, l.set);
        assert!(back.problems.is_empty(), "{:?}", back.problems);
        std::fs::remove_dir_all(&dir).unwrap();
        let at = l.next_expiry().unwrap();
        assert!(l.expire(at - Duration::from_secs(1)).is_empty());
        assert_eq!(l.expire(at).len(), 1);
        assert!(l.set.is_empty());
    }
}
