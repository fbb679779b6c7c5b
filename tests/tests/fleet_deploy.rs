//! The fleet monitoring files in deploy/: the central Prometheus configuration, its recording
//! rules and alerts pass promtool and their unit tests; the fleet dashboard reads only
//! documented metrics and the rules' own series; and a central Prometheus federating a
//! gateway-level Prometheus (which scrapes two gateways' metrics) computes the fleet view:
//! drops summed per platform, the newest bundle version, the gateways behind, and alerts that
//! pick out exactly the gateway in trouble.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::deploy::{self, documented, run};
use tests::lab::prometheus::{Prometheus, scalar};
use tests::lab::{Lab, Side};
use tests::tools;

const RULES: &str = "enforcer-fleet.yml";
const DASHBOARD: &str = "enforcer-fleet-dashboard.json";

/// The series names an expression reads that belong to the enforcer: its metrics and the
/// recording rules built on them (`level:enforcer_...:operation`).
fn series_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut word = String::new();
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
        } else {
            if word.contains("enforcer_") {
                names.insert(std::mem::take(&mut word));
            }
            word.clear();
        }
    }
    names
}

fn recorded() -> Vec<(String, String)> {
    let records = deploy::rules(RULES, "record");
    assert!(records.len() >= 8, "{records:?}");
    records
}

fn alerts() -> Vec<(String, String)> {
    let alerts = deploy::rules(RULES, "alert");
    assert_eq!(alerts.len(), 5, "{alerts:?}");
    alerts
}

fn dashboard_exprs() -> Vec<(String, String)> {
    let dashboard = deploy::dashboard(DASHBOARD);
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "a dashboard of {} panels", panels.len());
    deploy::panel_exprs(&dashboard)
}

#[test]
fn fleet_rules_pass_promtool_and_their_unit_tests() {
    let dir = deploy::dir().join("prometheus");
    let out = run(Command::new(tools::require(tools::PROMTOOL))
        .arg("check")
        .arg("rules")
        .arg(dir.join(RULES)));
    assert!(out.contains("SUCCESS: 14 rules found"), "{out}");
    // Checks the file_sd targets file it names too.
    run(Command::new(tools::require(tools::PROMTOOL))
        .arg("check")
        .arg("config")
        .arg(dir.join("fleet-prometheus.yml")));
    let out = run(Command::new(tools::require(tools::PROMTOOL))
        .current_dir(&dir)
        .args(["test", "rules", "enforcer-fleet.test.yml"]));
    assert!(out.contains("SUCCESS"), "{out}");
}

