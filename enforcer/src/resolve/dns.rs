//! DNS lookups: A and AAAA at once, the CNAME chain followed and recorded, every answer passed
//! through the [`Guard`] before anyone may use it.
//!
//! This talks to the servers through hickory's name-server pool directly rather than its caching
//! `Resolver`: the address book is the cache and schedules refreshes itself, so every refresh
//! must reach a server, and the raw answer (response code, every CNAME) must be visible.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use hickory_resolver::config::{NameServerConfig, NameServerConfigGroup, ResolverOpts};
use hickory_resolver::name_server::{NameServerPool, TokioConnectionProvider};
use hickory_resolver::proto::op::{Query, ResponseCode};
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::proto::xfer::{
    DnsHandle as _, DnsRequestOptions, DnsResponse, FirstAnswer as _, Protocol, RetryDnsHandle,
};
use hickory_resolver::proto::{ProtoError, ProtoErrorKind};

use super::ResolverConfig;
use super::guard::{Guard, Rejection, display_chain};
use super::shared::normalize;

/// Most queries spent following one name's CNAME chain (the first one included).
const MAX_QUERIES: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum ResolverError {
    #[error("reading the system's resolver configuration (/etc/resolv.conf): {0}")]
    SystemConfig(#[source] hickory_resolver::ResolveError),
    #[error("no DNS server configured: pass --resolver or list one in /etc/resolv.conf")]
    NoServers,
}

/// Why a lookup produced no usable answer; the `result` label of `enforcer_resolutions_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailureKind {
    /// The name (or the end of its CNAME chain) does not exist.
    NxDomain,
    /// SERVFAIL, REFUSED, another error code, a connection or protocol error.
    Error,
    /// No server answered in time.
    Timeout,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NxDomain => "nxdomain",
            Self::Error => "error",
            Self::Timeout => "timeout",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    /// What happened, e.g. `A: SERVFAIL; AAAA: SERVFAIL`.
    pub detail: String,
}

/// A usable answer: every address of the name (both families), its CNAME chain and TTL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// Sorted and without duplicates.
    pub addresses: Vec<IpAddr>,
    /// The names after the queried one, in order: `name → cname_chain[0] → … → last`, where the
    /// last one holds the addresses. Empty without CNAMEs.
    pub cname_chain: Vec<String>,
    /// The smallest TTL (seconds) of the records used, CNAMEs included; `None` when the answer
    /// had no records at all (NOERROR without data).
    pub ttl: Option<u32>,
    /// Whether the A query was answered. When one family fails and the other answers, the answer
    /// is still used, but the book leaves the failed family's addresses as they were.
    pub ipv4: bool,
    /// Whether the AAAA query was answered.
    pub ipv6: bool,
}

impl Answer {
    /// Whether this answer says anything about `address`'s family.
    pub fn covers(&self, address: &IpAddr) -> bool {
        match address {
            IpAddr::V4(_) => self.ipv4,
            IpAddr::V6(_) => self.ipv6,
        }
    }
}

/// What resolving one name gave: usable addresses, an answer a guard refused, or none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LookupResult {
    Ok(Answer),
    /// A guard refused the answer; nothing may change for this name.
    Rejected(Rejection),
    /// No usable answer; nothing may change for this name.
    Failed(Failure),
}

/// The result of resolving one name once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameResolution {
    /// As asked (normalised: lower case, no trailing dot).
    pub name: String,
    pub outcome: LookupResult,
    /// Wall time of the whole resolution (both families, whole chain).
    pub elapsed: Duration,
}

/// One family's part of an answer.
#[derive(Debug, Default)]
struct FamilyAnswer {
    cname_chain: Vec<String>,
    addresses: Vec<IpAddr>,
    ttl: Option<u32>,
}

type Client = RetryDnsHandle<NameServerPool<TokioConnectionProvider>>;

