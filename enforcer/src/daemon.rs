//! What the running daemon holds, and how its sets reach the datapath: the policy's published
//! prefixes plus the addresses DNS gave for its domains, compiled together and applied as a diff.

use std::collections::HashMap;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aya::maps::{MapData, RingBuf};
use ipnet::IpNet;
use tokio::sync::Notify;

use crate::compile::{self, CompileError, CompiledPolicy, EntryAddress};
use crate::datapath::attach::Attached;
use crate::datapath::{ApplyStats, Datapath, DatapathError};
use crate::learn::{CapturedMessage, DomainPatterns, LearnedSet, Learner, Reinjector};
use crate::never_block::NeverBlock;
use crate::platform_ids::{IdsError, PlatformIds};
use crate::policy::managed::{self, ManagedError, ManagedPlatform};
use crate::policy::{self, LoadOptions, MANAGED_FILE, Policy, PolicyError};
use crate::resolve::{self, AddressBook, ResolveMetrics, Resolver, StateError};

/// Shortest and longest sleep of the refresh loop between looks at the address book.
const MIN_IDLE: Duration = Duration::from_millis(100);
const MAX_IDLE: Duration = Duration::from_secs(5);

/// What the daemon holds while it runs.
pub struct DaemonState {
    pub datapath: Datapath,
    pub policy: Policy,
    pub compiled: CompiledPolicy,
    pub attached: Vec<Attached>,
    pub last_policy_update: SystemTime,
    /// Addresses resolved for the policy's exact domains, with provenance and timing.
    pub book: AddressBook,
    pub resolve_metrics: ResolveMetrics,
    /// Where `book` is saved after every change.
    pub state_dir: PathBuf,
    /// DNS may never make these blocked; also re-checked for addresses read from the state file,
    /// which may predate a `--never-block` the operator added since.
    pub never_block: NeverBlock,
    /// `--rules` and how it is loaded, for `reload`, `rules` and the file watcher.
    pub rules_path: PathBuf,
    pub load_options: LoadOptions,
    pub reloads_ok: u64,
    pub reloads_error: u64,
    /// Wakes the refresh loop when a new policy brings names to resolve.
    pub wake: Arc<Notify>,
    /// The policy files as last read, so the watcher reloads only on a real change.
    pub files_seen: Fingerprint,
    /// Addresses learned from DNS answers crossing the gateway.
    pub learner: Learner,
    /// Lasting platform ids (counters are keyed by them).
    pub ids: PlatformIds,
    /// The learned set changed since it was last saved.
    pub learned_dirty: bool,
}

/// Names, sizes and modification times of a policy's files.
pub type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

/// How often the policy files are looked at.
const WATCH_INTERVAL: Duration = Duration::from_millis(100);

/// The fingerprint of `--rules`: the file, or the directory's `*.yaml` files.
pub fn fingerprint(path: &Path) -> Fingerprint {
    let stat = |p: PathBuf| {
        let meta = std::fs::metadata(&p).ok();
        let size = meta.as_ref().map_or(0, std::fs::Metadata::len);
        let modified = meta.and_then(|m| m.modified().ok());
        (p, size, modified)
    };
    if !path.is_dir() {
        return vec![stat(path.to_path_buf())];
    }
    let mut files: Fingerprint = std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.starts_with('.') && n.ends_with(".yaml"))
        })
        .map(stat)
        .collect();
    files.sort();
    files
}

/// Reloads the policy whenever its files change (an invalid change is refused and logged; the
/// running policy stays). Runs until the task is dropped.
pub async fn watch_policy(state: Arc<Mutex<DaemonState>>) {
    loop {
        tokio::time::sleep(WATCH_INTERVAL).await;
        let path = match state.lock() {
            Ok(s) => s.rules_path.clone(),
            Err(_) => return,
        };
        let now = fingerprint(&path);
        let Ok(mut s) = state.lock() else { return };
        if s.files_seen != now {
            let _ = s.reload("policy files changed");
        }
    }
}

