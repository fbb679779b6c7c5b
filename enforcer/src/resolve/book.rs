//! The address book: what each exact domain of the policy resolves to, for which platform entries,
//! since when and until when.
//!
//! Times are wall-clock (`SystemTime`) and kept to the millisecond, so the book can be saved and
//! reloaded across a restart without shifting any expiry.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::ResolverConfig;
use super::dns::{Answer, LookupResult, NameResolution};
use super::shared::normalize;
use crate::policy::{DomainPattern, Policy};

/// Refreshes are never scheduled closer than this, whatever the TTL and floor say.
const MIN_REFRESH_MS: u64 = 1_000;
/// First retry after a failed or refused refresh; doubles per failure up to the TTL floor.
const FIRST_RETRY_MS: u64 = 5_000;

/// The timing rules of the book.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BookSettings {
    pub ttl_floor: Duration,
    pub ttl_ceiling: Duration,
    pub grace: Duration,
}

impl BookSettings {
    pub fn from_config(config: &ResolverConfig) -> Self {
        Self {
            ttl_floor: config.ttl_floor,
            ttl_ceiling: config.ttl_ceiling,
            grace: config.grace,
        }
    }

    /// The TTL an answer is trusted for: DNS's TTL clamped to the floor and ceiling.
    pub fn clamp(&self, ttl: Option<u32>) -> Duration {
        Duration::from_millis(self.clamp_ms(ttl))
    }

    /// The TTL an answer is trusted for, in milliseconds: DNS's TTL clamped to the floor and
    /// ceiling (an answer without records gets the floor).
    fn clamp_ms(&self, ttl: Option<u32>) -> u64 {
        let floor = millis(self.ttl_floor);
        let ceiling = millis(self.ttl_ceiling).max(floor);
        ttl.map_or(floor, |t| u64::from(t).saturating_mul(1_000))
            .clamp(floor, ceiling)
    }

    fn retry_ms(&self, failures: u32) -> u64 {
        let cap = millis(self.ttl_floor).max(MIN_REFRESH_MS);
        let shift = failures.saturating_sub(1).min(16);
        FIRST_RETRY_MS.saturating_mul(1 << shift).min(cap)
    }
}

/// One use of a name: the platform and the index of the `match` entry that lists it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Use {
    pub platform: String,
    pub entry: usize,
}

/// One address enforced for one platform entry: what the datapath holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mapping {
    pub platform: String,
    pub entry: usize,
    pub address: IpAddr,
}

/// What an operation did to the enforced mappings. A mapping still provided by another name of the
/// same entry is neither added nor removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Change {
    pub added: Vec<Mapping>,
    pub removed: Vec<Mapping>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }

    /// Folds a later change into this one (a mapping added then removed cancels out).
    pub fn merge(&mut self, later: Change) {
        if later.is_empty() {
            return;
        }
        let mut added: BTreeSet<Mapping> = std::mem::take(&mut self.added).into_iter().collect();
        let mut removed: BTreeSet<Mapping> =
            std::mem::take(&mut self.removed).into_iter().collect();
        for m in later.added {
            if !removed.remove(&m) {
                added.insert(m);
            }
        }
        for m in later.removed {
            if !added.remove(&m) {
                removed.insert(m);
            }
        }
        self.added = added.into_iter().collect();
        self.removed = removed.into_iter().collect();
    }

    fn between(before: &BTreeSet<Mapping>, after: &BTreeSet<Mapping>) -> Self {
        Self {
            added: after.difference(before).cloned().collect(),
            removed: before.difference(after).cloned().collect(),
        }
    }
}

/// Distinct addresses per family, for `enforcer_prefixes{source="dns"}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FamilyCounts {
    pub ipv4: usize,
    pub ipv6: usize,
}

/// One (name, address, platform entry) of the book, with its provenance and timing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BookEntry<'a> {
    pub platform: &'a str,
    pub entry: usize,
    pub address: IpAddr,
    pub name: &'a str,
    /// The chain of the answer that last gave this address.
    pub cname_chain: &'a [String],
    /// When DNS's (clamped) TTL for it runs out; it stays after that until a successful answer
    /// drops it and the grace period ends.
    pub expires_at: SystemTime,
    /// Set once a successful answer no longer lists it: when it will be removed.
    pub remove_at: Option<SystemTime>,
}

