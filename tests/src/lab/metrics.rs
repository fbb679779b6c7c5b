//! Scraping the daemon's Prometheus endpoint and reading the text exposition format.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};

/// One scrape: every sample by metric name and its (sorted) labels.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    samples: BTreeMap<String, Vec<(Labels, f64)>>,
    text: String,
}

/// Label pairs sorted by name.
pub type Labels = Vec<(String, String)>;

fn sorted(labels: &[(&str, &str)]) -> Labels {
    let mut labels: Labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    labels.sort();
    labels
}

impl Metrics {
    /// Parses the Prometheus text format (comments and blank lines skipped).
    pub fn parse(text: &str) -> Result<Metrics> {
        let mut samples: BTreeMap<String, Vec<(Labels, f64)>> = BTreeMap::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, labels, rest) =
                parse_line(line).with_context(|| format!("metrics line {}: {line}", index + 1))?;
            let value_text = rest.split_whitespace().next().unwrap_or_default();
            let value = parse_value(value_text)
                .with_context(|| format!("metrics line {}: value in {line}", index + 1))?;
            samples.entry(name).or_default().push((labels, value));
        }
        Ok(Metrics {
            samples,
            text: text.to_string(),
        })
    }

    /// The value of the series `name` with exactly these labels (in any order).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
        let wanted = sorted(labels);
        let series = self
            .samples
            .get(name)
            .ok_or_else(|| anyhow!("no metric {name} in the scrape"))?;
        series
            .iter()
            .find(|(l, _)| *l == wanted)
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                let known: Vec<String> = series.iter().map(|(l, _)| format_labels(l)).collect();
                anyhow!(
                    "no series {name}{} (have: {})",
                    format_labels(&wanted),
                    known.join(" ")
                )
            })
    }

    /// The sum over every series of `name` whose labels include these (0 when none).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.series(name, labels).iter().map(|(_, v)| v).sum()
    }

    /// Every series of `name` whose labels include these.
    pub fn series(&self, name: &str, labels: &[(&str, &str)]) -> Vec<(Labels, f64)> {
        self.samples
            .get(name)
            .map(|series| {
                series
                    .iter()
                    .filter(|(l, _)| {
                        labels
                            .iter()
                            .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How much the series `name` with exactly these labels grew since `earlier` (a series
    /// missing from `earlier` counts from 0); an error when it is missing now.
    pub fn increase(&self, earlier: &Metrics, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
        let now = self.metric(name, labels)?;
        Ok(now - earlier.metric(name, labels).unwrap_or(0.0))
    }

    /// Metric names present in the scrape.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.samples.keys().map(String::as_str)
    }

    /// The sample lines (no comments) of metrics whose name starts with `prefix`.
    pub fn sample_lines(&self, prefix: &str) -> Vec<&str> {
        self.text
            .lines()
            .filter(|l| l.starts_with(prefix))
            .collect()
    }

    /// The raw exposition text.
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// The kind of a metric of the reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// The metrics of the reference (docs: the metrics table of the public interface, and the
/// bundle metrics of "Fleet: signed policy bundles") that the daemon serves today. Not served
/// yet, and so not here: `enforcer_dns_blocked_total`, `enforcer_names`, and the `untrusted`
/// result of `enforcer_dns_answers_total`.
pub const REFERENCE: &[(&str, Kind)] = &[
    ("enforcer_packets_total", Kind::Counter),
    ("enforcer_bytes_total", Kind::Counter),
    ("enforcer_passed_packets_total", Kind::Counter),
    ("enforcer_prefixes", Kind::Gauge),
    ("enforcer_resolutions_total", Kind::Counter),
    ("enforcer_resolution_duration_seconds", Kind::Histogram),
    ("enforcer_rejected_answers_total", Kind::Counter),
    ("enforcer_dns_answers_total", Kind::Counter),
    ("enforcer_dns_held_packets_total", Kind::Counter),
    ("enforcer_policy_reloads_total", Kind::Counter),
    ("enforcer_last_policy_update_timestamp_seconds", Kind::Gauge),
    ("enforcer_xdp_attached", Kind::Gauge),
    ("enforcer_map_entries", Kind::Gauge),
    ("enforcer_map_capacity", Kind::Gauge),
    ("enforcer_build_info", Kind::Gauge),
    // Compliance by site (issue 17): read by the dashboard's per-site row and `enforcer
    // report`.
    ("enforcer_site_packets_total", Kind::Counter),
    ("enforcer_site_bytes_total", Kind::Counter),
    ("enforcer_site_stage", Kind::Gauge),
    ("enforcer_collateral_names", Kind::Gauge),
    // Bundle mode only (`run --bundle-url`): a daemon that follows no bundle serves none of
    // these (tests/tests/deploy.rs checks that), as its `status` says `"bundle": null`.
    ("enforcer_bundle_version", Kind::Gauge),
    ("enforcer_bundle_fetches_total", Kind::Counter),
    ("enforcer_bundle_age_seconds", Kind::Gauge),
];

fn format_labels(labels: &Labels) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(","))
}

fn parse_value(text: &str) -> Result<f64> {
    match text {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text.parse().map_err(|_| anyhow!("not a number: {text:?}")),
    }
}

/// Splits `name{a="b",c="d"} rest` into its parts; `rest` is the value and timestamp.
fn parse_line(line: &str) -> Result<(String, Labels, &str)> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or_else(|| anyhow!("no value"))?;
    let name = line[..name_end].to_string();
    let rest = &line[name_end..];
    let Some(body) = rest.strip_prefix('{') else {
        return Ok((name, Labels::new(), rest.trim()));
    };
    let mut labels = Labels::new();
    let mut key = String::new();
    let mut chars = body.char_indices();
    loop {
        let (index, c) = chars
            .next()
            .ok_or_else(|| anyhow!("unterminated label set"))?;
        match c {
            '}' => {
                labels.sort();
                return Ok((name, labels, body[index + 1..].trim()));
            }
            ',' => {}
            '=' => {
                if chars.next().map(|(_, c)| c) != Some('"') {
                    bail!("label {key} has no quoted value");
                }
                let mut value = String::new();
                loop {
                    match chars.next().map(|(_, c)| c) {
                        Some('"') => break,
                        Some('\\') => match chars.next().map(|(_, c)| c) {
                            Some('n') => value.push('\n'),
                            Some(other) => value.push(other),
                            None => bail!("dangling escape"),
                        },
                        Some(other) => value.push(other),
                        None => bail!("label {key} value is not closed"),
                    }
                }
                labels.push((std::mem::take(&mut key).trim().to_string(), value));
            }
            other => key.push(other),
        }
    }
}

/// `GET /metrics` at `addr` over plain HTTP/1.1, from the calling thread (and so from its
/// network namespace). Fails unless the answer is 200.
pub fn fetch(addr: SocketAddr, timeout: Duration) -> Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(
        b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: text/plain\r\nConnection: close\r\n\r\n",
    )?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .with_context(|| format!("reading the answer of {addr}"))?;
    let response = String::from_utf8(response).context("metrics are not UTF-8")?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no HTTP header in the answer of {addr}"))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        bail!("GET http://{addr}/metrics: {status}");
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_values_and_comments() {
        let text = "# HELP x y\n# TYPE x counter\nx{b=\"2\",a=\"1\"} 5\nplain 1.5\nesc{l=\"a\\\"b,c\"} 3 1700000000\n";
        let m = Metrics::parse(text).unwrap();
        assert_eq!(m.metric("x", &[("a", "1"), ("b", "2")]).unwrap(), 5.0);
        assert_eq!(m.metric("plain", &[]).unwrap(), 1.5);
        assert_eq!(m.metric("esc", &[("l", "a\"b,c")]).unwrap(), 3.0);
        assert!(m.metric("x", &[("a", "1")]).is_err());
        assert_eq!(m.sum("x", &[("a", "1")]), 5.0);
        assert_eq!(m.sum("missing", &[]), 0.0);
    }
}
