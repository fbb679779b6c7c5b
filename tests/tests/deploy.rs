//! The deploy/ files: the systemd unit verifies, the alert rules and their unit tests pass
//! promtool, and a real Prometheus scraping the real daemon in a namespace lab (with traffic)
//! returns series for every dashboard panel's query and every metric an alert reads.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::lab::{INTERNET_V4, Lab, Side, enforcer_binary};

/// Every metric of interface.md (with the histogram's series).
const METRICS: &[&str] = &[
    "enforcer_packets_total",
    "enforcer_bytes_total",
    "enforcer_passed_packets_total",
    "enforcer_prefixes",
    "enforcer_resolutions_total",
    "enforcer_resolution_duration_seconds_bucket",
    "enforcer_resolution_duration_seconds_sum",
    "enforcer_resolution_duration_seconds_count",
    "enforcer_rejected_answers_total",
    "enforcer_dns_answers_total",
    "enforcer_policy_reloads_total",
    "enforcer_last_policy_update_timestamp_seconds",
    "enforcer_xdp_attached",
    "enforcer_map_entries",
    "enforcer_map_capacity",
    "enforcer_build_info",
];

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn run(command: &mut Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{command:?} failed:\n{text}");
    text
}

/// The `enforcer_*` metric names an expression reads.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("enforcer_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

