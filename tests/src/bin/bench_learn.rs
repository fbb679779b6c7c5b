//! Benchmark of learning from DNS answers on a live gateway: a DNS responder beyond the gateway
//! answers fresh names under a banned wildcard; the gateway holds each response until the
//! daemon has put the answer's address in the map, then sends it on. So the time from the
//! responder's send to the client's receive bounds "answer arrival to address enforced" from
//! above (plus two veth hops). Reported at 100 and 10,000 answers/s, with the daemon's CPU, and
//! the round trip of DNS traffic for other names with and without the daemon (what holding
//! costs). Needs root and a release build of `enforcer`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use hickory_proto::op::{Message, MessageType, Query};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tests::lab::{Lab, SERVER_V4, Side, netns};

/// When the responder sent the answer for each query id.
type Sent = Arc<Mutex<HashMap<u16, Instant>>>;

fn address_of(name: &str) -> Ipv4Addr {
    let n: u32 = name
        .split('.')
        .next()
        .and_then(|l| l.trim_start_matches('n').parse().ok())
        .unwrap_or(0);
    // One address per name (n < 65,536), so learned addresses can be counted.
    Ipv4Addr::from(0xC613_0000 + n)
}

/// Answers every A query with one address derived from the name, and notes when.
fn responder(lab: &Lab, sent: Sent, stop: Arc<AtomicBool>) -> Result<()> {
    let path = netns::path_of(&lab.netns(Side::Server));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    netns::spawn_in(path, "bench-dns", move || {
        let socket = UdpSocket::bind((SERVER_V4, 53))?;
        socket.set_read_timeout(Some(Duration::from_millis(100)))?;
        let _ = ready_tx.send(());
        let mut buf = [0u8; 1500];
        while !stop.load(Ordering::SeqCst) {
            let Ok((n, from)) = socket.recv_from(&mut buf) else {
                continue;
            };
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let Some(question) = query.queries().first().cloned() else {
                continue;
            };
            let name = question.name().to_ascii();
            let mut answer = Message::new();
            answer.set_id(query.id());
            answer.set_message_type(MessageType::Response);
            answer.set_recursion_available(true);
            answer.add_query(question.clone());
            answer.add_answer(Record::from_rdata(
                question.name().clone(),
                300,
                RData::A(A(address_of(&name))),
            ));
            let bytes = answer.to_vec()?;
            let at = Instant::now();
            socket.send_to(&bytes, from)?;
            if let Ok(mut sent) = sent.lock() {
                sent.insert(query.id(), at);
            }
        }
        Ok(())
    })?;
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .context("the responder did not start")
}

struct Phase {
    latencies: Vec<Duration>,
    round_trips: Vec<Duration>,
    lost: usize,
}

/// Sends `count` queries for names `prefix{first+i}.{domain}` at `rate` per second from the
/// client and collects, per answered query, responder-send → client-receive and the round trip.
fn load(
    lab: &Lab,
    sent: &Sent,
    domain: &str,
    first: usize,
    count: usize,
    rate: usize,
) -> Result<Phase> {
    let names: Vec<String> = (first..first + count)
        .map(|i| format!("n{i}.{domain}"))
        .collect();
    let sent = Arc::clone(sent);
    lab.in_netns(Side::Client, move || {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        let receiver = socket.try_clone()?;
        receiver.set_read_timeout(Some(Duration::from_millis(300)))?;
        let received: Arc<Mutex<HashMap<u16, Instant>>> = Arc::default();
        let done = Arc::new(AtomicBool::new(false));
        let collector = {
            let (received, done) = (Arc::clone(&received), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut buf = [0u8; 1500];
                loop {
                    match receiver.recv_from(&mut buf) {
                        Ok((n, _)) if n >= 2 => {
                            let id = u16::from_be_bytes([buf[0], buf[1]]);
                            if let Ok(mut r) = received.lock() {
                                r.insert(id, Instant::now());
                            }
                        }
                        _ if done.load(Ordering::SeqCst) => break,
                        _ => {}
                    }
                }
            })
        };
        let server = SocketAddr::new(IpAddr::V4(SERVER_V4), 53);
        let mut asked: HashMap<u16, Instant> = HashMap::new();
        let start = Instant::now();
        for (i, name) in names.iter().enumerate() {
            // Pace by schedule: query i leaves at start + i / rate.
            let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let id = (i % 65_536) as u16;
            let mut query = Message::new();
            query.set_id(id);
            query.set_recursion_desired(true);
            query.add_query(Query::query(Name::from_str(name)?, RecordType::A));
            asked.insert(id, Instant::now());
            socket.send_to(&query.to_vec()?, server)?;
        }
        std::thread::sleep(Duration::from_millis(500));
        done.store(true, Ordering::SeqCst);
        let _ = collector.join();
        let received = received.lock().map(|r| r.clone()).unwrap_or_default();
        let sent = sent.lock().map(|s| s.clone()).unwrap_or_default();
        let mut phase = Phase {
            latencies: Vec::new(),
            round_trips: Vec::new(),
            lost: 0,
        };
        for (id, at) in &asked {
            match (received.get(id), sent.get(id)) {
                (Some(got), Some(answered)) => {
                    phase
                        .latencies
                        .push(got.saturating_duration_since(*answered));
                    phase.round_trips.push(got.saturating_duration_since(*at));
                }
                _ => phase.lost += 1,
            }
        }
        Ok(phase)
    })
}

