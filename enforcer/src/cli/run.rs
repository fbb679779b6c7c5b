//! `enforcer run`: the daemon. Loads the policy, programs the maps, attaches to the interfaces
//! and keeps enforcing until SIGTERM. Exiting leaves everything pinned (fail-static).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use tokio::sync::Notify;

use crate::cli::DEFAULT_SOCKET;
use crate::cli::config::{ConfigError, FileConfig};
use crate::cli::detach::DEFAULT_BPFFS;
use crate::compile::CompiledPolicy;
use crate::control::{self, server::ServerError};
use crate::daemon::{self, DaemonState, EnforceError};
use crate::datapath::attach::{self, AttachError, ModeRequest};
use crate::datapath::bpffs::{self, BpffsError};
use crate::datapath::{Datapath, DatapathError};
use crate::learn::{DomainPatterns, LearnedSet, Learner, Reinjector};
use crate::metrics::{self, MetricsError};
use crate::never_block::{NeverBlock, NeverBlockError};
use crate::platform_ids::{IdsError, PlatformIds};
use crate::policy::{self, LoadOptions, Policy, PolicyError};
use crate::privileges;
use crate::resolve::{
    self, AddressBook, BookSettings, Guard, ResolveMetrics, Resolver, ResolverAddrError,
    ResolverConfig, ResolverError,
};

pub const DEFAULT_RULES: &str = "/etc/enforcer/rules";
pub const DEFAULT_METRICS: &str = "127.0.0.1:9464";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/enforcer";

#[derive(Debug, Default, clap::Args)]
pub struct RunArgs {
    /// YAML file with any of these options (keys are the flag names); flags win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Policy file or directory [default: /etc/enforcer/rules].
    #[arg(long, value_name = "PATH")]
    pub rules: Option<PathBuf>,
    /// Interface to enforce on (repeatable; required here or in --config).
    #[arg(long = "iface", value_name = "IF")]
    pub interfaces: Vec<String>,
    /// XDP attach mode [default: auto].
    #[arg(long, value_enum, value_name = "MODE")]
    pub xdp_mode: Option<ModeRequest>,
    /// DNS resolver ADDR[:PORT] (repeatable) [default: the system's].
    #[arg(long = "resolver", value_name = "ADDR[:PORT]")]
    pub resolvers: Vec<String>,
    /// Prometheus endpoint ADDR:PORT, or `off` [default: 127.0.0.1:9464].
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<String>,
    /// Directory for the resolved-address state [default: /var/lib/enforcer].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Directory for pinned maps and links, on a BPF filesystem [default: /sys/fs/bpf/enforcer].
    #[arg(long, value_name = "DIR")]
    pub bpffs: Option<PathBuf>,
    /// CIDR that no rule or answer may block, added to the built-in list (repeatable). A bare
    /// address stands for itself alone.
    #[arg(long = "never-block", value_name = "CIDR", value_parser = policy::parse_prefix)]
    pub never_block: Vec<IpNet>,
    /// Shortest time an address from DNS is kept, in seconds [default: 60].
    #[arg(long, value_name = "SECS")]
    pub ttl_floor: Option<u64>,
    /// Longest time an address from DNS is kept, in seconds [default: 86400].
    #[arg(long, value_name = "SECS")]
    pub ttl_ceiling: Option<u64>,
    /// How long an address stays blocked after DNS stops giving it, in seconds [default: 3600].
    #[arg(long, value_name = "SECS")]
    pub grace: Option<u64>,
    /// Most addresses one name may resolve to before its answer is refused [default: 64].
    #[arg(long, value_name = "N")]
    pub max_addresses_per_name: Option<u64>,
    /// Name whose subtree is a shared front end or CDN (repeatable).
    #[arg(long = "shared-suffix", value_name = "NAME")]
    pub shared_suffixes: Vec<String>,
    /// The global `--socket`, handed over by `main`.
    #[arg(skip)]
    pub socket: Option<PathBuf>,
}

/// Options after merging flags, the config file and defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub rules: PathBuf,
    pub interfaces: Vec<String>,
    pub xdp_mode: ModeRequest,
    pub resolvers: Vec<String>,
    pub metrics: Option<SocketAddr>,
    pub state_dir: PathBuf,
    pub bpffs: PathBuf,
    pub never_block: Vec<IpNet>,
    pub ttl_floor: u64,
    pub ttl_ceiling: u64,
    pub grace: u64,
    pub max_addresses_per_name: u64,
    pub shared_suffixes: Vec<String>,
    pub socket: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("no interface given: pass --iface (or `iface:` in --config)")]
    NoInterface,
    #[error("--metrics {0}: expected ADDR:PORT or `off`")]
    BadMetricsAddress(String),
    #[error("--ttl-floor {floor} is above --ttl-ceiling {ceiling}")]
    TtlBounds { floor: u64, ceiling: u64 },
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
}

