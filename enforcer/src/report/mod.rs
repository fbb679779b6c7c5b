//! `enforcer report`: compliance by site over a period, read from a Prometheus server that
//! scrapes the gateways, written as a self-contained HTML page and optionally a CSV.
//!
//! Totals are exact: each series' raw samples are fetched (range selectors, period chunk by
//! chunk) and its growth is computed here with counter resets handled, instead of
//! `increase()`, which extrapolates to the edges of its window.

pub mod charts;
pub mod clock;
pub mod counters;
pub mod csv;
pub mod duration;
pub mod html;
pub mod prometheus;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use counters::{Key, Tally};
use prometheus::Client;

pub const PACKETS: &str = "enforcer_site_packets_total";
pub const BYTES: &str = "enforcer_site_bytes_total";
pub const STAGE: &str = "enforcer_site_stage";
/// The site of clients outside every configured site (listed last).
pub const OTHER_SITE: &str = "other";
/// Under this period the trend is bucketed by hour, else by day.
const HOURLY_UNDER: Duration = Duration::from_secs(2 * 86_400);

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("--since {text:?}: {why}")]
    Duration { text: String, why: String },
    #[error("--prometheus {url:?}: {why}")]
    Url { url: String, why: String },
    #[error("cannot reach Prometheus at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("{url} answered HTTP {status}: {detail}")]
    Status {
        url: String,
        status: u16,
        detail: String,
    },
    #[error("Prometheus at {url} gave an unusable answer to `{expr}`: {detail}")]
    BadAnswer {
        url: String,
        expr: String,
        detail: String,
    },
    #[error("drawing a chart: {0}")]
    Chart(String),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "Prometheus at {url} has no {PACKETS} or {BYTES} series from {start} to {end}: is it \
         scraping gateways that run an enforcer with sites? (the report written says so)"
    )]
    NoSeries {
        url: String,
        start: String,
        end: String,
    },
    #[error("the system clock is before 1970")]
    Clock,
    #[error("cannot start the async runtime: {0}")]
    Runtime(String),
}

/// What to report on and where to write it.
#[derive(Clone, Debug)]
pub struct Options {
    pub prometheus: String,
    pub since: Duration,
    /// `--since` as the operator wrote it, for the page.
    pub since_text: String,
    pub out: PathBuf,
    pub csv: Option<PathBuf>,
}

/// How the trend is bucketed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Hour,
    Day,
}

impl Step {
    fn millis(self) -> u64 {
        match self {
            Step::Hour => 3_600_000,
            Step::Day => 86_400_000,
        }
    }
}

/// One line of the table and of the CSV.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub key: Key,
    /// The action in force for the site and platform at the end of the period.
    pub stage: String,
    pub packets: f64,
    pub bytes: f64,
}

/// Everything the page and the CSV show.
#[derive(Clone, Debug)]
pub struct Report {
    pub prometheus: String,
    pub since: String,
    pub start_ms: u64,
    pub end_ms: u64,
    pub step: Step,
    /// The trend's buckets, [start, end) in Unix ms; the first and last may be partial.
    pub buckets: Vec<(u64, u64)>,
    pub rows: Vec<Row>,
    /// Packets per platform, site and bucket (all actions).
    pub trend: BTreeMap<String, BTreeMap<String, Vec<f64>>>,
    /// Distinct counter series read (0: nothing recorded).
    pub series: usize,
}

/// What was written.
#[derive(Debug)]
pub struct Outcome {
    pub rows: usize,
    pub series: usize,
}

/// The buckets of [start, end): aligned on UTC hours or days, the first and last cut to the
/// period.
pub fn buckets(start_ms: u64, end_ms: u64, step: Step) -> Vec<(u64, u64)> {
    let step = step.millis();
    let mut out = Vec::new();
    let mut at = start_ms;
    while at < end_ms {
        let next = ((at / step + 1) * step).min(end_ms);
        out.push((at, next));
        at = next;
    }
    out
}

