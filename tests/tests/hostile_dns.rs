//! DNS answers as an attacker or an unlucky network would send them, through the real daemon in
//! a namespace lab (issue 14): a held response goes back through the gateway's own receive path
//! (a forward drop rule still applies to it); a fragmented 3,000-byte response reaches the client
//! whole and is learned; an answer the client forges on its own link teaches nothing and is not
//! held; a flood of junk answers from a trusted server's address does not let banned answers
//! escape. Needs root, nft, dnsmasq and a built daemon.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, Query};
use hickory_proto::rr::rdata::{A, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tests::dns::{Dnsmasq, Zone, client_lookup};
use tests::lab::{CLIENT_V4, Connect, INTERNET_V4, Lab, Metrics, SERVER_V4, Side};

const POLICY: &str =
    "platform: media\nmatch:\n  - domains: [\"*.media.example\"]\n    enforce: address\n";

fn metric(m: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
    m.metric(name, labels).unwrap_or(0.0)
}

fn held(m: &Metrics) -> f64 {
    metric(m, "enforcer_dns_held_packets_total", &[])
}

fn learned(m: &Metrics) -> f64 {
    metric(
        m,
        "enforcer_prefixes",
        &[
            ("platform", "media"),
            ("family", "ipv4"),
            ("source", "learned"),
        ],
    )
}

fn answers(m: &Metrics, result: &str) -> f64 {
    metric(m, "enforcer_dns_answers_total", &[("result", result)])
}

/// A lab whose daemon learns from the server's address (roles set) and enforces POLICY.
fn lab_learning_from_the_server() -> Lab {
    let mut lab = Lab::new().unwrap();
    lab.set_interfaces(&["g0:inside", "g1:outside"]);
    lab.add_daemon_args(&["--learn-from", &SERVER_V4.to_string()]);
    lab
}

fn dnsmasq(lab: &Lab, hosts: &str) -> Dnsmasq {
    let zone = Zone::new()
        .local("example")
        .local_ttl(300)
        .hosts_file(hosts.to_owned());
    Dnsmasq::on_lab_server(lab, &zone).unwrap()
}

/// A held response is put back into the gateway's receive path, so the operator's forward
/// rules apply to it: with a rule dropping the server's DNS answers to the client, the client
/// gets none (though the response was held and learned); without it, it does. (Sent from a raw
/// socket, as before, it skipped the forward chain and reached the client.)
#[test]
fn a_held_response_still_meets_the_forward_rules() {
    let mut lab = lab_learning_from_the_server();
    let [first, second, ..] = INTERNET_V4;
    let _dns = dnsmasq(
        &lab,
        &format!("{first} a1.media.example\n{second} a2.media.example\n"),
    );
    let rules = lab.write_policy(&[("media.yaml", POLICY)]).unwrap();
    lab.start_daemon(&rules).unwrap();
    lab.nft(&format!(
        "table inet hostile {{ chain forward {{ type filter hook forward priority 0; \
         ip saddr {SERVER_V4} udp sport 53 ip daddr {CLIENT_V4} drop; }}; }}\n"
    ))
    .unwrap();
    let before = lab.metrics().unwrap();
    let answer = client_lookup(&lab, SERVER_V4.into(), "a1.media.example", RecordType::A);
    assert_eq!(answer, None, "the answer got past the forward drop rule");
    let m = lab.metrics().unwrap();
    assert!(
        held(&m) > held(&before),
        "the response was not held, so this shows nothing"
    );
    assert_eq!(learned(&m), 1.0, "the held response was not learned");
    // The control: without the rule the answer arrives.
    lab.nft("delete table inet hostile\n").unwrap();
    let answer = client_lookup(&lab, SERVER_V4.into(), "a2.media.example", RecordType::A);
    assert_eq!(answer, Some(IpAddr::V4(second)));
    lab.stop_daemon().unwrap();
}

/// A DNS server of our own in the server namespace on port 53 that answers every A query with
/// `address` plus a TXT record in the additional section that makes the response ~3,000 bytes:
/// over the links' MTU, so it leaves the server in fragments.
struct BigAnswers {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BigAnswers {
    fn start(lab: &Lab, address: Ipv4Addr) -> Self {
        let socket = lab
            .in_netns(Side::Server, || {
                Ok(UdpSocket::bind(SocketAddr::new(IpAddr::V4(SERVER_V4), 53))?)
            })
            .unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut buf = [0u8; 1500];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    let Ok(query) = Message::from_vec(&buf[..n]) else {
                        continue;
                    };
                    let Some(question) = query.queries().first().cloned() else {
                        continue;
                    };
                    let mut response = Message::new();
                    response.set_id(query.id());
                    response.set_message_type(MessageType::Response);
                    response.set_recursion_desired(true);
                    response.set_recursion_available(true);
                    response.add_query(question.clone());
                    response.add_answer(Record::from_rdata(
                        question.name().clone(),
                        300,
                        RData::A(A(address)),
                    ));
                    let padding: Vec<String> = (0..12).map(|i| format!("{i:0>240}")).collect();
                    response.add_additional(Record::from_rdata(
                        question.name().clone(),
                        300,
                        RData::TXT(TXT::new(padding)),
                    ));
                    if let Ok(bytes) = response.to_vec() {
                        let _ = socket.send_to(&bytes, from);
                    }
                }
            })
        };
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for BigAnswers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The client's lookup of `name` at the server with a big buffer: the answer's size and first
/// address.
fn big_lookup(lab: &Lab, name: &str) -> Option<(usize, Ipv4Addr)> {
    let name = name.to_owned();
    lab.in_netns(Side::Client, move || {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        socket.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut query = Message::new();
        query.set_id(rand::random());
        query.set_recursion_desired(true);
        query.add_query(Query::query(Name::from_str(&name)?, RecordType::A));
        socket.send_to(&query.to_vec()?, (SERVER_V4, 53))?;
        let mut buf = [0u8; 8192];
        let Ok((n, _)) = socket.recv_from(&mut buf) else {
            return Ok(None);
        };
        let message = Message::from_vec(&buf[..n])?;
        Ok(message.answers().iter().find_map(|r| match r.data() {
            RData::A(a) => Some((n, a.0)),
            _ => None,
        }))
    })
    .unwrap()
}