impl RunArgs {
    pub fn settings(self) -> Result<Settings, RunError> {
        let file = match &self.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let pick_list = |flags: Vec<String>, file: Option<Vec<String>>| {
            if flags.is_empty() {
                file.unwrap_or_default()
            } else {
                flags
            }
        };
        let interfaces = pick_list(self.interfaces, file.iface);
        if interfaces.is_empty() {
            return Err(RunError::NoInterface);
        }
        let metrics_text = self
            .metrics
            .or(file.metrics)
            .unwrap_or_else(|| DEFAULT_METRICS.to_string());
        let metrics = if metrics_text == "off" {
            None
        } else {
            Some(
                metrics_text
                    .parse()
                    .map_err(|_| RunError::BadMetricsAddress(metrics_text.clone()))?,
            )
        };
        let never_block = if self.never_block.is_empty() {
            file.never_block.unwrap_or_default()
        } else {
            self.never_block
        };
        let settings = Settings {
            rules: self
                .rules
                .or(file.rules)
                .unwrap_or_else(|| DEFAULT_RULES.into()),
            interfaces,
            xdp_mode: self.xdp_mode.or(file.xdp_mode).unwrap_or(ModeRequest::Auto),
            resolvers: pick_list(self.resolvers, file.resolver),
            metrics,
            state_dir: self
                .state_dir
                .or(file.state_dir)
                .unwrap_or_else(|| DEFAULT_STATE_DIR.into()),
            bpffs: self
                .bpffs
                .or(file.bpffs)
                .unwrap_or_else(|| DEFAULT_BPFFS.into()),
            never_block,
            ttl_floor: self.ttl_floor.or(file.ttl_floor).unwrap_or(60),
            ttl_ceiling: self.ttl_ceiling.or(file.ttl_ceiling).unwrap_or(86_400),
            grace: self.grace.or(file.grace).unwrap_or(3_600),
            max_addresses_per_name: self
                .max_addresses_per_name
                .or(file.max_addresses_per_name)
                .unwrap_or(64),
            shared_suffixes: pick_list(self.shared_suffixes, file.shared_suffix),
            socket: self
                .socket
                .or(file.socket)
                .unwrap_or_else(|| DEFAULT_SOCKET.into()),
        };
        if settings.ttl_floor > settings.ttl_ceiling {
            return Err(RunError::TtlBounds {
                floor: settings.ttl_floor,
                ceiling: settings.ttl_ceiling,
            });
        }
        Ok(settings)
    }
}

pub fn execute(args: RunArgs) -> Result<ExitCode, RunError> {
    let settings = args.settings()?;
    let (never_block, servers) = never_block(&settings.never_block, &settings.resolvers)?;
    let load_options = LoadOptions {
        never_block: never_block.clone(),
    };
    let mut policy = policy::load_policy(std::slice::from_ref(&settings.rules), &load_options)?;
    let mut ids = PlatformIds::load(&settings.state_dir).unwrap_or_else(|error| {
        tracing::error!(%error, "the platform ids are unusable; assigning new ones");
        PlatformIds::default()
    });
    let reused_ids = ids.assign(&mut policy, &Policy::default())?;
    if let Err(error) = ids.save(&settings.state_dir) {
        tracing::error!(%error, "saving the platform ids failed");
    }
    let resolver_config = resolver_config(&settings, servers, &never_block);

    // Fail-static across restarts: the last known addresses are enforced before any DNS answer.
    let book_settings = BookSettings::from_config(&resolver_config);
    let mut book = AddressBook::load(&settings.state_dir, book_settings).unwrap_or_else(|error| {
        tracing::error!(%error, "the saved addresses are unusable; starting without them");
        AddressBook::new(book_settings)
    });
    let restored = book.len();
    let now = SystemTime::now();
    book.set_uses(resolve::policy_uses(&policy), now);
    // Enforce what was known, then ask DNS again at once rather than when the saved TTLs end.
    book.refresh_all(now);
    let learner = learner(&settings, &policy, &resolver_config, book_settings);
    let resolve_metrics = ResolveMetrics::new();
    resolve_metrics.register_platforms(policy.platforms.iter().map(|p| p.name.as_str()));

    bpffs::ensure(&settings.bpffs)?;
    let mut datapath = Datapath::load_pinned(&settings.bpffs)?;
    for id in reused_ids {
        datapath.clear_platform_counters(id)?;
    }
    let mut state = DaemonState {
        datapath,
        policy,
        compiled: CompiledPolicy::default(),
        attached: Vec::new(),
        last_policy_update: SystemTime::now(),
        book,
        resolve_metrics,
        state_dir: settings.state_dir.clone(),
        never_block,
        rules_path: settings.rules.clone(),
        load_options,
        reloads_ok: 0,
        reloads_error: 0,
        wake: Arc::new(Notify::new()),
        files_seen: daemon::fingerprint(&settings.rules),
        learner,
        ids,
        learned_dirty: false,
    };
    let stats = state.enforce()?;
    tracing::info!(
        platforms = state.policy.platforms.len(),
        prefixes_v4 = state.compiled.v4.len(),
        prefixes_v6 = state.compiled.v6.len(),
        names = state.book.len(),
        restored_names = restored,
        restored_addresses = state.book.mappings().len(),
        inserted = stats.inserted,
        updated = stats.updated,
        removed = stats.removed,
        unchanged = stats.unchanged,
        "policy applied"
    );
    state.attached = attach::attach_all(
        state.datapath.program_mut()?,
        &settings.bpffs,
        &settings.interfaces,
        settings.xdp_mode,
    )?;
    for a in &state.attached {
        tracing::info!(interface = %a.interface, mode = a.mode.as_str(), adopted = a.adopted, "enforcing");
    }

    let control_listener = control::server::bind(&settings.socket)?;
    // Raw sockets for sending held DNS responses on; without them responses are not held.
    let reinjector = match Reinjector::open() {
        Ok(r) => Some(r),
        Err(error) => {
            tracing::warn!(%error, "cannot open raw sockets: DNS responses are not held, so a client may connect to a banned answer before it is learned");
            None
        }
    };
    // Loading, pinning and attaching are done: keep only what map updates need.
    match privileges::keep_only(&[privileges::CAP_BPF]) {
        Ok(()) => tracing::info!("capabilities dropped; CAP_BPF kept for map updates"),
        Err(error) => tracing::warn!(%error, "keeping the capabilities the daemon started with"),
    }

    let state = Arc::new(Mutex::new(state));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    runtime.block_on(serve(
        settings,
        resolver_config,
        control_listener,
        reinjector,
        Arc::clone(&state),
    ))?;
    if let Ok(mut state) = state.lock() {
        state.save_book();
        state.save_learned();
    }
    tracing::info!("stopping; the program, links and maps stay pinned and keep enforcing");
    Ok(ExitCode::SUCCESS)
}

