//! The resolver's counters: `enforcer_resolutions_total{platform,result}`,
//! `enforcer_resolution_duration_seconds` and `enforcer_rejected_answers_total{reason}`, plus the
//! resolver health `status` reports. Plain atomics and a small map, rendered by the daemon.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use super::dns::{FailureKind, LookupResult, NameResolution};
use super::guard::RejectReason;

/// Upper bounds (seconds) of the duration histogram's buckets.
pub const DURATION_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// The `result` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResultLabel {
    Ok,
    NxDomain,
    Error,
    Timeout,
}

impl ResultLabel {
    pub const ALL: [ResultLabel; 4] = [Self::Ok, Self::NxDomain, Self::Error, Self::Timeout];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::NxDomain => "nxdomain",
            Self::Error => "error",
            Self::Timeout => "timeout",
        }
    }

    /// A refused answer still came from a working server: it counts as `ok` here and under its
    /// reason in `enforcer_rejected_answers_total`.
    pub fn of(outcome: &LookupResult) -> Self {
        match outcome {
            LookupResult::Ok(_) | LookupResult::Rejected(_) => Self::Ok,
            LookupResult::Failed(f) => match f.kind {
                FailureKind::NxDomain => Self::NxDomain,
                FailureKind::Error => Self::Error,
                FailureKind::Timeout => Self::Timeout,
            },
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Ok => 0,
            Self::NxDomain => 1,
            Self::Error => 2,
            Self::Timeout => 3,
        }
    }
}

/// A copy of the histogram: cumulative counts per bucket (`le`), then the sum and count.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSnapshot {
    pub buckets: Vec<(f64, u64)>,
    pub sum_seconds: f64,
    pub count: u64,
}

/// `ok`: the servers answered the most recent query (any answer, even NXDOMAIN or a refused one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResolverHealth {
    pub ok: bool,
    pub last_success: Option<SystemTime>,
}

#[derive(Debug, Default)]
struct Health {
    last_answer: Option<SystemTime>,
    last_failure: Option<SystemTime>,
}

#[derive(Debug, Default)]
pub struct ResolveMetrics {
    resolutions: Mutex<BTreeMap<String, [u64; 4]>>,
    rejected: [AtomicU64; 3],
    /// Non-cumulative counts per bucket, the last one for +Inf.
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
    count: AtomicU64,
    health: Mutex<Health>,
}