/// A 3,000-byte response crosses the gateway in three fragments: the first is held, the others
/// are copied and passed; the daemon puts the message together, learns it, and puts the first
/// back. The client gets the whole response, and cannot reach the address in it.
#[test]
fn a_fragmented_response_reaches_the_client_and_is_learned() {
    let mut lab = lab_learning_from_the_server();
    let banned = INTERNET_V4[2];
    let _server = lab
        .start_server(&[], &[SocketAddr::new(IpAddr::V4(banned), 443)])
        .unwrap();
    let _dns = BigAnswers::start(&lab, banned);
    let rules = lab.write_policy(&[("media.yaml", POLICY)]).unwrap();
    lab.start_daemon(&rules).unwrap();
    let before = lab.metrics().unwrap();
    let (size, address) =
        big_lookup(&lab, "big.media.example").expect("the fragmented response never arrived");
    assert!(
        size > 2_900,
        "the response is only {size} bytes: not fragmented"
    );
    assert_eq!(address, banned);
    let connect = lab
        .tcp_connect(
            SocketAddr::new(IpAddr::V4(banned), 443),
            Duration::from_secs(1),
        )
        .unwrap();
    assert_eq!(
        connect,
        Connect::TimedOut,
        "the fragmented answer was not learned in time"
    );
    let m = lab.metrics().unwrap();
    assert_eq!(learned(&m), 1.0);
    assert_eq!(answers(&m, "learned") - answers(&before, "learned"), 1.0);
    assert_eq!(
        held(&m) - held(&before),
        1.0,
        "only the first fragment is held"
    );
    lab.stop_daemon().unwrap();
}