async fn serve(
    settings: Settings,
    resolver_config: ResolverConfig,
    control_listener: std::os::unix::net::UnixListener,
    reinjector: Option<Reinjector>,
    state: Arc<Mutex<DaemonState>>,
) -> Result<(), RunError> {
    let control_task = control::server::spawn(control_listener, Arc::clone(&state))?;
    let metrics_task = match settings.metrics {
        Some(addr) => Some(metrics::spawn(addr, Arc::clone(&state)).await?),
        None => None,
    };
    let resolver = Arc::new(Resolver::new(&resolver_config)?);
    tracing::info!(servers = ?resolver.servers(), "resolving the policy's domains");
    let watch_task = tokio::spawn(daemon::watch_policy(Arc::clone(&state)));
    let dns_events = state
        .lock()
        .ok()
        .and_then(|mut s| s.datapath.take_dns_events());
    let holding = reinjector.is_some();
    let stop_learning = Arc::new(AtomicBool::new(false));
    let learn_thread = match dns_events {
        Some(ring) => {
            let (state, stop) = (Arc::clone(&state), Arc::clone(&stop_learning));
            std::thread::Builder::new()
                .name("learn".into())
                .spawn(move || daemon::learn_thread(state, ring, reinjector, stop))
                .map_err(RunError::Runtime)
                .map(Some)?
        }
        None => None,
    };
    let hold_task = (holding && learn_thread.is_some())
        .then(|| tokio::spawn(daemon::hold_heartbeat(Arc::clone(&state))));
    let refresh_task = tokio::spawn(daemon::refresh_loop(Arc::clone(&state), resolver));
    wait_for_termination().await.map_err(RunError::Runtime)?;
    refresh_task.abort();
    if let Some(task) = hold_task {
        task.abort();
    }
    // Stop holding before the reader goes, so no response waits for a daemon that left.
    if let Ok(mut s) = state.lock() {
        let _ = s.datapath.set_dns_hold(0);
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
pub fn never_block(
    never_block: &[IpNet],
    resolvers: &[String],
) -> Result<(NeverBlock, Vec<SocketAddr>), RunError> {
    let configured = resolvers
        .iter()
        .map(|text| resolve::parse_resolver(text))
        .collect::<Result<Vec<_>, _>>()?;
    let servers = resolve::servers(&configured)?;
    let list = NeverBlock::build(never_block, &servers)?;
    Ok((list, servers))
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
    let mut set = LearnedSet::load(&settings.state_dir).unwrap_or_else(|error| {
        tracing::error!(%error, "the learned addresses are unusable; starting without them");
        LearnedSet::default()
    });
    set.retain_uses(|u| patterns.has_use(u));
    let mut learner = Learner::new(DomainPatterns::default(), guard, book_settings);
    learner.replace(patterns, set);
    learner
}