impl ResolveMetrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates each platform's series at 0, so they exist before the first resolution.
    pub fn register_platforms<I, S>(&self, platforms: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut map = lock(&self.resolutions);
        for p in platforms {
            map.entry(p.as_ref().to_owned()).or_default();
        }
    }

    /// Counts one resolution: under each platform using the name for `enforcer_resolutions_total`,
    /// once for the duration histogram and, if refused, once for its reason.
    pub fn record<S: AsRef<str>>(&self, platforms: &[S], resolution: &NameResolution) {
        let label = ResultLabel::of(&resolution.outcome);
        {
            let mut map = lock(&self.resolutions);
            for p in platforms {
                map.entry(p.as_ref().to_owned()).or_default()[label.index()] += 1;
            }
        }
        if let LookupResult::Rejected(r) = &resolution.outcome {
            self.rejected[reason_index(r.reason)].fetch_add(1, Ordering::Relaxed);
        }
        let secs = resolution.elapsed.as_secs_f64();
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(DURATION_BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(resolution.elapsed.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.count.fetch_add(1, Ordering::Relaxed);

        let mut health = lock(&self.health);
        let now = SystemTime::now();
        match label {
            ResultLabel::Ok | ResultLabel::NxDomain => health.last_answer = Some(now),
            ResultLabel::Error | ResultLabel::Timeout => health.last_failure = Some(now),
        }
    }

    /// Counts an answer refused outside resolution (one learned from DNS traffic).
    pub fn count_rejection(&self, reason: RejectReason) {
        self.rejected[reason_index(reason)].fetch_add(1, Ordering::Relaxed);
    }

    /// (platform, result, count) for every series, in platform then result order.
    pub fn resolutions(&self) -> Vec<(String, ResultLabel, u64)> {
        lock(&self.resolutions)
            .iter()
            .flat_map(|(p, counts)| {
                ResultLabel::ALL
                    .iter()
                    .map(move |l| (p.clone(), *l, counts[l.index()]))
            })
            .collect()
    }

    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.rejected[reason_index(reason)].load(Ordering::Relaxed)
    }

    pub fn duration(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let buckets = DURATION_BUCKETS
            .iter()
            .enumerate()
            .map(|(i, le)| {
                cumulative += self.buckets[i].load(Ordering::Relaxed);
                (*le, cumulative)
            })
            .collect();
        #[allow(clippy::cast_precision_loss)]
        let sum_seconds = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        HistogramSnapshot {
            buckets,
            sum_seconds,
            count: self.count.load(Ordering::Relaxed),
        }
    }

    pub fn health(&self) -> ResolverHealth {
        let h = lock(&self.health);
        ResolverHealth {
            ok: match (h.last_answer, h.last_failure) {
                (Some(a), Some(f)) => a >= f,
                (Some(_), None) => true,
                (None, _) => false,
            },
            last_success: h.last_answer,
        }
    }

    /// Appends the three metric families in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP enforcer_resolutions_total Name resolutions by platform and result."
        );
        let _ = writeln!(out, "# TYPE enforcer_resolutions_total counter");
        for (platform, label, n) in self.resolutions() {
            let _ = writeln!(
                out,
                "enforcer_resolutions_total{{platform=\"{}\",result=\"{}\"}} {n}",
                escape(&platform),
                label.as_str()
            );
        }
        let _ = writeln!(
            out,
            "# HELP enforcer_resolution_duration_seconds Time to resolve one name (A and AAAA, CNAME chain included)."
        );
        let _ = writeln!(out, "# TYPE enforcer_resolution_duration_seconds histogram");
        let h = self.duration();
        for (le, n) in &h.buckets {
            let _ = writeln!(
                out,
                "enforcer_resolution_duration_seconds_bucket{{le=\"{le}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "enforcer_resolution_duration_seconds_bucket{{le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(
            out,
            "enforcer_resolution_duration_seconds_sum {}",
            h.sum_seconds
        );
        let _ = writeln!(
            out,
            "enforcer_resolution_duration_seconds_count {}",
            h.count
        );
        let _ = writeln!(
            out,
            "# HELP enforcer_rejected_answers_total DNS answers refused by a safety check."
        );
        let _ = writeln!(out, "# TYPE enforcer_rejected_answers_total counter");
        for reason in RejectReason::ALL {
            let _ = writeln!(
                out,
                "enforcer_rejected_answers_total{{reason=\"{}\"}} {}",
                reason.as_str(),
                self.rejected(reason)
            );
        }
    }
}

fn reason_index(reason: RejectReason) -> usize {
    match reason {
        RejectReason::NeverBlock => 0,
        RejectReason::TooMany => 1,
        RejectReason::Shared => 2,
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::resolve::dns::{Answer, Failure};
    use crate::resolve::guard::Rejection;

    fn res(outcome: LookupResult, ms: u64) -> NameResolution {
        NameResolution {
            name: "a.example".into(),
            outcome,
            elapsed: Duration::from_millis(ms),
        }
    }

    #[test]
    fn counts_per_platform_and_reason() {
        let m = ResolveMetrics::new();
        m.register_platforms(["zoom", "meet"]);
        let ok = LookupResult::Ok(Answer {
            addresses: vec![],
            cname_chain: vec![],
            ttl: None,
            ipv4: true,
            ipv6: true,
        });
        m.record(&["zoom", "meet"], &res(ok, 3));
        m.record(
            &["zoom"],
            &res(
                LookupResult::Failed(Failure {
                    kind: FailureKind::Timeout,
                    detail: String::new(),
                }),
                4_000,
            ),
        );
        m.record(
            &["meet"],
            &res(
                LookupResult::Rejected(Rejection {
                    reason: RejectReason::Shared,
                    offending: String::new(),
                    detail: String::new(),
                    cname_chain: vec![],
                    addresses: vec![],
                }),
                20,
            ),
        );
        let r = m.resolutions();
        assert_eq!(r.len(), 8);
        let get = |p: &str, l| r.iter().find(|x| x.0 == p && x.1 == l).unwrap().2;
        assert_eq!(get("zoom", ResultLabel::Ok), 1);
        assert_eq!(get("zoom", ResultLabel::Timeout), 1);
        assert_eq!(get("meet", ResultLabel::Ok), 2);
        assert_eq!(get("meet", ResultLabel::NxDomain), 0);
        assert_eq!(m.rejected(RejectReason::Shared), 1);
        assert_eq!(m.rejected(RejectReason::NeverBlock), 0);
        let h = m.duration();
        assert_eq!(h.count, 3);
        assert_eq!(h.buckets[0], (0.005, 1));
        assert_eq!(h.buckets[2], (0.025, 2));
        assert_eq!(h.buckets.last().unwrap().1, 3);
        assert!((h.sum_seconds - 4.023).abs() < 1e-9);
        assert!(m.health().ok);

        let mut text = String::new();
        m.render(&mut text);
        assert!(
            text.contains("enforcer_resolutions_total{platform=\"zoom\",result=\"timeout\"} 1")
        );
        assert!(text.contains("enforcer_rejected_answers_total{reason=\"too_many\"} 0"));
        assert!(text.contains("enforcer_resolution_duration_seconds_bucket{le=\"+Inf\"} 3"));
        assert!(text.contains("enforcer_resolution_duration_seconds_bucket{le=\"0.005\"} 1"));
    }

    #[test]
    fn health_follows_the_latest_result() {
        let m = ResolveMetrics::new();
        assert!(!m.health().ok);
        m.record::<&str>(
            &[],
            &res(
                LookupResult::Failed(Failure {
                    kind: FailureKind::Error,
                    detail: String::new(),
                }),
                1,
            ),
        );
        assert!(!m.health().ok);
        assert_eq!(m.health().last_success, None);
    }
}
