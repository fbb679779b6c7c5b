//! The operator's daemon through the real binary and its control socket: `rules add` blocks a
//! flow that is running, `reload` of a broken policy changes nothing, `explain` and `status`
//! say what is enforced and why, and a SIGKILL of the daemon lets no packet of a banned flow
//! through while a new daemon adopts the pinned state. Needs root and a built daemon.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tests::lab::{
    GATEWAY_CLIENT_V4, INTERNET_V4, INTERNET_V6, Lab, Metrics, Server, json_ok as ok,
};

const POLICY: &[(&str, &str)] = &[
    (
        "banned.yaml",
        "platform: banned-media\nmatch:\n  - prefixes: [198.19.10.0/24, \"2001:db8:10::/48\"]\n",
    ),
    (
        "exception.yaml",
        "platform: exception\naction: allow\nmatch:\n  - prefixes: [198.19.10.77/32]\n",
    ),
];
const STREAM_INTERVAL: Duration = Duration::from_millis(2);
/// How long a flow is watched to see that nothing of it arrives.
const SETTLE: Duration = Duration::from_millis(300);
/// How long a flow (or a counter) gets to show that something arrived.
const FLOW_TIMEOUT: Duration = Duration::from_secs(5);

fn at(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}

/// Datagrams that reached each of `dsts` during the same `period` of a running stream.
fn received_during<const N: usize>(
    server: &Server,
    dsts: [SocketAddr; N],
    period: Duration,
) -> [u64; N] {
    let before = dsts.map(|dst| server.udp_count(dst));
    std::thread::sleep(period);
    let mut after = dsts.map(|dst| server.udp_count(dst));
    for (a, b) in after.iter_mut().zip(before) {
        *a -= b;
    }
    after
}

/// Whether the running stream delivers to `dst` again (a new datagram within FLOW_TIMEOUT).
fn flowing(server: &Server, dst: SocketAddr) -> bool {
    let before = server.udp_count(dst);
    server.wait_udp(&[(dst, before + 1)], FLOW_TIMEOUT)
}

/// Waits until three more of the stream's datagrams to `control` arrived, then until the
/// server counted what reached its sockets. The stream sends one round every STREAM_INTERVAL,
/// the control last in each, and a datagram crosses the lab in well under one interval: so at
/// most one of those three left before this call, and every datagram the stream sent before
/// this call has been delivered or dropped by now.
fn flush(server: &Server, control: SocketAddr) {
    let before = server.udp_count(control);
    assert!(
        server.wait_udp(&[(control, before + 3)], FLOW_TIMEOUT),
        "the stream to {control} stopped"
    );
    assert!(server.settle(), "the lab server stopped");
}