impl BookEntry<'_> {
    /// Time left on the TTL (0 once it ran out), at the book's millisecond resolution so an answer
    /// applied at `now` shows its whole TTL.
    pub fn ttl_remaining(&self, now: SystemTime) -> Duration {
        self.expires_at
            .duration_since(time(stamp(now)))
            .unwrap_or_default()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AddressState {
    pub(crate) cname_chain: Vec<String>,
    /// Last answer that listed it (ms since the UNIX epoch, like every stamp here).
    pub(crate) seen_at: u64,
    pub(crate) expires_at: u64,
    /// First successful answer that no longer listed it.
    pub(crate) missing_since: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NameState {
    pub(crate) uses: BTreeSet<Use>,
    pub(crate) cname_chain: Vec<String>,
    /// Clamped TTL of the last good answer.
    pub(crate) ttl_ms: Option<u64>,
    pub(crate) answered_at: Option<u64>,
    pub(crate) refresh_at: u64,
    /// Failed or refused refreshes since the last good answer.
    pub(crate) failures: u32,
    pub(crate) addresses: BTreeMap<IpAddr, AddressState>,
}

impl NameState {
    fn new(refresh_at: u64) -> Self {
        Self {
            uses: BTreeSet::new(),
            cname_chain: Vec::new(),
            ttl_ms: None,
            answered_at: None,
            refresh_at,
            failures: 0,
            addresses: BTreeMap::new(),
        }
    }
}

/// The per-platform dynamic sets; see the module documentation of `resolve` for the rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressBook {
    settings: BookSettings,
    pub(crate) names: BTreeMap<String, NameState>,
    /// Which names each use has, for computing what a change does to a whole entry.
    by_use: BTreeMap<Use, BTreeSet<String>>,
}

impl AddressBook {
    pub fn new(settings: BookSettings) -> Self {
        Self {
            settings,
            names: BTreeMap::new(),
            by_use: BTreeMap::new(),
        }
    }

    pub(crate) fn from_names(settings: BookSettings, names: BTreeMap<String, NameState>) -> Self {
        let mut book = Self {
            settings,
            names,
            by_use: BTreeMap::new(),
        };
        book.reindex();
        book
    }

    pub fn settings(&self) -> BookSettings {
        self.settings
    }

    /// Number of names.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.names.keys().map(String::as_str)
    }

    /// Replaces the set of (use, name) pairs, e.g. from [`policy_uses`] after a (re)load. Names no
    /// longer used are dropped with their addresses; new names are due for resolution at once;
    /// names kept keep their addresses, so a new use of a known name is enforced immediately.
    pub fn set_uses<I>(&mut self, uses: I, now: SystemTime) -> Change
    where
        I: IntoIterator<Item = (Use, String)>,
    {
        let before = self.mappings();
        let mut wanted: BTreeMap<String, BTreeSet<Use>> = BTreeMap::new();
        for (u, name) in uses {
            wanted.entry(normalize(&name)).or_default().insert(u);
        }
        self.names.retain(|name, _| wanted.contains_key(name));
        let now = stamp(now);
        for (name, uses) in wanted {
            self.names
                .entry(name)
                .or_insert_with(|| NameState::new(now))
                .uses = uses;
        }
        self.reindex();
        Change::between(&before, &self.mappings())
    }

    /// Applies one resolution. `Ok` refreshes the listed addresses and starts the grace period of
    /// those it no longer lists (for the families it answered); `Rejected` and `Failed` change
    /// nothing but the retry time. A name not in the book is ignored.
    pub fn apply(&mut self, resolution: &NameResolution, now: SystemTime) -> Change {
        let Some(uses) = self.names.get(&resolution.name).map(|s| s.uses.clone()) else {
            return Change::default();
        };
        let before = self.mappings_of(&uses);
        self.absorb(resolution, now);
        Change::between(&before, &self.mappings_of(&uses))
    }

    /// Applies many resolutions at once: the change is computed once for the whole batch
    /// (per-name changes cost a walk over every name of the entry, too slow for 10,000 names).
    pub fn apply_all(&mut self, resolutions: &[NameResolution], now: SystemTime) -> Change {
        let before = self.mappings();
        for resolution in resolutions {
            self.absorb(resolution, now);
        }
        Change::between(&before, &self.mappings())
    }

    fn absorb(&mut self, resolution: &NameResolution, now: SystemTime) {
        let settings = self.settings;
        let now_ms = stamp(now);
        let Some(state) = self.names.get_mut(&resolution.name) else {
            return;
        };
        match &resolution.outcome {
            LookupResult::Ok(answer) => {
                absorb(state, &resolution.name, answer, &settings, now_ms);
            }
            LookupResult::Rejected(_) | LookupResult::Failed(_) => {
                state.failures = state.failures.saturating_add(1);
                state.refresh_at = now_ms.saturating_add(settings.retry_ms(state.failures));
            }
        }
    }

    /// Removes addresses whose grace period has ended.
    pub fn expire(&mut self, now: SystemTime) -> Change {
        let now = stamp(now);
        let grace = millis(self.settings.grace);
        let gone = |a: &AddressState| {
            a.missing_since
                .is_some_and(|m| m.saturating_add(grace) <= now)
        };
        if !self.names.values().any(|s| s.addresses.values().any(gone)) {
            return Change::default();
        }
        let before = self.mappings();
        for state in self.names.values_mut() {
            state.addresses.retain(|_, a| !gone(a));
        }
        Change::between(&before, &self.mappings())
    }

    /// The earliest time something is due: a name's refresh or the end of a grace period.
    pub fn next_due(&self) -> Option<SystemTime> {
        let grace = millis(self.settings.grace);
        let refresh = self.names.values().map(|s| s.refresh_at);
        let graces = self.names.values().flat_map(|s| {
            s.addresses
                .values()
                .filter_map(|a| a.missing_since.map(|m| m.saturating_add(grace)))
        });
        refresh.chain(graces).min().map(time)
    }

    /// Names whose refresh time has come, in name order.
    pub fn due_names(&self, now: SystemTime) -> Vec<String> {
        let now = stamp(now);
        self.names
            .iter()
            .filter(|(_, s)| s.refresh_at <= now)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Marks every name due now (e.g. on SIGHUP or after the resolvers changed).
    pub fn refresh_all(&mut self, now: SystemTime) {
        let now = stamp(now);
        for state in self.names.values_mut() {
            state.refresh_at = state.refresh_at.min(now);
        }
    }

    /// When `name` is next refreshed.
    pub fn refresh_at(&self, name: &str) -> Option<SystemTime> {
        self.names.get(&normalize(name)).map(|s| time(s.refresh_at))
    }

    /// The uses of `name`, in order.
    pub fn uses_of(&self, name: &str) -> Vec<Use> {
        self.names
            .get(&normalize(name))
            .map(|s| s.uses.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The platforms using `name`, each once: the label set to count a resolution under.
    pub fn platforms_of(&self, name: &str) -> Vec<String> {
        let mut platforms: Vec<String> =
            self.uses_of(name).into_iter().map(|u| u.platform).collect();
        platforms.dedup();
        platforms
    }

    /// Every (name, address, use), in name then address then use order.
    pub fn entries(&self) -> impl Iterator<Item = BookEntry<'_>> + '_ {
        let grace = millis(self.settings.grace);
        self.names.iter().flat_map(move |(name, state)| {
            state.addresses.iter().flat_map(move |(address, a)| {
                state.uses.iter().map(move |u| BookEntry {
                    platform: &u.platform,
                    entry: u.entry,
                    address: *address,
                    name,
                    cname_chain: &a.cname_chain,
                    expires_at: time(a.expires_at),
                    remove_at: a.missing_since.map(|m| time(m.saturating_add(grace))),
                })
            })
        })
    }

    /// The enforced (platform, entry, address) set, without duplicates.
    pub fn mappings(&self) -> BTreeSet<Mapping> {
        let uses: BTreeSet<Use> = self.by_use.keys().cloned().collect();
        self.mappings_of(&uses)
    }

    /// Distinct addresses per platform and family; every platform with a name is listed, even at 0.
    pub fn counts(&self) -> BTreeMap<String, FamilyCounts> {
        let mut seen: BTreeMap<String, BTreeSet<IpAddr>> = BTreeMap::new();
        for state in self.names.values() {
            for u in &state.uses {
                seen.entry(u.platform.clone())
                    .or_default()
                    .extend(state.addresses.keys().copied());
            }
        }
        seen.into_iter()
            .map(|(platform, addresses)| {
                let ipv4 = addresses.iter().filter(|a| a.is_ipv4()).count();
                let counts = FamilyCounts {
                    ipv4,
                    ipv6: addresses.len() - ipv4,
                };
                (platform, counts)
            })
            .collect()
    }

    fn mappings_of(&self, uses: &BTreeSet<Use>) -> BTreeSet<Mapping> {
        let mut out = BTreeSet::new();
        for u in uses {
            for name in self.by_use.get(u).into_iter().flatten() {
                if let Some(state) = self.names.get(name) {
                    out.extend(state.addresses.keys().map(|address| Mapping {
                        platform: u.platform.clone(),
                        entry: u.entry,
                        address: *address,
                    }));
                }
            }
        }
        out
    }

    fn reindex(&mut self) {
        self.by_use.clear();
        for (name, state) in &self.names {
            for u in &state.uses {
                self.by_use
                    .entry(u.clone())
                    .or_default()
                    .insert(name.clone());
            }
        }
    }
}

/// A successful answer for one name.
fn absorb(state: &mut NameState, name: &str, answer: &Answer, settings: &BookSettings, now: u64) {
    let ttl = settings.clamp_ms(answer.ttl);
    for address in &answer.addresses {
        let a = state
            .addresses
            .entry(*address)
            .or_insert_with(|| AddressState {
                cname_chain: Vec::new(),
                seen_at: now,
                expires_at: now,
                missing_since: None,
            });
        a.cname_chain.clone_from(&answer.cname_chain);
        a.seen_at = now;
        a.expires_at = now.saturating_add(ttl);
        a.missing_since = None;
    }
    let grace = millis(settings.grace);
    state.addresses.retain(|address, a| {
        if answer.addresses.binary_search(address).is_ok() || !answer.covers(address) {
            return true;
        }
        let since = *a.missing_since.get_or_insert(now);
        since.saturating_add(grace) > now
    });
    state.cname_chain.clone_from(&answer.cname_chain);
    state.ttl_ms = Some(ttl);
    state.answered_at = Some(now);
    state.failures = 0;
    state.refresh_at =
        now.saturating_add((ttl * refresh_permille(name) / 1_000).max(MIN_REFRESH_MS));
}

/// Where in the TTL a name is refreshed: 80–90 %, fixed per name so refreshes of names with the
/// same TTL spread out instead of arriving together.
fn refresh_permille(name: &str) -> u64 {
    // FNV-1a: stable across runs and versions, unlike the std hasher.
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    800 + hash % 101
}

/// Every (use, exact domain) of the policy that is enforced by address. Wildcards are not
/// resolved in advance: their names are learned from DNS answers at run time. Names enforced by
/// name alone are never resolved: their addresses must never enter a set.
pub fn policy_uses(policy: &Policy) -> Vec<(Use, String)> {
    let mut out = Vec::new();
    for platform in &policy.platforms {
        for entry in platform.entries.iter().filter(|e| e.enforce.by_address()) {
            for domain in &entry.domains {
                if let DomainPattern::Exact(name) = domain {
                    out.push((
                        Use {
                            platform: platform.name.clone(),
                            entry: entry.index,
                        },
                        normalize(name),
                    ));
                }
            }
        }
    }
    out
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds since the UNIX epoch (0 before it).
pub(crate) fn stamp(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(millis).unwrap_or(0)
}

pub(crate) fn time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::dns::{Failure, FailureKind};
    use crate::resolve::guard::{RejectReason, Rejection};

    const S: Duration = Duration::from_secs(1);

    fn settings() -> BookSettings {
        BookSettings {
            ttl_floor: 60 * S,
            ttl_ceiling: 3_600 * S,
            grace: 600 * S,
        }
    }

    fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn uses(list: &[(&str, usize, &str)]) -> Vec<(Use, String)> {
        list.iter()
            .map(|(p, e, n)| {
                (
                    Use {
                        platform: (*p).into(),
                        entry: *e,
                    },
                    (*n).into(),
                )
            })
            .collect()
    }

    fn ok(name: &str, addrs: &[&str], ttl: u32) -> NameResolution {
        let mut addresses: Vec<IpAddr> = addrs.iter().map(|a| a.parse().unwrap()).collect();
        addresses.sort();
        NameResolution {
            name: name.into(),
            outcome: LookupResult::Ok(Answer {
                addresses,
                cname_chain: vec![],
                ttl: Some(ttl),
                ipv4: true,
                ipv6: true,
            }),
            elapsed: Duration::ZERO,
        }
    }

    fn failed(name: &str) -> NameResolution {
        NameResolution {
            name: name.into(),
            outcome: LookupResult::Failed(Failure {
                kind: FailureKind::Timeout,
                detail: "x".into(),
            }),
            elapsed: Duration::ZERO,
        }
    }

    fn m(p: &str, e: usize, a: &str) -> Mapping {
        Mapping {
            platform: p.into(),
            entry: e,
            address: a.parse().unwrap(),
        }
    }

    /// Exact names are resolved for `address` and `both`, never for `name`.
    #[test]
    fn names_enforced_by_name_alone_are_not_resolved() {
        let policy = crate::policy::parse_policy_str(
            std::path::Path::new("p.yaml"),
            "platform: p\nmatch:\n  - domains: [a.example, \"*.w.example\"]\n  \
             - domains: [b.example]\n    enforce: address\n  - domains: [c.example]\n    \
             enforce: name\n",
            &crate::policy::LoadOptions::default(),
        )
        .unwrap();
        let names: Vec<(usize, String)> = policy_uses(&policy)
            .into_iter()
            .map(|(u, name)| (u.entry, name))
            .collect();
        assert_eq!(
            names,
            [(0, "a.example".to_owned()), (1, "b.example".to_owned())]
        );
    }

    #[test]
    fn new_names_are_due_and_answers_add() {
        let mut book = AddressBook::new(settings());
        let c = book.set_uses(uses(&[("zoom", 0, "zoom.us")]), t0());
        assert!(c.is_empty());
        assert_eq!(book.due_names(t0()), vec!["zoom.us"]);
        assert_eq!(book.next_due(), Some(t0()));
        let c = book.apply(&ok("zoom.us", &["198.18.0.1", "2001:db8::1"], 300), t0());
        assert_eq!(
            c.added,
            vec![m("zoom", 0, "198.18.0.1"), m("zoom", 0, "2001:db8::1")]
        );
        assert!(book.due_names(t0()).is_empty());
        let due = book.next_due().unwrap().duration_since(t0()).unwrap();
        assert!(due >= 240 * S && due <= 270 * S, "{due:?}");
        let e: Vec<_> = book.entries().collect();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].ttl_remaining(t0()), 300 * S);
        assert_eq!(book.counts()["zoom"], FamilyCounts { ipv4: 1, ipv6: 1 });
    }

    #[test]
    fn ttl_is_clamped() {
        let mut book = AddressBook::new(settings());
        book.set_uses(uses(&[("p", 0, "a.example"), ("p", 0, "b.example")]), t0());
        book.apply(&ok("a.example", &["198.18.0.1"], 5), t0());
        book.apply(&ok("b.example", &["198.18.0.2"], 999_999), t0());
        let ttl: BTreeMap<&str, Duration> = book
            .entries()
            .map(|e| (e.name, e.ttl_remaining(t0())))
            .collect();
        assert_eq!(ttl["a.example"], 60 * S);
        assert_eq!(ttl["b.example"], 3_600 * S);
        let r = book
            .refresh_at("a.example")
            .unwrap()
            .duration_since(t0())
            .unwrap();
        assert!(r >= 48 * S && r <= 54 * S, "{r:?}");
    }

    #[test]
    fn missing_address_stays_for_grace_then_goes() {
        let mut book = AddressBook::new(settings());
        book.set_uses(uses(&[("p", 0, "a.example")]), t0());
        book.apply(&ok("a.example", &["198.18.0.1"], 60), t0());
        let t1 = t0() + 60 * S;
        let c = book.apply(&ok("a.example", &["198.18.0.2"], 60), t1);
        assert_eq!(c.added, vec![m("p", 0, "198.18.0.2")]);
        assert!(c.removed.is_empty());
        let grace_end = t1 + 600 * S;
        assert_eq!(
            book.next_due().unwrap().min(grace_end),
            book.next_due().unwrap()
        );
        // Later answers without it do not extend its grace.
        let t2 = t1 + 300 * S;
        assert!(
            book.apply(&ok("a.example", &["198.18.0.2"], 60), t2)
                .is_empty()
        );
        assert!(book.expire(grace_end - S).is_empty());
        let c = book.expire(grace_end);
        assert_eq!(c.removed, vec![m("p", 0, "198.18.0.1")]);
        assert_eq!(book.mappings().len(), 1);
    }

    #[test]
    fn reappearing_address_cancels_grace() {
        let mut book = AddressBook::new(settings());
        book.set_uses(uses(&[("p", 0, "a.example")]), t0());
        book.apply(&ok("a.example", &["198.18.0.1"], 60), t0());
        book.apply(&ok("a.example", &["198.18.0.2"], 60), t0() + 60 * S);
        book.apply(&ok("a.example", &["198.18.0.1"], 60), t0() + 120 * S);
        assert!(
            book.entries()
                .all(|e| e.address.to_string() == "198.18.0.2" || e.remove_at.is_none())
        );
        assert!(book.expire(t0() + 661 * S).is_empty());
    }

    #[test]
    fn zero_grace_removes_at_once() {
        let mut book = AddressBook::new(BookSettings {
            grace: Duration::ZERO,
            ..settings()
        });
        book.set_uses(uses(&[("p", 0, "a.example")]), t0());
        book.apply(&ok("a.example", &["198.18.0.1"], 60), t0());
        let c = book.apply(&ok("a.example", &["198.18.0.2"], 60), t0() + S);
        assert_eq!(c.removed, vec![m("p", 0, "198.18.0.1")]);
        assert_eq!(c.added, vec![m("p", 0, "198.18.0.2")]);
    }

    #[test]
    fn failures_and_rejections_change_nothing_but_the_retry() {
        let mut book = AddressBook::new(settings());
        book.set_uses(uses(&[("p", 0, "a.example")]), t0());
        book.apply(&ok("a.example", &["198.18.0.1"], 60), t0());
        let before = book.mappings();
        let t1 = t0() + 100 * S;
        assert!(book.apply(&failed("a.example"), t1).is_empty());
        assert_eq!(book.refresh_at("a.example"), Some(t1 + 5 * S));
        assert!(book.apply(&failed("a.example"), t1).is_empty());
        assert_eq!(book.refresh_at("a.example"), Some(t1 + 10 * S));
        for _ in 0..10 {
            book.apply(&failed("a.example"), t1);
        }
        assert_eq!(book.refresh_at("a.example"), Some(t1 + 60 * S));
        let rejected = NameResolution {
            name: "a.example".into(),
            outcome: LookupResult::Rejected(Rejection {
                reason: RejectReason::NeverBlock,
                offending: "127.0.0.1".into(),
                detail: "x".into(),
                cname_chain: vec![],
                addresses: vec!["127.0.0.1".parse().unwrap()],
            }),
            elapsed: Duration::ZERO,
        };
        assert!(book.apply(&rejected, t1).is_empty());
        // Long after every TTL and grace, the last good address is still there.
        assert!(book.expire(t1 + 100_000 * S).is_empty());
        assert_eq!(book.mappings(), before);
    }

    #[test]
    fn one_family_answered_keeps_the_other() {
        let mut book = AddressBook::new(settings());
        book.set_uses(uses(&[("p", 0, "a.example")]), t0());
        book.apply(&ok("a.example", &["198.18.0.1", "2001:db8::1"], 60), t0());
        let mut v4_only = ok("a.example", &["198.18.0.2"], 60);
        if let LookupResult::Ok(a) = &mut v4_only.outcome {
            a.ipv6 = false;
        }
        book.apply(&v4_only, t0() + S);
        let c = book.expire(t0() + 700 * S);
        assert_eq!(c.removed, vec![m("p", 0, "198.18.0.1")]);
        assert!(book.mappings().contains(&m("p", 0, "2001:db8::1")));
    }

    #[test]
    fn shared_addresses_across_names_and_uses() {
        let mut book = AddressBook::new(BookSettings {
            grace: Duration::ZERO,
            ..settings()
        });
        book.set_uses(
            uses(&[
                ("p", 0, "a.example"),
                ("p", 0, "b.example"),
                ("q", 1, "a.example"),
            ]),
            t0(),
        );
        assert_eq!(book.platforms_of("a.example"), vec!["p", "q"]);
        let c = book.apply(&ok("a.example", &["198.18.0.1"], 60), t0());
        assert_eq!(
            c.added,
            vec![m("p", 0, "198.18.0.1"), m("q", 1, "198.18.0.1")]
        );
        let c = book.apply(&ok("b.example", &["198.18.0.1"], 60), t0());
        assert!(c.is_empty(), "already enforced for p/0 through a.example");
        // a.example drops it: p/0 still has it through b.example, q/1 loses it.
        let c = book.apply(&ok("a.example", &["198.18.0.9"], 60), t0() + S);
        assert_eq!(c.removed, vec![m("q", 1, "198.18.0.1")]);
        assert_eq!(
            c.added,
            vec![m("p", 0, "198.18.0.9"), m("q", 1, "198.18.0.9")]
        );
    }

    #[test]
    fn set_uses_adds_and_drops() {
        let mut book = AddressBook::new(settings());
        book.set_uses(uses(&[("p", 0, "a.example")]), t0());
        book.apply(&ok("a.example", &["198.18.0.1"], 60), t0());
        // A new platform using a known name gets its addresses at once; the name is not due.
        let c = book.set_uses(uses(&[("p", 0, "a.example"), ("q", 0, "A.Example.")]), t0());
        assert_eq!(c.added, vec![m("q", 0, "198.18.0.1")]);
        assert!(book.due_names(t0()).is_empty());
        let c = book.set_uses(uses(&[("q", 0, "b.example")]), t0());
        assert_eq!(
            c.removed,
            vec![m("p", 0, "198.18.0.1"), m("q", 0, "198.18.0.1")]
        );
        assert_eq!(book.names().collect::<Vec<_>>(), vec!["b.example"]);
        // Answers for names that left the book are ignored.
        assert!(
            book.apply(&ok("a.example", &["198.18.0.1"], 60), t0())
                .is_empty()
        );
    }

    #[test]
    fn change_merge_cancels() {
        let mut c = Change {
            added: vec![m("p", 0, "198.18.0.1")],
            removed: vec![],
        };
        c.merge(Change {
            added: vec![m("p", 0, "198.18.0.2")],
            removed: vec![m("p", 0, "198.18.0.1")],
        });
        assert_eq!(c.added, vec![m("p", 0, "198.18.0.2")]);
        assert!(c.removed.is_empty());
    }

    #[test]
    fn refresh_fraction_is_in_range() {
        for name in ["a", "zoom.us", "www.example.com", "x.y.z"] {
            let p = refresh_permille(name);
            assert!((800..=900).contains(&p));
        }
    }
}
