//! The daemon enforcing domains: the real `enforcer` binary on the lab's gateway resolves the
//! policy's names against a real dnsmasq, blocks the answers' addresses for real traffic, refuses
//! poisoned answers, follows DNS changes with a grace period, and after a restart with the DNS
//! server gone still blocks from its state directory. Needs root and a built daemon.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use tests::dns::{Dnsmasq, Zone};
use tests::lab::{GATEWAY_CLIENT_V4, INTERNET_V4, INTERNET_V6, Lab, Metrics, Server, Side};
use tests::tools;

/// Datagrams per UDP flow.
const N: usize = 20;
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Generous: resolution against a local dnsmasq takes milliseconds.
const ENFORCED_TIMEOUT: Duration = Duration::from_secs(20);

fn at(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}

/// Sends N datagrams to `dst` and N to `control`, waits for the control ones and returns how many
/// of the `dst` ones arrived.
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

fn dns_prefixes(m: &Metrics, platform: &str, family: &str) -> f64 {
    m.metric(
        "enforcer_prefixes",
        &[
            ("platform", platform),
            ("family", family),
            ("source", "dns"),
        ],
    )
    .unwrap()
}

/// Polls the metrics until `done` holds; panics with the daemon's log at the deadline.
fn wait_metrics(lab: &Lab, what: &str, done: impl Fn(&Metrics) -> bool) -> Metrics {
    let deadline = Instant::now() + ENFORCED_TIMEOUT;
    loop {
        if let Ok(m) = lab.metrics()
            && done(&m)
        {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not reached within {ENFORCED_TIMEOUT:?}; daemon log:\n{}",
            lab.daemon_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// dnsmasq on the gateway's loopback, where the daemon resolves.
fn start_dns(lab: &Lab, zone: &Zone) -> Dnsmasq {
    Dnsmasq::start_in(
        &lab.netns_path(Side::Gateway),
        &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
        None,
        zone,
    )
    .unwrap()
}

fn policy(names: &[&str]) -> String {
    format!(
        "platform: dnsban\ndescription: banned by its addresses\nmatch:\n  - domains: [{}]\n    enforce: address\n",
        names.join(", ")
    )
}

#[test]
fn resolved_names_are_blocked_poison_refused_and_a_cold_start_without_dns_still_blocks() {
    let mut lab = Lab::new().unwrap();
    let (media4, media6) = (IpAddr::V4(INTERNET_V4[0]), IpAddr::V6(INTERNET_V6[0]));
    let (other4, other6) = (IpAddr::V4(INTERNET_V4[4]), IpAddr::V6(INTERNET_V6[4]));
    let flows = [
        (at(media4, 443), at(other4, 443)),
        (at(media6, 443), at(other6, 443)),
    ];
    let server = lab
        .start_server(
            &flows.iter().flat_map(|(a, b)| [*a, *b]).collect::<Vec<_>>(),
            &[],
        )
        .unwrap();

    let zone = Zone::new()
        .local("banned.example")
        .host(
            "media.banned.example",
            &[&media4.to_string(), &media6.to_string()],
            Some(300),
        )
        // A poisoned answer: the gateway's own address, which must never be blocked.
        .host(
            "poison.banned.example",
            &[&GATEWAY_CLIENT_V4.to_string()],
            Some(300),
        );
    // Declared after the lab, so it stops before the lab's namespaces go.
    let dns = start_dns(&lab, &zone);
    let rules = lab
        .write_policy(&[(
            "dnsban.yaml",
            &policy(&["media.banned.example", "poison.banned.example"]),
        )])
        .unwrap();
    lab.add_daemon_args(&["--resolver", &dns.addr.to_string()]);

    for (dst, control) in flows {
        assert_eq!(
            udp_delivered(&lab, &server, dst, control),
            N as u64,
            "before the daemon: {dst}"
        );
    }

    lab.start_daemon(&rules).unwrap();
    let m = wait_metrics(
        &lab,
        "both families of media.banned.example enforced",
        |m| dns_prefixes(m, "dnsban", "ipv4") == 1.0 && dns_prefixes(m, "dnsban", "ipv6") == 1.0,
    );
    assert!(
        m.metric(
            "enforcer_resolutions_total",
            &[("platform", "dnsban"), ("result", "ok")]
        )
        .unwrap()
            >= 1.0
    );
    let m = wait_metrics(&lab, "the poisoned answer counted", |m| {
        m.metric(
            "enforcer_rejected_answers_total",
            &[("reason", "never_block")],
        )
        .unwrap_or(0.0)
            >= 1.0
    });
    assert_eq!(
        dns_prefixes(&m, "dnsban", "ipv4"),
        1.0,
        "the poisoned address was enforced"
    );
    for (dst, control) in flows {
        assert_eq!(
            udp_delivered(&lab, &server, dst, control),
            0,
            "daemon running: {dst}"
        );
    }
    let m = lab.metrics().unwrap();
    for family in ["ipv4", "ipv6"] {
        let dropped = m
            .metric(
                "enforcer_packets_total",
                &[
                    ("platform", "dnsban"),
                    ("action", "drop"),
                    ("direction", "egress"),
                    ("family", family),
                ],
            )
            .unwrap();
        assert!(dropped >= N as f64, "{family}: {dropped} drops counted");
    }
    // The gateway itself still answers the client: its address was not blocked.
    let ping = std::process::Command::new(tools::require(tools::IP))
        .args(["netns", "exec", &lab.netns(Side::Client)])
        .arg(tools::require(tools::PING))
        .args(["-c1", "-W2"])
        .arg(GATEWAY_CLIENT_V4.to_string())
        .output()
        .unwrap();
    assert!(
        ping.status.success(),
        "the gateway's own address became unreachable"
    );

    let state = std::fs::read_to_string(lab.state_dir().join("addresses.json")).unwrap();
    assert!(state.contains(&media4.to_string()) && state.contains(&media6.to_string()));

    // Stop the daemon and remove enforcement: the next start has to rebuild it from the state
    // directory alone, with the DNS server gone.
    lab.stop_daemon().unwrap();
    let bpffs = lab.bpffs().display().to_string();
    let out = lab
        .enforcer(&["detach", "--all", "--bpffs", &bpffs])
        .unwrap();
    assert!(
        out.status.success(),
        "detach: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (dst, control) in flows {
        assert_eq!(
            udp_delivered(&lab, &server, dst, control),
            N as u64,
            "after detach: {dst}"
        );
    }
    drop(dns);

    lab.start_daemon(&rules).unwrap();
    for (dst, control) in flows {
        assert_eq!(
            udp_delivered(&lab, &server, dst, control),
            0,
            "cold start: {dst}"
        );
    }
    // The refresh fails against the dead server, and the addresses stay.
    let m = wait_metrics(&lab, "a failed resolution counted", |m| {
        ["error", "timeout"].iter().any(|r| {
            m.metric(
                "enforcer_resolutions_total",
                &[("platform", "dnsban"), ("result", r)],
            )
            .unwrap_or(0.0)
                >= 1.0
        })
    });
    assert_eq!(dns_prefixes(&m, "dnsban", "ipv4"), 1.0);
    assert_eq!(dns_prefixes(&m, "dnsban", "ipv6"), 1.0);
    for (dst, control) in flows {
        assert_eq!(
            udp_delivered(&lab, &server, dst, control),
            0,
            "DNS down: {dst}"
        );
    }
    lab.stop_daemon().unwrap();
}

#[test]
fn a_changed_answer_is_followed_and_the_old_address_kept_for_the_grace_period() {
    let mut lab = Lab::new().unwrap();
    let (old, new) = (IpAddr::V4(INTERNET_V4[0]), IpAddr::V4(INTERNET_V4[2]));
    let control = at(IpAddr::V4(INTERNET_V4[4]), 443);
    let server = lab
        .start_server(&[at(old, 443), at(new, 443), control], &[])
        .unwrap();
    let zone = Zone::new()
        .local("banned.example")
        .local_ttl(1)
        .hosts_file(format!("{old} media.banned.example\n"));
    let dns = start_dns(&lab, &zone);
    let rules = lab
        .write_policy(&[("dnsban.yaml", &policy(&["media.banned.example"]))])
        .unwrap();
    let grace = 6;
    lab.add_daemon_args(&[
        "--resolver",
        &dns.addr.to_string(),
        "--ttl-floor",
        "1",
        "--ttl-ceiling",
        "2",
        "--grace",
        &grace.to_string(),
    ]);
    lab.start_daemon(&rules).unwrap();
    wait_metrics(&lab, "the first address enforced", |m| {
        dns_prefixes(m, "dnsban", "ipv4") == 1.0
    });
    assert_eq!(udp_delivered(&lab, &server, at(old, 443), control), 0);
    assert_eq!(
        udp_delivered(&lab, &server, at(new, 443), control),
        N as u64
    );

    dns.rewrite_hosts(&format!("{new} media.banned.example\n"))
        .unwrap();
    let changed = Instant::now();
    wait_metrics(&lab, "the new address enforced beside the old", |m| {
        dns_prefixes(m, "dnsban", "ipv4") == 2.0
    });
    // Inside the grace period both are blocked.
    assert_eq!(
        udp_delivered(&lab, &server, at(new, 443), control),
        0,
        "new address"
    );
    if changed.elapsed() < Duration::from_secs(grace - 2) {
        assert_eq!(
            udp_delivered(&lab, &server, at(old, 443), control),
            0,
            "old, in grace"
        );
    }
    wait_metrics(
        &lab,
        "the old address removed after the grace period",
        |m| dns_prefixes(m, "dnsban", "ipv4") == 1.0,
    );
    assert!(
        changed.elapsed() >= Duration::from_secs(grace - 1),
        "the old address went after {:?}, before the {grace} s grace period",
        changed.elapsed()
    );
    assert_eq!(
        udp_delivered(&lab, &server, at(old, 443), control),
        N as u64,
        "old, after grace"
    );
    assert_eq!(
        udp_delivered(&lab, &server, at(new, 443), control),
        0,
        "new, still banned"
    );
    lab.stop_daemon().unwrap();
}
