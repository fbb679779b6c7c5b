//! The daemon (`enforcer run`): start-up, the state it owns, and the tasks that keep it current.
//! Loads the policy, programs the maps, attaches to the interfaces and keeps enforcing until
//! SIGTERM. Exiting leaves everything pinned (fail-static).
//!
//! Everything the daemon holds lives in one [`State`] behind one mutex, reached only through its
//! methods. Work that compiles or applies a policy runs on blocking threads, never on the async
//! workers that serve the control socket and the metrics.

mod bundle;
mod collateral;
mod history;
mod report;
mod rules;
mod state;
mod tasks;
mod watch;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use tokio::sync::Notify;

pub use bundle::BundleMode;
pub use history::write_files as write_rule_files;
pub use state::{EnforceError, ReloadError, Reloads, State, policy_digest};

/// Distinct collateral names per platform of the policy in force (see `collateral`).
pub fn collateral_name_counts(state: &State) -> std::collections::BTreeMap<String, usize> {
    collateral::name_counts(&state.collateral())
}

use crate::connections::{self, Gate};
use crate::control::protocol::PolicyChange;
use crate::control::{self, server::ServerError};
use crate::datapath::Reinjector;
use crate::datapath::attach::{self, AttachError};
use crate::datapath::bpffs::{self, BpffsError};
use crate::datapath::{Datapath, DatapathError};
use crate::history::{History, Source};
use crate::learn::{DomainPatterns, LearnedSet, Learner, Role, Trust};
use crate::metrics::{self, MetricsError};
use crate::never_block::{NeverBlock, NeverBlockError, Origin};
use crate::platform_ids::{IdsError, PlatformIds};
use crate::policy::{self, LoadOptions, Policy, PolicyError, RuleTexts};
use crate::resolve::{
    self, AddressBook, BookSettings, Guard, ResolveMetrics, Resolver, ResolverAddrError,
    ResolverConfig, ResolverError,
};
use crate::settings::Settings;
use crate::sys::privileges;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("policy refused, nothing was changed:\n{0}")]
    Policy(#[from] PolicyError),
    #[error("policy refused, nothing was changed: {0}")]
    Enforce(#[from] EnforceError),
    #[error("--resolver {0}")]
    ResolverAddress(#[from] ResolverAddrError),
    #[error("resolver: {0}")]
    Resolver(#[from] ResolverError),
    #[error(transparent)]
    NeverBlock(#[from] NeverBlockError),
    #[error(transparent)]
    Bpffs(#[from] BpffsError),
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    #[error(transparent)]
    Attach(#[from] AttachError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    Control(#[from] ServerError),
    #[error(transparent)]
    Ids(#[from] IdsError),
    #[error("starting the runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Follow(#[from] crate::bundle::follow::FollowError),
    #[error("bundle: {0}")]
    Bundle(#[from] crate::bundle::BundleError),
    #[error(
        "the bundle in force claims digest {claimed} but its files make policy {actual}; refusing it"
    )]
    BundleDigest { claimed: String, actual: String },
}

/// A handle on the daemon's state, shared by the control socket, the metrics and the tasks.
#[derive(Clone)]
pub struct Daemon {
    state: Arc<Mutex<State>>,
    /// Held through a whole reload (read, then switch), so that two reloads never cross and
    /// an older read is never installed over a newer one. The state lock is not held while
    /// reading.
    reloading: Arc<Mutex<()>>,
    /// Wakes the refresh loop when a policy change brings names to resolve (the state holds the
    /// other end, so waiting for it needs no lock).
    wake: Arc<Notify>,
}

/// Environment variable that switches holding DNS responses off (`off`).
pub const HOLD_ENV: &str = "ENFORCER_HOLD";

const POISONED: &str = "the daemon's state is poisoned (a task panicked); restart it";

impl Daemon {
    fn new(state: State, wake: Arc<Notify>) -> Self {
        Self {
            state: Arc::new(Mutex::new(state)),
            reloading: Arc::new(Mutex::new(())),
            wake,
        }
    }

    fn lock(&self) -> Option<MutexGuard<'_, State>> {
        self.state.lock().ok()
    }

    /// For unit tests: a daemon state enforcing the policy directory `dir/rules` in a fresh
    /// directory named after `name`: platform `a` (198.18.1.0/24) in `a.yaml`, plus `files`;
    /// `None` where the XDP program cannot be loaded (not root).
    #[cfg(test)]
    pub(crate) fn for_test(
        name: &str,
        files: &[(&str, &str)],
    ) -> Option<(Self, std::path::PathBuf)> {
        let datapath = crate::datapath::Datapath::load_for_test()?;
        let dir = std::env::temp_dir().join(format!("enforcer-{name}-{}", std::process::id()));
        let rules = dir.join("rules");
        std::fs::create_dir_all(&rules).ok()?;
        let a = (
            "a.yaml",
            "platform: a\nmatch:\n  - prefixes: [198.18.1.0/24]\n",
        );
        for (file, text) in std::iter::once(&a).chain(files) {
            std::fs::write(rules.join(file), text).ok()?;
        }
        let (policy, texts) =
            crate::policy::load_policy_and_texts(&rules, &crate::policy::LoadOptions::default())
                .unwrap_or_else(|e| panic!("{e}"));
        let settings = crate::resolve::BookSettings {
            ttl_floor: Duration::from_secs(60),
            ttl_ceiling: Duration::from_secs(3600),
            grace: Duration::ZERO,
        };
        let mut parts = state::Parts::for_test(datapath, policy, settings, &dir);
        parts.texts = texts;
        let wake = Arc::clone(&parts.wake);
        let (state, _) = State::new(parts).unwrap_or_else(|e| panic!("{e}"));
        Some((Self::new(state, wake), dir))
    }

    /// For unit tests: the names of the platforms in force.
    #[cfg(test)]
    pub(crate) fn platform_names(&self) -> Vec<String> {
        self.lock()
            .map(|s| {
                s.policy()
                    .platforms
                    .iter()
                    .map(|p| p.name.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The state if nobody holds it now (`None` also when poisoned).
    fn try_lock(&self) -> Option<MutexGuard<'_, State>> {
        self.state.try_lock().ok()
    }

    /// Runs `f` on the state (blocking): for the control handlers, which answer with errors.
    pub fn with<R>(
        &self,
        f: impl FnOnce(&mut State) -> Result<R, Vec<String>>,
    ) -> Result<R, Vec<String>> {
        match self.state.lock() {
            Ok(mut state) => f(&mut state),
            Err(_) => Err(vec![POISONED.to_owned()]),
        }
    }

    /// Runs `f` on the state on a blocking thread, so compiling and applying a policy never
    /// stalls the async workers. None when the state is poisoned or the task failed.
    pub async fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut State) -> R + Send + 'static,
    ) -> Option<R> {
        let daemon = self.clone();
        tokio::task::spawn_blocking(move || daemon.lock().map(|mut s| f(&mut s)))
            .await
            .ok()
            .flatten()
    }

    /// Re-reads `--rules` and installs it (blocking). The files are read, parsed and validated
    /// without holding the state, which is locked only to switch, so a large or slow policy
    /// never stalls status, metrics or DNS learning. Files that change while being read are
    /// not installed. On any error the running policy stays; the errors are one line each.
    /// `source` and `user` go into the history.
    pub fn reload(
        &self,
        why: &str,
        source: Source,
        user: &str,
    ) -> Result<PolicyChange, Vec<String>> {
        self.reload_if(why, source, user, false)
            .and_then(|change| change.ok_or_else(|| vec!["nothing was reloaded".to_owned()]))
    }

    /// The watcher's reload: nothing when the files are (again) those last applied, as after a
    /// `rollback` or `rules add` that wrote them while the watcher was waiting for them to
    /// settle, so it never re-applies what was just applied.
    pub fn reload_changed(&self) -> Result<Option<PolicyChange>, Vec<String>> {
        self.reload_if(
            "policy files changed",
            Source::Watcher,
            crate::history::DAEMON_USER,
            true,
        )
    }

    fn reload_if(
        &self,
        why: &str,
        source: Source,
        user: &str,
        only_if_changed: bool,
    ) -> Result<Option<PolicyChange>, Vec<String>> {
        let _one_at_a_time = self
            .reloading
            .lock()
            .map_err(|_| vec![POISONED.to_owned()])?;
        let (path, options) = self.with(|s| Ok(s.reload_source()))?;
        let seen = watch::fingerprint(&path);
        if only_if_changed && self.with(|s| Ok(*s.files_seen() == seen))? {
            return Ok(None);
        }
        let loaded = read_policy_and_texts(&path, &options)
            .map_err(ReloadError::from)
            .and_then(|loaded| {
                if watch::fingerprint(&path) == seen {
                    Ok(loaded)
                } else {
                    Err(ReloadError::Changing)
                }
            });
        let result = self.with(|s| {
            s.install_loaded(seen, loaded, why, source, user)
                .map(Some)
                .map_err(|e| e.lines())
        });
        self.record_pending();
        result
    }

    /// Records the policy last applied in the history, outside the state lock (the files may
    /// be large) but inside the reload lock, so versions are recorded in the order applied.
    fn record_pending(&self) {
        if let Ok(Some((history, version))) = self.with(|s| Ok(s.take_pending())) {
            state::record(&history, &version);
        }
    }

    /// The Prometheus exposition of the state.
    pub fn render_metrics(&self) -> Result<String, String> {
        let state = self.lock().ok_or_else(|| POISONED.to_owned())?;
        metrics::render(&state)
    }
}

/// Reads and validates the policy at `paths` as the running daemon can: on a thread without
/// capabilities, so that a file only CAP_DAC_OVERRIDE could read is refused by `run` and `check`
/// alike (the daemon keeps only CAP_BPF, and its unit grants no DAC capability), not found at
/// the first reload.
pub fn read_policy(paths: &[PathBuf], options: &LoadOptions) -> Result<Policy, PolicyError> {
    without_capabilities(|| policy::load_policy(paths, options))
}

/// As [`read_policy`] for the one `--rules` path, with the texts it validated (for the history).
pub fn read_policy_and_texts(
    path: &std::path::Path,
    options: &LoadOptions,
) -> Result<(Policy, RuleTexts), PolicyError> {
    without_capabilities(|| policy::load_policy_and_texts(path, options))
}

/// Runs `load` on a thread without capabilities; a file it may not read is `Unreadable`.
fn without_capabilities<T: Send>(
    load: impl FnOnce() -> Result<T, PolicyError> + Send,
) -> Result<T, PolicyError> {
    let read = || {
        if let Err(error) = privileges::clear_for_this_thread() {
            tracing::warn!(%error, "reading the policy with this process's capabilities");
        }
        load().map_err(|error| match error {
            PolicyError::Io { path, source }
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                PolicyError::Unreadable { path, source }
            }
            other => other,
        })
    };
    std::thread::scope(|scope| match scope.spawn(read).join() {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// Runs the daemon with `settings` until SIGTERM or SIGINT.
pub fn run(settings: Settings) -> Result<(), DaemonError> {
    // First, so that everything below may open what it needs.
    let connections = connections::raise_descriptor_limit();
    let (never_block, servers) = never_block(&settings)?;
    let load_options = LoadOptions {
        never_block: never_block.clone(),
        shared_suffixes: settings.shared_suffixes.clone(),
    };
    // Bundle mode: the last verified bundle (or the repository's, fetched now) becomes the
    // policy directory `settings.rules` points at.
    let bundle = match &settings.bundle {
        Some(b) => {
            let store = crate::bundle::store::Store::new(&settings.state_dir);
            let follower =
                crate::bundle::follow::Follower::new(&b.url, &b.root, &store.datastore())?;
            let (verified, fresh) = bundle::initial(&store, &follower)?;
            Some((store, follower, verified, fresh))
        }
        None => None,
    };
    let (mut policy, texts) = read_policy_and_texts(&settings.rules, &load_options)?;
    if let Some((_, _, verified, _)) = &bundle {
        let actual = policy_digest(&policy);
        if actual != verified.bundle.digest {
            return Err(DaemonError::BundleDigest {
                claimed: verified.bundle.digest.clone(),
                actual,
            });
        }
    }
    let unknown_sites = settings.sites.check_policy(&policy);
    if !unknown_sites.is_empty() {
        return Err(PolicyError::Invalid(unknown_sites).into());
    }
    let mut ids = match PlatformIds::load(&settings.state_dir) {
        Ok((ids, problems)) => {
            for problem in &problems {
                tracing::error!(%problem, "platform ids: a damaged entry");
            }
            ids
        }
        Err(error) => {
            tracing::error!(%error, "the platform ids are unusable; assigning new ones");
            PlatformIds::default()
        }
    };
    let reused_ids = ids.assign(&mut policy, &Policy::default())?;
    if let Err(error) = ids.save(&settings.state_dir) {
        tracing::error!(%error, "saving the platform ids failed");
    }
    let resolver_config = resolver_config(&settings, servers, &never_block);

    // Fail-static across restarts: the last known addresses are enforced before any DNS answer.
    let book_settings = BookSettings::from_config(&resolver_config);
    let mut book = AddressBook::load(&settings.state_dir, book_settings).unwrap_or_else(|error| {
        tracing::error!(%error, "the saved addresses are unusable; starting with those the pinned maps enforce");
        AddressBook::new(book_settings)
    });
    let restored = book.len();
    let now = SystemTime::now();
    book.set_uses(resolve::policy_uses(&policy), now);
    // Enforce what was known, then ask DNS again at once rather than when the saved TTLs end.
    book.refresh_all(now);
    let mut learner = learner(&settings, &policy, &resolver_config, book_settings);
    learner.set_observed_limit(settings.observed_names);
    let resolve_metrics = ResolveMetrics::new();
    resolve_metrics.register_platforms(policy.platforms.iter().map(|p| p.name.as_str()));

    bpffs::ensure(&settings.bpffs)?;
    let mut datapath = Datapath::load_pinned(&settings.bpffs, settings.capacity)?;
    for id in reused_ids {
        datapath.clear_platform_counters(id)?;
    }
    let wake = Arc::new(Notify::new());
    let (mut state, stats) = State::new(state::Parts {
        datapath,
        policy,
        book,
        resolve_metrics,
        state_dir: settings.state_dir.clone(),
        never_block,
        rules_path: settings.rules.clone(),
        load_options,
        learner,
        ids,
        wake: Arc::clone(&wake),
        sites: settings.sites.clone(),
        sites_file: settings.sites_file.clone(),
        history: History::new(&settings.state_dir, settings.history),
        texts,
    })?;
    tracing::info!(
        platforms = state.policy().platforms.len(),
        prefixes_v4 = state.compiled().v4.len(),
        prefixes_v6 = state.compiled().v6.len(),
        names = state.book().len(),
        restored_names = restored,
        restored_addresses = state.book().mappings().len(),
        inserted = stats.inserted,
        updated = stats.updated,
        removed = stats.removed,
        unchanged = stats.unchanged,
        "policy applied"
    );
    state
        .datapath_mut()
        .set_dns_block_ttl(settings.dns_block_ttl)?;
    let attached = attach::attach_all(
        state.datapath_mut().program_mut()?,
        &settings.bpffs,
        &settings.interfaces,
        settings.xdp_mode,
    )?;
    for a in &attached {
        tracing::info!(interface = %a.interface, mode = a.mode.as_str(), adopted = a.adopted, "enforcing");
    }
    state.set_attached(attached);
    let follower = match bundle {
        Some((store, follower, verified, fresh)) => {
            if fresh {
                store.save(&verified)?;
            }
            state.set_bundle_mode(BundleMode::new(&follower_url(&settings), store, verified));
            Some(follower)
        }
        None => None,
    };
    let (roles, trust) = trust(&settings, &resolver_config.servers)?;
    state.set_trust(roles, trust);

    let control_listener = control::server::bind(&settings.socket)?;
    // What puts held DNS responses back; without it responses are not held.
    let reinjector = match state.datapath_mut().reinjector() {
        // The escape hatch should putting frames back misbehave on some driver (and the tests'
        // negative control): answers are then learned as they pass, racing the client.
        Ok(_) if std::env::var_os(HOLD_ENV).is_some_and(|v| v == "off") => {
            tracing::warn!(
                "{HOLD_ENV}=off: DNS responses are not held, so a client may connect to a banned answer before it is learned"
            );
            None
        }
        Ok(r) => Some(r),
        Err(error) => {
            tracing::warn!(%error, "cannot put DNS responses back: they are not held, so a client may connect to a banned answer before it is learned");
            None
        }
    };
    // Loading, pinning and attaching are done: keep only what map updates need.
    match privileges::keep_only(&[privileges::CAP_BPF]) {
        Ok(()) => tracing::info!("capabilities dropped; CAP_BPF kept for map updates"),
        Err(error) => tracing::warn!(%error, "keeping the capabilities the daemon started with"),
    }

    let daemon = Daemon::new(state, wake);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(DaemonError::Runtime)?;
    runtime.block_on(serve(
        &settings,
        &resolver_config,
        control_listener,
        connections,
        reinjector,
        &daemon,
        follower,
    ))?;
    if let Some(mut state) = daemon.lock() {
        state.save_book();
        state.save_learned();
    }
    tracing::info!("stopping; the program, links and maps stay pinned and keep enforcing");
    Ok(())
}

fn follower_url(settings: &Settings) -> String {
    settings
        .bundle
        .as_ref()
        .map(|b| b.url.clone())
        .unwrap_or_default()
}

/// Starts the control socket, the metrics and the background work, and stops them in order on
/// SIGTERM or SIGINT.
async fn serve(
    settings: &Settings,
    resolver_config: &ResolverConfig,
    control_listener: std::os::unix::net::UnixListener,
    connections: usize,
    reinjector: Option<Reinjector>,
    daemon: &Daemon,
    follower: Option<crate::bundle::follow::Follower>,
) -> Result<(), DaemonError> {
    let control_gate = Gate::new("control", connections);
    let control_task = control::server::spawn(control_listener, daemon.clone(), control_gate)?;
    let metrics_task = match settings.metrics {
        Some(addr) => {
            let gate = Gate::new("metrics", connections);
            Some(metrics::spawn(addr, daemon.clone(), gate).await?)
        }
        None => None,
    };
    let resolver = Arc::new(Resolver::new(resolver_config)?);
    tracing::info!(servers = ?resolver.servers(), "resolving the policy's domains");
    // In bundle mode the repository is followed and the files are not watched: they are the
    // daemon's own copy of the bundle in force.
    let watch_task = match (follower, &settings.bundle) {
        (Some(follower), Some(b)) => {
            tracing::info!(url = %b.url, interval_secs = b.interval.as_secs(), "following the bundle repository");
            tokio::spawn(bundle::follow(daemon.clone(), follower, b.interval))
        }
        _ => tokio::spawn(tasks::watch_policy(daemon.clone())),
    };
    let dns_events = daemon
        .lock()
        .and_then(|mut s| s.datapath_mut().take_dns_events());
    let holding = reinjector.is_some();
    let stop_learning = Arc::new(AtomicBool::new(false));
    let learn_thread = match dns_events {
        Some(ring) => {
            let (daemon, stop) = (daemon.clone(), Arc::clone(&stop_learning));
            std::thread::Builder::new()
                .name("learn".into())
                .spawn(move || tasks::learn_thread(&daemon, ring, reinjector, &stop))
                .map_err(DaemonError::Runtime)
                .map(Some)?
        }
        None => None,
    };
    let hold_task = (holding && learn_thread.is_some())
        .then(|| tokio::spawn(tasks::hold_heartbeat(daemon.clone())));
    let refresh_task = tokio::spawn(tasks::refresh_loop(daemon.clone(), resolver));
    wait_for_termination().await.map_err(DaemonError::Runtime)?;
    refresh_task.abort();
    if let Some(task) = hold_task {
        task.abort();
    }
    // Stop holding before the reader goes, so no response waits for a daemon that left.
    if let Some(mut s) = daemon.lock() {
        let _ = s.datapath_mut().set_dns_hold(0);
    }
    stop_learning.store(true, Ordering::Relaxed);
    if let Some(thread) = learn_thread {
        let _ = thread.join();
    }
    watch_task.abort();
    control_task.abort();
    let _ = std::fs::remove_file(&settings.socket);
    if let Some(task) = metrics_task {
        task.abort();
    }
    Ok(())
}

async fn wait_for_termination() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    Ok(())
}

/// The never-block list the daemon enforces with, built once here from `--never-block`, the
/// gateway's addresses and the resolvers' (`--resolver`, else the system's, also returned).
/// `check` builds it here too, so that it validates exactly as the daemon would.
pub fn never_block(settings: &Settings) -> Result<(NeverBlock, Vec<SocketAddr>), DaemonError> {
    let configured = settings
        .resolvers
        .iter()
        .map(|text| resolve::parse_resolver(text))
        .collect::<Result<Vec<_>, _>>()?;
    let servers = resolve::servers(&configured)?;
    let list = NeverBlock::build(&settings.never_block, &servers)?
        .with(settings.learn_from.iter().map(|n| (*n, Origin::LearnFrom)));
    Ok((list, servers))
}

/// The interfaces' roles (by name, for status) and whose answers the learner believes. Without
/// `--learn-from` the resolvers' own addresses are trusted.
fn trust(
    settings: &Settings,
    servers: &[SocketAddr],
) -> Result<(HashMap<String, Role>, Trust), DaemonError> {
    let mut by_name = HashMap::new();
    let mut by_index = HashMap::new();
    for (name, role) in settings.interfaces.iter().zip(&settings.roles) {
        by_name.insert(name.clone(), *role);
        by_index.insert(attach::ifindex(name)?, *role);
    }
    if settings.roles.iter().all(|r| *r == Role::Both) {
        tracing::warn!(
            "no interface roles given (--iface IF:inside|outside): an answer forged on a client link cannot be told apart from a server's"
        );
    }
    let learn_from = if settings.learn_from.is_empty() {
        servers.iter().map(|s| IpNet::from(s.ip())).collect()
    } else {
        settings.learn_from.clone()
    };
    tracing::info!(learn_from = ?learn_from, learn_for = ?settings.learn_for, "learning from these DNS servers, and for these clients from any");
    Ok((
        by_name,
        Trust::new(by_index, learn_from, settings.learn_for.clone()),
    ))
}

fn resolver_config(
    settings: &Settings,
    servers: Vec<SocketAddr>,
    never_block: &NeverBlock,
) -> ResolverConfig {
    ResolverConfig {
        servers,
        ttl_floor: Duration::from_secs(settings.ttl_floor),
        ttl_ceiling: Duration::from_secs(settings.ttl_ceiling),
        grace: Duration::from_secs(settings.grace),
        max_addresses_per_name: usize::try_from(settings.max_addresses_per_name)
            .unwrap_or(usize::MAX),
        never_block: never_block.clone(),
        shared_suffixes: settings.shared_suffixes.clone(),
        ..ResolverConfig::default()
    }
}

/// The learning pipeline for `policy`, with the addresses learned before a restart (those of
/// entries the policy no longer has are dropped).
fn learner(
    settings: &Settings,
    policy: &Policy,
    config: &ResolverConfig,
    book_settings: BookSettings,
) -> Learner {
    let guard = Guard::new(
        config.never_block.clone(),
        config.max_addresses_per_name,
        &config.shared_suffixes,
    );
    let patterns = DomainPatterns::from_policy(policy);
    let longest = book_settings
        .ttl_ceiling
        .saturating_add(book_settings.grace);
    let mut set = match LearnedSet::load(&settings.state_dir, SystemTime::now(), longest) {
        Ok(loaded) => {
            for problem in &loaded.problems {
                tracing::error!(%problem, "learned addresses: a damaged entry");
            }
            loaded.set
        }
        Err(error) => {
            tracing::error!(%error, "the learned addresses are unusable; starting with those in the datapath");
            LearnedSet::default()
        }
    };
    set.retain_uses(|u| patterns.has_use(u));
    // Nothing is believed until the daemon knows its interfaces (`State::set_trust`).
    let mut learner = Learner::new(
        DomainPatterns::default(),
        guard,
        Trust::default(),
        book_settings,
    );
    learner.replace(patterns, set);
    learner
}
