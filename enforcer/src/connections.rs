//! Bounds on the clients of the control socket and the metrics port, so that a crowd of idle
//! clients cannot take the descriptors that state saves, policy reads and map work need.
//!
//! Each listener serves at most [`MAX_CONNECTIONS`] connections at once (fewer when the
//! descriptor limit is low: [`RESERVE`] descriptors stay free for everything else), and a client
//! must send its request within [`REQUEST_TIMEOUT`]. A connection that has not sent its request
//! yet is idle: when every slot is taken, the oldest idle connection is closed to make room, so an
//! operator's command gets through a crowd of idle clients at once; when every slot serves a
//! request, the new connection is closed at once. Both are logged at most once per listener every
//! [`LOG_INTERVAL`], with running counts. docs/reference.md ("Limits on clients") lists these
//! values.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Connections each listener serves at once.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a client has to send its whole request (the control line or the HTTP head).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Descriptors kept free for everything but client connections: the BPF program, links and maps,
/// state saves (a temporary file and its directory), policy reads, DNS queries (a socket each, up
/// to 64 names at once) and raw sockets. About 30 are open at rest with two interfaces.
pub const RESERVE: u64 = 256;
/// At most one log line per listener in this time about connections closed for the limit.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// The control socket and the metrics port.
const LISTENERS: u64 = 2;
/// How long a new connection waits for the idle one closed for it to give its slot back.
const MAKE_ROOM_TIMEOUT: Duration = Duration::from_secs(1);

/// Connections per listener that a soft descriptor limit of `open_files` allows while keeping
/// [`RESERVE`] free: [`MAX_CONNECTIONS`], fewer under a low limit, never 0.
pub fn per_listener(open_files: u64) -> usize {
    let spare = open_files.saturating_sub(RESERVE) / LISTENERS;
    usize::try_from(spare)
        .unwrap_or(usize::MAX)
        .clamp(1, MAX_CONNECTIONS)
}

/// Raises the daemon's descriptor limit to the hard one and returns the connections each
/// listener may serve within it. Done at start-up, before anything is opened.
pub fn raise_descriptor_limit() -> usize {
    let soft = match crate::sys::raise_open_files() {
        Ok(limits) => limits.soft,
        Err(error) => {
            tracing::warn!(%error, "cannot raise the descriptor limit (RLIMIT_NOFILE)");
            crate::sys::open_files().map_or(0, |limits| limits.soft)
        }
    };
    let per_listener = per_listener(soft);
    if per_listener < MAX_CONNECTIONS {
        tracing::warn!(
            open_files = soft,
            reserve = RESERVE,
            connections = per_listener,
            "the descriptor limit is low: the control socket and the metrics port each serve fewer connections at once"
        );
    } else {
        tracing::info!(
            open_files = soft,
            reserve = RESERVE,
            connections = per_listener,
            "descriptor limit"
        );
    }
    per_listener
}

/// The slots of one listener.
pub struct Gate {
    listener: &'static str,
    limit: usize,
    slots: Mutex<Slots>,
    /// Signalled whenever a slot is given back.
    freed: Notify,
}

#[derive(Default)]
struct Slots {
    open: usize,
    /// Idle connections closed to make room that have not given their slot back yet.
    closing: usize,
    /// Idle connections, oldest first.
    idle: VecDeque<Arc<Idle>>,
    closed_idle: u64,
    refused: u64,
    last_log: Option<Instant>,
    /// A summary of the connections closed since `last_log` is scheduled.
    report_due: bool,
}

/// An idle connection's part of the gate: told when it is chosen to make room.
#[derive(Default)]
struct Idle {
    /// Set (under the gate's lock) when chosen to make room.
    closing: AtomicBool,
    notify: Notify,
}

enum Admission {
    Slot(Slot),
    Wait,
    Refused,
}

/// What happened to a connection for lack of a slot.
enum Closed {
    Idle,
    Refused,
}