/// Sites in report order: by name, `other` last.
pub fn site_order(site: &str) -> (bool, &str) {
    (site == OTHER_SITE, site)
}

fn action_order(action: &str) -> (u8, &str) {
    let rank = match action {
        "drop" => 0,
        "monitor" => 1,
        "allow" => 2,
        _ => 3,
    };
    (rank, action)
}

/// The stage of each (site, platform): the actions whose gauge was 1 at its last sample in the
/// period on any gateway (more than one when gateways disagree).
fn stages(samples: &[(prometheus::Labels, f64)]) -> BTreeMap<(String, String), String> {
    let mut on: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for (labels, value) in samples {
        let Some(key) = Key::of(labels) else {
            continue;
        };
        let actions = on.entry((key.site, key.platform)).or_default();
        if *value == 1.0 {
            actions.insert(key.action);
        }
    }
    on.into_iter()
        .filter(|(_, actions)| !actions.is_empty())
        .map(|(pair, actions)| {
            let mut actions: Vec<String> = actions.into_iter().collect();
            actions.sort_by(|a, b| action_order(a).cmp(&action_order(b)));
            (pair, actions.join("/"))
        })
        .collect()
}

/// The report from the two counters' tallies and the stage gauges.
pub fn build(
    options: &Options,
    start_ms: u64,
    end_ms: u64,
    step: Step,
    packets: &Tally,
    bytes: &Tally,
    stage_samples: &[(prometheus::Labels, f64)],
) -> Report {
    let buckets = buckets(start_ms, end_ms, step);
    let stages = stages(stage_samples);
    let packet_totals = packets.totals();
    let byte_totals = bytes.totals();
    let keys: BTreeSet<&Key> = packet_totals.keys().chain(byte_totals.keys()).collect();
    let mut rows: Vec<Row> = keys
        .into_iter()
        .map(|key| Row {
            key: key.clone(),
            stage: stages
                .get(&(key.site.clone(), key.platform.clone()))
                .cloned()
                .unwrap_or_else(|| "unknown".to_owned()),
            packets: packet_totals.get(key).copied().unwrap_or(0.0),
            bytes: byte_totals.get(key).copied().unwrap_or(0.0),
        })
        .collect();
    rows.sort_by(|a, b| {
        (
            site_order(&a.key.site),
            &a.key.platform,
            action_order(&a.key.action),
        )
            .cmp(&(
                site_order(&b.key.site),
                &b.key.platform,
                action_order(&b.key.action),
            ))
    });
    let mut trend: BTreeMap<String, BTreeMap<String, Vec<f64>>> = BTreeMap::new();
    for (key, per_bucket) in packets.per_chunk() {
        let line = trend
            .entry(key.platform.clone())
            .or_default()
            .entry(key.site.clone())
            .or_insert_with(|| vec![0.0; buckets.len()]);
        for (sum, value) in line.iter_mut().zip(per_bucket) {
            *sum += value;
        }
    }
    Report {
        prometheus: options.prometheus.clone(),
        since: options.since_text.clone(),
        start_ms,
        end_ms,
        step,
        buckets,
        rows,
        trend,
        series: packets.series_count() + bytes.series_count(),
    }
}

/// The growth of every series of `metric`, bucket by bucket. One query per bucket keeps each
/// answer small (a day of one series at a 15 s scrape is 5,760 samples); the tally carries each
/// series' last sample across buckets.
async fn tally(client: &Client, metric: &str, chunks: &[(u64, u64)]) -> Result<Tally, ReportError> {
    let mut tally = Tally::new(chunks.len());
    for (index, &(from, to)) in chunks.iter().enumerate() {
        let range = duration::selector(Duration::from_millis(to - from));
        let series = client.range_samples(metric, &range, to).await?;
        tally.add(index, &series);
    }
    Ok(tally)
}

