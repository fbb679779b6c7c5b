//! What the running daemon holds, and how its sets reach the datapath: the policy's published
//! prefixes plus the addresses DNS gave for its domains, compiled together and applied as a diff.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ipnet::IpNet;

use crate::compile::{self, CompileError, CompiledPolicy, EntryAddress};
use crate::datapath::attach::Attached;
use crate::datapath::{ApplyStats, Datapath, DatapathError};
use crate::policy::Policy;
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
    pub never_block: Vec<IpNet>,
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
        let compiled = compile::compile_with(&self.policy, self.dns_addresses())?;
        let stats = self.datapath.apply(&compiled)?;
        self.compiled = compiled;
        Ok(stats)
    }

    /// The book's addresses as compiler input, minus any inside the never-block list.
    fn dns_addresses(&self) -> Vec<EntryAddress> {
        let index: HashMap<&str, usize> = self
            .policy
            .platforms
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.as_str(), i))
            .collect();
        let mut refused = 0usize;
        let addresses = self
            .book
            .mappings()
            .into_iter()
            .filter_map(|m| {
                if self.never_block.iter().any(|n| n.contains(&m.address)) {
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

    /// Writes the book to the state directory; a failure is logged, enforcement goes on.
    pub fn save_book(&self) {
        if let Err(error) = self.book.save(&self.state_dir) {
            log_state_error(&error);
        }
    }
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
            if !change.is_empty() {
                enforce_after(s, "grace ended", change.added.len(), change.removed.len());
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
        let next = match state.lock() {
            Ok(s) => s.book.next_due(),
            Err(_) => return,
        };
        let idle = next
            .and_then(|t| t.duration_since(SystemTime::now()).ok())
            .unwrap_or(MIN_IDLE)
            .clamp(MIN_IDLE, MAX_IDLE);
        tokio::time::sleep(idle).await;
    }
}

/// The current time, never earlier than `before` (answers are stamped when they arrived).
fn now_or(before: SystemTime) -> SystemTime {
    SystemTime::now().max(before)
}