/// The dashboard is built like the single-gateway one, every query parses (promtool checks
/// them as recording rules), and every series a query, a variable, a rule or an alert reads is
/// a documented metric or one of the fleet rules' own series.
#[test]
fn fleet_dashboard_and_rules_read_only_documented_metrics() {
    let dashboard = deploy::dashboard(DASHBOARD);
    assert_eq!(dashboard["uid"], "enforcer-fleet");
    assert!(dashboard["version"].as_u64().is_some(), "a version");
    assert_eq!(dashboard["templating"]["list"][0]["type"], "datasource");
    for panel in dashboard["panels"].as_array().expect("panels") {
        if panel["type"] != "row" {
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "panel {}",
                panel["title"]
            );
        }
    }

    let records: BTreeSet<String> = recorded().into_iter().map(|(name, _)| name).collect();
    let exprs: Vec<(String, String)> = dashboard_exprs()
        .into_iter()
        .chain(deploy::variable_queries(&dashboard))
        .chain(recorded())
        .chain(alerts())
        .collect();
    for (what, expr) in &exprs {
        let names = series_names(expr);
        assert!(!names.is_empty() || expr.contains("up{"), "{what}: {expr}");
        for name in names {
            assert!(
                documented(&name) || records.contains(&name),
                "{what} reads {name}, neither a documented metric nor a fleet rule"
            );
        }
    }

    // Prometheus's own parser on every panel query.
    let dir = std::env::temp_dir().join(format!("fleet-dashboard-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut file = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (index, (_, expr)) in dashboard_exprs().iter().enumerate() {
        file.push_str(&format!(
            "      - record: panel_{index}\n        expr: {}\n",
            serde_json::to_string(expr).unwrap()
        ));
    }
    let path = dir.join("panels.yml");
    std::fs::write(&path, file).unwrap();
    let out = Command::new(tools::require(tools::PROMTOOL))
        .arg("check")
        .arg("rules")
        .arg(&path)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fake gateway metrics endpoint: serves `body(seconds since start)` to every request.
struct Exporter {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Exporter {
    fn start(
        lab: &Lab,
        addr: SocketAddr,
        body: impl Fn(f64) -> String + Send + 'static,
    ) -> Exporter {
        let listener = lab
            .in_netns(Side::Gateway, move || Ok(TcpListener::bind(addr)?))
            .unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let start = Instant::now();
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        // A scrape that fails shows up as a missing sample, which the
                        // assertions on the rules' values would catch.
                        let _ = serve(stream, &body(start.elapsed().as_secs_f64()));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Exporter {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(mut stream: TcpStream, body: &str) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
}

/// One gateway's bundle and drop metrics as the daemon serves them, with counters growing at
/// fixed rates (per second).
struct Gateway {
    version: u64,
    age: f64,
    fetches: [(&'static str, f64, f64); 6],
    drops: &'static [(&'static str, &'static str, &'static str, f64)],
}

impl Gateway {
    fn metrics(&self, t: f64) -> String {
        let mut text = format!(
            "enforcer_bundle_version {}\nenforcer_bundle_age_seconds {}\n",
            self.version,
            self.age + t
        );
        for (result, start, rate) in self.fetches {
            text.push_str(&format!(
                "enforcer_bundle_fetches_total{{result=\"{result}\"}} {}\n",
                start + rate * t
            ));
        }
        for (platform, direction, family, rate) in self.drops {
            let labels =
                format!("platform=\"{platform}\",direction=\"{direction}\",family=\"{family}\"");
            text.push_str(&format!(
                "enforcer_packets_total{{{labels},action=\"drop\"}} {}\n\
                 enforcer_bytes_total{{{labels},action=\"drop\"}} {}\n\
                 enforcer_packets_total{{{labels},action=\"monitor\"}} {}\n",
                rate * t,
                100.0 * rate * t,
                // Monitored packets never count as drops.
                50.0 * rate * t,
            ));
        }
        text.push_str(
            "enforcer_xdp_attached{interface=\"g0\",mode=\"native\"} 1\n\
             enforcer_build_info{version=\"0.1.0\"} 1\n",
        );
        text
    }
}

/// gw-a: version 7, fetching ok; drops zoom 10/s out and 2/s in, teams 1/s.
const GW_A: Gateway = Gateway {
    version: 7,
    age: 120.0,
    fetches: [
        ("ok", 1.0, 0.2),
        ("unchanged", 0.0, 0.3),
        ("unreachable", 0.0, 0.0),
        ("invalid", 0.0, 0.0),
        ("expired", 0.0, 0.0),
        ("rollback", 0.0, 0.0),
    ],
    drops: &[
        ("zoom", "egress", "ipv4", 10.0),
        ("zoom", "ingress", "ipv4", 2.0),
        ("teams", "egress", "ipv6", 1.0),
    ],
};

/// gw-b: still version 6, built 340 days ago, refusing tampered targets and
/// verifying nothing; drops zoom 5/s out.
const GW_B: Gateway = Gateway {
    version: 6,
    age: 340.0 * 86400.0,
    fetches: [
        ("ok", 3.0, 0.0),
        ("unchanged", 9.0, 0.0),
        ("unreachable", 0.0, 0.0),
        ("invalid", 0.0, 0.5),
        ("expired", 0.0, 0.0),
        ("rollback", 0.0, 0.0),
    ],
    drops: &[("zoom", "egress", "ipv6", 5.0)],
};

fn query(lab: &Lab, prometheus: &Prometheus, expr: &str) -> Value {
    let answer = prometheus
        .query(lab, expr)
        .unwrap_or_else(|e| panic!("{expr}: {e:#}"));
    assert_eq!(answer["status"], "success", "{expr}: {answer}");
    answer
}

/// An instant query's series as (value of `label`, value).
fn by_label(answer: &Value, label: &str) -> BTreeMap<String, f64> {
    answer["data"]["result"]
        .as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .map(|series| {
            let key = series["metric"][label].as_str().unwrap_or("").to_owned();
            let value = series["value"][1]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN);
            (key, value)
        })
        .collect()
}

fn assert_near(what: &str, got: Option<&f64>, want: f64) {
    let got = got.copied().unwrap_or(f64::NAN);
    assert!(
        (got - want).abs() <= want * 0.1,
        "{what}: {got}, expected {want} (within 10 %)"
    );
}

/// The shipped central configuration and rules, federating a gateway-level Prometheus in a lab
/// namespace that scrapes two fake gateways. Intervals are 1 s instead of 60 s and the rules'
/// 5-minute rate windows 30 s, so that the windows fill within the test; promtool's unit tests
/// cover the shipped windows.
#[test]
fn a_central_prometheus_federating_gateways_computes_the_fleet_view() {
    let lab = Lab::new().unwrap();
    let gw_a: SocketAddr = "127.0.0.1:19464".parse().unwrap();
    let gw_b: SocketAddr = "127.0.0.1:19465".parse().unwrap();
    let _exporters = [
        Exporter::start(&lab, gw_a, |t| GW_A.metrics(t)),
        Exporter::start(&lab, gw_b, |t| GW_B.metrics(t)),
    ];
    // The gateway level: the job the gateways' own prometheus.yml has, each daemon labelled
    // with its gateway.
    let gateway_config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  \
         - job_name: enforcer\n    static_configs:\n      - targets: [\"{gw_a}\"]\n        \
         labels: {{gateway: gw-a}}\n      - targets: [\"{gw_b}\"]\n        labels: {{gateway: \
         gw-b}}\n"
    );
    let regional: SocketAddr = "127.0.0.1:19091".parse().unwrap();
    let gateway_prometheus =
        Prometheus::start_config(&lab, "prometheus-gateways", &gateway_config, &[], regional)
            .unwrap();
    gateway_prometheus
        .wait_until(
            &lab,
            "count(up{job=\"enforcer\"} == 1)",
            2.0,
            Duration::from_secs(30),
        )
        .unwrap();

    // The centre: the shipped files, faster.
    let dir = deploy::dir().join("prometheus");
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    let mut config = read("fleet-prometheus.yml");
    for (from, to) in [
        ("scrape_interval: 60s", "scrape_interval: 1s"),
        ("evaluation_interval: 60s", "evaluation_interval: 1s"),
        ("scrape_timeout: 20s", "scrape_timeout: 1s"),
    ] {
        assert!(config.contains(from), "fleet-prometheus.yml: no {from}");
        config = config.replace(from, to);
    }
    let rules = read(RULES);
    assert!(rules.contains("[5m]"));
    let rules = rules.replace("[5m]", "[30s]");
    let targets = format!("- targets: [\"{regional}\"]\n  labels: {{gateway: regional}}\n");
    let central = Prometheus::start_config(
        &lab,
        "prometheus-central",
        &config,
        &[(RULES, &rules), ("fleet-gateways.yml", &targets)],
        "127.0.0.1:19092".parse().unwrap(),
    )
    .unwrap();
    // 35 federation scrapes: the 30 s windows hold only federated samples.
    central
        .wait_until(
            &lab,
            "count_over_time(up{job=\"enforcer-fleet\"}[1m])",
            35.0,
            Duration::from_secs(90),
        )
        .unwrap();
    let up = by_label(
        &query(&lab, &central, "up{job=\"enforcer-fleet\"}"),
        "gateway",
    );
    assert_eq!(up, BTreeMap::from([("regional".to_owned(), 1.0)]));

    // Bundle versions: the newest is 7, gw-b is one behind.
    let newest = query(&lab, &central, "fleet:enforcer_bundle_version:max");
    assert_eq!(scalar(&newest), Some(7.0), "{newest}");
    let count = query(&lab, &central, "fleet:enforcer_bundle_gateways:count");
    assert_eq!(scalar(&count), Some(2.0), "{count}");
    let behind = query(
        &lab,
        &central,
        "fleet:enforcer_bundle_gateways_behind:count",
    );
    assert_eq!(scalar(&behind), Some(1.0), "{behind}");
    let versions_behind = by_label(
        &query(&lab, &central, "gateway:enforcer_bundle_versions_behind"),
        "gateway",
    );
    assert_eq!(
        versions_behind,
        BTreeMap::from([("gw-a".to_owned(), 0.0), ("gw-b".to_owned(), 1.0)])
    );
    // What the dashboard's gateway variable lists.
    let gateways = by_label(
        &query(
            &lab,
            &central,
            "group by (gateway) (enforcer_bundle_version)",
        ),
        "gateway",
    );
    assert_eq!(
        gateways.keys().collect::<Vec<_>>(),
        ["gw-a", "gw-b"],
        "{gateways:?}"
    );

    // Drops summed over both gateways, drops only.
    let platform = by_label(
        &query(&lab, &central, "platform:enforcer_dropped_packets:rate5m"),
        "platform",
    );
    assert_eq!(platform.len(), 2, "{platform:?}");
    assert_near("zoom drops", platform.get("zoom"), 17.0);
    assert_near("teams drops", platform.get("teams"), 1.0);
    let direction = query(
        &lab,
        &central,
        "platform_direction:enforcer_dropped_packets:rate5m{platform=\"zoom\"}",
    );
    let direction = by_label(&direction, "direction");
    assert_near("zoom egress", direction.get("egress"), 15.0);
    assert_near("zoom ingress", direction.get("ingress"), 2.0);
    let bytes = by_label(
        &query(&lab, &central, "platform:enforcer_dropped_bytes:rate5m"),
        "platform",
    );
    assert_near("zoom bytes", bytes.get("zoom"), 1700.0);
    let per_gateway = by_label(
        &query(&lab, &central, "gateway:enforcer_dropped_packets:rate5m"),
        "gateway",
    );
    assert_near("gw-a drops", per_gateway.get("gw-a"), 13.0);
    assert_near("gw-b drops", per_gateway.get("gw-b"), 5.0);
    let fetches = by_label(
        &query(&lab, &central, "result:enforcer_bundle_fetches:rate5m"),
        "result",
    );
    assert_near("ok fetches", fetches.get("ok"), 0.2);
    assert_near("invalid fetches", fetches.get("invalid"), 0.5);

    // Each alert's condition holds for gw-b and not for gw-a.
    let expected: BTreeMap<&str, &[&str]> = BTreeMap::from([
        ("EnforcerBundleBehind", &["gw-b"][..]),
        ("EnforcerBundleVerificationFailed", &["gw-b"][..]),
        ("EnforcerBundleNotFetching", &["gw-b"][..]),
        ("EnforcerBundleNearExpiry", &["gw-b"][..]),
        ("EnforcerFleetGatewayUnreachable", &[][..]),
    ]);
    for (alert, expr) in alerts() {
        let firing = by_label(&query(&lab, &central, &expr), "gateway");
        let want = expected
            .get(alert.as_str())
            .unwrap_or_else(|| panic!("no expectation for {alert}"));
        assert_eq!(
            firing.keys().map(String::as_str).collect::<Vec<_>>(),
            *want,
            "alert {alert} ({expr})"
        );
    }

    // Every panel of the fleet dashboard has series.
    for (title, expr) in dashboard_exprs() {
        let answer = query(&lab, &central, &expr);
        let series = answer["data"]["result"].as_array().map_or(0, Vec::len);
        assert!(
            series > 0,
            "panel {title} ({expr}) returned no series: {answer}"
        );
    }
}