impl Gate {
    /// A gate of `limit` slots (at least 1) for the listener named `listener` in logs.
    pub fn new(listener: &'static str, limit: usize) -> Arc<Gate> {
        Arc::new(Gate {
            listener,
            limit: limit.max(1),
            slots: Mutex::new(Slots::default()),
            freed: Notify::new(),
        })
    }

    /// A slot for a connection just accepted, after closing the oldest idle connection when
    /// every slot is taken; None when every slot serves a request (close the connection).
    pub async fn admit(self: &Arc<Self>) -> Option<Slot> {
        let deadline = tokio::time::Instant::now() + MAKE_ROOM_TIMEOUT;
        loop {
            let freed = self.freed.notified();
            match self.try_admit() {
                Admission::Slot(slot) => return Some(slot),
                Admission::Refused => return None,
                Admission::Wait => {}
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                self.count(Closed::Refused);
                return None;
            }
        }
    }

    fn try_admit(self: &Arc<Self>) -> Admission {
        let mut slots = self.lock();
        if slots.open < self.limit {
            slots.open += 1;
            let idle = Arc::new(Idle::default());
            slots.idle.push_back(Arc::clone(&idle));
            return Admission::Slot(Slot {
                gate: Arc::clone(self),
                idle: Some(idle),
            });
        }
        if slots.closing > 0 {
            return Admission::Wait;
        }
        let Some(oldest) = slots.idle.pop_front() else {
            drop(slots);
            self.count(Closed::Refused);
            return Admission::Refused;
        };
        oldest.closing.store(true, Ordering::Relaxed);
        oldest.notify.notify_one();
        slots.closing += 1;
        drop(slots);
        self.count(Closed::Idle);
        Admission::Wait
    }

    /// Counts a connection closed for the limit. The first one is logged at once; later ones
    /// are summed up in one line at the end of each LOG_INTERVAL in which some were closed.
    fn count(self: &Arc<Self>, closed: Closed) {
        let mut slots = self.lock();
        match closed {
            Closed::Idle => slots.closed_idle += 1,
            Closed::Refused => slots.refused += 1,
        }
        if slots.report_due {
            return;
        }
        let now = Instant::now();
        match slots.last_log {
            Some(last) if now.duration_since(last) < LOG_INTERVAL => {
                slots.report_due = true;
                let gate = Arc::clone(self);
                let at = tokio::time::Instant::from_std(last + LOG_INTERVAL);
                tokio::spawn(async move {
                    tokio::time::sleep_until(at).await;
                    let mut slots = gate.lock();
                    slots.report_due = false;
                    gate.log(slots);
                });
            }
            _ => self.log(slots),
        }
    }

    fn log(&self, mut slots: MutexGuard<'_, Slots>) {
        slots.last_log = Some(Instant::now());
        let (closed_idle, refused) = (slots.closed_idle, slots.refused);
        drop(slots);
        tracing::warn!(
            listener = self.listener,
            limit = self.limit,
            closed_idle,
            refused,
            "connection limit reached: idle connections are closed to make room, new ones refused while every slot serves a request (counts since start)"
        );
    }

    fn lock(&self) -> MutexGuard<'_, Slots> {
        // The counts stay consistent whatever panicked while holding the lock.
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One connection's slot, given back when dropped.
pub struct Slot {
    gate: Arc<Gate>,
    /// Some while the connection is idle (no request yet).
    idle: Option<Arc<Idle>>,
}

impl Slot {
    /// Resolves when this idle connection is chosen to make room: stop serving it then.
    pub async fn closing(&self) {
        match &self.idle {
            Some(idle) => idle.notify.notified().await,
            None => std::future::pending().await,
        }
    }