/// Polls the metrics until `done` holds (FLOW_TIMEOUT at most).
fn wait_metrics(lab: &Lab, what: &str, done: impl Fn(&Metrics) -> bool) -> Metrics {
    let deadline = Instant::now() + FLOW_TIMEOUT;
    loop {
        let m = lab.metrics().unwrap();
        if done(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "{what}:\n{}", m.text());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn reloads(m: &Metrics, result: &str) -> f64 {
    m.metric("enforcer_policy_reloads_total", &[("result", result)])
        .unwrap()
}

/// Names blocked by name, through the real binary: `rules add --enforce` writes the managed file,
/// `explain` gives each name's verdict (an allow exception under a banned wildcard included),
/// `status` and the metrics count the patterns, and `--enforce` without a domain is refused.
#[test]
fn rules_add_enforce_name_explain_status_and_metrics() {
    let mut lab = Lab::new().unwrap();
    let rules = lab.write_policy(POLICY).unwrap();
    lab.start_daemon(&rules).unwrap();

    ok(
        &lab.control(&[
            "rules",
            "add",
            "web-names",
            "--domain",
            "*.web.example",
            "--domain",
            "web.example",
            "--enforce",
            "name",
        ])
        .unwrap(),
        "rules add --enforce name",
    );
    ok(
        &lab.control(&[
            "rules",
            "add",
            "web-ok",
            "--action",
            "allow",
            "--domain",
            "ok.web.example",
        ])
        .unwrap(),
        "rules add an allow name",
    );
    let managed = std::fs::read_to_string(rules.join("enforcer-managed.yaml")).unwrap();
    assert_eq!(managed.matches("enforce: name").count(), 1, "{managed}");

    let why = ok(
        &lab.control(&["explain", "Chat.Web.Example.", "--json"])
            .unwrap(),
        "explain a blocked name",
    );
    assert_eq!(why["name_verdict"], "drop", "{why}");
    assert_eq!(why["verdict"], "drop", "{why}");
    assert_eq!(why["matches"][0]["platform"], "web-names", "{why}");
    assert_eq!(why["matches"][0]["name"], "*.web.example", "{why}");
    assert_eq!(why["matches"][0]["enforce"], "name", "{why}");
    let why = ok(
        &lab.control(&["explain", "ok.web.example", "--json"])
            .unwrap(),
        "explain an allowed name",
    );
    assert_eq!(why["name_verdict"], "allow", "{why}");
    assert_eq!(why["matches"][0]["enforce"], "both", "{why}");
    let why = ok(
        &lab.control(&["explain", "other.example", "--json"])
            .unwrap(),
        "explain an unrelated name",
    );
    assert_eq!(why["name_verdict"], "none", "{why}");
    let why = ok(
        &lab.control(&["explain", "198.19.10.5", "--json"]).unwrap(),
        "explain an address",
    );
    assert!(why.get("name_verdict").is_none(), "{why}");
    assert_eq!(
        why["matches"][0]["enforce"],
        serde_json::Value::Null,
        "{why}"
    );
    let text = lab.control(&["explain", "chat.web.example"]).unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("DNS queries for it: drop: answered NXDOMAIN by the gateway"),
        "{text}"
    );

    let status = ok(&lab.control(&["status", "--json"]).unwrap(), "status");
    let names = |platform: &str| {
        status["platforms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["platform"] == platform)
            .map(|p| p["names"].as_u64())
    };
    assert_eq!(names("web-names"), Some(Some(2)), "{status}");
    assert_eq!(names("web-ok"), Some(Some(1)), "{status}");
    assert_eq!(names("banned-media"), Some(Some(0)), "{status}");

    let m = lab.metrics().unwrap();
    let patterns = |platform: &str, enforce: &str| {
        m.metric(
            "enforcer_names",
            &[("platform", platform), ("enforce", enforce)],
        )
        .unwrap()
    };
    assert_eq!(patterns("web-names", "name"), 2.0);
    assert_eq!(patterns("web-names", "both"), 0.0);
    assert_eq!(patterns("web-ok", "both"), 1.0);
    assert_eq!(patterns("banned-media", "address"), 0.0);
    for family in ["ipv4", "ipv6"] {
        assert_eq!(
            m.metric(
                "enforcer_dns_blocked_total",
                &[("platform", "web-names"), ("family", family)],
            )
            .unwrap(),
            0.0
        );
    }

    let out = lab
        .control(&[
            "rules",
            "add",
            "web-names",
            "--prefix",
            "198.19.60.0/24",
            "--enforce",
            "address",
        ])
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--enforce"), "{stderr}");
}

#[test]
fn rules_add_reload_explain_and_status_through_the_socket() {
    let mut lab = Lab::new().unwrap();
    let media = at(IpAddr::V4(INTERNET_V4[0]), 443);
    let exception = at(IpAddr::V4(INTERNET_V4[1]), 443);
    let target = at(IpAddr::V4(INTERNET_V4[2]), 3478);
    let control = at(IpAddr::V4(INTERNET_V4[4]), 443);
    let server = lab
        .start_server(&[media, exception, target, control], &[])
        .unwrap();
    let rules = lab.write_policy(POLICY).unwrap();
    lab.start_daemon(&rules).unwrap();

    // After start-up the daemon keeps CAP_BPF (bit 39) and nothing else.
    let pid = lab.daemon_pid().unwrap();
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    for set in ["CapEff", "CapPrm"] {
        let line = proc_status.lines().find(|l| l.starts_with(set)).unwrap();
        assert!(line.ends_with("0000008000000000"), "{line}");
    }
    let socket_mode = std::fs::metadata(lab.socket()).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&socket_mode) & 0o777,
        0o660
    );

    let status = ok(&lab.control(&["status", "--json"]).unwrap(), "status");
    let names: Vec<&str> = status["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["g0", "g1"], "{status}");
    let digest_before = status["policy_digest"].as_str().unwrap().to_owned();
    let banned = &status["platforms"].as_array().unwrap()[0];
    assert_eq!(banned["platform"], "banned-media");
    assert_eq!(
        (
            banned["prefixes_v4"].as_u64(),
            banned["prefixes_v6"].as_u64()
        ),
        (Some(1), Some(1))
    );

    // Counters stay with their platform when a platform that sorts first is added.
    let drops = |m: &Metrics, platform: &str| {
        m.metric(
            "enforcer_packets_total",
            &[
                ("platform", platform),
                ("action", "drop"),
                ("direction", "egress"),
                ("family", "ipv4"),
            ],
        )
        .unwrap()
    };
    lab.send_udp(media, 25).unwrap();
    let m = wait_metrics(&lab, "25 drops counted for banned-media", |m| {
        drops(m, "banned-media") >= 25.0
    });
    let before = drops(&m, "banned-media");
    ok(
        &lab.control(&["rules", "add", "aaa-first", "--prefix", "198.19.50.0/24"])
            .unwrap(),
        "rules add aaa-first",
    );
    let m = lab.metrics().unwrap();
    assert_eq!(
        drops(&m, "banned-media"),
        before,
        "banned-media's counters moved"
    );
    assert_eq!(
        drops(&m, "aaa-first"),
        0.0,
        "a new platform inherited counters"
    );
    ok(
        &lab.control(&["rules", "remove", "aaa-first"]).unwrap(),
        "rules remove aaa-first",
    );

    // A flow runs to an address no rule covers yet; `rules add` stops it.
    // The control comes last in each round (see `flush`).
    let stream = lab
        .udp_stream(&[target, exception, media, control], STREAM_INTERVAL)
        .unwrap();
    assert!(flowing(&server, target), "the flow does not run");
    let started = Instant::now();
    let out = lab
        .control(&["rules", "add", "newban", "--prefix", "198.19.20.0/24"])
        .unwrap();
    let took = started.elapsed();
    ok(&out, "rules add");
    // The command returns once the maps enforce the rule: well within the one second asked.
    assert!(took < Duration::from_secs(1), "rules add took {took:?}");
    flush(&server, control);
    let [to_target, to_exception, to_control] =
        received_during(&server, [target, exception, control], SETTLE);
    assert_eq!(to_target, 0, "after rules add");
    assert!(to_exception > 0, "the allow exception stopped");
    assert!(to_control > 0, "unrelated traffic stopped");
    let managed = std::fs::read_to_string(rules.join("enforcer-managed.yaml")).unwrap();
    assert!(managed.contains("198.19.20.0/24"), "{managed}");

    let listed = ok(
        &lab.control(&["rules", "list", "--json"]).unwrap(),
        "rules list",
    );
    assert!(
        listed["platforms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["platform"] == "newban" && p["action"] == "drop"),
        "{listed}"
    );

    let why = ok(
        &lab.control(&["explain", "198.19.20.9", "--json"]).unwrap(),
        "explain",
    );
    assert_eq!(why["verdict"], "drop", "{why}");
    assert_eq!(why["matches"][0]["platform"], "newban");
    assert_eq!(why["matches"][0]["source"], "published");
    assert_eq!(why["matches"][0]["prefix"], "198.19.20.0/24");
    let why = ok(
        &lab.control(&["explain", "198.19.10.77", "--json"]).unwrap(),
        "explain",
    );
    assert_eq!(why["verdict"], "allow", "{why}");
    let platforms: Vec<&str> = why["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"].as_str().unwrap())
        .collect();
    assert_eq!(platforms, ["exception", "banned-media"], "{why}");
    let why = ok(
        &lab.control(&["explain", "198.19.99.1", "--json"]).unwrap(),
        "explain",
    );
    assert_eq!(why["verdict"], "none", "{why}");
    assert!(why.get("never_block").is_none(), "{why}");
    // The gateway's own address is in the never-block list, and explain says so.
    let gateway = GATEWAY_CLIENT_V4.to_string();
    let why = ok(
        &lab.control(&["explain", &gateway, "--json"]).unwrap(),
        "explain",
    );
    assert_eq!(why["never_block"]["origin"], "interface", "{why}");
    assert_eq!(
        why["never_block"]["range"],
        format!("{gateway}/32"),
        "{why}"
    );

    // A broken file: the watcher and `reload` both refuse it; nothing changes.
    std::fs::write(
        rules.join("broken.yaml"),
        "platform: broken\nmatch:\n  - prefixes: [198.19.30.0/33]\n",
    )
    .unwrap();
    let out = lab.control(&["reload"]).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "reload of a broken policy: {stderr}"
    );
    assert!(
        stderr.contains("broken.yaml:3:"),
        "errors name the place: {stderr}"
    );
    let [to_target, to_media, to_exception] =
        received_during(&server, [target, media, exception], SETTLE);
    assert_eq!(to_target, 0, "after a refused reload");
    assert_eq!(to_media, 0, "banned-media after a refused reload");
    assert!(
        to_exception > 0,
        "the allow exception after a refused reload"
    );
    let m = lab.metrics().unwrap();
    assert!(reloads(&m, "error") >= 1.0);
    let status = ok(&lab.control(&["status", "--json"]).unwrap(), "status");
    assert_ne!(
        status["policy_digest"],
        digest_before.as_str(),
        "rules add changed it"
    );
    let digest_with_newban = status["policy_digest"].clone();

    // Fixing the file is picked up by the watcher, without a command.
    std::fs::write(
        rules.join("broken.yaml"),
        "platform: broken\nmatch:\n  - prefixes: [198.19.30.0/24]\n",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = ok(&lab.control(&["status", "--json"]).unwrap(), "status");
        if status["platforms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["platform"] == "broken")
        {
            assert_ne!(status["policy_digest"], digest_with_newban);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the fixed file was not picked up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let out = lab.control(&["rules", "remove", "newban"]).unwrap();
    ok(&out, "rules remove");
    assert!(flowing(&server, target), "after rules remove");
    drop(stream);

    // Bad input from the CLI is refused with a reason, and changes nothing.
    let out = lab
        .control(&["rules", "add", "x", "--prefix", "10.1.0.0/16"])
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("never-block"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = lab.control(&["rules", "remove", "banned-media"]).unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "a file's platform is not removable"
    );
    let m = lab.metrics().unwrap();
    assert!(reloads(&m, "ok") >= 3.0, "{}", m.text());
    lab.stop_daemon().unwrap();
}

#[test]
fn sigkill_lets_no_packet_of_a_banned_flow_through_and_a_new_daemon_adopts() {
    let mut lab = Lab::new().unwrap();
    let media4 = at(IpAddr::V4(INTERNET_V4[0]), 443);
    let media6 = at(IpAddr::V6(INTERNET_V6[0]), 443);
    // Not banned: these must be delivered throughout, daemon or no daemon.
    let control4 = at(IpAddr::V4(INTERNET_V4[4]), 443);
    let control6 = at(IpAddr::V6(INTERNET_V6[4]), 443);
    let server = lab
        .start_server(&[media4, media6, control4, control6], &[])
        .unwrap();
    let rules = lab.write_policy(POLICY).unwrap();
    lab.start_daemon(&rules).unwrap();

    let stream = lab
        .udp_stream(&[media4, media6, control4, control6], STREAM_INTERVAL)
        .unwrap();
    let [before4, before6] = received_during(&server, [control4, control6], SETTLE);
    assert!(
        before4 > 0 && before6 > 0,
        "control flows do not run: {before4} IPv4, {before6} IPv6"
    );
    lab.kill_daemon().unwrap();
    // No daemon at all for a while: the pinned program keeps enforcing alone.
    let [dead4, dead6] = received_during(&server, [control4, control6], SETTLE);
    assert!(
        dead4 > 0 && dead6 > 0,
        "control flows stalled with the daemon dead: {dead4} IPv4, {dead6} IPv6"
    );
    lab.start_daemon(&rules).unwrap();
    let [after4, after6] = received_during(&server, [control4, control6], SETTLE);
    assert!(
        after4 > 0 && after6 > 0,
        "control flows stalled after the restart: {after4} IPv4, {after6} IPv6"
    );
    // Everything sent before this point has crossed the gateway or been dropped there.
    flush(&server, control6);
    drop(stream);
    assert_eq!(server.udp_count(media4), 0, "IPv4 datagrams got through");
    assert_eq!(server.udp_count(media6), 0, "IPv6 datagrams got through");
    let log = lab.daemon_log();
    assert!(
        log.contains("adopted=true"),
        "the new daemon did not adopt: {log}"
    );
    lab.stop_daemon().unwrap();
}