/// The `enforcer_*` selectors (name and label matchers) of an expression.
fn selectors(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("enforcer_") {
        let tail = &rest[at..];
        let name_len = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let mut end = name_len;
        if tail[name_len..].starts_with('{') {
            end = name_len + tail[name_len..].find('}').map_or(0, |i| i + 1);
        }
        out.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

fn dashboard_exprs() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(deploy().join("grafana/enforcer-dashboard.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "a dashboard of {} panels", panels.len());
    panels
        .iter()
        .map(|p| {
            let title = p["title"].as_str().unwrap_or_default().to_owned();
            let expr = p["targets"][0]["expr"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            assert!(!expr.is_empty(), "panel {title} has no query");
            (title, expr)
        })
        .collect()
}

fn alert_exprs() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(deploy().join("prometheus/enforcer-alerts.yml")).unwrap();
    // Two-line YAML items: `- alert: NAME` then `expr: ...` (kept that simple on purpose).
    let mut out = Vec::new();
    let mut name = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(n) = line.strip_prefix("- alert: ") {
            name = Some(n.to_owned());
        } else if let (Some(expr), Some(n)) = (line.strip_prefix("expr: "), name.take()) {
            out.push((n, expr.to_owned()));
        }
    }
    assert_eq!(out.len(), 6, "{out:?}");
    out
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    let dir = deploy().join("prometheus");
    run(Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(dir.join("enforcer-alerts.yml")));
    run(Command::new("promtool")
        .arg("check")
        .arg("config")
        .arg(dir.join("prometheus.yml")));
    let out = run(Command::new("promtool").current_dir(&dir).args([
        "test",
        "rules",
        "enforcer-alerts.test.yml",
    ]));
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn dashboard_and_alerts_read_only_documented_metrics() {
    for (what, expr) in dashboard_exprs().into_iter().chain(alert_exprs()) {
        let names = metric_names(&expr);
        assert!(!names.is_empty() || expr.contains("up{"), "{what}: {expr}");
        for name in names {
            assert!(METRICS.contains(&name.as_str()), "{what} reads {name}");
        }
    }
}

#[test]
fn the_unit_verifies() {
    let unit = std::fs::read_to_string(deploy().join("enforcer.service")).unwrap();
    let binary = enforcer_binary().unwrap();
    let dir = std::env::temp_dir().join(format!("unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("enforcer.service");
    // The unit names the installed path; verify it against the built binary.
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/enforcer", &binary.display().to_string()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian package systemd, installed by cargo xtask setup)");
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(out.status.success(), "{text}");
    // Warnings about the host (no systemd as PID 1 here) are not about the unit.
    let about_unit: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("enforcer.service"))
        .collect();
    assert!(about_unit.is_empty(), "{text}");
}

/// Prometheus inside the gateway namespace; stopped when dropped.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn http_get(lab: &Lab, addr: SocketAddr, path: String) -> String {
    try_http_get(lab, addr, path).unwrap()
}

fn try_http_get(lab: &Lab, addr: SocketAddr, path: String) -> anyhow::Result<String> {
    lab.in_netns(Side::Gateway, move || {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        // HTTP/1.0: a plain body, no chunks.
        write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        Ok(text
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default())
    })
}

fn encode(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn query(lab: &Lab, prometheus: &Prometheus, expr: &str) -> Value {
    let body = http_get(
        lab,
        prometheus.addr,
        format!("/api/v1/query?query={}", encode(expr)),
    );
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{expr}: {e}: {body}"))
}

#[test]
fn a_real_prometheus_gets_series_for_every_panel_and_alert() {
    let mut lab = Lab::new().unwrap();
    let banned = SocketAddr::new(IpAddr::V4(INTERNET_V4[0]), 443);
    let server = lab.start_server(&[banned], &[]).unwrap();
    let rules = lab
        .write_policy(&[
            (
                "media.yaml",
                "platform: media\nmatch:\n  - prefixes: [198.19.10.0/24]\n",
            ),
            (
                "watched.yaml",
                "platform: watched\naction: monitor\nmatch:\n  - prefixes: [198.19.30.0/24]\n",
            ),
            (
                "support.yaml",
                "platform: support\naction: allow\nmatch:\n  - prefixes: [198.19.10.77/32]\n",
            ),
        ])
        .unwrap();
    lab.start_daemon(&rules).unwrap();
    lab.send_udp(banned, 20).unwrap();
    for host in [INTERNET_V4[3], INTERNET_V4[1]] {
        lab.send_udp(SocketAddr::new(IpAddr::V4(host), 443), 5)
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.udp_count(banned), 0);

    // `promtool check metrics` on what the daemon serves.
    let text = lab.metrics().unwrap().text().to_owned();
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let dir = lab.dir().join("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: enforcer\n    static_configs:\n      - targets: [\"{}\"]\n",
            deploy().join("prometheus/enforcer-alerts.yml").display(),
            tests::lab::METRICS_ADDR
        ),
    )
    .unwrap();
    let addr: SocketAddr = "127.0.0.1:19090".parse().unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", &lab.netns(Side::Gateway), "prometheus"])
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let prometheus = Prometheus {
        child,
        addr,
        dir: dir.clone(),
    };
    // Wait for several scrapes, so rates have two points.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = try_http_get(
            &lab,
            addr,
            format!(
                "/api/v1/query?query={}",
                encode("count_over_time(up{job=\"enforcer\"}[1m])")
            ),
        );
        let scrapes = ready
            .ok()
            .and_then(|body| serde_json::from_str::<Value>(&body).ok())
            .and_then(|v| {
                v["data"]["result"][0]["value"][1]
                    .as_str()
                    .map(str::to_owned)
            })
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        if scrapes >= 4.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not scrape the daemon"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let up = query(&lab, &prometheus, "up{job=\"enforcer\"}");
    assert_eq!(up["data"]["result"][0]["value"][1], "1", "{up}");

    for (title, expr) in dashboard_exprs() {
        let answer = query(&lab, &prometheus, &expr);
        assert_eq!(answer["status"], "success", "panel {title}: {answer}");
        let series = answer["data"]["result"].as_array().map_or(0, Vec::len);
        assert!(
            series > 0,
            "panel {title} ({expr}) returned no series: {answer}"
        );
    }
    for (alert, expr) in alert_exprs() {
        let answer = query(&lab, &prometheus, &expr);
        assert_eq!(answer["status"], "success", "alert {alert}: {answer}");
        // Nothing is wrong in this lab, so the alert must not fire; what it reads must exist.
        let firing = answer["data"]["result"].as_array().map_or(0, Vec::len);
        assert_eq!(
            firing, 0,
            "alert {alert} fires on a healthy gateway: {answer}"
        );
        for selector in selectors(&expr) {
            let answer = query(&lab, &prometheus, &selector);
            let series = answer["data"]["result"].as_array().map_or(0, Vec::len);
            assert!(
                series > 0,
                "alert {alert} reads {selector}, which has no series"
            );
        }
    }
    // The drops reached Prometheus.
    let drops = query(
        &lab,
        &prometheus,
        "sum(enforcer_packets_total{platform=\"media\",action=\"drop\"})",
    );
    let value: f64 = drops["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(value >= 20.0, "{drops}");
    drop(prometheus);
    lab.stop_daemon().unwrap();
}