    /// The request has arrived: the connection keeps its slot until it ends. False when it was
    /// already chosen to make room.
    pub fn busy(&mut self) -> bool {
        let Some(idle) = self.idle.take() else {
            return true;
        };
        let mut slots = self.gate.lock();
        if idle.closing.load(Ordering::Relaxed) {
            self.idle = Some(idle);
            return false;
        }
        slots.idle.retain(|other| !Arc::ptr_eq(other, &idle));
        true
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        {
            let mut slots = self.gate.lock();
            slots.open = slots.open.saturating_sub(1);
            if let Some(idle) = &self.idle {
                if idle.closing.load(Ordering::Relaxed) {
                    slots.closing = slots.closing.saturating_sub(1);
                } else {
                    slots.idle.retain(|other| !Arc::ptr_eq(other, idle));
                }
            }
        }
        self.gate.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOON: Duration = Duration::from_secs(1);

    /// `n` with thousands separated by commas, as the reference writes numbers.
    fn grouped(n: usize) -> String {
        let digits = n.to_string();
        let mut out = String::new();
        for (i, digit) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(digit);
        }
        out
    }

    /// The values in docs/reference.md ("Limits on clients") are the ones in force.
    #[test]
    fn the_reference_states_the_limits() {
        let reference =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/reference.md"))
                .unwrap();
        let section = reference
            .split("### Limits on clients")
            .nth(1)
            .and_then(|rest| rest.split("\n#").next())
            .unwrap();
        let text = section.split_whitespace().collect::<Vec<_>>().join(" ");
        for stated in [
            format!("{RESERVE} descriptors stay in reserve"),
            format!("at most {MAX_CONNECTIONS} connections at once"),
            format!("below {RESERVE} + 2 × {MAX_CONNECTIONS}"),
            format!("{} s from connecting", REQUEST_TIMEOUT.as_secs()),
            format!("every {} s", LOG_INTERVAL.as_secs()),
            format!("1 MiB ({} bytes", grouped(crate::control::MAX_REQUEST_LINE)),
        ] {
            assert!(
                text.contains(&stated),
                "docs/reference.md does not say {stated:?}"
            );
        }
    }

    #[test]
    fn the_limit_leaves_the_reserve_free() {
        assert_eq!(per_listener(1024), MAX_CONNECTIONS);
        assert_eq!(per_listener(u64::MAX), MAX_CONNECTIONS);
        assert_eq!(per_listener(RESERVE + 40), 20);
        assert_eq!(per_listener(100), 1);
    }

    #[tokio::test]
    async fn the_oldest_idle_connection_makes_room() {
        let gate = Gate::new("test", 2);
        let oldest = gate.admit().await.unwrap();
        let mut newer = gate.admit().await.unwrap();
        let admitting = tokio::spawn({
            let gate = Arc::clone(&gate);
            async move { gate.admit().await }
        });
        tokio::time::timeout(SOON, oldest.closing()).await.unwrap();
        assert!(!admitting.is_finished(), "admitted before a slot was free");
        drop(oldest);
        let newest = tokio::time::timeout(SOON, admitting)
            .await
            .unwrap()
            .unwrap();
        assert!(newest.is_some());
        // The newer idle connection was left alone and may still start its request.
        assert!(newer.busy());
    }

    #[tokio::test]
    async fn a_connection_chosen_to_make_room_cannot_start() {
        let gate = Gate::new("test", 1);
        let mut idle = gate.admit().await.unwrap();
        let admitting = tokio::spawn({
            let gate = Arc::clone(&gate);
            async move { gate.admit().await }
        });
        tokio::time::timeout(SOON, idle.closing()).await.unwrap();
        assert!(!idle.busy());
        drop(idle);
        assert!(admitting.await.unwrap().is_some());
    }

    #[tokio::test]
    async fn new_connections_are_refused_while_every_slot_serves_a_request() {
        let gate = Gate::new("test", 2);
        let mut first = gate.admit().await.unwrap();
        let mut second = gate.admit().await.unwrap();
        assert!(first.busy() && second.busy());
        let refused = tokio::time::timeout(SOON / 10, gate.admit()).await;
        assert!(matches!(refused, Ok(None)), "not refused at once");
        drop(second);
        assert!(gate.admit().await.is_some());
    }
}
