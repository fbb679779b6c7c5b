//! Compliance by site, end to end: two client sites behind the gateway (two client namespaces),
//! Teams dropped for site `a` and only monitored for site `b`; real flows from both; a real
//! Prometheus scraping the daemon; `reload` moving `b` to drop; `enforcer report` against that
//! Prometheus, its CSV equal to the daemon's counters and its HTML rendered by headless
//! Chromium.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use tests::lab::prometheus::{Prometheus, scalar};
use tests::lab::{
    CLIENT_B_V4, INTERNET_V4, INTERNET_V6, Lab, Metrics, Side, enforcer_binary, is_root, json_ok,
};

const SITES: &str =
    "a: [198.18.1.0/24, \"2001:db8:1::/64\"]\nb: [198.18.3.0/24, \"2001:db8:3::/64\"]\n";

fn teams(b: &str) -> String {
    format!(
        "platform: teams\naction: monitor\naction-by-site: {{a: drop, b: {b}}}\nmatch:\n  \
         - prefixes: [198.19.10.0/24, \"2001:db8:10::/48\"]\n"
    )
}
const ZOOM: &str = "platform: zoom\nmatch:\n  - prefixes: [198.19.20.0/24]\n";

fn site(m: &Metrics, name: &str, site: &str, platform: &str, action: &str) -> f64 {
    m.metric(
        name,
        &[("site", site), ("platform", platform), ("action", action)],
    )
    .unwrap_or(0.0)
}

