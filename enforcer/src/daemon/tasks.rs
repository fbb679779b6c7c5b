//! The daemon's background work: the policy file watcher, the resolution refresh loop, the DNS
//! learning thread and the hold heartbeat. Each reaches the state only through [`Daemon`]; the
//! async ones do their state work on blocking threads.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use super::{Daemon, State, watch};
use crate::datapath::{DnsEvents, DnsKind, DnsPacket, Reinjector};
use crate::learn::{FRAGMENT_WAIT, Observed, Ready, Reassembly, is_first_fragment};
use crate::resolve::Resolver;

/// How often the policy files are looked at.
const WATCH_INTERVAL: Duration = Duration::from_millis(100);
/// A changed policy is read only once two looks this far apart see the same files (names,
/// sizes, modification times), so that a file still being written is not applied half-way.
const SETTLE: Duration = Duration::from_millis(150);
/// Shortest and longest sleep of the refresh loop between looks at the address book.
const MIN_IDLE: Duration = Duration::from_millis(100);
const MAX_IDLE: Duration = Duration::from_secs(5);
/// How often changed learned addresses are written to the state directory (and at exit).
const LEARNED_SAVE_EVERY: Duration = Duration::from_secs(5);
/// How far ahead the hold deadline is pushed, and how often.
const HOLD_AHEAD: Duration = Duration::from_secs(3);
const HOLD_EVERY: Duration = Duration::from_secs(1);
/// How long a held response waits for the state (busy with a policy change) before it goes on
/// unlearned: well under a client's DNS timeout.
const LEARN_WAIT: Duration = Duration::from_millis(500);

/// Reloads the policy whenever its files change and have stopped changing (an invalid change
/// is refused and logged; the running policy stays). Runs until the task is dropped.
pub async fn watch_policy(daemon: Daemon) {
    let Some((path, _)) = daemon.blocking(|s| s.reload_source()).await else {
        return;
    };
    loop {
        tokio::time::sleep(WATCH_INTERVAL).await;
        let Some(seen) = daemon.blocking(|s| s.files_seen().clone()).await else {
            return;
        };
        let Some(mut last) = look(&path).await else {
            return;
        };
        if last == seen {
            continue;
        }
        // Changed: wait until two looks agree.
        loop {
            tokio::time::sleep(SETTLE).await;
            let Some(now) = look(&path).await else {
                return;
            };
            if now == last {
                break;
            }
            last = now;
        }
        let daemon = daemon.clone();
        let reloaded = tokio::task::spawn_blocking(move || daemon.reload_changed()).await;
        if reloaded.is_err() {
            return;
        }
    }
}

/// The policy files' fingerprint, taken on a blocking thread.
async fn look(path: &std::path::Path) -> Option<watch::Fingerprint> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || watch::fingerprint(&path))
        .await
        .ok()
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

/// Reads the DNS frames the datapath copies and feeds them to the learner one at a time, then
/// puts each held response back into the receive path. Runs on its own thread (blocking in
/// poll(2) on the ring buffer): a held response waits for this loop, so it must not queue
/// behind the async tasks. A held response is never lost: when the state cannot be had within
/// [`LEARN_WAIT`] (a long policy change) or its fragments do not all come, it goes back
/// unlearned. Returns when `stop` is set (checked at least every 200 ms).
pub fn learn_thread(
    daemon: &Daemon,
    mut events: DnsEvents,
    reinjector: Option<Reinjector>,
    stop: &AtomicBool,
) {
    let mut fragments = Reassembly::new();
    let put_back = |held: &DnsPacket| {
        if !held.held {
            return;
        }
        let sent = match &reinjector {
            Some(r) => r.put_back(&held.frame, held.ifindex),
            None => Err(std::io::Error::other("no way to put it back")),
        };
        if let Err(error) = sent {
            tracing::warn!(%error, dst = %held.dst, "a held DNS response could not be put back");
        }
    };
    let learn = |packet: &DnsPacket, message: &[u8]| {
        if !observe_within(daemon, &Observed::new(packet, message)) {
            tracing::warn!(dst = %packet.dst, "the state was busy: a DNS response went on unlearned");
        }
        put_back(packet);
    };
    while !stop.load(Ordering::Relaxed) {
        let wait = if fragments.is_waiting() {
            FRAGMENT_WAIT / 4
        } else {
            Duration::from_millis(200)
        };
        if let Err(error) = events.wait(wait) {
            tracing::error!(%error, "the DNS ring buffer failed; wildcards are no longer learned");
            return;
        }
        let mut ready = Vec::new();
        // One message at a time: a held response goes back as soon as its own answer is in
        // force, not after everything else that arrived with it.
        for packet in events.by_ref() {
            match packet.kind {
                DnsKind::Query => {
                    let _ = observe_within(daemon, &Observed::from(&packet));
                }
                DnsKind::Fragment => ready.extend(fragments.later(&packet, Instant::now())),
                DnsKind::Response if packet.held && is_first_fragment(&packet) => {
                    ready.extend(fragments.first(packet, Instant::now()));
                }
                DnsKind::Response => learn(&packet, packet.payload()),
            }
            for r in ready.drain(..) {
                match r {
                    Ready::Whole { held, message } => learn(&held, &message),
                    Ready::Incomplete { held } => {
                        tracing::debug!(dst = %held.dst, "a fragmented DNS response went on unlearned");
                        put_back(&held);
                    }
                }
            }
        }
        for r in fragments.collect(Instant::now()) {
            match r {
                Ready::Whole { held, message } => learn(&held, &message),
                Ready::Incomplete { held } => put_back(&held),
            }
        }
    }
}