/// Resolves names against fixed servers, guarding every answer. Cheap to share behind an `Arc`;
/// must be used inside a tokio runtime.
pub struct Resolver {
    client: Client,
    servers: Vec<SocketAddr>,
    guard: Guard,
    /// Upper bound for one query, retries included, in case the pool's own timers misbehave.
    query_deadline: Duration,
    concurrency: usize,
    /// The last problem logged per name, so a persistent refusal or failure is logged at `warn`
    /// once rather than at every refresh.
    reported: Mutex<HashMap<String, String>>,
    /// Off for one-shot commands that print problems themselves.
    log_problems: bool,
}

impl Resolver {
    /// Builds the resolver; with no servers in `config`, reads `/etc/resolv.conf`. The servers'
    /// own addresses are added to the never-block list.
    pub fn new(config: &ResolverConfig) -> Result<Self, ResolverError> {
        let servers = servers(&config.servers)?;
        let mut group = NameServerConfigGroup::with_capacity(servers.len() * 2);
        for server in &servers {
            // UDP first, TCP for truncated answers (a name with many addresses).
            for protocol in [Protocol::Udp, Protocol::Tcp] {
                let mut ns = NameServerConfig::new(*server, protocol);
                ns.trust_negative_responses = true;
                group.push(ns);
            }
        }
        let mut options = ResolverOpts::default();
        options.timeout = config.timeout;
        options.attempts = config.attempts;
        options.edns0 = true;
        options.cache_size = 0;
        options.try_tcp_on_error = true;
        let pool = NameServerPool::from_config(group, options, TokioConnectionProvider::default());
        let client = RetryDnsHandle::new(pool, config.attempts);

        // The daemon's list holds them already; any other caller's gets them here.
        let guard = Guard::new(
            config.never_block.with_resolvers(&servers),
            config.max_addresses_per_name,
            &config.shared_suffixes,
        );

        let tries = u32::try_from(config.attempts.saturating_add(1)).unwrap_or(u32::MAX);
        Ok(Self {
            client,
            servers,
            guard,
            query_deadline: config
                .timeout
                .saturating_mul(tries.saturating_mul(2))
                .saturating_add(Duration::from_secs(1)),
            concurrency: config.concurrency.max(1),
            reported: Mutex::new(HashMap::new()),
            log_problems: true,
        })
    }

    /// Whether refusals and failures are logged at `warn` (the default) or only at `debug`, for
    /// commands that report them on their own.
    pub fn with_problem_logging(mut self, on: bool) -> Self {
        self.log_problems = on;
        self
    }

    /// The servers asked, in order.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// The checks applied to every answer (never-block list with the servers' addresses, cap,
    /// shared suffixes).
    pub fn guard(&self) -> &Guard {
        &self.guard
    }

