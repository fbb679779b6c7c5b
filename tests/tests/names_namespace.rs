//! Name-level blocking through the real daemon in a namespace lab, with a real dnsmasq beyond
//! the gateway: queries for banned names are answered NXDOMAIN by the gateway itself (A, AAAA
//! and HTTPS, over IPv4 and IPv6) and never reach dnsmasq; the question comes back in the case
//! the client used; the SOA minimum is `--dns-block-ttl` and EDE 15 is there when the query had
//! EDNS; allowed and unrelated names are answered by dnsmasq; a name blocked by name keeps its
//! addresses reachable; blocking survives SIGKILL; during policy swaps every query gets the answer
//! of one policy or the other; the shipped rules block Meet's and Teams' web names.
//! Needs root, dnsmasq and a built daemon.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use tests::dns::{Dnsmasq, Zone};
use tests::lab::{Connect, INTERNET_V4, Lab, SERVER_V4, SERVER_V6, Side};

const BLOCK_TTL: u32 = 123;

fn policy_files() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "meet.yaml",
            "platform: meet\nmatch:\n  - domains: [meet.example.com]\n    enforce: name\n",
        ),
        (
            "zoom.yaml",
            "platform: zoom\nmatch:\n  - domains: [\"*.zoom.example\"]\n    enforce: name\n",
        ),
        (
            "zoom-support.yaml",
            "platform: zoom-support\naction: allow\nmatch:\n  - domains: [support.zoom.example]\n    enforce: name\n",
        ),
    ]
}

/// What came back for one query.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    /// From the gateway: NXDOMAIN with our SOA; the question bytes, the SOA minimum, and
    /// whether EDE 15 is there.
    Blocked {
        question: Vec<u8>,
        minimum: u32,
        ede_blocked: bool,
    },
    /// Anything else (dnsmasq's answer): its RCODE.
    Other {
        rcode: u8,
    },
    None,
}

/// The client asks `server` for `name` (type `qtype`), with EDNS or not, and reads the reply.
fn ask(lab: &Lab, server: IpAddr, name: &str, qtype: u16, edns: bool) -> Reply {
    let mut query = tests::dns::query_packet(rand::random(), name, qtype);
    if edns {
        query[11] = 1;
        query.extend([0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]);
    }
    let question = query[12..query.len() - if edns { 11 } else { 0 }].to_vec();
    lab.in_netns(Side::Client, move || {
        let bind: SocketAddr = if server.is_ipv4() {
            "0.0.0.0:0".parse()?
        } else {
            "[::]:0".parse()?
        };
        let socket = UdpSocket::bind(bind)?;
        socket.set_read_timeout(Some(Duration::from_secs(2)))?;
        socket.send_to(&query, (server, 53))?;
        let mut buf = [0u8; 4096];
        let Ok((n, _)) = socket.recv_from(&mut buf) else {
            return Ok(Reply::None);
        };
        let reply = &buf[..n];
        let rcode = reply[3] & 0x0F;
        let nscount = u16::from_be_bytes([reply[8], reply[9]]);
        let at = 12 + question.len();
        // Our SOA: owner ".", type 6, right after the question.
        let soa = reply.get(at..at + 33);
        if rcode == 3 && nscount == 1 && soa.is_some_and(|s| s[0] == 0 && s[1..3] == [0, 6]) {
            let soa = soa.unwrap_or_default();
            Ok(Reply::Blocked {
                question: reply[12..at].to_vec(),
                minimum: u32::from_be_bytes([soa[29], soa[30], soa[31], soa[32]]),
                ede_blocked: reply.ends_with(&[0, 15, 0, 2, 0, 15]),
            })
        } else {
            Ok(Reply::Other { rcode })
        }
    })
    .unwrap()
}

fn blocked(reply: &Reply) -> bool {
    matches!(reply, Reply::Blocked { .. })
}

fn lab_with_dnsmasq() -> (Lab, Dnsmasq) {
    let mut lab = Lab::new().unwrap();
    lab.set_interfaces(&["g0:inside", "g1:outside"]);
    lab.pass_on_client_link().unwrap();
    lab.add_daemon_args(&["--dns-block-ttl", &BLOCK_TTL.to_string()]);
    let [meet, zoom, support, other, ..] = INTERNET_V4;
    let zone = Zone::new().hosts_file(format!(
        "{meet} meet.example.com\n{zoom} www.zoom.example\n{support} support.zoom.example\n{other} www.other.example\n"
    ));
    let dns = Dnsmasq::on_lab_server(&lab, &zone).unwrap();
    (lab, dns)
}

fn metric(lab: &Lab, platform: &str, family: &str) -> f64 {
    lab.metrics()
        .unwrap()
        .metric(
            "enforcer_dns_blocked_total",
            &[("platform", platform), ("family", family)],
        )
        .unwrap_or(0.0)
}

