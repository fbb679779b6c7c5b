//! Resolving the policy's exact domains into addresses, safely, and keeping them over time.
//!
//! The pieces, one per concern:
//! - [`Resolver`] (`dns`): asks the configured servers (or the system's) for A and AAAA at once,
//!   follows and records the CNAME chain, and turns every answer into a [`NameResolution`]:
//!   [`LookupResult::Ok`], [`LookupResult::Rejected`] (a safety guard refused the answer) or
//!   [`LookupResult::Failed`] (NXDOMAIN, an error code, a timeout). [`Resolver::resolve_many`] runs
//!   many names with bounded concurrency.
//! - `guard`: the safety checks every answer passes before it may block anything: no address in
//!   the never-block list, no more than `max_addresses_per_name` addresses, no name or CNAME chain
//!   member at or below a shared (CDN, shared front-end) suffix. A failed check refuses the whole
//!   answer for that name.
//! - `shared`: the built-in list of shared suffixes, each with the reason it is there.
//! - [`AddressBook`] (`book`): the dynamic per-platform sets. It is keyed by name; each name
//!   records which (platform, entry) [`Use`]s it, its addresses with their provenance (name and
//!   CNAME chain) and timing. Its rules:
//!   * a successful answer (re)starts each address's TTL, clamped to `[ttl_floor, ttl_ceiling]`,
//!     and schedules the next refresh at 80–90 % of that clamped TTL;
//!   * an address missing from a later *successful* answer stays for `grace` after the first answer
//!     without it, then goes (it comes back at once if an answer lists it again);
//!   * a failed or refused answer changes nothing but the retry schedule: the last good addresses
//!     stay in force, a set is never emptied by a DNS problem (fail-static);
//!   * [`AddressBook::apply`], [`AddressBook::expire`] and [`AddressBook::set_uses`] return a
//!     [`Change`] — the (platform, entry, address) mappings that appeared and disappeared, already
//!     de-duplicated across names — which is exactly what the datapath needs to apply.
//! - `state`: [`AddressBook::save`] writes `<state-dir>/addresses.json` atomically (temporary file in
//!   the same directory, fsync, rename, fsync of the directory); [`AddressBook::load`] reads it at a
//!   cold start. Times in the file are wall-clock UNIX seconds, so they survive a restart.
//! - [`ResolveMetrics`] (`metrics`): `enforcer_resolutions_total{platform,result}`,
//!   `enforcer_resolution_duration_seconds` and `enforcer_rejected_answers_total{reason}`, plus the
//!   resolver health that `status` shows.
//!
//! Integration into the daemon, in outline:
//! ```ignore
//! // Start-up: the last known addresses first (fail-static), then the policy's names.
//! let mut book = AddressBook::load(&state_dir, BookSettings::from_config(&config))
//!     .unwrap_or_else(|e| { tracing::warn!("{e}; starting with no resolved addresses"); AddressBook::new(settings) });
//! book.set_uses(policy_uses(&policy), SystemTime::now());
//! // enforce book.mappings() together with the published prefixes, then:
//! metrics.register_platforms(policy.platforms.iter().map(|p| &p.name));
//! let resolver = Arc::new(Resolver::new(&config)?);
//! loop {
//!     let names = book.due_names(SystemTime::now());       // (book behind the daemon's lock)
//!     let resolutions = resolver.resolve_many(&names).await; // (lock not held here)
//!     let change = apply_round(&mut book, &metrics, &resolutions, SystemTime::now());
//!     // apply `change` to the maps (additions before removals), then book.save(&state_dir)
//!     // sleep until book.next_due(), or until a reload calls book.set_uses(..) (apply its Change too)
//! }
//! ```
//! A [`Change`] is a set difference of (platform, entry, address) mappings, so an address enforced
//! both before and after an operation never appears in it: applying additions before removals
//! never opens a window.

mod book;
mod dns;
mod guard;
mod metrics;
mod shared;
mod state;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use crate::never_block::NeverBlock;

pub use book::{
    AddressBook, BookEntry, BookSettings, Change, FamilyCounts, Mapping, Use, policy_uses,
};
pub use dns::{
    Answer, Failure, FailureKind, LookupResult, NameResolution, Resolver, ResolverError, servers,
};
pub use guard::{Guard, RejectReason, Rejection};
pub use metrics::{
    DURATION_BUCKETS, HistogramSnapshot, ResolveMetrics, ResolverHealth, ResultLabel,
};
pub use shared::{BUILTIN_SHARED_SUFFIXES, builtin_shared_suffixes, shared_suffix_of};
pub use state::{STATE_FILE, StateError};

/// The default DNS port, used when `--resolver` names no port.
pub const DNS_PORT: u16 = 53;

/// How many names are resolved at once by [`Resolver::resolve_many`].
pub const DEFAULT_CONCURRENCY: usize = 64;