    /// Resolves many names, at most `concurrency` at a time; results come in input order.
    pub async fn resolve_many<I>(&self, names: I) -> Vec<NameResolution>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let names: Vec<String> = names.into_iter().map(|n| n.as_ref().to_owned()).collect();
        // Owned names, so the future stays `Send` (no closure over a borrowed argument).
        futures_util::stream::iter(names)
            .map(|name| async move { self.resolve(&name).await })
            .buffered(self.concurrency)
            .collect()
            .await
    }

    /// Resolves one name: A and AAAA concurrently, CNAMEs followed, the answer guarded.
    pub async fn resolve(&self, name: &str) -> NameResolution {
        let started = Instant::now();
        let name = normalize(name);
        let outcome = self.outcome(&name).await;
        self.report(&name, &outcome);
        NameResolution {
            name,
            outcome,
            elapsed: started.elapsed(),
        }
    }

    async fn outcome(&self, name: &str) -> LookupResult {
        // A name that is itself shared is refused whatever DNS says: no need to ask.
        if let Err(rejection) = self.guard.check(name, &[], &[]) {
            return LookupResult::Rejected(rejection);
        }
        let (v4, v6) = tokio::join!(
            self.lookup_family(name, RecordType::A),
            self.lookup_family(name, RecordType::AAAA)
        );
        let answer = match (v4, v6) {
            (Ok(v4), Ok(v6)) => merge(Some(v4), Some(v6)),
            (Ok(v4), Err(f6)) => {
                tracing::debug!(name, kind = %f6.kind, detail = %f6.detail, "AAAA failed; using the A answer alone");
                merge(Some(v4), None)
            }
            (Err(f4), Ok(v6)) => {
                tracing::debug!(name, kind = %f4.kind, detail = %f4.detail, "A failed; using the AAAA answer alone");
                merge(None, Some(v6))
            }
            (Err(f4), Err(f6)) => return LookupResult::Failed(combine_failures(&f4, &f6)),
        };
        match self
            .guard
            .check(name, &answer.cname_chain, &answer.addresses)
        {
            Ok(()) => LookupResult::Ok(answer),
            Err(rejection) => LookupResult::Rejected(rejection),
        }
    }

    /// One family: query, follow CNAMEs (asking again for the target when the server did not
    /// include its records), collect the addresses owned by the end of the chain.
    async fn lookup_family(&self, name: &str, qtype: RecordType) -> Result<FamilyAnswer, Failure> {
        let family = qtype.to_string();
        let fail = |kind, why: String| Failure {
            kind,
            detail: format!("{family}: {why}"),
        };
        let mut current = Name::from_utf8(format!("{name}."))
            .map_err(|e| fail(FailureKind::Error, format!("invalid name: {e}")))?;
        let start = current.clone();
        let mut seen = vec![start.clone()];
        let mut result = FamilyAnswer::default();
        let mut options = DnsRequestOptions::default();
        options.use_edns = true;
        options.recursion_desired = true;

        for _ in 0..MAX_QUERIES {
            let query = Query::query(current.clone(), qtype);
            let response = tokio::time::timeout(
                self.query_deadline,
                self.client.lookup(query, options).first_answer(),
            )
            .await;
            let response: DnsResponse = match response {
                Err(_) => return Err(fail(FailureKind::Timeout, "no answer in time".into())),
                Ok(Err(error)) => {
                    return match classify(&error) {
                        // NOERROR without records: the (end of the) chain exists, without data.
                        None => Ok(result),
                        Some(kind) => Err(fail(kind, describe(&error))),
                    };
                }
                Ok(Ok(response)) => response,
            };

            let mut followed = false;
            while let Some(target) = response.answers().iter().find_map(|r| match r.data() {
                RData::CNAME(cname) if r.name() == &current => Some((cname.0.clone(), r.ttl())),
                _ => None,
            }) {
                let (target, ttl) = target;
                if seen.contains(&target) {
                    return Err(fail(
                        FailureKind::Error,
                        format!("CNAME loop at {}", ascii(&target)),
                    ));
                }
                seen.push(target.clone());
                result.cname_chain.push(ascii(&target));
                result.ttl = Some(result.ttl.map_or(ttl, |t| t.min(ttl)));
                current = target;
                followed = true;
            }

            for record in response.answers() {
                // Only records owned by the end of the chain count: anything else in the answer
                // section is not what was asked for.
                if record.record_type() != qtype || record.name() != &current {
                    continue;
                }
                let address = match record.data() {
                    RData::A(a) => IpAddr::V4(a.0),
                    RData::AAAA(aaaa) => IpAddr::V6(aaaa.0),
                    _ => continue,
                };
                result.addresses.push(address);
                result.ttl = Some(result.ttl.map_or(record.ttl(), |t| t.min(record.ttl())));
            }
            if !result.addresses.is_empty() {
                return Ok(result);
            }
            if response.response_code() == ResponseCode::NXDomain {
                return Err(fail(
                    FailureKind::NxDomain,
                    format!("{} does not exist", ascii(&current)),
                ));
            }
            if !followed {
                // NOERROR, no data for the end of the chain.
                return Ok(result);
            }
            // The server gave the CNAME without the target's records: ask for the target.
        }
        Err(fail(
            FailureKind::Error,
            format!("CNAME chain longer than {MAX_QUERIES} queries"),
        ))
    }

    /// Logs refusals and failures: at `warn` when a name's problem is new, at `debug` while it
    /// persists, and once at `info` when the name answers again.
    fn report(&self, name: &str, outcome: &LookupResult) {
        let mut reported = self
            .reported
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = match outcome {
            LookupResult::Ok(_) => {
                if let Some(previous) = reported.remove(name) {
                    tracing::info!(name, previous = %previous, "name answers again");
                }
                return;
            }
            LookupResult::Rejected(r) => format!("refused {}: {}", r.reason, r.detail),
            LookupResult::Failed(f) => format!("failed {}: {}", f.kind, f.detail),
        };
        let new = reported.get(name) != Some(&key);
        let loud = new && self.log_problems;
        match outcome {
            LookupResult::Rejected(r) => {
                let addresses = r
                    .addresses
                    .iter()
                    .take(16)
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ");
                let chain = display_chain(name, &r.cname_chain);
                if loud {
                    tracing::warn!(name, cname_chain = %chain, reason = %r.reason, offending = %r.offending, answer = %addresses, addresses = r.addresses.len(), "DNS answer refused: {}", r.detail);
                } else {
                    tracing::debug!(name, cname_chain = %chain, reason = %r.reason, offending = %r.offending, "DNS answer refused again");
                }
            }
            LookupResult::Failed(f) => {
                if loud {
                    tracing::warn!(name, kind = %f.kind, detail = %f.detail, "resolution failed; keeping the last good addresses");
                } else {
                    tracing::debug!(name, kind = %f.kind, detail = %f.detail, "resolution failed again");
                }
            }
            LookupResult::Ok(_) => {}
        }
        if new {
            reported.insert(name.to_owned(), key);
        }
    }
}