/// Reads the period ending at `now` from Prometheus and writes the page (and the CSV). With no
/// site series at all the page is still written, saying so, and the error says why that is
/// suspicious.
pub async fn run(options: &Options, now: SystemTime) -> Result<Outcome, ReportError> {
    let client = Client::new(&options.prometheus)?;
    let end_ms = u64::try_from(
        now.duration_since(SystemTime::UNIX_EPOCH)
            .map_err(|_| ReportError::Clock)?
            .as_millis(),
    )
    .map_err(|_| ReportError::Clock)?;
    let since_ms = u64::try_from(options.since.as_millis()).unwrap_or(u64::MAX);
    let start_ms = end_ms.saturating_sub(since_ms);
    let step = if options.since < HOURLY_UNDER {
        Step::Hour
    } else {
        Step::Day
    };
    let chunks = buckets(start_ms, end_ms, step);
    let packets = tally(&client, PACKETS, &chunks).await?;
    let bytes = tally(&client, BYTES, &chunks).await?;
    let whole = duration::selector(Duration::from_millis(end_ms - start_ms));
    let stage_samples = client
        .vector(&format!("last_over_time({STAGE}[{whole}])"), end_ms)
        .await?;
    let report = build(
        options,
        start_ms,
        end_ms,
        step,
        &packets,
        &bytes,
        &stage_samples,
    );
    let page = html::page(&report, now)?;
    std::fs::write(&options.out, page).map_err(|source| ReportError::Write {
        path: options.out.clone(),
        source,
    })?;
    if let Some(path) = &options.csv {
        std::fs::write(path, csv::table(&report.rows)).map_err(|source| ReportError::Write {
            path: path.clone(),
            source,
        })?;
    }
    if report.series == 0 {
        return Err(ReportError::NoSeries {
            url: options.prometheus.clone(),
            start: clock::format_utc(start_ms),
            end: clock::format_utc(end_ms),
        });
    }
    Ok(Outcome {
        rows: report.rows.len(),
        series: report.series,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_align_on_utc_boundaries_and_cover_the_period() {
        let hour = 3_600_000;
        // 10:30 to 13:15 on day 0.
        let b = buckets(10 * hour + hour / 2, 13 * hour + hour / 4, Step::Hour);
        assert_eq!(
            b,
            vec![
                (10 * hour + hour / 2, 11 * hour),
                (11 * hour, 12 * hour),
                (12 * hour, 13 * hour),
                (13 * hour, 13 * hour + hour / 4),
            ]
        );
        let day = 24 * hour;
        let b = buckets(day + 5, 3 * day, Step::Day);
        assert_eq!(b, vec![(day + 5, 2 * day), (2 * day, 3 * day)]);
        assert!(buckets(5, 5, Step::Day).is_empty());
    }

    #[test]
    fn stage_is_the_action_at_one() {
        let labels = |site: &str, action: &str, instance: &str| -> prometheus::Labels {
            [
                ("site", site),
                ("platform", "teams"),
                ("action", action),
                ("instance", instance),
            ]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
        };
        let stages = stages(&[
            (labels("a", "monitor", "gw1"), 0.0),
            (labels("a", "drop", "gw1"), 1.0),
            (labels("b", "monitor", "gw1"), 1.0),
            // Gateways that disagree: both shown.
            (labels("c", "monitor", "gw1"), 1.0),
            (labels("c", "drop", "gw2"), 1.0),
            // Nothing at 1: no stage.
            (labels("d", "drop", "gw1"), 0.0),
        ]);
        let of = |site: &str| stages.get(&(site.to_owned(), "teams".to_owned())).cloned();
        assert_eq!(of("a").as_deref(), Some("drop"));
        assert_eq!(of("b").as_deref(), Some("monitor"));
        assert_eq!(of("c").as_deref(), Some("drop/monitor"));
        assert_eq!(of("d"), None);
    }

    #[test]
    fn other_sorts_last() {
        let mut sites = vec!["zeta", OTHER_SITE, "alpha"];
        sites.sort_by_key(|s| site_order(s));
        assert_eq!(sites, vec!["alpha", "zeta", OTHER_SITE]);
    }
}