/// Waits until the daemon's metrics satisfy `done`.
fn wait_for(lab: &Lab, what: &str, done: impl Fn(&Metrics) -> bool) -> Metrics {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = lab.metrics().unwrap();
        if done(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "{what}:\n{}", m.text());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sites_are_staged_counted_reloaded_and_reported() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let mut lab = Lab::new().unwrap();
    lab.add_second_client().unwrap();
    let sites = lab.dir().join("sites.yaml");
    std::fs::write(&sites, SITES).unwrap();
    let sites_arg = sites.display().to_string();
    lab.add_daemon_args(&["--sites", &sites_arg]);
    let teams_v4 = SocketAddr::new(IpAddr::V4(INTERNET_V4[0]), 3478);
    let teams_v6 = SocketAddr::new(IpAddr::V6(INTERNET_V6[0]), 3478);
    let zoom = SocketAddr::new(IpAddr::V4(INTERNET_V4[2]), 8801);
    let server = lab.start_server(&[teams_v4, teams_v6, zoom], &[]).unwrap();
    let rules = lab
        .write_policy(&[("teams.yaml", &teams("monitor")), ("zoom.yaml", ZOOM)])
        .unwrap();
    lab.start_daemon(&rules).unwrap();
    // Prometheus has the counters at 0 before any flow, so its totals equal the counters.
    let prometheus = Prometheus::start(&lab, None).unwrap();

    // Site a (the first client) has moved: Teams is dropped for it.
    assert_eq!(lab.send_udp(teams_v4, 20).unwrap(), 20);
    assert_eq!(lab.send_udp(teams_v6, 10).unwrap(), 10);
    assert!(server.settle());
    assert_eq!(
        server.udp_count(teams_v4),
        0,
        "site a's Teams flow got through"
    );
    assert_eq!(
        server.udp_count(teams_v6),
        0,
        "site a's Teams flow got through"
    );
    // Site b only monitors it: delivered, and counted under b.
    lab.send_udp_from_second_client(teams_v4, 20).unwrap();
    lab.send_udp_from_second_client(teams_v6, 10).unwrap();
    lab.send_udp_from_second_client(zoom, 5).unwrap();
    assert!(
        server.wait_udp(&[(teams_v4, 20), (teams_v6, 10)], Duration::from_secs(5)),
        "site b's monitored Teams flow was not delivered"
    );
    assert!(server.settle());
    assert_eq!(server.udp_count(zoom), 0, "zoom is dropped for every site");
    let packets = "enforcer_site_packets_total";
    let m = wait_for(&lab, "the flows counted by site", |m| {
        site(m, packets, "a", "teams", "drop") == 30.0
            && site(m, packets, "b", "teams", "monitor") == 30.0
            && site(m, packets, "b", "zoom", "drop") == 5.0
    });
    assert_eq!(site(&m, packets, "b", "teams", "drop"), 0.0);
    assert_eq!(site(&m, packets, "a", "teams", "monitor"), 0.0);
    assert_eq!(site(&m, packets, "other", "teams", "drop"), 0.0);
    assert!(site(&m, "enforcer_site_bytes_total", "a", "teams", "drop") >= 30.0 * 28.0);
    assert_eq!(site(&m, "enforcer_site_stage", "a", "teams", "drop"), 1.0);
    assert_eq!(
        site(&m, "enforcer_site_stage", "b", "teams", "monitor"),
        1.0
    );

    // status and explain say the same.
    let status = json_ok(&lab.control(&["status", "--json"]).unwrap(), "status");
    let row = |site: &str, platform: &str| {
        status["sites"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["site"] == site && s["platform"] == platform)
            .cloned()
            .unwrap_or_else(|| panic!("no {site}/{platform} in status: {status}"))
    };
    assert_eq!(row("a", "teams")["action"], "drop");
    assert_eq!(row("a", "teams")["packets"], 30);
    assert_eq!(row("b", "teams")["action"], "monitor");
    assert_eq!(row("b", "teams")["packets"], 30);
    let target = INTERNET_V4[0].to_string();
    let verdict = |args: &[&str]| {
        let mut all = vec!["explain", target.as_str(), "--json"];
        all.extend_from_slice(args);
        json_ok(&lab.control(&all).unwrap(), "explain")["verdict"].clone()
    };
    assert_eq!(verdict(&["--site", "a"]), "drop");
    assert_eq!(verdict(&["--site", "b"]), "monitor");
    assert_eq!(verdict(&["--client", &CLIENT_B_V4.to_string()]), "monitor");
    assert_eq!(verdict(&["--site", "other"]), "monitor");
    let unknown = lab
        .control(&["explain", &target, "--site", "nowhere"])
        .unwrap();
    assert!(!unknown.status.success());

    // Site b moves too: one reload, and its next flow is dropped.
    std::fs::write(rules.join("teams.yaml"), teams("drop")).unwrap();
    let reload = lab.control(&["reload"]).unwrap();
    assert!(
        reload.status.success(),
        "{}",
        String::from_utf8_lossy(&reload.stderr)
    );
    lab.send_udp_from_second_client(teams_v4, 20).unwrap();
    assert!(server.settle());
    assert_eq!(
        server.udp_count(teams_v4),
        20,
        "site b's Teams flow got through after it moved to drop"
    );
    let m = wait_for(&lab, "b's drops counted", |m| {
        site(m, packets, "b", "teams", "drop") == 20.0
    });
    assert_eq!(site(&m, "enforcer_site_stage", "b", "teams", "drop"), 1.0);
    assert_eq!(
        site(&m, "enforcer_site_stage", "b", "teams", "monitor"),
        0.0
    );

    // The report, from the Prometheus that scraped all this.
    let mut want: BTreeMap<(String, String, String), (u64, u64)> = BTreeMap::new();
    for (labels, value) in m.series(packets, &[]) {
        let get = |k: &str| labels.iter().find(|(n, _)| n == k).unwrap().1.clone();
        let key = (get("site"), get("platform"), get("action"));
        let bytes = site(&m, "enforcer_site_bytes_total", &key.0, &key.1, &key.2);
        if value > 0.0 {
            want.insert(key, (value as u64, bytes as u64));
        }
    }
    let total: f64 = want.values().map(|(p, _)| *p as f64).sum();
    let deadline = Instant::now() + Duration::from_secs(20);
    while prometheus
        .query(&lab, "sum(enforcer_site_packets_total)")
        .ok()
        .and_then(|v| scalar(&v))
        != Some(total)
    {
        assert!(
            Instant::now() < deadline,
            "Prometheus never saw the final counters"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let (html, csv) = (lab.dir().join("report.html"), lab.dir().join("report.csv"));
    let report = Command::new("ip")
        .args(["netns", "exec", &lab.netns(Side::Gateway)])
        .arg(enforcer_binary().unwrap())
        .args(["report", "--prometheus", &prometheus.url(), "--since", "1h"])
        .arg("--out")
        .arg(&html)
        .arg("--csv")
        .arg(&csv)
        .output()
        .unwrap();
    assert!(
        report.status.success(),
        "report: {}",
        String::from_utf8_lossy(&report.stderr)
    );
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut got: BTreeMap<(String, String, String), (u64, u64)> = BTreeMap::new();
    let mut stages: BTreeMap<(String, String), String> = BTreeMap::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').map(|f| f.trim_matches('"')).collect();
        assert_eq!(f.len(), 6, "{line}");
        stages.insert((f[0].into(), f[1].into()), f[3].into());
        let (p, b): (u64, u64) = (f[4].parse().unwrap(), f[5].parse().unwrap());
        if p > 0 {
            got.insert((f[0].into(), f[1].into(), f[2].into()), (p, b));
        }
    }
    assert_eq!(
        got, want,
        "the report's table differs from the counters:\n{text}"
    );
    assert_eq!(stages[&("a".into(), "teams".into())], "drop", "{text}");
    assert_eq!(stages[&("b".into(), "teams".into())], "drop", "{text}");
    let page = std::fs::read_to_string(&html).unwrap();
    for name in ["teams", "zoom", ">a<", ">b<"] {
        assert!(page.contains(name), "the report does not name {name}");
    }
    let png = lab.dir().join("report.png");
    tests::render::screenshot(&html, &png, &lab.dir().join("chromium")).unwrap();
    let picture = tests::render::analyse(&png, 8).unwrap();
    let inked = picture
        .inked_per_band
        .iter()
        .filter(|n| **n > 2_000)
        .count();
    assert!(
        inked >= 3 && picture.colourful > 2_000,
        "the rendered report looks blank: ink per band {:?}, {} coloured pixels",
        picture.inked_per_band,
        picture.colourful
    );
    lab.stop_daemon().unwrap();
}
