//! What the running daemon holds, and the one way its sets reach the datapath: the policy's
//! published prefixes plus the addresses DNS gave for its domains (resolved and learned),
//! compiled together and applied as a diff (`compile_and_apply`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use ipnet::IpNet;
use tokio::sync::Notify;

use super::bundle::BundleMode;
use super::rules::Edited;
use super::watch::{self, Fingerprint};
use crate::bundle::follow::{FetchResult, Verified};
use crate::compile::{self, CompileError, CompiledPolicy, EntryAddress};
use crate::control::protocol::PolicyChange;
use crate::datapath::attach::Attached;
use crate::datapath::{ApplyStats, Datapath, DatapathError};
use crate::history::DAEMON_USER;
use crate::history::{self, History, Origin, Source, Version};
use crate::learn::{DomainPatterns, LearnedEntry, LearnedSet, Learner, Observed, Role, Trust};
use crate::never_block::NeverBlock;
use crate::platform_ids::{IdsError, PlatformIds};
use crate::policy::managed::ManagedError;
use crate::policy::{LoadOptions, Policy, PolicyError, RuleTexts, Sites};
use crate::resolve::{self, AddressBook, NameResolution, ResolveMetrics};

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
    #[error("the policy files changed while they were read; nothing was changed (try again)")]
    Changing,
    #[error("{0}")]
    History(#[from] history::HistoryError),
}

