//! End-to-end tests with the real `enforcer` binary on a gateway namespace between a client
//! and a server namespace, with real UDP and TCP traffic. Needs root and a built daemon
//! (`cargo build -p enforcer`, which `cargo xtask test` does first).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tests::lab::{Connect, INTERNET_V4, INTERNET_V6, Lab, Metrics, Server, enforcer_binary};

/// Datagrams per UDP flow.
const N: usize = 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);

const BANNED_MEDIA: &str = "\
platform: banned-media
description: a media platform banned on every port
action: drop
match:
  - prefixes: [198.19.10.0/24, \"2001:db8:10::/48\"]
";
const BANNED_PORT: &str = "\
platform: banned-port
description: only its UDP relay ports are banned
match:
  - prefixes: [198.19.20.0/24, \"2001:db8:20::/48\"]
    protocol: udp
    ports: [3478, 8801-8810]
";
const EXCEPTION: &str = "\
platform: exception
description: one host inside the banned /24 stays reachable
action: allow
match:
  - prefixes: [198.19.10.77/32, \"2001:db8:10::77/128\"]
";
const WATCHED: &str = "\
platform: watched
action: monitor
match:
  - prefixes: [198.19.30.0/24, \"2001:db8:30::/48\"]
";

/// The lab's internet hosts of one family, by their role in the policy above.
#[derive(Clone, Copy, Debug)]
struct Hosts {
    family: &'static str,
    media: IpAddr,
    exception: IpAddr,
    port_host: IpAddr,
    watched: IpAddr,
    unrelated: IpAddr,
}

fn hosts() -> [Hosts; 2] {
    let v4 = INTERNET_V4.map(IpAddr::V4);
    let v6 = INTERNET_V6.map(IpAddr::V6);
    [("ipv4", v4), ("ipv6", v6)].map(|(family, a)| Hosts {
        family,
        media: a[0],
        exception: a[1],
        port_host: a[2],
        watched: a[3],
        unrelated: a[4],
    })
}

fn at(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}

fn packets(m: &Metrics, platform: &str, action: &str, direction: &str, family: &str) -> f64 {
    m.metric(
        "enforcer_packets_total",
        &[
            ("platform", platform),
            ("action", action),
            ("direction", direction),
            ("family", family),
        ],
    )
    .unwrap()
}

fn bytes(m: &Metrics, platform: &str, action: &str, direction: &str, family: &str) -> f64 {
    m.metric(
        "enforcer_bytes_total",
        &[
            ("platform", platform),
            ("action", action),
            ("direction", direction),
            ("family", family),
        ],
    )
    .unwrap()
}

/// Sends N datagrams to `dst`, then N to `control` (a host no rule matches), waits for the
/// control datagrams and returns how many of the `dst` ones the server received.
fn udp_delivered(lab: &Lab, server: &Server, dst: SocketAddr, control: SocketAddr) -> u64 {
    let (before, control_before) = (server.udp_count(dst), server.udp_count(control));
    lab.send_udp(dst, N).unwrap();
    lab.send_udp(control, N).unwrap();
    assert!(
        server.wait_udp(&[(control, control_before + N as u64)], DELIVERY_TIMEOUT),
        "control datagrams to {control} did not arrive: the lab itself is broken"
    );
    // Sent before the control datagrams, so in their sockets by now: count them.
    assert!(server.settle(), "the lab server stopped");
    server.udp_count(dst) - before
}

fn assert_blocked(lab: &Lab, server: &Server, when: &str) {
    for h in hosts() {
        let got = udp_delivered(lab, server, at(h.media, 443), at(h.unrelated, 443));
        assert_eq!(got, 0, "{when}: UDP to banned {} was delivered", h.media);
    }
}

fn xdp_on_both(lab: &Lab) -> (bool, bool) {
    (
        lab.xdp_attached("g0").unwrap(),
        lab.xdp_attached("g1").unwrap(),
    )
}

#[test]
fn enforces_prefixes_ports_exceptions_and_monitoring() {
    let mut lab = Lab::new().unwrap();
    let rules = lab
        .write_policy(&[
            ("banned-media.yaml", BANNED_MEDIA),
            ("banned-port.yaml", BANNED_PORT),
            ("exception.yaml", EXCEPTION),
            ("watched.yaml", WATCHED),
        ])
        .unwrap();

    let mut udp = Vec::new();
    let mut tcp = Vec::new();
    for h in hosts() {
        udp.extend([
            at(h.media, 443),
            at(h.exception, 443),
            at(h.port_host, 3478),
            at(h.port_host, 3479),
            at(h.port_host, 8805),
            at(h.watched, 443),
            at(h.unrelated, 443),
        ]);
        tcp.extend([
            at(h.media, 443),
            at(h.exception, 443),
            at(h.port_host, 3478),
            at(h.watched, 443),
            at(h.unrelated, 443),
        ]);
    }
    let server = lab.start_server(&udp, &tcp).unwrap();
    lab.start_daemon(&rules).unwrap();

    // Before any traffic: attached to both interfaces, every platform's series present at 0,
    // the published prefixes counted.
    let m = lab.metrics().unwrap();
    for iface in ["g0", "g1"] {
        assert_eq!(
            m.sum("enforcer_xdp_attached", &[("interface", iface)]),
            1.0,
            "enforcer_xdp_attached for {iface}:\n{}",
            m.sample_lines("enforcer_xdp_attached").join("\n")
        );
        assert!(
            lab.xdp_attached(iface).unwrap(),
            "ip link shows no XDP on {iface}"
        );
    }
    for (platform, action) in [
        ("banned-media", "drop"),
        ("banned-port", "drop"),
        ("exception", "allow"),
        ("watched", "monitor"),
    ] {
        for direction in ["egress", "ingress"] {
            for family in ["ipv4", "ipv6"] {
                assert_eq!(packets(&m, platform, action, direction, family), 0.0);
            }
        }
    }
    for (platform, count) in [
        ("banned-media", 1.0),
        ("banned-port", 1.0),
        ("exception", 1.0),
        ("watched", 1.0),
    ] {
        for family in ["ipv4", "ipv6"] {
            assert_eq!(
                m.metric(
                    "enforcer_prefixes",
                    &[
                        ("platform", platform),
                        ("family", family),
                        ("source", "published")
                    ]
                )
                .unwrap(),
                count,
                "enforcer_prefixes for {platform} {family}"
            );
        }
    }

    // UDP: N datagrams per flow.
    for &dst in &udp {
        lab.send_udp(dst, N).unwrap();
    }
    let mut expect_delivered = Vec::new();
    let mut expect_blocked = Vec::new();
    for h in hosts() {
        expect_blocked.extend([
            (at(h.media, 443), "banned /24"),
            (at(h.port_host, 3478), "banned UDP port 3478"),
            (at(h.port_host, 8805), "banned UDP port range 8801-8810"),
        ]);
        expect_delivered.extend([
            (
                at(h.exception, 443),
                "allow exception inside the banned /24",
            ),
            (at(h.port_host, 3479), "a port the entry does not list"),
            (at(h.watched, 443), "monitor"),
            (at(h.unrelated, 443), "no rule"),
        ]);
    }
    let targets: Vec<(SocketAddr, u64)> = expect_delivered
        .iter()
        .map(|&(a, _)| (a, N as u64))
        .collect();
    // The last flow sent goes to a host no rule covers: once all of it is in, every datagram
    // before it has been delivered or dropped.
    assert_eq!(udp.last(), expect_delivered.last().map(|(a, _)| a));
    server.wait_udp(&targets, DELIVERY_TIMEOUT);
    assert!(server.settle(), "the lab server stopped");
    for &(dst, why) in &expect_delivered {
        assert_eq!(
            server.udp_count(dst),
            N as u64,
            "UDP to {dst} ({why}) should be delivered"
        );
    }
    for &(dst, why) in &expect_blocked {
        assert_eq!(
            server.udp_count(dst),
            0,
            "UDP to {dst} ({why}) should be dropped"
        );
    }

    // TCP: a handshake either completes or times out.
    for h in hosts() {
        for (dst, expected, why) in [
            (at(h.media, 443), Connect::TimedOut, "banned /24"),
            (at(h.exception, 443), Connect::Connected, "allow exception"),
            (
                at(h.port_host, 3478),
                Connect::Connected,
                "the port entry is UDP only",
            ),
            (at(h.watched, 443), Connect::Connected, "monitor"),
            (at(h.unrelated, 443), Connect::Connected, "no rule"),
        ] {
            let got = lab.tcp_connect(dst, CONNECT_TIMEOUT).unwrap();
            assert_eq!(got, expected, "TCP connect to {dst} ({why})");
            if expected == Connect::Connected {
                assert!(
                    server.wait_tcp(&[(dst, 1)], DELIVERY_TIMEOUT),
                    "the server accepted nothing on {dst}"
                );
            } else {
                assert_eq!(
                    server.tcp_accepted(dst),
                    0,
                    "the server accepted a connection on {dst}"
                );
            }
        }
    }

    // Counters: what the datapath saw, by platform, verdict, direction and family.
    let m = lab.metrics().unwrap();
    let n = N as f64;
    for h in hosts() {
        let f = h.family;
        // A UDP-only platform: exactly the datagrams sent to its two banned ports.
        assert_eq!(
            packets(&m, "banned-port", "drop", "egress", f),
            2.0 * n,
            "{f}"
        );
        assert_eq!(packets(&m, "banned-port", "drop", "ingress", f), 0.0, "{f}");
        let header = if f == "ipv4" { 28.0 } else { 48.0 };
        assert!(
            bytes(&m, "banned-port", "drop", "egress", f) >= 2.0 * n * header,
            "{f}: bytes below IP+UDP headers"
        );
        // UDP plus the SYN and its retransmissions within the 1 s connect timeout; the
        // exception host's traffic inside the same /24 is not among them.
        let media = packets(&m, "banned-media", "drop", "egress", f);
        assert!(
            media > n && media <= n + 5.0,
            "{f}: banned-media drops {media}, expected {N} datagrams and a few SYNs"
        );
        assert_eq!(
            packets(&m, "banned-media", "drop", "ingress", f),
            0.0,
            "{f}"
        );
        // Passed and counted both ways: the server's answers are ingress.
        assert!(packets(&m, "watched", "monitor", "egress", f) > n, "{f}");
        assert!(
            packets(&m, "watched", "monitor", "ingress", f) >= 1.0,
            "{f}"
        );
        assert!(packets(&m, "exception", "allow", "egress", f) > n, "{f}");
        assert!(
            packets(&m, "exception", "allow", "ingress", f) >= 1.0,
            "{f}"
        );
    }
    let no_match = m
        .metric("enforcer_passed_packets_total", &[("reason", "no_match")])
        .unwrap();
    assert!(
        no_match >= 4.0 * n,
        "passed no_match {no_match}: at least the datagrams to the unrelated hosts and to port 3479"
    );
    drop(server);
}

#[test]
fn enforcement_survives_the_daemon_and_detach_removes_it() {
    let mut lab = Lab::new().unwrap();
    let rules = lab
        .write_policy(&[("banned-media.yaml", BANNED_MEDIA)])
        .unwrap();
    let mut udp = Vec::new();
    for h in hosts() {
        udp.extend([at(h.media, 443), at(h.unrelated, 443)]);
    }
    let server = lab.start_server(&udp, &[]).unwrap();

    // Without the enforcer the lab delivers everything.
    for h in hosts() {
        let got = udp_delivered(&lab, &server, at(h.media, 443), at(h.unrelated, 443));
        assert_eq!(got, N as u64, "before the daemon: UDP to {}", h.media);
    }

    lab.start_daemon(&rules).unwrap();
    assert_blocked(&lab, &server, "daemon running");

    // A crash: everything stays pinned and attached.
    lab.kill_daemon().unwrap();
    assert_eq!(xdp_on_both(&lab), (true, true), "XDP detached by SIGKILL");
    assert_blocked(&lab, &server, "after SIGKILL");

    // A new daemon adopts what is pinned.
    lab.start_daemon(&rules).unwrap();
    assert_eq!(xdp_on_both(&lab), (true, true));
    let m = lab.metrics().unwrap();
    for iface in ["g0", "g1"] {
        assert_eq!(
            m.sum("enforcer_xdp_attached", &[("interface", iface)]),
            1.0,
            "adopted daemon: enforcer_xdp_attached for {iface}"
        );
    }
    assert_blocked(&lab, &server, "adopted by a new daemon");
    let m = lab.metrics().unwrap();
    for family in ["ipv4", "ipv6"] {
        assert!(
            packets(&m, "banned-media", "drop", "egress", family) >= N as f64,
            "the adopted daemon counts drops ({family})"
        );
    }

    // A clean stop leaves enforcement in place too.
    let status = lab.stop_daemon().unwrap();
    assert!(
        status.success(),
        "SIGTERM exit: {status}\n{}",
        lab.daemon_log()
    );
    assert_eq!(xdp_on_both(&lab), (true, true), "XDP detached by SIGTERM");
    assert_blocked(&lab, &server, "after SIGTERM");

    // Uninstall: no program, no pins, traffic flows again.
    let bpffs = lab.bpffs();
    let output = lab
        .enforcer(&["detach", "--all", "--bpffs", &bpffs.to_string_lossy()])
        .unwrap();
    assert!(
        output.status.success(),
        "enforcer detach --all: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        xdp_on_both(&lab),
        (false, false),
        "XDP still attached after detach"
    );
    assert!(
        pinned_files(&bpffs).is_empty(),
        "pins left after detach --all: {:?}",
        pinned_files(&bpffs)
    );
    for h in hosts() {
        let got = udp_delivered(&lab, &server, at(h.media, 443), at(h.unrelated, 443));
        assert_eq!(got, N as u64, "after detach: UDP to {}", h.media);
    }
}

/// Every non-directory entry under `dir` (the daemon's --bpffs directory; nothing when it does
/// not exist).
fn pinned_files(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

const BROKEN: &str = "\
platform: broken
action: block
match:
  - prefixes: [198.19.10.0/33]
  - prefixes: [198.19.10.0/24]
";

#[test]
fn broken_policies_are_reported_and_never_applied() {
    let mut lab = Lab::new().unwrap();
    let rules = lab.write_policy(&[("broken.yaml", BROKEN)]).unwrap();
    let file = rules.join("broken.yaml");
    let good = lab
        .write_policy(&[("banned-media.yaml", BANNED_MEDIA)])
        .unwrap();

    // `check`: exit 1 and every error as PATH:LINE:COLUMN: message.
    let output = Command::new(enforcer_binary().unwrap())
        .arg("check")
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "check: {stderr}");
    for position in ["2:9", "4:16"] {
        let expected = format!("{}:{position}: ", file.display());
        assert!(
            stderr.contains(&expected),
            "check stderr lacks {expected:?}:\n{stderr}"
        );
    }
    let output = Command::new(enforcer_binary().unwrap())
        .arg("check")
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "check of a valid policy: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    // `run`: refuses to start, attaches nothing, pins nothing; traffic is untouched.
    let server = lab
        .start_server(
            &[at(hosts()[0].media, 443), at(hosts()[0].unrelated, 443)],
            &[],
        )
        .unwrap();
    lab.spawn_daemon(&rules).unwrap();
    let (status, log) = lab.daemon_exit(Duration::from_secs(20)).unwrap();
    assert!(
        !status.success(),
        "run with a broken policy exited 0:\n{log}"
    );
    assert!(
        log.contains(&format!("{}:2:9: ", file.display())),
        "run does not report the error position:\n{log}"
    );
    assert_eq!(
        xdp_on_both(&lab),
        (false, false),
        "XDP attached by a refused start"
    );
    assert!(
        pinned_files(&lab.bpffs()).is_empty(),
        "a refused start pinned {:?}",
        pinned_files(&lab.bpffs())
    );
    let h = hosts()[0];
    let got = udp_delivered(&lab, &server, at(h.media, 443), at(h.unrelated, 443));
    assert_eq!(got, N as u64, "a refused policy must not block anything");
}