/// A client sends a real query, then forges the answer on its own link (source: the trusted
/// server, port 53, the right id and port). It arrives on the inside interface: not believed,
/// not held, counted untrusted; the forged address stays reachable.
#[test]
fn an_answer_forged_on_the_client_link_teaches_nothing() {
    let mut lab = lab_learning_from_the_server();
    let forged = INTERNET_V4[1];
    let _server = lab
        .start_server(&[], &[SocketAddr::new(IpAddr::V4(forged), 443)])
        .unwrap();
    // No DNS server runs: the only answer is the forged one.
    let rules = lab.write_policy(&[("media.yaml", POLICY)]).unwrap();
    lab.start_daemon(&rules).unwrap();
    let before = lab.metrics().unwrap();
    let (id, port) = (4242u16, 40_404u16);
    let mut query = Message::new();
    query.set_id(id);
    query.set_recursion_desired(true);
    query.add_query(Query::query(
        Name::from_str("evil.media.example").unwrap(),
        RecordType::A,
    ));
    let mut answer = query.clone();
    answer.set_message_type(MessageType::Response);
    answer.add_answer(Record::from_rdata(
        Name::from_str("evil.media.example").unwrap(),
        300,
        RData::A(A(forged)),
    ));
    let answer = answer.to_vec().unwrap();
    let query = query.to_vec().unwrap();
    lab.in_netns(Side::Client, move || {
        let socket = UdpSocket::bind((CLIENT_V4, port))?;
        socket.send_to(&query, (SERVER_V4, 53))?;
        Ok(())
    })
    .unwrap();
    lab.send_client_frame(&udp_frame(SERVER_V4, 53, CLIENT_V4, port, &answer))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while answers(&lab.metrics().unwrap(), "untrusted") <= answers(&before, "untrusted") {
        assert!(
            Instant::now() < deadline,
            "the forged answer was not counted untrusted"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let m = lab.metrics().unwrap();
    assert_eq!(held(&m), held(&before), "the forged answer was held");
    assert_eq!(learned(&m), 0.0, "the forged answer was learned");
    let connect = lab
        .tcp_connect(
            SocketAddr::new(IpAddr::V4(forged), 443),
            Duration::from_secs(1),
        )
        .unwrap();
    assert_eq!(
        connect,
        Connect::Connected,
        "a forged answer blocked its address"
    );
    lab.stop_daemon().unwrap();
}

/// An Ethernet frame with an IPv4 UDP datagram (checksums left 0: IPv4 allows no UDP checksum,
/// and nothing checks the IP one before the datapath).
fn udp_frame(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend([0x02, 0, 0, 0, 0, 9, 0x08, 0x00]);
    let total = u16::try_from(28 + payload.len()).unwrap();
    f.extend([0x45, 0]);
    f.extend(total.to_be_bytes());
    f.extend([0, 1, 0, 0, 64, 17, 0, 0]);
    f.extend(src.octets());
    f.extend(dst.octets());
    f.extend(sport.to_be_bytes());
    f.extend(dport.to_be_bytes());
    f.extend(u16::try_from(8 + payload.len()).unwrap().to_be_bytes());
    f.extend([0, 0]);
    f.extend(payload);
    f
}

/// Names the flood test looks up, one address each on the server's loopback.
const FLOOD_NAMES: u8 = 30;
/// Junk answers a second while the lookups run.
const JUNK_PER_SECOND: u64 = 50_000;

/// A trusted server's address floods the client with junk answers (port 53, random ids and
/// ports: nobody asked) at 50,000 a second, while the client looks up banned names and sends
/// to each answer at once. The junk is passed by the datapath without reaching user space
/// (counted unsolicited), so every real answer is still held and learned: no datagram reaches
/// a banned address.
#[test]
fn a_junk_flood_does_not_let_banned_answers_escape() {
    let mut lab = lab_learning_from_the_server();
    let junk_source = INTERNET_V4[4];
    lab.add_daemon_args(&["--learn-from", &junk_source.to_string()]);
    let mut hosts = String::new();
    let mut targets = Vec::new();
    for i in 0..FLOOD_NAMES {
        let ip = Ipv4Addr::new(198, 19, 90, i + 1);
        lab.ip(
            Side::Server,
            &["addr", "add", &format!("{ip}/32"), "dev", "lo"],
        )
        .unwrap();
        hosts.push_str(&format!("{ip} f{i}.media.example\n"));
        targets.push((format!("f{i}.media.example"), ip));
    }
    let listeners: Vec<SocketAddr> = targets
        .iter()
        .map(|(_, ip)| SocketAddr::new(IpAddr::V4(*ip), 443))
        .collect();
    let server = lab.start_server(&listeners, &[]).unwrap();
    let _dns = dnsmasq(&lab, &hosts);
    let rules = lab.write_policy(&[("media.yaml", POLICY)]).unwrap();
    lab.start_daemon(&rules).unwrap();

    let junk = lab
        .in_netns(Side::Server, || {
            Ok(UdpSocket::bind(SocketAddr::new(
                IpAddr::V4(junk_source),
                53,
            ))?)
        })
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let flood = {
        let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut message = [0u8; 64];
            while !stop.load(Ordering::Relaxed) {
                let due = start.elapsed().as_secs_f64() * JUNK_PER_SECOND as f64;
                if (sent.load(Ordering::Relaxed) as f64) >= due {
                    std::thread::sleep(Duration::from_micros(200));
                    continue;
                }
                let r: u32 = rand::random();
                message[..2].copy_from_slice(&r.to_be_bytes()[..2]);
                message[2] = 0x81; // a response
                let port = 1024 + u16::try_from(r >> 16).unwrap_or(0) % 60_000;
                let _ = junk.send_to(&message, (CLIENT_V4, port));
                sent.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let through_before: u64 = listeners.iter().map(|a| server.udp_count(*a)).sum();
    let start = Instant::now();
    let queries: Vec<(String, Ipv4Addr)> = targets.clone();
    let answered = lab
        .in_netns(Side::Client, move || {
            let dns = UdpSocket::bind("0.0.0.0:0")?;
            dns.set_read_timeout(Some(Duration::from_secs(2)))?;
            let data = UdpSocket::bind("0.0.0.0:0")?;
            let mut buf = [0u8; 1500];
            let mut answered = 0;
            for (i, (name, expected)) in queries.iter().enumerate() {
                let mut q = Message::new();
                q.set_id(u16::try_from(i)?);
                q.set_recursion_desired(true);
                q.add_query(Query::query(Name::from_str(name)?, RecordType::A));
                dns.send_to(&q.to_vec()?, (SERVER_V4, 53))?;
                let Ok((n, _)) = dns.recv_from(&mut buf) else {
                    continue;
                };
                let Some(answer) = Message::from_vec(&buf[..n])?
                    .answers()
                    .iter()
                    .find_map(|r| match r.data() {
                        RData::A(a) => Some(a.0),
                        _ => None,
                    })
                else {
                    continue;
                };
                for _ in 0..3 {
                    data.send_to(b"first packet", (answer, 443))?;
                }
                anyhow::ensure!(answer == *expected, "{name}: {answer}");
                answered += 1;
            }
            Ok(answered)
        })
        .unwrap();
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    flood.join().unwrap();
    let rate = sent.load(Ordering::Relaxed) as f64 / (elapsed.as_secs_f64() + 0.5);
    eprintln!(
        "junk flood: {:.0} answers/s; {answered} of {FLOOD_NAMES} lookups answered in {elapsed:?}",
        rate
    );
    assert!(server.settle(), "the lab server stopped");
    let through: u64 = listeners.iter().map(|a| server.udp_count(*a)).sum::<u64>() - through_before;
    let m = lab.metrics().unwrap();
    assert_eq!(
        through, 0,
        "datagrams reached banned addresses during the junk flood"
    );
    assert!(
        answered >= u32::from(FLOOD_NAMES) * 9 / 10,
        "only {answered} of {FLOOD_NAMES} lookups were answered under the flood"
    );
    assert_eq!(learned(&m), f64::from(answered));
    assert!(
        answers(&m, "unsolicited") >= 10_000.0,
        "the junk was not seen as unsolicited answers: {}",
        answers(&m, "unsolicited")
    );
    lab.stop_daemon().unwrap();
}
