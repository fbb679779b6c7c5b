//! The daemon's background work: the policy file watcher, the resolution refresh loop, the DNS
//! learning thread and the hold heartbeat. Each reaches the state only through [`Daemon`]; the
//! async ones do their state work on blocking threads.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use super::{Daemon, State};
use crate::datapath::DnsEvents;
use crate::learn::Reinjector;
use crate::resolve::Resolver;

/// How often the policy files are looked at.
const WATCH_INTERVAL: Duration = Duration::from_millis(100);
/// Shortest and longest sleep of the refresh loop between looks at the address book.
const MIN_IDLE: Duration = Duration::from_millis(100);
const MAX_IDLE: Duration = Duration::from_secs(5);
/// How often changed learned addresses are written to the state directory (and at exit).
const LEARNED_SAVE_EVERY: Duration = Duration::from_secs(5);
/// How far ahead the hold deadline is pushed, and how often.
const HOLD_AHEAD: Duration = Duration::from_secs(3);
const HOLD_EVERY: Duration = Duration::from_secs(1);

/// Reloads the policy whenever its files change (an invalid change is refused and logged; the
/// running policy stays). Runs until the task is dropped.
pub async fn watch_policy(daemon: Daemon) {
    loop {
        tokio::time::sleep(WATCH_INTERVAL).await;
        let reloaded = daemon
            .blocking(|s| {
                if s.files_changed() {
                    let _ = s.reload("policy files changed");
                }
            })
            .await;
        if reloaded.is_none() {
            return;
        }
    }
}

/// Keeps the book's names resolved: resolves the names that are due (without holding the
/// state), folds the answers in, applies what changed and saves the state; expires what ran
/// out. Runs until the task is dropped.
pub async fn refresh_loop(daemon: Daemon, resolver: Arc<Resolver>) {
    let mut last_learned_save = Instant::now();
    loop {
        let now = SystemTime::now();
        let Some(due) = daemon.blocking(move |s| s.due_names(now)).await else {
            return;
        };
        let done = if due.is_empty() {
            daemon.blocking(move |s| s.expire(now)).await
        } else {
            let resolutions = resolver.resolve_many(due).await;
            daemon
                .blocking(move |s| s.apply_resolutions(&resolutions, now))
                .await
        };
        if done.is_none() {
            return;
        }
        // At thousands of answers a second the learned set is always dirty: saving it every turn
        // would stall learning, so at most every few seconds, and written outside the lock.
        if last_learned_save.elapsed() >= LEARNED_SAVE_EVERY {
            save_learned(&daemon).await;
            last_learned_save = Instant::now();
        }
        let Some(next) = daemon.blocking(|s| s.next_deadline()).await else {
            return;
        };
        let idle = next
            .and_then(|t| t.duration_since(SystemTime::now()).ok())
            .unwrap_or(MIN_IDLE)
            .clamp(MIN_IDLE, MAX_IDLE);
        tokio::select! {
            _ = tokio::time::sleep(idle) => {}
            _ = daemon.wake.notified() => {}
        }
    }
}

/// Saves the learned addresses when they changed: copied under the lock, written outside it,
/// so that learning (which needs the lock) never waits for the disk.
async fn save_learned(daemon: &Daemon) {
    let Some(Some((set, dir))) = daemon.blocking(State::learned_to_save).await else {
        return;
    };
    let written = tokio::task::spawn_blocking(move || State::write_learned(&set, &dir))
        .await
        .unwrap_or(false);
    if !written {
        let _ = daemon.blocking(State::learned_save_failed).await;
    }
}

/// Reads the DNS messages the datapath copies and feeds them to the learner one at a time, then
/// sends each held response on. Runs on its own thread (blocking in poll(2) on the ring buffer):
/// a held response waits for this loop, so it must not queue behind the async tasks. Returns
/// when `stop` is set (checked at least every 200 ms).
pub fn learn_thread(
    daemon: &Daemon,
    mut events: DnsEvents,
    reinjector: Option<Reinjector>,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Relaxed) {
        if let Err(error) = events.wait(Duration::from_millis(200)) {
            tracing::error!(%error, "the DNS ring buffer failed; wildcards are no longer learned");
            return;
        }
        // One message at a time: a held response goes on as soon as its own answer is in force,
        // not after everything else that arrived with it.
        for packet in events.by_ref() {
            {
                let Some(mut state) = daemon.lock() else {
                    return;
                };
                state.observe_dns(&packet);
            }
            if packet.held {
                match &reinjector {
                    Some(r) => {
                        if let Err(error) = r.send(&packet) {
                            tracing::warn!(%error, dst = %packet.dst, "a held DNS response could not be sent on");
                        }
                    }
                    None => tracing::warn!("a DNS response was held without a way to send it on"),
                }
            }
        }
    }
}

/// Keeps the datapath holding DNS responses while this daemon runs (and can send them on): the
/// deadline is pushed ahead every second, so holding stops by itself within seconds of the
/// daemon's death instead of cutting clients off DNS.
pub async fn hold_heartbeat(daemon: Daemon) {
    loop {
        let ahead = u64::try_from(HOLD_AHEAD.as_nanos()).unwrap_or(u64::MAX);
        let deadline = crate::sys::monotonic_ns().saturating_add(ahead);
        let set = daemon
            .blocking(move |s| s.datapath_mut().set_dns_hold(deadline))
            .await;
        match set {
            None => return,
            Some(Err(error)) => tracing::warn!(%error, "cannot keep holding DNS responses"),
            Some(Ok(())) => {}
        }
        tokio::time::sleep(HOLD_EVERY).await;
    }
}