fn percentiles(mut samples: Vec<Duration>) -> (f64, f64, f64) {
    if samples.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    samples.sort();
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    (
        us(at(0.5)),
        us(at(0.99)),
        us(*samples.last().unwrap_or(&Duration::ZERO)),
    )
}

/// utime + stime of a process, in milliseconds.
fn cpu_ms(pid: i32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // After the command name: state is field 3, utime 14 and stime 15 (1-based).
    let ticks = |i: usize| -> f64 {
        fields
            .get(i - 3)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((ticks(14) + ticks(15)) * 1000.0 / hz)
}

fn row(what: &str, phase: &Phase, cpu: Option<(f64, usize)>) {
    let (p50, p99, max) = percentiles(phase.latencies.clone());
    let (rt50, rt99, _) = percentiles(phase.round_trips.clone());
    let cpu = cpu.map_or_else(
        || "-".to_owned(),
        |(ms, answers)| format!("{:.1}", ms * 1000.0 / answers.max(1) as f64),
    );
    println!(
        "{what:<36} {:>6} {:>5} {p50:>8.0} {p99:>8.0} {max:>8.0} {rt50:>8.0} {rt99:>8.0} {cpu:>10}",
        phase.latencies.len(),
        phase.lost
    );
}

fn main() -> Result<()> {
    let mut lab = Lab::new()?;
    let sent: Sent = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    responder(&lab, Arc::clone(&sent), Arc::clone(&stop))?;
    let rules = lab.write_policy(&[(
        "bench.yaml",
        "platform: bench\nmatch:\n  - domains: [\"*.bench.example\"]\n    enforce: address\n",
    )])?;

    // Without the daemon: the plain round trip through the gateway.
    let base = load(&lab, &sent, "other.example", 0, 1_000, 1_000)?;
    let base_fast = load(&lab, &sent, "other.example", 100_000, 20_000, 10_000)?;
    lab.start_daemon(&rules)?;
    let pid = lab.daemon_pid().context("no daemon")?;

    let mut results = Vec::new();
    for (what, domain, first, count, rate) in [
        ("learn, 100 answers/s", "bench.example", 0, 300, 100),
        (
            "learn, 10,000 answers/s",
            "bench.example",
            10_000,
            20_000,
            10_000,
        ),
        (
            "other names, 1,000/s (held)",
            "other.example",
            50_000,
            1_000,
            1_000,
        ),
    ] {
        let before = cpu_ms(pid)?;
        let phase = load(&lab, &sent, domain, first, count, rate)?;
        let cpu = cpu_ms(pid)? - before;
        results.push((what, phase, cpu, count));
    }
    let learned = lab
        .metrics()?
        .sum("enforcer_prefixes", &[("source", "learned")]);
    stop.store(true, Ordering::SeqCst);
    lab.stop_daemon()?;

    println!("learning from DNS answers (times in microseconds; CPU is the daemon's)");
    println!(
        "{:<36} {:>6} {:>5} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10}",
        "load", "n", "lost", "p50", "p99", "max", "rtt p50", "rtt p99", "cpu us/ans"
    );
    row("no daemon, 1,000/s (baseline)", &base, None);
    row("no daemon, 10,000/s (baseline)", &base_fast, None);
    let mut answered_wildcard = 0;
    for (what, phase, cpu, count) in &results {
        row(what, phase, Some((*cpu, *count)));
        if what.starts_with("learn") {
            answered_wildcard += phase.latencies.len();
        }
    }
    println!(
        "learned addresses in force: {learned} (answers received by the client for wildcard names: {answered_wildcard})"
    );
    if (learned as usize) < answered_wildcard {
        bail!("a client received an answer whose address was not learned");
    }
    Ok(())
}