/// What a successful policy change did, for the operator.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PolicyChange {
    pub platforms: usize,
    pub prefixes_v4: usize,
    pub prefixes_v6: usize,
    pub inserted: usize,
    pub updated: usize,
    pub removed: usize,
    pub policy_digest: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Enforce(#[from] EnforceError),
    #[error("--rules {0} is a single file: `enforcer rules` needs a policy directory")]
    NotADirectory(PathBuf),
    #[error("{0}")]
    Managed(#[from] ManagedError),
    #[error(transparent)]
    Ids(#[from] IdsError),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum EnforceError {
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error(transparent)]
    Datapath(#[from] DatapathError),
}

impl DaemonState {
    /// Compiles the policy's prefixes and the book's addresses and makes the maps enforce them.
    /// The datapath applies it as a diff, additions before removals, so an address that stays
    /// blocked is never let through; on an error the maps keep at least what they had.
    pub fn enforce(&mut self) -> Result<ApplyStats, EnforceError> {
        let addresses = dns_addresses(
            &self.policy,
            &self.book,
            &self.learner.set,
            &self.never_block,
        );
        let compiled = compile::compile_with(&self.policy, addresses)?;
        let stats = self.datapath.apply(&compiled)?;
        self.compiled = compiled;
        Ok(stats)
    }

    /// The book's addresses as compiler input (see [`dns_addresses`]).
    pub fn entry_addresses(&self) -> Vec<EntryAddress> {
        dns_addresses(
            &self.policy,
            &self.book,
            &self.learner.set,
            &self.never_block,
        )
    }

    /// Re-reads `--rules` and installs it; on any error the running policy stays.
    pub fn reload(&mut self, why: &str) -> Result<PolicyChange, ReloadError> {
        self.files_seen = fingerprint(&self.rules_path);
        let loaded =
            policy::load_policy(std::slice::from_ref(&self.rules_path), &self.load_options);
        let result = loaded
            .map_err(ReloadError::from)
            .and_then(|policy| self.install(policy, why));
        self.count_reload(why, &result);
        result
    }

    /// Edits the managed file of the policy directory, checks the whole resulting policy, and
    /// only then writes the file and installs the policy.
    pub fn edit_managed(
        &mut self,
        why: &str,
        edit: impl FnOnce(&mut Vec<ManagedPlatform>) -> Result<(), ManagedError>,
    ) -> Result<PolicyChange, ReloadError> {
        let result = self.try_edit_managed(why, edit);
        self.count_reload(why, &result);
        result
    }

    fn try_edit_managed(
        &mut self,
        why: &str,
        edit: impl FnOnce(&mut Vec<ManagedPlatform>) -> Result<(), ManagedError>,
    ) -> Result<PolicyChange, ReloadError> {
        let dir = self.rules_path.clone();
        if !dir.is_dir() {
            return Err(ReloadError::NotADirectory(dir));
        }
        let path = dir.join(MANAGED_FILE);
        let mut platforms = match std::fs::read_to_string(&path) {
            Ok(text) => managed::from_parsed(policy::read_managed(&path, &text)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(PolicyError::Io { path, source }.into()),
        };
        edit(&mut platforms)?;
        let text = managed::render(&platforms);
        let policy = policy::load_policy_with_managed(&dir, Some(&text), &self.load_options)?;
        crate::fsutil::write_atomically(&path, text.as_bytes()).map_err(|source| {
            ReloadError::Write {
                path: path.clone(),
                source,
            }
        })?;
        self.files_seen = fingerprint(&self.rules_path);
        self.install(policy, why)
    }

    fn count_reload<T>(&mut self, why: &str, result: &Result<T, ReloadError>) {
        match result {
            Ok(_) => self.reloads_ok += 1,
            Err(error) => {
                self.reloads_error += 1;
                tracing::error!(%error, "{why}: policy refused; the running policy stays");
            }
        }
    }

    /// Switches to `policy`: the book follows its names, the new sets are compiled beside the
    /// running ones and applied in one step. Nothing changes when any step fails.
    pub fn install(&mut self, mut policy: Policy, why: &str) -> Result<PolicyChange, ReloadError> {
        let now = SystemTime::now();
        let mut ids = self.ids.clone();
        for id in ids.assign(&mut policy, &self.policy)? {
            self.datapath
                .clear_platform_counters(id)
                .map_err(EnforceError::from)?;
        }
        let mut book = self.book.clone();
        let names = book.set_uses(resolve::policy_uses(&policy), now);
        let mut learned = self.learner.set.clone();
        let patterns = DomainPatterns::from_policy(&policy);
        let forgotten = learned.retain_uses(|u| patterns.has_use(u));
        let addresses = dns_addresses(&policy, &book, &learned, &self.never_block);
        let compiled = compile::compile_with(&policy, addresses).map_err(EnforceError::from)?;
        let stats = self.datapath.apply(&compiled).map_err(EnforceError::from)?;
        let change = PolicyChange {
            platforms: policy.platforms.len(),
            prefixes_v4: compiled.v4.len(),
            prefixes_v6: compiled.v6.len(),
            inserted: stats.inserted,
            updated: stats.updated,
            removed: stats.removed,
            policy_digest: policy_digest(&policy),
        };
        tracing::info!(
            platforms = change.platforms,
            prefixes_v4 = change.prefixes_v4,
            prefixes_v6 = change.prefixes_v6,
            inserted = change.inserted,
            updated = change.updated,
            removed = change.removed,
            dns_added = names.added.len(),
            dns_removed = names.removed.len(),
            digest = %change.policy_digest,
            "{why}: policy applied"
        );
        self.resolve_metrics
            .register_platforms(policy.platforms.iter().map(|p| p.name.as_str()));
        self.policy = policy;
        self.book = book;
        if ids != self.ids {
            self.ids = ids;
            if let Err(error) = self.ids.save(&self.state_dir) {
                tracing::error!(%error, "saving the platform ids failed");
            }
        }
        self.learner.replace(patterns, learned);
        if !forgotten.is_empty() {
            self.learned_dirty = true;
        }
        self.compiled = compiled;
        self.last_policy_update = now;
        self.save_book();
        self.wake.notify_one();
        Ok(change)
    }
}

/// A short, stable digest of what a policy enforces (names, actions, entries; not comments or
/// file layout), so that two gateways can be compared at a glance.
pub fn policy_digest(policy: &Policy) -> String {
    // FNV-1a over a canonical rendering: not cryptographic, only an identity for humans.
    let mut canonical = String::new();
    for p in &policy.platforms {
        canonical.push_str(&format!("{}|{}\n", p.name, p.action));
        for e in &p.entries {
            let domains: Vec<String> = e.domains.iter().map(ToString::to_string).collect();
            let prefixes: Vec<String> = e.prefixes.iter().map(ToString::to_string).collect();
            let ports: Vec<String> = e.ports.iter().map(ToString::to_string).collect();
            canonical.push_str(&format!(
                "{}|{}|{}|{}\n",
                domains.join(","),
                prefixes.join(","),
                e.protocol.as_str(),
                ports.join(",")
            ));
        }
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in canonical.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

impl DaemonState {
    /// Writes the book to the state directory; a failure is logged, enforcement goes on.
    pub fn save_book(&self) {
        if let Err(error) = self.book.save(&self.state_dir) {
            log_state_error(&error);
        }
    }

    /// Writes the learned addresses when they changed since the last save.
    pub fn save_learned(&mut self) {
        if !self.learned_dirty {
            return;
        }
        match self.learner.set.save(&self.state_dir) {
            Ok(()) => self.learned_dirty = false,
            Err(error) => tracing::error!(
                %error,
                "saving the learned addresses failed; enforcement is unchanged"
            ),
        }
    }

    /// DNS messages seen on the attached interfaces, in order: what believed answers for banned
    /// names teach is enforced, in one step, before this returns.
    pub fn observe_dns(&mut self, messages: &[CapturedMessage]) -> usize {
        let (now, mono) = (SystemTime::now(), std::time::Instant::now());
        let mut added = Vec::new();
        for message in messages {
            let outcome =
                self.learner
                    .observe(&message.observed(), now, mono, &self.resolve_metrics);
            added.extend(outcome.added);
        }
        if added.is_empty() {
            return 0;
        }
        self.learned_dirty = true;
        // Fast path: only the new host keys are written; anything unusual recompiles everything.
        let hosts: Vec<EntryAddress> = added
            .iter()
            .filter(|m| !self.never_block.contains(m.address))
            .filter_map(|m| {
                Some(EntryAddress {
                    platform: self
                        .policy
                        .platforms
                        .iter()
                        .position(|p| p.name == m.platform)?,
                    entry: m.entry,
                    net: IpNet::from(m.address),
                })
            })
            .collect();
        let written = compile::add_hosts(&mut self.compiled, &self.policy, &hosts)
            .map_err(EnforceError::from)
            .and_then(|changed| {
                self.datapath
                    .write_hosts(&self.compiled, &changed)
                    .map_err(EnforceError::from)
            });
        match written {
            // Per batch, so at debug level: at thousands of answers a second this would flood.
            Ok(count) => tracing::debug!(
                learned = added.len(),
                written = count,
                elapsed_us = mono.elapsed().as_micros() as u64,
                "learned from DNS: addresses enforced"
            ),
            Err(error) => {
                tracing::warn!(%error, "learned addresses: recompiling the whole policy");
                enforce_after(self, "learned from DNS", added.len(), 0);
            }
        }
        added.len()
    }
}

/// The book's addresses as compiler input, minus any inside the never-block list.
fn dns_addresses(
    policy: &Policy,
    book: &AddressBook,
    learned: &LearnedSet,
    never_block: &NeverBlock,
) -> Vec<EntryAddress> {
    let index: HashMap<&str, usize> = policy
        .platforms
        .iter()
        .enumerate()
        .map(|(i, p)| (p.name.as_str(), i))
        .collect();
    let mut refused = 0usize;
    let resolved = book.mappings();
    let addresses = resolved
        .iter()
        .chain(learned.mappings())
        .filter_map(|m| {
            if never_block.contains(m.address) {
                refused += 1;
                return None;
            }
            Some(EntryAddress {
                platform: *index.get(m.platform.as_str())?,
                entry: m.entry,
                net: IpNet::from(m.address),
            })
        })
        .collect();
    if refused > 0 {
        tracing::warn!(
            refused,
            "known addresses inside the never-block list were not enforced"
        );
    }
    addresses
}

fn log_state_error(error: &StateError) {
    tracing::error!(%error, "saving the resolved addresses failed; enforcement is unchanged");
}

/// Enforces the book after `what` changed it, logging what moved.
fn enforce_after(state: &mut DaemonState, what: &str, added: usize, removed: usize) {
    let started = std::time::Instant::now();
    match state.enforce() {
        Ok(stats) => tracing::info!(
            added,
            removed,
            inserted = stats.inserted,
            updated = stats.updated,
            deleted = stats.removed,
            prefixes_v4 = state.compiled.v4.len(),
            prefixes_v6 = state.compiled.v6.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "{what}: DNS addresses applied"
        ),
        Err(error) => tracing::error!(
            %error,
            added,
            removed,
            "{what}: applying DNS addresses failed; the sets in force stay as they were"
        ),
    }
}

/// Keeps the book's names resolved: resolves the names that are due (outside the lock), folds the
/// answers into the book, applies what changed to the datapath and saves the state. Runs until
/// the task is dropped.
pub async fn refresh_loop(state: Arc<Mutex<DaemonState>>, resolver: Arc<Resolver>) {
    let wake = match state.lock() {
        Ok(s) => Arc::clone(&s.wake),
        Err(_) => return,
    };
    let mut last_learned_save = std::time::Instant::now();
    loop {
        let now = SystemTime::now();
        let due = match state.lock() {
            Ok(s) => s.book.due_names(now),
            Err(_) => return,
        };
        if due.is_empty() {
            let Ok(mut guard) = state.lock() else { return };
            let s = &mut *guard;
            let change = s.book.expire(now);
            let forgotten = s.learner.expire(now);
            if !forgotten.is_empty() {
                s.learned_dirty = true;
            }
            if !change.is_empty() || !forgotten.is_empty() {
                let removed = change.removed.len() + forgotten.len();
                enforce_after(s, "expired", change.added.len(), removed);
                s.save_book();
            }
        } else {
            let resolutions = resolver.resolve_many(due).await;
            let Ok(mut guard) = state.lock() else { return };
            let s = &mut *guard;
            let change =
                resolve::apply_round(&mut s.book, &s.resolve_metrics, &resolutions, now_or(now));
            if !change.is_empty() {
                enforce_after(s, "refresh", change.added.len(), change.removed.len());
            }
            // The schedule moved even when the addresses did not.
            s.save_book();
        }
        // At thousands of answers a second the set is always dirty: saving it (a copy under the
        // lock) every turn of this loop would stall learning, so at most every few seconds.
        if last_learned_save.elapsed() >= LEARNED_SAVE_EVERY {
            save_learned_outside_lock(&state);
            last_learned_save = std::time::Instant::now();
        }
        let next = match state.lock() {
            Ok(s) => [s.book.next_due(), s.learner.next_expiry()]
                .into_iter()
                .flatten()
                .min(),
            Err(_) => return,
        };
        let idle = next
            .and_then(|t| t.duration_since(SystemTime::now()).ok())
            .unwrap_or(MIN_IDLE)
            .clamp(MIN_IDLE, MAX_IDLE);
        tokio::select! {
            _ = tokio::time::sleep(idle) => {}
            _ = wake.notified() => {}
        }
    }
}

/// How often changed learned addresses are written to the state directory (and at exit).
const LEARNED_SAVE_EVERY: Duration = Duration::from_secs(5);

/// Saves the learned addresses when they changed: copied under the lock, written outside it,
/// so that learning (which needs the lock) never waits for the disk.
fn save_learned_outside_lock(state: &Mutex<DaemonState>) {
    let snapshot = match state.lock() {
        Ok(mut s) if s.learned_dirty => {
            s.learned_dirty = false;
            Some((s.learner.set.clone(), s.state_dir.clone()))
        }
        _ => None,
    };
    if let Some((set, dir)) = snapshot
        && let Err(error) = set.save(&dir)
    {
        tracing::error!(%error, "saving the learned addresses failed; enforcement is unchanged");
        if let Ok(mut s) = state.lock() {
            s.learned_dirty = true;
        }
    }
}

/// Reads the DNS messages the datapath copies and feeds them to the learner, a batch per
/// wake-up, then sends the held responses on. Runs on its own thread (blocking in poll(2) on
/// the ring buffer): a held response waits for this loop, so it must not queue behind the async
/// tasks. Returns when `stop` is set (checked at least every 200 ms).
pub fn learn_thread(
    state: Arc<Mutex<DaemonState>>,
    mut ring: RingBuf<MapData>,
    reinjector: Option<Reinjector>,
    stop: Arc<AtomicBool>,
) {
    let fd = ring.as_raw_fd();
    while !stop.load(Ordering::Relaxed) {
        let mut poll = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the ring buffer's descriptor, which `ring` keeps open.
        let ready = unsafe { libc::poll(&mut poll, 1, 200) };
        if ready < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() != std::io::ErrorKind::Interrupted {
                tracing::error!(%error, "the DNS ring buffer failed; wildcards are no longer learned");
                return;
            }
        }
        // One message at a time: a held response goes on as soon as its own answer is in force,
        // not after everything else that arrived with it.
        while let Some(record) = ring.next() {
            let Some(message) = CapturedMessage::decode(&record) else {
                tracing::debug!(len = record.len(), "short DNS record skipped");
                continue;
            };
            drop(record);
            {
                let Ok(mut s) = state.lock() else { return };
                s.observe_dns(std::slice::from_ref(&message));
            }
            if message.held {
                match &reinjector {
                    Some(r) => {
                        if let Err(error) = r.send(&message) {
                            tracing::warn!(%error, dst = %message.dst, "a held DNS response could not be sent on");
                        }
                    }
                    None => tracing::warn!("a DNS response was held without a way to send it on"),
                }
            }
        }
    }
}

/// How far ahead the hold deadline is pushed, and how often.
const HOLD_AHEAD: Duration = Duration::from_secs(3);
const HOLD_EVERY: Duration = Duration::from_secs(1);

/// Keeps the datapath holding DNS responses while this daemon runs (and can send them on): the
/// deadline is pushed ahead every second, so holding stops by itself within seconds of the
/// daemon's death instead of cutting clients off DNS.
pub async fn hold_heartbeat(state: Arc<Mutex<DaemonState>>) {
    loop {
        let deadline = monotonic_ns().saturating_add(HOLD_AHEAD.as_nanos() as u64);
        if let Ok(mut s) = state.lock()
            && let Err(error) = s.datapath.set_dns_hold(deadline)
        {
            tracing::warn!(%error, "cannot keep holding DNS responses");
        }
        tokio::time::sleep(HOLD_EVERY).await;
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// The current time, never earlier than `before` (answers are stamped when they arrived).
fn now_or(before: SystemTime) -> SystemTime {
    SystemTime::now().max(before)
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::learn::LearnedEntry;
    use crate::never_block::Origin;
    use crate::resolve::{BookSettings, Use};

    #[test]
    fn restored_addresses_inside_the_never_block_list_are_not_enforced() {
        let policy = policy::parse_policy_str(
            Path::new("p.yaml"),
            "platform: zoom\nmatch:\n  - domains: [\"*.zoom.us\"]\n",
            &LoadOptions::default(),
        )
        .unwrap();
        // As read from the state directory: one address since added to --never-block, one of
        // a DNS server clients use, one ordinary.
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let mut learned = LearnedSet::default();
        learned.learn(
            &[Use {
                platform: "zoom".into(),
                entry: 0,
            }],
            &[
                (ip("198.18.5.1"), 60),
                (ip("198.18.5.53"), 60),
                (ip("198.18.5.9"), 60),
            ],
            &LearnedEntry {
                name: "a.zoom.us".into(),
                cname_chain: Vec::new(),
                resolver: ip("198.18.2.2"),
                remove_at: SystemTime::now() + Duration::from_secs(60),
            },
        );
        let never_block =
            NeverBlock::builtin().with([("198.18.5.0/30".parse().unwrap(), Origin::Configured)]);
        never_block.note_dns_server(ip("198.18.5.53"));
        let book = AddressBook::new(BookSettings {
            ttl_floor: Duration::from_secs(60),
            ttl_ceiling: Duration::from_secs(3600),
            grace: Duration::ZERO,
        });
        let enforced: Vec<IpNet> = dns_addresses(&policy, &book, &learned, &never_block)
            .into_iter()
            .map(|a| a.net)
            .collect();
        assert_eq!(enforced, vec!["198.18.5.9/32".parse::<IpNet>().unwrap()]);
    }
}
