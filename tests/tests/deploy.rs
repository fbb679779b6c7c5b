//! The deploy/ files: the systemd unit verifies, the alert rules and their unit tests pass
//! promtool, and a real Prometheus scraping the real daemon in a namespace lab (with traffic)
//! returns series for every dashboard panel's query and every metric an alert reads.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::deploy::{documented, run};
use tests::dns::{Dnsmasq, Zone};
use tests::lab::metrics::{Kind, REFERENCE};
use tests::lab::prometheus::Prometheus;
use tests::lab::{
    CLIENT_V4, CLIENT_V6, GATEWAY_CLIENT_V4, INTERNET_V4, INTERNET_V6, Lab, Metrics, SERVER_V4,
    Side, enforcer_binary,
};
use tests::tools;

fn deploy() -> PathBuf {
    tests::deploy::dir()
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

/// Every query of every panel of the dashboard, with Grafana's variables replaced.
fn dashboard_exprs() -> Vec<(String, String)> {
    let dashboard = tests::deploy::dashboard("enforcer-dashboard.json");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "a dashboard of {} panels", panels.len());
    tests::deploy::panel_exprs(&dashboard)
}

fn variable_queries() -> Vec<(String, String)> {
    tests::deploy::variable_queries(&tests::deploy::dashboard("enforcer-dashboard.json"))
}