impl ReloadError {
    /// One line per problem, for the operator (a refused policy lists every diagnostic).
    pub fn lines(&self) -> Vec<String> {
        match self {
            Self::Policy(PolicyError::Invalid(diagnostics)) => {
                diagnostics.iter().map(ToString::to_string).collect()
            }
            other => vec![other.to_string()],
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EnforceError {
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error(transparent)]
    Datapath(#[from] DatapathError),
}

/// Policy reloads by result, for the metrics.
#[derive(Clone, Copy, Debug, Default)]
pub struct Reloads {
    pub ok: u64,
    pub error: u64,
}

/// Everything the running daemon holds. Built once by [`super::run`]; the control handlers, the
/// metrics and the background tasks reach it only through its methods.
pub struct State {
    datapath: Datapath,
    policy: Policy,
    compiled: CompiledPolicy,
    attached: Vec<Attached>,
    /// The role of each attached interface, by name.
    roles: HashMap<String, Role>,
    last_policy_update: SystemTime,
    /// Addresses resolved for the policy's exact domains, with provenance and timing.
    book: AddressBook,
    resolve_metrics: ResolveMetrics,
    /// Where the book, the learned set and the platform ids are saved.
    state_dir: PathBuf,
    /// DNS may never make these blocked; also re-checked for addresses read from the state files,
    /// which may predate a `--never-block` the operator added since. The one list, built at
    /// start-up and shared (clones see the DNS servers the learner notes).
    never_block: NeverBlock,
    /// `--rules` and how it is loaded, for `reload`, `rules` and the file watcher.
    rules_path: PathBuf,
    load_options: LoadOptions,
    reloads: Reloads,
    /// The policy files as last read, so the watcher reloads only on a real change.
    files_seen: Fingerprint,
    /// Addresses learned from DNS answers crossing the gateway.
    learner: Learner,
    /// Lasting platform ids (counters are keyed by them).
    ids: PlatformIds,
    /// The learned set changed since it was last saved.
    learned_dirty: bool,
    /// Wakes the refresh loop when a new policy brings names to resolve.
    wake: Arc<Notify>,
    /// The sites behind the gateway, and `--sites` (re-read on reload) when they come from it.
    sites: Sites,
    sites_file: Option<PathBuf>,
    /// Every site name this process has enforced, by id: counters outlive a site's removal.
    site_names: HashMap<u32, String>,
    /// Every applied policy (STATE-DIR/history), for `history` and `rollback`.
    history: History,
    /// The last policy applied, still to be recorded: written by the caller after the state
    /// is released (see `Daemon::record_pending`), since the policy may be large.
    pending: Option<Version>,
    /// Bundle mode: the repository followed, the version in force, the fetch counters.
    bundle: Option<super::bundle::BundleMode>,
}

/// What [`State::new`] needs: the pieces the start-up sequence built.
pub struct Parts {
    pub datapath: Datapath,
    pub policy: Policy,
    pub book: AddressBook,
    pub resolve_metrics: ResolveMetrics,
    pub state_dir: PathBuf,
    pub never_block: NeverBlock,
    pub rules_path: PathBuf,
    pub load_options: LoadOptions,
    pub learner: Learner,
    pub ids: PlatformIds,
    pub wake: Arc<Notify>,
    pub sites: Sites,
    pub sites_file: Option<PathBuf>,
    pub history: History,
    /// The texts the policy was read from, recorded as the `start` version.
    pub texts: RuleTexts,
}

#[cfg(test)]
impl Parts {
    /// What the tests build a state from: `policy` through `datapath`, the built-in never-block
    /// list, an empty book, a learner for the policy's patterns that believes any server, and
    /// the state files in `dir` (rules in `dir/rules`).
    pub(crate) fn for_test(
        datapath: Datapath,
        policy: Policy,
        settings: crate::resolve::BookSettings,
        dir: &std::path::Path,
    ) -> Self {
        let learner = Learner::new(
            DomainPatterns::from_policy(&policy),
            crate::resolve::Guard::new(NeverBlock::builtin(), 64, &[]),
            crate::learn::Trust::anyone(),
            settings,
        );
        Self {
            datapath,
            policy,
            book: AddressBook::new(settings),
            resolve_metrics: ResolveMetrics::new(),
            state_dir: dir.to_path_buf(),
            never_block: NeverBlock::builtin(),
            rules_path: dir.join("rules"),
            load_options: LoadOptions::default(),
            learner,
            ids: PlatformIds::default(),
            sites: Sites::default(),
            sites_file: None,
            wake: Arc::new(Notify::new()),
            history: History::new(dir, 20),
            texts: RuleTexts::new(),
        }
    }
}

impl State {
    /// The state for `parts`, with its sets enforced in the datapath.
    pub fn new(parts: Parts) -> Result<(Self, ApplyStats), EnforceError> {
        let mut state = Self {
            datapath: parts.datapath,
            files_seen: watch::fingerprint(&parts.rules_path),
            policy: parts.policy,
            compiled: CompiledPolicy::default(),
            attached: Vec::new(),
            roles: HashMap::new(),
            last_policy_update: SystemTime::now(),
            book: parts.book,
            resolve_metrics: parts.resolve_metrics,
            state_dir: parts.state_dir,
            never_block: parts.never_block,
            rules_path: parts.rules_path,
            load_options: parts.load_options,
            reloads: Reloads::default(),
            learner: parts.learner,
            ids: parts.ids,
            learned_dirty: false,
            wake: parts.wake,
            site_names: parts
                .sites
                .sites
                .iter()
                .map(|s| (s.id, s.name.clone()))
                .collect(),
            sites: parts.sites,
            sites_file: parts.sites_file,
            history: parts.history,
            pending: None,
            bundle: None,
        };
        note_restored_servers(&state.never_block, &state.learner.set);
        state.keep_hosts_in_force(SystemTime::now());
        let stats = state.enforce()?;
        state.note_applied(Origin::daemon(Source::Start, parts.texts));
        if let Some((history, version)) = state.take_pending() {
            record(&history, &version);
        }
        Ok((state, stats))
    }

    /// On adopting pinned maps: every single address a previous run left enforced for an entry
    /// with domains that neither state file accounts for (learned too shortly before a crash to
    /// be saved, or lost with a damaged file) is kept as learned, for the longest an answer can
    /// last (TTL ceiling plus grace), so that a restart never unblocks it. Such entries have an
    /// empty name and resolver 0.0.0.0. The never-block list still applies when they are
    /// compiled.
    fn keep_hosts_in_force(&mut self, now: SystemTime) {
        let hosts = match self.datapath.hosts_in_force() {
            Ok(hosts) => hosts,
            Err(error) => {
                tracing::error!(%error, "reading the addresses in force from the pinned maps failed");
                return;
            }
        };
        let Ok(own) = compile::compile(&self.policy) else {
            return;
        };
        let known: std::collections::HashSet<resolve::Mapping> = self
            .book
            .mappings()
            .into_iter()
            .chain(self.learner.set.mappings().cloned())
            .collect();
        let settings = self.book.settings();
        let learned = LearnedEntry {
            name: String::new(),
            cname_chain: Vec::new(),
            resolver: std::net::IpAddr::from([0, 0, 0, 0]),
            remove_at: now
                .checked_add(settings.ttl_ceiling.saturating_add(settings.grace))
                .unwrap_or(now),
        };
        let mut kept = 0usize;
        for (address, rules) in hosts {
            let net = IpNet::from(address);
            let static_host = match net {
                IpNet::V4(n) => own.v4.contains_key(&compile::Prefix {
                    addr: u32::from(n.addr()),
                    len: 32,
                }),
                IpNet::V6(n) => own.v6.contains_key(&compile::Prefix {
                    addr: u128::from(n.addr()),
                    len: 128,
                }),
            };
            if static_host || self.never_block.contains(address) {
                continue;
            }
            for (p, entry) in compile::entries_of_host(&self.policy, &rules) {
                let mapping = resolve::Mapping {
                    platform: self.policy.platforms[p].name.clone(),
                    entry,
                    address,
                };
                if known.contains(&mapping) {
                    continue;
                }
                let uses = [resolve::Use {
                    platform: mapping.platform,
                    entry,
                }];
                kept += self
                    .learner
                    .set
                    .learn(&uses, &[(address, 0)], &learned)
                    .len();
            }
        }
        if kept > 0 {
            self.learned_dirty = true;
            tracing::warn!(
                kept,
                "addresses in force that no state file accounts for are kept as learned (TTL ceiling plus grace)"
            );
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }
    pub fn compiled(&self) -> &CompiledPolicy {
        &self.compiled
    }
    pub fn datapath(&self) -> &Datapath {
        &self.datapath
    }
    pub fn datapath_mut(&mut self) -> &mut Datapath {
        &mut self.datapath
    }
    pub fn attached(&self) -> &[Attached] {
        &self.attached
    }
    pub fn set_attached(&mut self, attached: Vec<Attached>) {
        self.attached = attached;
    }
    /// The interfaces' roles and whose answers the learner believes.
    /// Sets whose answers are believed, in the learner and in the datapath (which decides what
    /// to hold by the same rule). The datapath keeps believing nothing if it cannot be told.
    pub fn set_trust(&mut self, roles: HashMap<String, Role>, trust: Trust) {
        let gateway: Vec<std::net::IpAddr> = match crate::sys::netif::local_addresses() {
            Ok(nets) => nets.iter().map(IpNet::addr).collect(),
            Err(error) => {
                tracing::warn!(%error, "cannot list the gateway's addresses: answers addressed to it (NAT) are not learned");
                Vec::new()
            }
        };
        let (prefixes, codes) = trust.datapath_view(&gateway);
        if let Err(error) = self.datapath.set_dns_trust(&prefixes, &codes) {
            tracing::error!(%error, "cannot give the datapath its DNS trust: no answer is held or learned");
        }
        self.roles = roles;
        self.learner.set_trust(trust);
    }
    pub fn role(&self, interface: &str) -> Role {
        self.roles.get(interface).copied().unwrap_or(Role::Both)
    }
    pub fn book(&self) -> &AddressBook {
        &self.book
    }
    pub fn learner(&self) -> &Learner {
        &self.learner
    }
    pub fn resolve_metrics(&self) -> &ResolveMetrics {
        &self.resolve_metrics
    }
    pub fn reloads(&self) -> Reloads {
        self.reloads
    }
    pub fn last_policy_update(&self) -> SystemTime {
        self.last_policy_update
    }
    pub fn never_block(&self) -> &NeverBlock {
        &self.never_block
    }
    pub fn rules_path(&self) -> &std::path::Path {
        &self.rules_path
    }
    /// The sites in force (with the policy last applied).
    pub fn sites(&self) -> &Sites {
        &self.sites
    }
    /// The name of a site id: `other` for 0, any site this process enforced, else none.
    pub fn site_name(&self, id: u32) -> Option<String> {
        if id == enforcer_common::SITE_OTHER {
            return Some(crate::policy::OTHER_SITE.to_owned());
        }
        self.site_names.get(&id).cloned()
    }

    /// Makes the maps enforce the policy in force with the addresses known now.
    pub fn enforce(&mut self) -> Result<ApplyStats, EnforceError> {
        let (compiled, stats) = compile_and_apply(
            &mut self.datapath,
            &self.never_block,
            &self.policy,
            &self.sites,
            &self.book,
            &self.learner.set,
        )?;
        self.compiled = compiled;
        Ok(stats)
    }

    /// The known addresses as compiler input (for explain's reference matcher).
    pub fn entry_addresses(&self) -> Vec<EntryAddress> {
        dns_addresses(
            &self.policy,
            &self.book,
            &self.learner.set,
            &self.never_block,
        )
    }

    /// The known addresses (resolved and learned, by platform name and entry) as compiler
    /// input for another policy (a candidate `plan` looks at).
    pub fn entry_addresses_for(&self, policy: &Policy) -> Vec<EntryAddress> {
        dns_addresses(policy, &self.book, &self.learner.set, &self.never_block)
    }

    /// The policy files as last read.
    pub fn files_seen(&self) -> &Fingerprint {
        &self.files_seen
    }

    /// What a reload reads: `--rules` and how it is loaded.
    pub fn reload_source(&self) -> (PathBuf, LoadOptions) {
        (self.rules_path.clone(), self.load_options.clone())
    }

    /// Installs a policy read from the files whose fingerprint was `seen` (read without holding
    /// the state: see `Daemon::reload`); on any error the running policy stays.
    pub fn install_loaded(
        &mut self,
        seen: Fingerprint,
        loaded: Result<(Policy, RuleTexts), ReloadError>,
        why: &str,
        source: Source,
        user: &str,
    ) -> Result<PolicyChange, ReloadError> {
        self.files_seen = seen;
        let result = loaded.and_then(|(policy, files)| {
            let origin = Origin {
                source,
                user: user.to_owned(),
                files,
            };
            self.install(policy, why, origin)
        });
        self.count_reload(why, &result);
        result
    }

    /// Writes a managed file edited and validated without holding the state (see
    /// `Daemon::rules_add`) and installs the policy it makes; on any error the running policy
    /// stays.
    pub fn install_edited(
        &mut self,
        edited: Result<Edited, ReloadError>,
        why: &str,
        source: Source,
        user: &str,
    ) -> Result<PolicyChange, ReloadError> {
        let result = edited.and_then(Edited::write).and_then(|(policy, files)| {
            self.files_seen = watch::fingerprint(&self.rules_path);
            let origin = Origin {
                source,
                user: user.to_owned(),
                files,
            };
            self.install(policy, why, origin)
        });
        self.count_reload(why, &result);
        result
    }

    fn count_reload<T>(&mut self, why: &str, result: &Result<T, ReloadError>) {
        match result {
            Ok(_) => self.reloads.ok += 1,
            Err(error) => {
                self.reloads.error += 1;
                tracing::error!(%error, "{why}: policy refused; the running policy stays");
            }
        }
    }

    /// Switches to `policy`: the book follows its names, the new sets are compiled beside the
    /// running ones and applied in one step. Nothing changes when any step fails.
    fn install(
        &mut self,
        mut policy: Policy,
        why: &str,
        origin: Origin,
    ) -> Result<PolicyChange, ReloadError> {
        let now = SystemTime::now();
        // `--sites` is read again with the policy; its sites must hold every `action-by-site`.
        let sites = match &self.sites_file {
            Some(path) => Sites::load(path)?,
            None => self.sites.clone(),
        };
        let unknown = sites.check_policy(&policy);
        if !unknown.is_empty() {
            return Err(PolicyError::Invalid(unknown).into());
        }
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
        let (compiled, stats) = compile_and_apply(
            &mut self.datapath,
            &self.never_block,
            &policy,
            &sites,
            &book,
            &learned,
        )?;
        for site in &sites.sites {
            self.site_names.insert(site.id, site.name.clone());
        }
        self.sites = sites;
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
        self.note_applied(origin);
        Ok(change)
    }

    /// Notes the policy in force as the version to record.
    fn note_applied(&mut self, origin: Origin) {
        if origin.files.is_empty() {
            return;
        }
        self.pending = Some(Version {
            digest: policy_digest(&self.policy),
            time: history::now(),
            source: origin.source,
            user: origin.user,
            files: origin.files,
        });
    }

    /// The version applied and not yet recorded, with the history to record it in.
    pub fn take_pending(&mut self) -> Option<(History, Version)> {
        self.pending
            .take()
            .map(|version| (self.history.clone(), version))
    }

    /// The policy history.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// Writes the stored `version` (validated as `policy`) into the policy files and installs
    /// it, recorded as a rollback by `user`. When installing fails the files are put back as
    /// they were, so the files and the running policy never disagree.
    pub fn install_version(
        &mut self,
        policy: Policy,
        version: &Version,
        user: &str,
    ) -> Result<(PolicyChange, super::history::Written), ReloadError> {
        let why = format!("rollback to {}", version.digest);
        let result = self.write_and_install(policy, version, user, &why);
        self.count_reload(&why, &result);
        result
    }

    fn write_and_install(
        &mut self,
        policy: Policy,
        version: &Version,
        user: &str,
        why: &str,
    ) -> Result<(PolicyChange, super::history::Written), ReloadError> {
        let rules = self.rules_path.clone();
        let before = super::history::read_files(&rules).map_err(|source| ReloadError::Write {
            path: rules.clone(),
            source,
        })?;
        let change = self.write_and_install_files(
            policy,
            version.files.clone(),
            Source::Rollback,
            user,
            why,
        )?;
        Ok((change, super::history::written(&before, &version.files)))
    }

    pub fn bundle_mode(&self) -> Option<&BundleMode> {
        self.bundle.as_ref()
    }

    pub fn set_bundle_mode(&mut self, mode: BundleMode) {
        self.bundle = Some(mode);
    }

    pub fn count_fetch(&mut self, result: FetchResult) {
        if let Some(mode) = &mut self.bundle {
            mode.fetches[result.index()] += 1;
        }
    }

    /// Writes `verified`'s files into the policy directory and installs `policy` (read from
    /// them) as source `bundle`; on success it becomes the bundle kept in the state directory.
    /// On any error the files are put back and the policy in force stays.
    pub fn install_bundle(
        &mut self,
        policy: crate::policy::Policy,
        verified: &Verified,
        why: &str,
    ) -> Result<PolicyChange, ReloadError> {
        let Some(store) = self.bundle.as_ref().map(|m| m.store.clone()) else {
            return Err(ReloadError::Write {
                path: self.rules_path.clone(),
                source: std::io::Error::other("not in bundle mode"),
            });
        };
        let files = verified.bundle.files.clone();
        let result = self.write_and_install_files(policy, files, Source::Bundle, DAEMON_USER, why);
        self.count_reload(why, &result);
        let change = result?;
        if let Some(mode) = &mut self.bundle {
            mode.applied = verified.clone();
        }
        if let Err(error) = store.save(verified) {
            tracing::error!(%error, "keeping the verified bundle in the state directory failed; a cold start would enforce the one before");
        }
        Ok(change)
    }

    /// Makes the policy files exactly `files` and installs `policy` (validated from them),
    /// recorded with `source`; when installing fails the files are put back as they were, so
    /// the files and the running policy never disagree.
    fn write_and_install_files(
        &mut self,
        policy: Policy,
        files: history::Files,
        source: Source,
        user: &str,
        why: &str,
    ) -> Result<PolicyChange, ReloadError> {
        let rules = self.rules_path.clone();
        let write_error = |source| ReloadError::Write {
            path: rules.clone(),
            source,
        };
        let before = super::history::read_files(&rules).map_err(write_error)?;
        super::history::write_files(&rules, &files).map_err(write_error)?;
        self.files_seen = watch::fingerprint(&rules);
        let origin = Origin {
            source,
            user: user.to_owned(),
            files,
        };
        match self.install(policy, why, origin) {
            Ok(change) => Ok(change),
            Err(error) => {
                if let Err(restore) = super::history::write_files(&rules, &before) {
                    tracing::error!(error = %restore, "the policy files could not be put back");
                }
                self.files_seen = watch::fingerprint(&rules);
                Err(error)
            }
        }
    }

    /// Writes the book to the state directory; a failure is logged, enforcement goes on.
    pub fn save_book(&self) {
        if let Err(error) = self.book.save(&self.state_dir) {
            tracing::error!(%error, "saving the resolved addresses failed; enforcement is unchanged");
        }
    }

    /// Writes the learned addresses when they changed since the last save.
    pub fn save_learned(&mut self) {
        if let Some((set, dir)) = self.learned_to_save() {
            Self::write_learned(&set, &dir);
            self.learned_dirty = false;
        }
    }

    /// A copy of the learned set when it changed since the last save (and marks it saved), so
    /// the caller can write it without holding the state.
    pub fn learned_to_save(&mut self) -> Option<(LearnedSet, PathBuf)> {
        if !self.learned_dirty {
            return None;
        }
        self.learned_dirty = false;
        Some((self.learner.set.clone(), self.state_dir.clone()))
    }

    /// Marks the learned set as not saved (a write failed).
    pub fn learned_save_failed(&mut self) {
        self.learned_dirty = true;
    }

    /// Writes `set` into `dir`; true when it worked.
    pub fn write_learned(set: &LearnedSet, dir: &std::path::Path) -> bool {
        match set.save(dir) {
            Ok(()) => true,
            Err(error) => {
                tracing::error!(
                    %error,
                    "saving the learned addresses failed; enforcement is unchanged"
                );
                false
            }
        }
    }

    /// Names whose addresses are due for a new question.
    pub fn due_names(&self, now: SystemTime) -> Vec<String> {
        self.book.due_names(now)
    }

    /// When the next name is due or the next learned address expires.
    pub fn next_deadline(&self) -> Option<SystemTime> {
        [self.book.next_due(), self.learner.next_expiry()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Drops what has run out (resolved past its grace, learned past TTL + grace) and enforces
    /// the rest.
    pub fn expire(&mut self, now: SystemTime) {
        let change = self.book.expire(now);
        let forgotten = self.learner.expire(now);
        if !forgotten.is_empty() {
            self.learned_dirty = true;
        }
        if !change.is_empty() || !forgotten.is_empty() {
            let removed = change.removed.len() + forgotten.len();
            self.enforce_logged("expired", change.added.len(), removed);
            self.save_book();
        }
    }

    /// Folds a round of answers into the book, enforces what changed and saves the book.
    pub fn apply_resolutions(&mut self, resolutions: &[NameResolution], asked: SystemTime) {
        let now = SystemTime::now().max(asked);
        let change = resolve::apply_round(&mut self.book, &self.resolve_metrics, resolutions, now);
        if !change.is_empty() {
            self.enforce_logged("refresh", change.added.len(), change.removed.len());
        }
        // The schedule moved even when the addresses did not.
        self.save_book();
    }

    /// Enforces the known addresses after `what` changed them, logging what moved.
    fn enforce_logged(&mut self, what: &str, added: usize, removed: usize) {
        let started = Instant::now();
        match self.enforce() {
            Ok(stats) => tracing::info!(
                added,
                removed,
                inserted = stats.inserted,
                updated = stats.updated,
                deleted = stats.removed,
                prefixes_v4 = self.compiled.v4.len(),
                prefixes_v6 = self.compiled.v6.len(),
                elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
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

    /// A DNS message seen on the attached interfaces: what a believed answer for a banned name
    /// teaches is enforced before this returns. Returns how many addresses it taught.
    pub fn observe_dns(&mut self, observed: &Observed<'_>) -> usize {
        let (now, mono) = (SystemTime::now(), Instant::now());
        let added = self
            .learner
            .observe(observed, now, mono, &self.resolve_metrics)
            .added;
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
        let changed = match compile::add_hosts(&mut self.compiled, &self.policy, &hosts) {
            Ok(changed) => changed,
            Err(error) => {
                // The datapath cannot hold these (a full rule slot, trie or rule table), and a
                // full compile would refuse them too: keeping them would make every later
                // change fail. They are forgotten; what is in force stays.
                self.learner.set.forget(&added);
                tracing::error!(
                    %error,
                    refused = added.len(),
                    "learned addresses refused: the datapath cannot hold them"
                );
                return 0;
            }
        };
        match self.datapath.write_hosts(&self.compiled, &changed) {
            // Per answer, so at debug level: at thousands of answers a second this would flood.
            Ok(count) => tracing::debug!(
                learned = added.len(),
                written = count,
                elapsed_us = u64::try_from(mono.elapsed().as_micros()).unwrap_or(u64::MAX),
                "learned from DNS: addresses enforced"
            ),
            Err(error) => {
                tracing::warn!(%error, "learned addresses: recompiling the whole policy");
                self.enforce_logged("learned from DNS", added.len(), 0);
            }
        }
        added.len()
    }
}

/// Adds `version` to `history`; a failure is logged, enforcement goes on.
pub fn record(history: &History, version: &Version) {
    if let Err(error) = history.record(version) {
        tracing::error!(%error, "recording the policy in the history failed; enforcement is unchanged");
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
                "{}|{}|{}|{}|{}\n",
                domains.join(","),
                prefixes.join(","),
                e.protocol.as_str(),
                ports.join(","),
                e.enforce
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

/// The DNS servers the restored learned entries name as having answered are DNS servers clients
/// use: noted in the never-block list before anything restored is enforced, so that no entry
/// (from a damaged or hostile file) can block the resolver itself.
fn note_restored_servers(never_block: &NeverBlock, learned: &LearnedSet) {
    for (_, entry) in learned.entries() {
        if !entry.resolver.is_unspecified() {
            never_block.note_dns_server(entry.resolver);
        }
    }
}

/// The one path from known addresses to the maps: `policy`'s prefixes plus the resolved and
/// learned addresses (minus the never-block list) are compiled and applied as a diff, additions
/// before removals, so an address that stays blocked is never let through. On an error the maps
/// keep at least what they had.
fn compile_and_apply(
    datapath: &mut Datapath,
    never_block: &NeverBlock,
    policy: &Policy,
    sites: &Sites,
    book: &AddressBook,
    learned: &LearnedSet,
) -> Result<(CompiledPolicy, ApplyStats), EnforceError> {
    let addresses = dns_addresses(policy, book, learned, never_block);
    let mut compiled = compile::compile_within(policy, addresses, datapath.capacity())?;
    compiled.sites = compile::compile_sites(policy, sites)?;
    let stats = datapath.apply(&compiled)?;
    Ok((compiled, stats))
}

/// The book's and the learned set's addresses as compiler input, minus any inside the
/// never-block list.
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

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::never_block::Origin;
    use crate::policy;
    use crate::resolve::{BookSettings, Use};

    /// One platform whose only entry is the wildcard `*.zoom.us`.
    fn zoom_wildcard_policy() -> Policy {
        policy::parse_policy_str(
            Path::new("p.yaml"),
            "platform: zoom\nmatch:\n  - domains: [\"*.zoom.us\"]\n    enforce: address\n",
            &LoadOptions::default(),
        )
        .unwrap()
    }

    fn empty_book() -> AddressBook {
        AddressBook::new(BookSettings {
            ttl_floor: Duration::from_secs(60),
            ttl_ceiling: Duration::from_secs(3600),
            grace: Duration::ZERO,
        })
    }

    #[test]
    fn restored_addresses_inside_the_never_block_list_are_not_enforced() {
        let policy = zoom_wildcard_policy();
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
        let book = empty_book();
        let enforced: Vec<IpNet> = dns_addresses(&policy, &book, &learned, &never_block)
            .into_iter()
            .map(|a| a.net)
            .collect();
        assert_eq!(enforced, vec!["198.18.5.9/32".parse::<IpNet>().unwrap()]);
    }

    /// learned.json names the resolver that answered each entry; an entry whose address is such a
    /// resolver (a damaged or hostile file) is not enforced, nor is one for the daemon's own
    /// resolver.
    #[test]
    fn a_restored_entry_naming_a_resolver_does_not_block_it() {
        let policy = zoom_wildcard_policy();
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let uses = [Use {
            platform: "zoom".into(),
            entry: 0,
        }];
        let entry = |resolver: &str| LearnedEntry {
            name: "a.zoom.us".into(),
            cname_chain: Vec::new(),
            resolver: ip(resolver),
            remove_at: SystemTime::now() + Duration::from_secs(60),
        };
        let mut learned = LearnedSet::default();
        learned.learn(&uses, &[(ip("198.18.5.9"), 60)], &entry("198.18.2.2"));
        learned.learn(&uses, &[(ip("198.18.2.2"), 60)], &entry("198.18.2.2"));
        learned.learn(&uses, &[(ip("198.51.100.53"), 60)], &entry("0.0.0.0"));
        // As `run` builds it: the daemon's own resolver is 198.51.100.53.
        let never_block =
            NeverBlock::builtin().with_resolvers(&["198.51.100.53:53".parse().unwrap()]);
        note_restored_servers(&never_block, &learned);
        let book = empty_book();
        let enforced: Vec<IpNet> = dns_addresses(&policy, &book, &learned, &never_block)
            .into_iter()
            .map(|a| a.net)
            .collect();
        assert_eq!(enforced, vec!["198.18.5.9/32".parse::<IpNet>().unwrap()]);
    }

    /// What a run left enforced for single addresses is rebuilt exactly from the maps: every
    /// learned mapping lost with its file comes back for its own entry (ports and protocol
    /// told apart), and neither the policy's own host prefix nor a never-block address does.
    #[test]
    fn addresses_in_force_are_rebuilt_from_the_maps() {
        let Some(datapath) = Datapath::load_for_test() else {
            return;
        };
        let mut policy = Policy::default();
        for text in [
            "platform: teams\nmatch:\n  - domains: [\"*.teams.example\"]\n    prefixes: [198.18.9.9/32]\n    enforce: address\n",
            "platform: zoom\nmatch:\n  - domains: [\"*.zoom.us\"]\n    enforce: address\n  - domains: [\"*.media.zoom.us\"]\n    protocol: tcp\n    ports: [443]\n    enforce: address\n",
        ] {
            let one = policy::parse_policy_str(Path::new("p.yaml"), text, &LoadOptions::default())
                .unwrap();
            policy.platforms.extend(one.platforms);
        }
        PlatformIds::default()
            .assign(&mut policy, &Policy::default())
            .unwrap();
        let settings = BookSettings {
            ttl_floor: Duration::from_secs(60),
            ttl_ceiling: Duration::from_secs(3600),
            grace: Duration::from_secs(600),
        };
        let state_dir =
            std::env::temp_dir().join(format!("enforcer-rebuild-{}", std::process::id()));
        let now = SystemTime::now();
        let entry = LearnedEntry {
            name: "a.zoom.us".into(),
            cname_chain: Vec::new(),
            resolver: "198.18.2.2".parse().unwrap(),
            remove_at: now + Duration::from_secs(60),
        };
        let mut learned = LearnedSet::default();
        let uses = |platform: &str, entry: usize| {
            [Use {
                platform: platform.into(),
                entry,
            }]
        };
        // 10,000 addresses over three entries; one for two entries at once.
        for i in 0..10_000u32 {
            let [_, _, a, b] = i.to_be_bytes();
            let address = IpAddr::from([198, 19, a, b]);
            let (platform, e) = [("zoom", 0), ("zoom", 1), ("teams", 0)][(i % 3) as usize];
            learned.learn(&uses(platform, e), &[(address, 60)], &entry);
        }
        learned.learn(
            &uses("zoom", 1),
            &[("198.19.0.0".parse().unwrap(), 60)],
            &entry,
        );
        learned.learn(
            &uses("zoom", 0),
            &[("10.1.1.1".parse().unwrap(), 60)],
            &entry,
        );
        let mut parts = Parts::for_test(datapath, policy, settings, &state_dir);
        parts
            .learner
            .replace(DomainPatterns::from_policy(&parts.policy), learned.clone());
        let (mut state, _) = State::new(parts).unwrap();
        // As after a restart whose learned.json was lost.
        state.learner.set = LearnedSet::default();
        let started = Instant::now();
        state.keep_hosts_in_force(now);
        eprintln!(
            "rebuilt {} mappings from the maps in {:?}",
            state.learner.set.len(),
            started.elapsed()
        );
        let expected: Vec<_> = learned
            .mappings()
            .filter(|m| !m.address.to_string().starts_with("10."))
            .cloned()
            .collect();
        let rebuilt: Vec<_> = state.learner.set.mappings().cloned().collect();
        assert_eq!(rebuilt, expected);
        let (_, kept) = state.learner.set.entries().next().unwrap();
        assert_eq!(kept.remove_at, now + Duration::from_secs(4200));
        assert!(kept.name.is_empty());
    }

    /// A learned address that the datapath cannot hold (here: a 33rd rule for its prefix) is
    /// refused and forgotten, so it cannot make every later change fail; the next answer that
    /// fits is learned and enforced as usual.
    #[test]
    fn a_learned_address_the_datapath_cannot_hold_does_not_wedge_the_daemon() {
        use crate::learn::fixtures::{a, query, response};
        use crate::resolve::BookSettings;
        let Some(datapath) = Datapath::load_for_test() else {
            return;
        };
        let ports: Vec<String> = (1..=32).map(|p| p.to_string()).collect();
        let text = format!(
            "platform: zoom\nmatch:\n  - prefixes: [198.18.50.0/24]\n    protocol: udp\n    \
             ports: [{}]\n  - domains: [\"*.zoom.us\"]\n    enforce: address\n",
            ports.join(", ")
        );
        let policy =
            policy::parse_policy_str(Path::new("p.yaml"), &text, &LoadOptions::default()).unwrap();
        let settings = BookSettings {
            ttl_floor: Duration::from_secs(60),
            ttl_ceiling: Duration::from_secs(3600),
            grace: Duration::ZERO,
        };
        let state_dir = std::env::temp_dir().join(format!("enforcer-wedge-{}", std::process::id()));
        std::fs::create_dir_all(&state_dir).unwrap();
        let (mut state, _) =
            State::new(Parts::for_test(datapath, policy, settings, &state_dir)).unwrap();
        let client: std::net::SocketAddr = "198.18.1.2:40000".parse().unwrap();
        let server: std::net::SocketAddr = "198.18.2.2:53".parse().unwrap();
        // Queries arrive on interface 1, answers (from port 53) on interface 2.
        fn observed(
            src: std::net::SocketAddr,
            dst: std::net::SocketAddr,
            payload: &[u8],
        ) -> Observed<'_> {
            let ifindex = if src.port() == 53 { 2 } else { 1 };
            Observed {
                src,
                dst,
                payload,
                ifindex,
            }
        }
        let mut answer = |id: u16, name: &str, address: [u8; 4]| {
            let q = query(id, name);
            state.observe_dns(&observed(client, server, &q));
            let r = response(id, name, &[(name, a(address), 300)]);
            state.observe_dns(&observed(server, client, &r))
        };
        // 198.18.50.7 would carry the /24's 32 rules plus its own.
        assert_eq!(answer(1, "crowded.zoom.us", [198, 18, 50, 7]), 0);
        assert_eq!(answer(2, "fine.zoom.us", [198, 18, 60, 1]), 1);
        let learned: Vec<IpAddr> = state.learner().set.mappings().map(|m| m.address).collect();
        assert_eq!(learned, vec![IpAddr::from([198, 18, 60, 1])]);
        // Every later change still applies.
        state.enforce().unwrap();
        let host = |a: [u8; 4]| {
            state.compiled().v4.contains_key(&crate::compile::Prefix {
                addr: u32::from(std::net::Ipv4Addr::from(a)),
                len: 32,
            })
        };
        assert!(host([198, 18, 60, 1]) && !host([198, 18, 50, 7]));
        std::fs::remove_dir_all(&state_dir).unwrap();
    }

    /// `status` tells two policies apart by their digest: one that only moves a name from
    /// address to name blocking is a different policy.
    #[test]
    fn the_digest_covers_enforce() {
        let digest = |enforce: &str| {
            let text = format!("platform: a\nmatch:\n  - domains: [a.example]\n{enforce}");
            policy_digest(
                &policy::parse_policy_str(Path::new("p.yaml"), &text, &LoadOptions::default())
                    .unwrap(),
            )
        };
        assert_ne!(digest(""), digest("    enforce: name\n"));
        assert_ne!(
            digest("    enforce: name\n"),
            digest("    enforce: address\n")
        );
        assert_eq!(digest(""), digest("    enforce: both\n"));
    }
}