/// Everything the resolver and the address book need; the daemon fills it from its options.
#[derive(Clone, Debug)]
pub struct ResolverConfig {
    /// Servers to ask; empty means the system's (`/etc/resolv.conf`).
    pub servers: Vec<SocketAddr>,
    /// Shortest time an address is kept and refreshed for, whatever TTL DNS gives (`--ttl-floor`).
    pub ttl_floor: Duration,
    /// Longest time an answer is trusted before it is asked again (`--ttl-ceiling`).
    pub ttl_ceiling: Duration,
    /// How long an address stays after DNS stopped giving it (`--grace`).
    pub grace: Duration,
    /// Answers with more addresses than this are refused (`--max-addresses-per-name`).
    pub max_addresses_per_name: usize,
    /// Addresses DNS must never make us block: the daemon passes the list it built at start-up
    /// ([`NeverBlock::build`]); the resolver makes sure its servers' own addresses are in it.
    pub never_block: NeverBlock,
    /// Extra shared suffixes (`--shared-suffix`), added to [`BUILTIN_SHARED_SUFFIXES`].
    pub shared_suffixes: Vec<String>,
    /// Time allowed for one query to one server before it counts as unanswered.
    pub timeout: Duration,
    /// How many times a query that got no answer is sent again.
    pub attempts: usize,
    /// Names resolved at once by [`Resolver::resolve_many`].
    pub concurrency: usize,
}

impl Default for ResolverConfig {
    /// The documented defaults of `enforcer run`, with the built-in never-block list.
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            ttl_floor: Duration::from_secs(60),
            ttl_ceiling: Duration::from_secs(86_400),
            grace: Duration::from_secs(3_600),
            max_addresses_per_name: 64,
            never_block: NeverBlock::builtin(),
            shared_suffixes: Vec::new(),
            timeout: Duration::from_secs(3),
            attempts: 2,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResolverAddrError {
    #[error("`{0}` is not a resolver address: expected ADDR, ADDR:PORT or [IPv6]:PORT")]
    Invalid(String),
    #[error("`{0}`: port 0 is not a resolver port")]
    PortZero(String),
}

/// Applies one round of resolutions to the book: each is counted under every platform using its
/// name, then applied; finally ended grace periods are expired. Returns the combined change.
pub fn apply_round(
    book: &mut AddressBook,
    metrics: &ResolveMetrics,
    resolutions: &[NameResolution],
    now: SystemTime,
) -> Change {
    for resolution in resolutions {
        metrics.record(&book.platforms_of(&resolution.name), resolution);
    }
    let mut change = book.apply_all(resolutions, now);
    change.merge(book.expire(now));
    change
}

/// Parses `--resolver ADDR[:PORT]`: `192.0.2.53`, `192.0.2.53:5353`, `2001:db8::53`,
/// `[2001:db8::53]` or `[2001:db8::53]:5353`; the port defaults to 53. Shared by `resolve` and
/// `run` so both accept exactly the same spellings.
pub fn parse_resolver(text: &str) -> Result<SocketAddr, ResolverAddrError> {
    let text = text.trim();
    let invalid = || ResolverAddrError::Invalid(text.to_owned());
    let addr = if let Ok(ip) = text.parse::<IpAddr>() {
        SocketAddr::new(ip, DNS_PORT)
    } else if let Ok(addr) = text.parse::<SocketAddr>() {
        addr
    } else if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        // `[v6]` without a port: std only parses the bracket form with one.
        match inner.parse::<IpAddr>() {
            Ok(IpAddr::V6(ip)) => SocketAddr::new(IpAddr::V6(ip), DNS_PORT),
            _ => return Err(invalid()),
        }
    } else {
        return Err(invalid());
    };
    if addr.port() == 0 {
        return Err(ResolverAddrError::PortZero(text.to_owned()));
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolver_spellings() {
        let ok = |t: &str| parse_resolver(t).unwrap().to_string();
        assert_eq!(ok("192.0.2.53"), "192.0.2.53:53");
        assert_eq!(ok("192.0.2.53:5353"), "192.0.2.53:5353");
        assert_eq!(ok(" 127.0.0.1:10053 "), "127.0.0.1:10053");
        assert_eq!(ok("2001:db8::53"), "[2001:db8::53]:53");
        assert_eq!(ok("[2001:db8::53]"), "[2001:db8::53]:53");
        assert_eq!(ok("[2001:db8::53]:5353"), "[2001:db8::53]:5353");
        assert_eq!(ok("::1"), "[::1]:53");
    }

    #[test]
    fn resolver_errors() {
        for bad in [
            "",
            "dns.example",
            "192.0.2.53:",
            "192.0.2.53:99999",
            "2001:db8::53:5353:x",
            "[192.0.2.53]",
            "[2001:db8::53",
        ] {
            assert!(
                matches!(parse_resolver(bad), Err(ResolverAddrError::Invalid(_))),
                "{bad}"
            );
        }
        assert_eq!(
            parse_resolver("192.0.2.53:0"),
            Err(ResolverAddrError::PortZero("192.0.2.53:0".into()))
        );
    }

    #[test]
    fn resolver_futures_can_be_spawned() {
        fn send_sync<T: Send + Sync>(_: &T) {}
        fn send<T: Send>(_: T) {}
        let resolver = Resolver::new(&ResolverConfig {
            servers: vec!["127.0.0.1:53".parse().unwrap()],
            ..ResolverConfig::default()
        })
        .unwrap();
        send_sync(&resolver);
        send(resolver.resolve_many(Vec::<String>::new()));
        send(resolver.resolve("example.com"));
    }

    #[test]
    fn defaults_match_the_interface() {
        let c = ResolverConfig::default();
        assert_eq!(c.ttl_floor, Duration::from_secs(60));
        assert_eq!(c.ttl_ceiling, Duration::from_secs(86_400));
        assert_eq!(c.grace, Duration::from_secs(3_600));
        assert_eq!(c.max_addresses_per_name, 64);
        assert!(c.never_block.contains("127.0.0.1".parse().unwrap()));
    }
}