#[test]
fn banned_names_are_answered_by_the_gateway_and_others_by_the_server() {
    let (mut lab, dns) = lab_with_dnsmasq();
    let rules = lab.write_policy(&policy_files()).unwrap();
    lab.start_daemon(&rules).unwrap();
    let before_log = dns.log().lines().count();

    // A, AAAA and HTTPS, over IPv4 and IPv6, with and without EDNS.
    for server in [IpAddr::V4(SERVER_V4), IpAddr::V6(SERVER_V6)] {
        for (qtype, edns) in [(1, true), (28, false), (65, true)] {
            for name in ["meet.example.com", "www.zoom.example", "a.b.zoom.example"] {
                let reply = ask(&lab, server, name, qtype, edns);
                match reply {
                    Reply::Blocked {
                        minimum,
                        ede_blocked,
                        ..
                    } => {
                        assert_eq!(minimum, BLOCK_TTL, "{name} type {qtype} via {server}");
                        assert_eq!(ede_blocked, edns, "{name} type {qtype} via {server}");
                    }
                    other => panic!("{name} type {qtype} via {server}: {other:?}"),
                }
            }
        }
    }
    let log = dns.log();
    let new: Vec<&str> = log.lines().skip(before_log).collect();
    assert!(
        !new.iter()
            .any(|l| l.contains("zoom.example") || l.contains("meet.example.com")),
        "dnsmasq saw blocked queries:\n{}",
        new.join("\n")
    );
    assert!(metric(&lab, "meet", "ipv4") >= 3.0 && metric(&lab, "zoom", "ipv6") >= 6.0);

    // The question comes back in the case the client sent.
    match ask(&lab, IpAddr::V4(SERVER_V4), "WwW.ZoOm.ExAmPlE", 1, false) {
        Reply::Blocked { question, .. } => {
            let sent = &tests::dns::query_packet(0, "WwW.ZoOm.ExAmPlE", 1)[12..];
            assert_eq!(question, sent);
        }
        other => panic!("mixed case: {other:?}"),
    }

    // Allowed under the banned wildcard, and unrelated: dnsmasq answers.
    for name in ["support.zoom.example", "www.other.example"] {
        assert_eq!(
            ask(&lab, IpAddr::V4(SERVER_V4), name, 1, true),
            Reply::Other { rcode: 0 },
            "{name}"
        );
    }
    assert!(dns.log().contains("support.zoom.example"));

    // Blocked by name only: the address stays reachable.
    let _server = lab
        .start_server(&[], &[SocketAddr::new(IpAddr::V4(INTERNET_V4[0]), 443)])
        .unwrap();
    let connect = lab
        .tcp_connect(
            SocketAddr::new(IpAddr::V4(INTERNET_V4[0]), 443),
            Duration::from_secs(1),
        )
        .unwrap();
    assert_eq!(
        connect,
        Connect::Connected,
        "a name blocked by name blocked its address"
    );

    // `rules add --domain` blocks by name at once (default both).
    assert_eq!(
        ask(&lab, IpAddr::V4(SERVER_V4), "www.other.example", 1, false),
        Reply::Other { rcode: 0 }
    );
    let out = lab
        .control(&["rules", "add", "other", "--domain", "www.other.example"])
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(blocked(&ask(
        &lab,
        IpAddr::V4(SERVER_V4),
        "www.other.example",
        1,
        false
    )));
    let out = lab.control(&["rules", "remove", "other"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Fail-static: the daemon killed, names stay blocked.
    lab.kill_daemon().unwrap();
    assert!(blocked(&ask(
        &lab,
        IpAddr::V4(SERVER_V4),
        "meet.example.com",
        1,
        true
    )));
    assert_eq!(
        ask(&lab, IpAddr::V4(SERVER_V4), "www.other.example", 1, true),
        Reply::Other { rcode: 0 }
    );
}

/// Two policies swapped back and forth while the client asks for a name that one blocks and the
/// other allows: every query gets either the gateway's NXDOMAIN or dnsmasq's answer, none is
/// lost; both are seen.
#[test]
fn during_policy_swaps_every_query_gets_one_policy_or_the_other() {
    let (mut lab, _dns) = lab_with_dnsmasq();
    let blocking = "platform: zoom\nmatch:\n  - domains: [\"*.zoom.example\"]\n    enforce: name\n";
    let allowing =
        "platform: zoom\nmatch:\n  - domains: [\"*.elsewhere.example\"]\n    enforce: name\n";
    let rules = lab.write_policy(&[("zoom.yaml", blocking)]).unwrap();
    lab.start_daemon(&rules).unwrap();
    let path = rules.join("zoom.yaml");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let stop = std::sync::Arc::clone(&stop);
        let socket = lab.socket();
        let binary = tests::lab::enforcer_binary().unwrap();
        std::thread::spawn(move || {
            let mut swaps = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let text = if swaps % 2 == 0 { allowing } else { blocking };
                std::fs::write(&path, text).unwrap();
                let _ = std::process::Command::new(&binary)
                    .arg("--socket")
                    .arg(&socket)
                    .arg("reload")
                    .output();
                swaps += 1;
            }
            swaps
        })
    };
    let (mut nx, mut answered) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(6);
    while Instant::now() < deadline {
        match ask(&lab, IpAddr::V4(SERVER_V4), "www.zoom.example", 1, false) {
            Reply::Blocked { .. } => nx += 1,
            Reply::Other { rcode: 0 } => answered += 1,
            other => panic!("during a swap: {other:?}"),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    eprintln!("{swaps} swaps: {nx} blocked, {answered} answered by dnsmasq");
    assert!(
        swaps >= 4 && nx >= 1 && answered >= 1,
        "{swaps} swaps, {nx} blocked, {answered} answered"
    );
}

/// The shipped rules block Meet's and Teams' web names by name in the lab.
#[test]
fn shipped_rules_block_the_web_names() {
    let (mut lab, _dns) = lab_with_dnsmasq();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules");
    lab.start_daemon(&shipped).unwrap();
    for name in ["meet.google.com", "teams.microsoft.com"] {
        assert!(
            blocked(&ask(&lab, IpAddr::V4(SERVER_V4), name, 1, true)),
            "{name} was not blocked by the shipped rules"
        );
    }
}
