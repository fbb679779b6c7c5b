//! Wildcard domains learned from DNS answers that cross the gateway, through the real binary:
//! a client's lookup of a fresh name under a banned wildcard, answered by a real dnsmasq beyond
//! the gateway, followed at once by a TCP connect to the answer, is dropped; the apex and
//! unrelated names are not learned; an unsolicited answer is not believed; a learned address
//! expires after its TTL plus the grace period. Needs root, dnsmasq and a built daemon.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, Query};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use serde_json::Value;
use tests::lab::{
    CLIENT_V4, Connect, INTERNET_V4, INTERNET_V6, Lab, Metrics, SERVER_V4, SERVER_V6, Side,
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const DNSMASQ: &str = "/usr/sbin/dnsmasq";

/// dnsmasq in the server namespace, on port 53 of the server's address; killed when dropped.
struct DnsServer(Child);

impl DnsServer {
    fn start(lab: &Lab, hosts: &str) -> Self {
        let path = lab.dir().join("learn-hosts");
        std::fs::write(&path, hosts).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.netns(Side::Server), DNSMASQ])
            .args([
                "--keep-in-foreground",
                "--pid-file=",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--port=53",
                "--local-ttl=2",
                "--local=/example/",
            ])
            .arg(format!("--listen-address={SERVER_V4}"))
            .arg(format!("--listen-address={SERVER_V6}"))
            .arg(format!("--addn-hosts={}", path.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = Self(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while lookup(lab, "www.other.example").is_none() {
            assert!(Instant::now() < deadline, "dnsmasq did not answer");
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn query(id: u16, name: &str) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(id);
    m.set_recursion_desired(true);
    m.add_query(Query::query(Name::from_str(name).unwrap(), RecordType::A));
    m.to_vec().unwrap()
}

/// The client asks the server for `name` (A) and returns the first address, as a stub resolver.
fn lookup(lab: &Lab, name: &str) -> Option<Ipv4Addr> {
    let name = name.to_owned();
    lab.in_netns(Side::Client, move || {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        socket.set_read_timeout(Some(Duration::from_secs(2)))?;
        let id = rand::random::<u16>();
        socket.send_to(&query(id, &name), (SERVER_V4, 53))?;
        let mut buf = [0u8; 1500];
        let Ok((n, _)) = socket.recv_from(&mut buf) else {
            return Ok(None);
        };
        let message = Message::from_vec(&buf[..n])?;
        Ok(message.answers().iter().find_map(|r| match r.data() {
            RData::A(a) => Some(a.0),
            _ => None,
        }))
    })
    .unwrap()
}

/// Lookup, then at once a TCP connection to the answer's port 443.
fn lookup_and_connect(lab: &Lab, name: &str) -> (Ipv4Addr, Connect) {
    let address = lookup(lab, name).unwrap_or_else(|| {
        let snmp = |side| {
            let out = Command::new("ip")
                .args(["netns", "exec", &lab.netns(side), "cat", "/proc/net/snmp"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        panic!(
            "no answer for {name}; daemon log:\n{}\nclient snmp:\n{}\ngateway snmp:\n{}",
            lab.daemon_log(),
            snmp(Side::Client),
            snmp(Side::Gateway)
        )
    });
    let connect = lab
        .tcp_connect(SocketAddr::new(IpAddr::V4(address), 443), CONNECT_TIMEOUT)
        .unwrap();
    (address, connect)
}

fn learned(m: &Metrics) -> f64 {
    m.metric(
        "enforcer_prefixes",
        &[
            ("platform", "media"),
            ("family", "ipv4"),
            ("source", "learned"),
        ],
    )
    .unwrap()
}

fn answers(m: &Metrics, result: &str) -> f64 {
    m.metric("enforcer_dns_answers_total", &[("result", result)])
        .unwrap()
}

#[test]
fn wildcard_answers_are_learned_before_the_client_connects() {
    let mut lab = Lab::new().unwrap();
    let [fresh, forged, apex, other, forger] = INTERNET_V4;
    let listeners: Vec<SocketAddr> = [fresh, forged, apex, other]
        .iter()
        .map(|ip| SocketAddr::new(IpAddr::V4(*ip), 443))
        .collect();
    let _server = lab.start_server(&[], &listeners).unwrap();
    let dns = DnsServer::start(
        &lab,
        &format!("{fresh} x7f3a.media.example\n{apex} media.example\n{other} www.other.example\n"),
    );
    let rules = lab
        .write_policy(&[(
            "media.yaml",
            "platform: media\nmatch:\n  - domains: [\"*.media.example\"]\n",
        )])
        .unwrap();
    lab.add_daemon_args(&["--ttl-floor", "1", "--ttl-ceiling", "2", "--grace", "6"]);
    lab.start_daemon(&rules).unwrap();

    // Before any lookup nothing is blocked.
    let direct = lab
        .tcp_connect(SocketAddr::new(IpAddr::V4(fresh), 443), CONNECT_TIMEOUT)
        .unwrap();
    assert_eq!(direct, Connect::Connected);

    let (address, connect) = lookup_and_connect(&lab, "x7f3a.media.example");
    assert_eq!(address, fresh);
    assert_eq!(connect, Connect::TimedOut, "connect right after the lookup");
    let m = lab.metrics().unwrap();
    assert_eq!(learned(&m), 1.0);
    assert!(answers(&m, "learned") >= 1.0);

    let why = lab
        .control(&["explain", &fresh.to_string(), "--json"])
        .unwrap();
    let why: Value = serde_json::from_slice(&why.stdout).unwrap();
    assert_eq!(why["verdict"], "drop", "{why}");
    assert_eq!(why["matches"][0]["source"], "learned", "{why}");
    assert_eq!(why["matches"][0]["name"], "x7f3a.media.example", "{why}");
    assert_eq!(
        why["matches"][0]["resolver"],
        SERVER_V4.to_string(),
        "{why}"
    );

    // Learned addresses survive a restart: stop, remove everything from the kernel, start
    // again; the address is blocked from the state directory before any DNS traffic.
    lab.stop_daemon().unwrap();
    let bpffs = lab.bpffs().display().to_string();
    let out = lab
        .enforcer(&["detach", "--all", "--bpffs", &bpffs])
        .unwrap();
    assert!(out.status.success());
    lab.start_daemon(&rules).unwrap();
    let connect = lab
        .tcp_connect(SocketAddr::new(IpAddr::V4(fresh), 443), CONNECT_TIMEOUT)
        .unwrap();
    assert_eq!(connect, Connect::TimedOut, "after a restart");
    assert_eq!(learned(&lab.metrics().unwrap()), 1.0);

    // The apex is not covered by `*.`, unrelated names are not either.
    for name in ["media.example", "www.other.example"] {
        let (address, connect) = lookup_and_connect(&lab, name);
        assert_eq!(connect, Connect::Connected, "{name} ({address})");
    }
    let m = lab.metrics().unwrap();
    assert_eq!(learned(&m), 1.0);
    assert!(answers(&m, "unmatched") >= 2.0);

    // A forged answer nobody asked for, from port 53 beyond the gateway to the client.
    let mut forged_answer = Message::new();
    forged_answer.set_id(4242);
    forged_answer.set_message_type(MessageType::Response);
    forged_answer.add_query(Query::query(
        Name::from_str("evil.media.example").unwrap(),
        RecordType::A,
    ));
    forged_answer.add_answer(Record::from_rdata(
        Name::from_str("evil.media.example").unwrap(),
        300,
        RData::A(A(forged)),
    ));
    let bytes = forged_answer.to_vec().unwrap();
    let before = answers(&m, "unsolicited");
    lab.in_netns(Side::Server, move || {
        // Port 53 of another host beyond the gateway: dnsmasq holds the server's own.
        let socket = UdpSocket::bind((forger, 53))?;
        socket.send_to(&bytes, (CLIENT_V4, 40_000))?;
        Ok(())
    })
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while answers(&lab.metrics().unwrap(), "unsolicited") <= before {
        assert!(Instant::now() < deadline, "the forged answer was not seen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let connect = lab
        .tcp_connect(SocketAddr::new(IpAddr::V4(forged), 443), CONNECT_TIMEOUT)
        .unwrap();
    assert_eq!(connect, Connect::Connected, "a forged answer was believed");

    // TTL 2 s (ceiling 2) plus 6 s grace: gone within seconds, then reachable again.
    let deadline = Instant::now() + Duration::from_secs(20);
    while learned(&lab.metrics().unwrap()) > 0.0 {
        assert!(
            Instant::now() < deadline,
            "the learned address never expired"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let connect = lab
        .tcp_connect(SocketAddr::new(IpAddr::V4(fresh), 443), CONNECT_TIMEOUT)
        .unwrap();
    assert_eq!(connect, Connect::Connected, "after expiry");
    drop(dns);
    lab.stop_daemon().unwrap();
}

/// The client asks over IPv6 for `name`'s AAAA record.
fn lookup_v6(lab: &Lab, name: &str) -> Option<Ipv6Addr> {
    let name = name.to_owned();
    lab.in_netns(Side::Client, move || {
        let socket = UdpSocket::bind("[::]:0")?;
        socket.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut m = Message::new();
        m.set_id(rand::random::<u16>());
        m.set_recursion_desired(true);
        m.add_query(Query::query(Name::from_str(&name)?, RecordType::AAAA));
        socket.send_to(&m.to_vec()?, (SERVER_V6, 53))?;
        let mut buf = [0u8; 1500];
        let Ok((n, _)) = socket.recv_from(&mut buf) else {
            return Ok(None);
        };
        Ok(Message::from_vec(&buf[..n])?
            .answers()
            .iter()
            .find_map(|r| match r.data() {
                RData::AAAA(a) => Some(a.0),
                _ => None,
            }))
    })
    .unwrap()
}

#[test]
fn answers_over_ipv6_are_held_sent_on_and_learned() {
    let mut lab = Lab::new().unwrap();
    let fresh = INTERNET_V6[0];
    let listener = SocketAddr::new(IpAddr::V6(fresh), 443);
    let _server = lab.start_server(&[], &[listener]).unwrap();
    let other = INTERNET_V4[4];
    let dns = DnsServer::start(
        &lab,
        &format!("{fresh} v6only.media.example\n{other} www.other.example\n"),
    );
    let rules = lab
        .write_policy(&[(
            "media.yaml",
            "platform: media\nmatch:\n  - domains: [\"*.media.example\"]\n",
        )])
        .unwrap();
    lab.start_daemon(&rules).unwrap();
    assert_eq!(
        lab.tcp_connect(listener, CONNECT_TIMEOUT).unwrap(),
        Connect::Connected,
        "before the lookup"
    );
    // The response travels over IPv6: it is held, then sent on through the IPv6 raw socket.
    let answer = lookup_v6(&lab, "v6only.media.example");
    assert_eq!(answer, Some(fresh), "no IPv6 answer reached the client");
    assert_eq!(
        lab.tcp_connect(listener, CONNECT_TIMEOUT).unwrap(),
        Connect::TimedOut,
        "right after the lookup"
    );
    let m = lab.metrics().unwrap();
    let learned_v6 = m
        .metric(
            "enforcer_prefixes",
            &[
                ("platform", "media"),
                ("family", "ipv6"),
                ("source", "learned"),
            ],
        )
        .unwrap();
    assert_eq!(learned_v6, 1.0);
    assert!(m.metric("enforcer_dns_held_packets_total", &[]).unwrap() >= 1.0);
    drop(dns);
    lab.stop_daemon().unwrap();
}