/// `None` means "NOERROR without data", which is an answer, not a failure.
fn classify(error: &ProtoError) -> Option<FailureKind> {
    match error.kind() {
        ProtoErrorKind::NoRecordsFound { response_code, .. } => match *response_code {
            ResponseCode::NoError => None,
            ResponseCode::NXDomain => Some(FailureKind::NxDomain),
            _ => Some(FailureKind::Error),
        },
        ProtoErrorKind::Timeout => Some(FailureKind::Timeout),
        ProtoErrorKind::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            Some(FailureKind::Timeout)
        }
        _ => Some(FailureKind::Error),
    }
}

fn describe(error: &ProtoError) -> String {
    match error.kind() {
        ProtoErrorKind::NoRecordsFound { response_code, .. } => rcode_name(*response_code),
        _ => error.to_string(),
    }
}

/// The mnemonic operators know from dig.
fn rcode_name(code: ResponseCode) -> String {
    match code {
        ResponseCode::NoError => "NOERROR".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        other => format!("rcode {} ({other})", u16::from(other)),
    }
}

fn ascii(name: &Name) -> String {
    normalize(&name.to_ascii())
}

fn merge(v4: Option<FamilyAnswer>, v6: Option<FamilyAnswer>) -> Answer {
    let ipv4 = v4.is_some();
    let ipv6 = v6.is_some();
    let mut cname_chain: Vec<String> = Vec::new();
    let mut addresses = Vec::new();
    let mut ttl: Option<u32> = None;
    for part in [v4, v6].into_iter().flatten() {
        // Both families normally share one chain; if they differ, keep every member seen.
        for member in part.cname_chain {
            if !cname_chain.contains(&member) {
                cname_chain.push(member);
            }
        }
        addresses.extend(part.addresses);
        ttl = match (ttl, part.ttl) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    addresses.sort();
    addresses.dedup();
    Answer {
        addresses,
        cname_chain,
        ttl,
        ipv4,
        ipv6,
    }
}

fn combine_failures(v4: &Failure, v6: &Failure) -> Failure {
    let kind = if v4.kind == v6.kind {
        v4.kind
    } else if v4.kind == FailureKind::Timeout || v6.kind == FailureKind::Timeout {
        FailureKind::Timeout
    } else {
        FailureKind::Error
    };
    Failure {
        kind,
        detail: format!("{}; {}", v4.detail, v6.detail),
    }
}

/// The servers a resolver for `configured` asks: those, or the system's (`/etc/resolv.conf`)
/// when none are configured. The daemon reads them once at start-up, for its never-block list.
pub fn servers(configured: &[SocketAddr]) -> Result<Vec<SocketAddr>, ResolverError> {
    let servers = if configured.is_empty() {
        system_servers()?
    } else {
        dedup(configured.to_vec())
    };
    if servers.is_empty() {
        return Err(ResolverError::NoServers);
    }
    Ok(servers)
}

fn system_servers() -> Result<Vec<SocketAddr>, ResolverError> {
    let (config, _) =
        hickory_resolver::system_conf::read_system_conf().map_err(ResolverError::SystemConfig)?;
    Ok(dedup(
        config
            .name_servers()
            .iter()
            .map(|ns| ns.socket_addr)
            .collect(),
    ))
}

fn dedup(servers: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::with_capacity(servers.len());
    for s in servers {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fam(chain: &[&str], addrs: &[&str], ttl: Option<u32>) -> FamilyAnswer {
        FamilyAnswer {
            cname_chain: chain.iter().map(|s| (*s).to_owned()).collect(),
            addresses: addrs.iter().map(|s| s.parse().unwrap()).collect(),
            ttl,
        }
    }

    #[test]
    fn merge_families() {
        let a = merge(
            Some(fam(
                &["b.example"],
                &["198.18.0.2", "198.18.0.1"],
                Some(300),
            )),
            Some(fam(&["b.example"], &["2001:db8::1"], Some(60))),
        );
        assert_eq!(a.cname_chain, vec!["b.example"]);
        assert_eq!(a.addresses.len(), 3);
        assert_eq!(a.addresses[0], "198.18.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(a.ttl, Some(60));
        assert!(a.ipv4 && a.ipv6);

        let a = merge(Some(fam(&[], &["198.18.0.1"], Some(30))), None);
        assert!(a.ipv4 && !a.ipv6);
        assert!(a.covers(&"198.18.0.9".parse().unwrap()));
        assert!(!a.covers(&"2001:db8::9".parse().unwrap()));

        let a = merge(Some(fam(&[], &[], None)), Some(fam(&[], &[], Some(10))));
        assert_eq!(a.ttl, Some(10));
        assert!(a.addresses.is_empty());
    }

    #[test]
    fn failures_combine() {
        let f = |kind| Failure {
            kind,
            detail: "x".into(),
        };
        assert_eq!(
            combine_failures(&f(FailureKind::NxDomain), &f(FailureKind::NxDomain)).kind,
            FailureKind::NxDomain
        );
        assert_eq!(
            combine_failures(&f(FailureKind::NxDomain), &f(FailureKind::Timeout)).kind,
            FailureKind::Timeout
        );
        assert_eq!(
            combine_failures(&f(FailureKind::Error), &f(FailureKind::NxDomain)).kind,
            FailureKind::Error
        );
    }

    #[test]
    fn classify_codes() {
        let nr = |code| -> ProtoError {
            ProtoErrorKind::NoRecordsFound {
                query: Box::new(Query::default()),
                soa: None,
                ns: None,
                negative_ttl: None,
                response_code: code,
                trusted: false,
                authorities: None,
            }
            .into()
        };
        assert_eq!(classify(&nr(ResponseCode::NoError)), None);
        assert_eq!(
            classify(&nr(ResponseCode::NXDomain)),
            Some(FailureKind::NxDomain)
        );
        assert_eq!(
            classify(&nr(ResponseCode::ServFail)),
            Some(FailureKind::Error)
        );
        assert_eq!(describe(&nr(ResponseCode::ServFail)), "SERVFAIL");
        assert_eq!(
            classify(&ProtoErrorKind::Timeout.into()),
            Some(FailureKind::Timeout)
        );
    }
}