/// Feeds one message to the learner if the state can be had within [`LEARN_WAIT`]; returns
/// whether it was.
fn observe_within(daemon: &Daemon, observed: &Observed<'_>) -> bool {
    let deadline = Instant::now() + LEARN_WAIT;
    loop {
        if let Some(mut state) = daemon.try_lock() {
            state.observe_dns(observed);
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_micros(200));
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

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::path::Path;

    use super::*;

    /// A rule file copied in slowly (six pieces, 60 ms apart: every partial file is an invalid
    /// or smaller policy) is applied once, whole: the watcher waits until the files stop
    /// changing.
    #[test]
    fn a_file_written_in_pieces_is_reloaded_once_whole() {
        let Some((daemon, dir)) = Daemon::for_test("watch", &[]) else {
            return;
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let watcher = runtime.spawn(watch_policy(daemon.clone()));

        let text = "platform: b\ndescription: copied in slowly\nmatch:\n  - prefixes:\n      \
                    - 198.18.2.0/24\n      - 198.18.3.0/24\n";
        write_slowly(
            &dir.join("rules/b.yaml"),
            text,
            6,
            Duration::from_millis(60),
        );
        std::thread::sleep(Duration::from_millis(800));

        let reloads = daemon.with(|s| Ok(s.reloads())).unwrap();
        assert_eq!((reloads.ok, reloads.error), (1, 0), "{reloads:?}");
        assert_eq!(daemon.platform_names(), ["a", "b"]);
        let prefixes = daemon.with(|s| Ok(s.compiled().v4.len())).unwrap();
        assert_eq!(prefixes, 3);
        watcher.abort();
        drop(runtime);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A reload reads and validates the files without holding the state: while a file that
    /// takes long to parse (20 MB, mostly comments) is reloaded, the state stays available
    /// (status, metrics and DNS learning need it).
    #[test]
    fn a_slow_reload_does_not_hold_the_state() {
        let Some((daemon, dir)) = Daemon::for_test("slow-reload", &[]) else {
            return;
        };
        let mut text = "# padding\n".repeat(2_000_000);
        text.push_str("platform: b\nmatch:\n  - prefixes: [198.18.2.0/24]\n");
        std::fs::write(dir.join("rules/b.yaml"), text).unwrap();
        let reloading = {
            let daemon = daemon.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                daemon
                    .reload("test", crate::history::Source::Reload, "test")
                    .unwrap();
                started.elapsed()
            })
        };
        let mut longest = Duration::ZERO;
        while !reloading.is_finished() {
            let started = Instant::now();
            daemon.with(|_| Ok(())).unwrap();
            longest = longest.max(started.elapsed());
            std::thread::sleep(Duration::from_millis(5));
        }
        let took = reloading.join().unwrap();
        assert_eq!(daemon.platform_names(), ["a", "b"]);
        assert!(
            took > Duration::from_millis(300),
            "the reload was too quick to tell: {took:?}"
        );
        assert!(
            longest < took / 4,
            "the state was held {longest:?} of a {took:?} reload"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A held answer never waits long for a busy state: while another thread holds the state
    /// for 2 s, feeding a message gives up after about LEARN_WAIT (so the answer goes back
    /// unlearned instead of being lost), and succeeds at once when the state is free.
    #[test]
    fn a_busy_state_makes_a_held_answer_go_on_unlearned_in_time() {
        let Some((daemon, dir)) = Daemon::for_test("busy-state", &[]) else {
            return;
        };
        let payload = [0u8; 12];
        let observed = Observed {
            src: "198.18.2.2:53".parse().unwrap(),
            dst: "198.18.1.2:40000".parse().unwrap(),
            payload: &payload,
            ifindex: 2,
        };
        let started = Instant::now();
        assert!(observe_within(&daemon, &observed));
        assert!(started.elapsed() < LEARN_WAIT);
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let holder = {
            let daemon = daemon.clone();
            std::thread::spawn(move || {
                daemon
                    .with(|_| {
                        locked_tx.send(()).unwrap();
                        std::thread::sleep(Duration::from_secs(2));
                        Ok(())
                    })
                    .unwrap();
            })
        };
        locked_rx.recv().unwrap();
        let started = Instant::now();
        assert!(
            !observe_within(&daemon, &observed),
            "fed while the state was held"
        );
        let waited = started.elapsed();
        assert!(
            waited >= LEARN_WAIT && waited < LEARN_WAIT * 3,
            "gave up after {waited:?}"
        );
        holder.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn write_slowly(path: &Path, text: &str, pieces: usize, pause: Duration) {
        let mut file = std::fs::File::create(path).unwrap();
        let size = text.len().div_ceil(pieces);
        for piece in text.as_bytes().chunks(size) {
            std::thread::sleep(pause);
            file.write_all(piece).unwrap();
            file.flush().unwrap();
        }
    }
}