fn alert_exprs() -> Vec<(String, String)> {
    let out = tests::deploy::rules("enforcer-alerts.yml", "alert");
    assert_eq!(out.len(), 7, "{out:?}");
    out
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    let dir = deploy().join("prometheus");
    run(Command::new(tools::require(tools::PROMTOOL))
        .arg("check")
        .arg("rules")
        .arg(dir.join("enforcer-alerts.yml")));
    run(Command::new(tools::require(tools::PROMTOOL))
        .arg("check")
        .arg("config")
        .arg(dir.join("prometheus.yml")));
    let out = run(Command::new(tools::require(tools::PROMTOOL))
        .current_dir(&dir)
        .args(["test", "rules", "enforcer-alerts.test.yml"]));
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn dashboard_and_alerts_read_only_documented_metrics() {
    for (what, expr) in dashboard_exprs()
        .into_iter()
        .chain(variable_queries())
        .chain(alert_exprs())
    {
        let names = metric_names(&expr);
        assert!(!names.is_empty() || expr.contains("up{"), "{what}: {expr}");
        for name in names {
            assert!(documented(&name), "{what} reads {name}");
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
    let out = Command::new(tools::require(tools::SYSTEMD_ANALYZE))
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
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

fn query(lab: &Lab, prometheus: &Prometheus, expr: &str) -> Value {
    prometheus
        .query(lab, expr)
        .unwrap_or_else(|e| panic!("{expr}: {e:#}"))
}

#[test]
fn a_real_prometheus_gets_series_for_every_panel_and_alert() {
    let mut lab = Lab::new().unwrap();
    let banned = SocketAddr::new(IpAddr::V4(INTERNET_V4[0]), 443);
    let others = [INTERNET_V4[3], INTERNET_V4[1]].map(|h| SocketAddr::new(IpAddr::V4(h), 443));
    let server = lab
        .start_server(&[banned, others[0], others[1]], &[])
        .unwrap();
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
    let before = lab.metrics().unwrap();
    lab.send_udp(banned, 20).unwrap();
    for other in others {
        lab.send_udp(other, 5).unwrap();
    }
    // The others are delivered after the banned datagrams went through the gateway.
    assert!(server.wait_udp(&others.map(|o| (o, 5)), Duration::from_secs(5)));
    assert!(server.settle());
    assert_eq!(server.udp_count(banned), 0);
    wait_for(&lab, "the 20 drops counted", |m| {
        m.increase(
            &before,
            "enforcer_packets_total",
            &packets("media", "drop", "egress", "ipv4"),
        )
        .unwrap_or(0.0)
            >= 20.0
    });

    // `promtool check metrics` on what the daemon serves.
    let text = lab.metrics().unwrap().text().to_owned();
    let mut check = Command::new(tools::require(tools::PROMTOOL))
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

    let alerts = deploy().join("prometheus/enforcer-alerts.yml");
    let prometheus = Prometheus::start(&lab, Some(&alerts)).unwrap();
    // Wait for several scrapes, so rates have two points.
    prometheus
        .wait_scrapes(&lab, 4, Duration::from_secs(60))
        .unwrap();
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

/// The labels of one `enforcer_packets_total` / `enforcer_bytes_total` series.
fn packets<'a>(
    platform: &'a str,
    action: &'a str,
    direction: &'a str,
    family: &'a str,
) -> [(&'static str, &'a str); 4] {
    [
        ("platform", platform),
        ("action", action),
        ("direction", direction),
        ("family", family),
    ]
}

/// Polls the daemon's metrics until `done` holds (20 s at most); the last scrape.
fn wait_for(lab: &Lab, what: &str, done: impl Fn(&Metrics) -> bool) -> Metrics {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = lab.metrics().unwrap();
        if done(&m) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within 20 s\n{}\ndaemon log:\n{}",
            m.text(),
            lab.daemon_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An Ethernet frame from the client's interface to the gateway's, of `ether_type`.
fn frame(ether_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0xff; 6];
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    frame.extend_from_slice(&ether_type.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// The client asks the DNS server beyond the gateway for `name` (A); the address answered.
fn client_lookup(lab: &Lab, name: &str) -> Option<IpAddr> {
    let name = name.to_owned();
    let server = SocketAddr::new(IpAddr::V4(SERVER_V4), 53);
    lab.in_netns(Side::Client, move || {
        tests::dns::lookup(server, &name, hickory_proto::rr::RecordType::A)
    })
    .unwrap()
    .first()
    .copied()
}

/// Every metric of the reference that the daemon serves moves with what should move it: each
/// counter series below is driven by real traffic, DNS answers, resolutions or commands and
/// must grow; each gauge has the value the lab implies. Fails when a counter stays still.
#[test]
fn every_metric_moves_with_the_traffic_that_should_move_it() {
    let mut lab = Lab::new().unwrap();
    let learned_host = Ipv4Addr::new(198, 19, 60, 5);
    // The daemon's resolver, on the gateway's loopback.
    let resolver = Dnsmasq::start_in(
        &lab.netns_path(Side::Gateway),
        &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
        None,
        &Zone::new()
            .local("resolve.example")
            .local("cdn.example")
            .host(
                "media.resolve.example",
                &["198.19.20.5", "2001:db8:20::5"],
                Some(300),
            )
            .host(
                "poison.resolve.example",
                &[&GATEWAY_CLIENT_V4.to_string()],
                Some(300),
            )
            .host("edge.cdn.example", &["198.19.22.1"], Some(300))
            .cname("video.resolve.example", "edge.cdn.example", Some(300))
            // A host record holds one address per family: three take a hosts file.
            .hosts_file(
                ["198.19.21.1", "198.19.21.2", "198.19.21.3"]
                    .map(|a| format!("{a} many.resolve.example\n"))
                    .concat(),
            ),
    )
    .unwrap();
    // The clients' DNS server, beyond the gateway.
    let _client_dns = Dnsmasq::start_in(
        &lab.netns_path(Side::Server),
        &[IpAddr::V4(SERVER_V4)],
        Some(53),
        &Zone::new()
            .local("learn.example")
            .local("other.example")
            .hosts_file(format!(
                "{learned_host} x1.learn.example\n{GATEWAY_CLIENT_V4} bad.learn.example\n\
                 198.19.70.5 www.other.example\n"
            )),
    )
    .unwrap();
    let rules = lab
        .write_policy(&[
            (
                "media.yaml",
                "platform: media\nmatch:\n  - prefixes: [198.19.10.0/24, \"2001:db8:10::/48\"]\n  \
                 - domains: [media.resolve.example, gone.resolve.example, poison.resolve.example, \
                 many.resolve.example, video.resolve.example, \"*.learn.example\"]\n    \
                 enforce: address\n",
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
    lab.add_daemon_args(&[
        "--resolver",
        &resolver.addr.to_string(),
        // The clients' DNS server is not the daemon's resolver: learn from it too, and from a
        // second server whose answers below are unsolicited or malformed.
        "--learn-from",
        &SERVER_V4.to_string(),
        "--learn-from",
        &INTERNET_V4[3].to_string(),
        "--ttl-floor",
        "1",
        "--ttl-ceiling",
        "2",
        "--max-addresses-per-name",
        "2",
        "--shared-suffix",
        "cdn.example",
    ]);
    lab.start_daemon(&rules).unwrap();
    let start = lab.metrics().unwrap();
    // Series with a fixed label set exist from start-up.
    for (name, labels) in [
        ("enforcer_passed_packets_total", [("reason", "unparsed")]),
        ("enforcer_dns_answers_total", [("result", "malformed")]),
        ("enforcer_rejected_answers_total", [("reason", "shared")]),
        ("enforcer_policy_reloads_total", [("result", "error")]),
    ] {
        start.metric(name, &labels).unwrap();
    }
    start
        .metric("enforcer_dns_held_packets_total", &[])
        .unwrap();

    // Resolution: the daemon resolves at start; wait for every answer to be judged.
    let resolved = wait_for(&lab, "the policy's names resolved and judged", |m| {
        m.metric(
            "enforcer_prefixes",
            &[("platform", "media"), ("family", "ipv6"), ("source", "dns")],
        )
        .unwrap_or(0.0)
            == 1.0
            && ["never_block", "too_many", "shared"].iter().all(|r| {
                m.metric("enforcer_rejected_answers_total", &[("reason", r)])
                    .unwrap_or(0.0)
                    >= 1.0
            })
            && m.metric(
                "enforcer_resolutions_total",
                &[("platform", "media"), ("result", "nxdomain")],
            )
            .unwrap_or(0.0)
                >= 1.0
    });

    // Datapath: egress drops (both families), monitor, allow, ingress drops (both families),
    // no match, not IP, unparsed.
    let send = |ip: IpAddr, n: usize| lab.send_udp(SocketAddr::new(ip, 443), n).unwrap();
    send(IpAddr::V4(INTERNET_V4[0]), 10);
    send(IpAddr::V6(INTERNET_V6[0]), 10);
    send(IpAddr::V4(Ipv4Addr::new(198, 19, 30, 5)), 5);
    send(IpAddr::V4(INTERNET_V4[1]), 5);
    send(IpAddr::V4(INTERNET_V4[4]), 5);
    lab.in_netns(Side::Server, || {
        for (from, to) in [
            (IpAddr::V4(INTERNET_V4[0]), IpAddr::V4(CLIENT_V4)),
            (IpAddr::V6(INTERNET_V6[0]), IpAddr::V6(CLIENT_V6)),
        ] {
            let socket = UdpSocket::bind((from, 0))?;
            for _ in 0..5 {
                socket.send_to(b"from a banned source", (to, 9))?;
            }
        }
        Ok(())
    })
    .unwrap();
    lab.send_client_frame(&frame(0x88b5, &[0; 46])).unwrap();
    lab.send_client_frame(&frame(0x0800, &[0x45, 0, 0, 20]))
        .unwrap();

    // Learning: a banned wildcard name (held, then learned), a name the guards refuse, an
    // unrelated name, an answer nobody asked for and one that is not DNS.
    assert_eq!(
        client_lookup(&lab, "x1.learn.example"),
        Some(IpAddr::V4(learned_host))
    );
    assert!(client_lookup(&lab, "bad.learn.example").is_some());
    assert!(client_lookup(&lab, "www.other.example").is_some());
    // The second trusted server (see --learn-from) is asked once by the client, from port
    // 40001 with id 0x1234: its answer (not DNS) is believed, held, and found malformed.
    lab.in_netns(Side::Client, || {
        let socket = UdpSocket::bind((CLIENT_V4, 40_001))?;
        let query = tests::dns::query_packet(0x1234, "m.learn.example", 1);
        socket.send_to(&query, (INTERNET_V4[3], 53))?;
        Ok(())
    })
    .unwrap();
    lab.in_netns(Side::Server, || {
        // Port 53 of another host beyond the gateway: dnsmasq holds the server's own.
        let socket = UdpSocket::bind((INTERNET_V4[3], 53))?;
        let mut forged = tests::dns::query_packet(4242, "evil.learn.example", 1);
        forged[2] |= 0x80;
        socket.send_to(&forged, (CLIENT_V4, 40_000))?;
        socket.send_to(
            &[0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0, 9],
            (CLIENT_V4, 40_001),
        )?;
        Ok(())
    })
    .unwrap();

    // Policy: a successful change, a refused reload.
    std::fs::write(rules.join("broken.yaml"), "platform: broken\nmatch: []\n").unwrap();
    assert_eq!(lab.control(&["reload"]).unwrap().status.code(), Some(1));
    std::fs::remove_file(rules.join("broken.yaml")).unwrap();
    let out = lab
        .control(&["rules", "add", "later", "--prefix", "198.19.50.0/24"])
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Resolution failures: the resolver goes; the next refresh (TTL 2 s at most) fails.
    drop(resolver);

    let counters: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "enforcer_packets_total",
            packets("media", "drop", "egress", "ipv4").to_vec(),
        ),
        (
            "enforcer_packets_total",
            packets("media", "drop", "egress", "ipv6").to_vec(),
        ),
        (
            "enforcer_packets_total",
            packets("media", "drop", "ingress", "ipv4").to_vec(),
        ),
        (
            "enforcer_packets_total",
            packets("media", "drop", "ingress", "ipv6").to_vec(),
        ),
        (
            "enforcer_packets_total",
            packets("watched", "monitor", "egress", "ipv4").to_vec(),
        ),
        (
            "enforcer_packets_total",
            packets("support", "allow", "egress", "ipv4").to_vec(),
        ),
        (
            "enforcer_bytes_total",
            packets("media", "drop", "egress", "ipv4").to_vec(),
        ),
        (
            "enforcer_bytes_total",
            packets("media", "drop", "egress", "ipv6").to_vec(),
        ),
        (
            "enforcer_bytes_total",
            packets("media", "drop", "ingress", "ipv4").to_vec(),
        ),
        (
            "enforcer_bytes_total",
            packets("media", "drop", "ingress", "ipv6").to_vec(),
        ),
        (
            "enforcer_bytes_total",
            packets("watched", "monitor", "egress", "ipv4").to_vec(),
        ),
        (
            "enforcer_bytes_total",
            packets("support", "allow", "egress", "ipv4").to_vec(),
        ),
        // No sites here: every client is site `other`.
        (
            "enforcer_site_packets_total",
            vec![("site", "other"), ("platform", "media"), ("action", "drop")],
        ),
        (
            "enforcer_site_bytes_total",
            vec![("site", "other"), ("platform", "media"), ("action", "drop")],
        ),
        (
            "enforcer_site_packets_total",
            vec![
                ("site", "other"),
                ("platform", "watched"),
                ("action", "monitor"),
            ],
        ),
        (
            "enforcer_passed_packets_total",
            vec![("reason", "no_match")],
        ),
        ("enforcer_passed_packets_total", vec![("reason", "not_ip")]),
        (
            "enforcer_passed_packets_total",
            vec![("reason", "unparsed")],
        ),
        ("enforcer_dns_answers_total", vec![("result", "learned")]),
        ("enforcer_dns_answers_total", vec![("result", "unmatched")]),
        (
            "enforcer_dns_answers_total",
            vec![("result", "unsolicited")],
        ),
        ("enforcer_dns_answers_total", vec![("result", "refused")]),
        ("enforcer_dns_answers_total", vec![("result", "malformed")]),
        ("enforcer_dns_held_packets_total", vec![]),
        ("enforcer_policy_reloads_total", vec![("result", "ok")]),
        ("enforcer_policy_reloads_total", vec![("result", "error")]),
        ("enforcer_resolution_duration_seconds_count", vec![]),
        ("enforcer_resolution_duration_seconds_sum", vec![]),
        (
            "enforcer_resolution_duration_seconds_bucket",
            vec![("le", "+Inf")],
        ),
    ];
    let failed = |m: &Metrics| {
        ["error", "timeout"]
            .iter()
            .map(|r| {
                m.increase(
                    &resolved,
                    "enforcer_resolutions_total",
                    &[("platform", "media"), ("result", r)],
                )
                .unwrap_or(0.0)
            })
            .sum::<f64>()
    };
    let still = |m: &Metrics| -> Vec<String> {
        let mut still: Vec<String> = counters
            .iter()
            .filter(|(name, labels)| m.increase(&start, name, labels).unwrap_or(0.0) <= 0.0)
            .map(|(name, labels)| format!("{name}{labels:?}"))
            .collect();
        if failed(m) < 1.0 {
            still.push("enforcer_resolutions_total{result: error or timeout}".to_owned());
        }
        still
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut m = lab.metrics().unwrap();
    while !still(&m).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        m = lab.metrics().unwrap();
    }
    assert!(
        still(&m).is_empty(),
        "counters that did not move in 20 s: {:#?}",
        still(&m)
    );
    // Counted from 0 at start-up by the first round (which may come before `start`).
    for result in ["ok", "nxdomain"] {
        let labels = [("platform", "media"), ("result", result)];
        assert!(
            m.metric("enforcer_resolutions_total", &labels).unwrap() >= 1.0,
            "resolutions {result}"
        );
    }
    for reason in ["never_block", "too_many", "shared"] {
        assert!(
            m.metric("enforcer_rejected_answers_total", &[("reason", reason)])
                .unwrap()
                >= 1.0,
            "rejected {reason}"
        );
    }
    assert!(
        m.metric("enforcer_last_policy_update_timestamp_seconds", &[])
            .unwrap()
            > start
                .metric("enforcer_last_policy_update_timestamp_seconds", &[])
                .unwrap(),
        "the policy update time did not move with `rules add`"
    );

    // Gauges: what the lab implies.
    let prefixes = |platform: &str, family: &str, source: &str| {
        m.metric(
            "enforcer_prefixes",
            &[
                ("platform", platform),
                ("family", family),
                ("source", source),
            ],
        )
        .unwrap()
    };
    assert_eq!(prefixes("media", "ipv4", "published"), 1.0);
    assert_eq!(prefixes("media", "ipv6", "published"), 1.0);
    assert_eq!(
        prefixes("media", "ipv4", "dns"),
        1.0,
        "only media.resolve.example's"
    );
    assert_eq!(prefixes("media", "ipv6", "dns"), 1.0);
    assert_eq!(
        prefixes("media", "ipv4", "learned"),
        1.0,
        "only x1.learn.example's"
    );
    assert_eq!(prefixes("watched", "ipv4", "published"), 1.0);
    assert_eq!(prefixes("support", "ipv4", "published"), 1.0);
    assert_eq!(prefixes("later", "ipv4", "published"), 1.0);
    for interface in ["g0", "g1"] {
        let attached = m.series("enforcer_xdp_attached", &[("interface", interface)]);
        assert_eq!(attached.len(), 1, "{interface}: {attached:?}");
        assert_eq!(attached[0].1, 1.0, "{interface}");
    }
    // Prefixes: four published v4 (one added), the resolved and the learned host; two v6.
    assert_eq!(
        m.metric("enforcer_map_entries", &[("map", "prefixes_v4")])
            .unwrap(),
        6.0
    );
    assert_eq!(
        m.metric("enforcer_map_entries", &[("map", "prefixes_v6")])
            .unwrap(),
        2.0
    );
    for (labels, entries) in m.series("enforcer_map_entries", &[]) {
        let map = &labels.iter().find(|(k, _)| k == "map").unwrap().1;
        let capacity = m.metric("enforcer_map_capacity", &[("map", map)]).unwrap();
        assert!(
            capacity > 0.0 && entries <= capacity,
            "{map}: {entries} of {capacity}"
        );
    }
    assert_eq!(
        m.metric(
            "enforcer_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        )
        .unwrap(),
        1.0
    );
    // Every platform has its collateral gauge; nothing here answered a foreign name inside a
    // blocked prefix (tests/tests/collateral_namespace.rs covers one that does).
    for platform in ["media", "watched", "support"] {
        assert_eq!(
            m.metric("enforcer_collateral_names", &[("platform", platform)])
                .unwrap(),
            0.0,
            "{platform}"
        );
    }
    // Each (site, platform) is at the stage of its action.
    for (platform, action) in [
        ("media", "drop"),
        ("watched", "monitor"),
        ("support", "allow"),
    ] {
        assert_eq!(
            m.metric(
                "enforcer_site_stage",
                &[
                    ("site", "other"),
                    ("platform", platform),
                    ("action", action)
                ]
            )
            .unwrap(),
            1.0,
            "{platform}"
        );
    }
    // The bundle metrics are the state of bundle mode (interface.md, "Fleet: signed policy
    // bundles"): a daemon that follows no bundle has no version, age or fetch to report, and
    // a made-up 0 would read as "behind" to the fleet rules. This one follows none.
    let bundle = [
        "enforcer_bundle_version",
        "enforcer_bundle_fetches_total",
        "enforcer_bundle_age_seconds",
    ];
    for name in bundle {
        assert!(
            m.names().all(|served| served != name),
            "{name} served without a bundle"
        );
    }
    // Every metric of the reference was looked at above.
    let checked: BTreeSet<&str> = counters
        .iter()
        .map(|(name, _)| *name)
        .chain([
            "enforcer_prefixes",
            "enforcer_resolutions_total",
            "enforcer_rejected_answers_total",
            "enforcer_last_policy_update_timestamp_seconds",
            "enforcer_xdp_attached",
            "enforcer_map_entries",
            "enforcer_map_capacity",
            "enforcer_build_info",
            "enforcer_site_stage",
            "enforcer_collateral_names",
        ])
        .chain(bundle)
        .collect();
    for (name, kind) in REFERENCE {
        let seen = match kind {
            Kind::Histogram => checked.contains(format!("{name}_count").as_str()),
            _ => checked.contains(name),
        };
        assert!(seen, "{name} is not checked");
    }
    lab.stop_daemon().unwrap();
}
