//! The daemon's descriptors and connections under a crowd of clients, through the real binary:
//! more idle connections than the limits on the control socket and on the metrics port leave
//! `status`, `reload`, `rules add` and a scrape working and the daemon's descriptors bounded; a
//! control request that never ends its line is closed within the read timeout, and one longer
//! than the line limit gets a clear error at once. Needs root and a built daemon.

use std::io::{ErrorKind, Read, Write as _};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use enforcer::connections::{LOG_INTERVAL, MAX_CONNECTIONS, REQUEST_TIMEOUT};
use enforcer::control::MAX_REQUEST_LINE;
use serde_json::Value;
use tests::lab::{Lab, METRICS_ADDR, Side, enforcer_binary, json_ok as ok, netns};
use tests::tools;

/// Idle connections opened on each of the control socket and the metrics port.
const CROWD: usize = 1200;
/// The daemon starts with the descriptor limits systemd gives a service by default: 1,024
/// (soft), more allowed (hard).
const SOFT_LIMIT: u64 = 1024;
const HARD_LIMIT: u64 = 8192;
/// How long a CLI command gets before the test calls it hung (the CLI itself waits 120 s).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(15);
/// How long opening the crowd may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

const POLICY: &[(&str, &str)] = &[(
    "banned.yaml",
    "platform: banned-media\nmatch:\n  - prefixes: [198.19.10.0/24]\n",
)];

/// Idle connections held open by the test: they connect and send nothing.
struct Crowd {
    control: Vec<UnixStream>,
    metrics: Vec<TcpStream>,
}

impl Crowd {
    fn new() -> Crowd {
        Crowd {
            control: Vec::new(),
            metrics: Vec::new(),
        }
    }

    /// Opens `count` more idle connections to each listener.
    fn open(&mut self, lab: &Lab, count: usize) {
        let socket = lab.socket();
        let netns = lab.netns_path(Side::Gateway);
        let (tx, rx) = mpsc::channel();
        // On a thread: a connect the daemon never takes must not hang the test.
        std::thread::spawn(move || {
            let control: Vec<UnixStream> = (0..count)
                .map(|_| UnixStream::connect(&socket).unwrap())
                .collect();
            let metrics = netns::run_in(&netns, || {
                Ok((0..count)
                    .map(|_| TcpStream::connect_timeout(&METRICS_ADDR, OPEN_TIMEOUT).unwrap())
                    .collect::<Vec<_>>())
            })
            .unwrap();
            let _ = tx.send((control, metrics));
        });
        let (control, metrics) = rx
            .recv_timeout(OPEN_TIMEOUT)
            .unwrap_or_else(|_| panic!("opening {count} connections to each listener hung"));
        for s in &control {
            s.set_nonblocking(true).unwrap();
        }
        for s in &metrics {
            s.set_nonblocking(true).unwrap();
        }
        self.control.extend(control);
        self.metrics.extend(metrics);
    }

    /// How many connections of each listener the daemon has closed.
    fn closed(&mut self) -> (usize, usize) {
        let control = self
            .control
            .iter_mut()
            .filter_map(|s| peer_closed(s).then_some(()))
            .count();
        let metrics = self
            .metrics
            .iter_mut()
            .filter_map(|s| peer_closed(s).then_some(()))
            .count();
        (control, metrics)
    }
}

/// Whether the daemon closed a (non-blocking) connection.
fn peer_closed(stream: &mut impl Read) -> bool {
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != ErrorKind::WouldBlock,
    }
}

/// `enforcer --socket S ARGS...`, failing the test when it does not finish in COMMAND_TIMEOUT.
fn control(lab: &Lab, args: &[&str]) -> Output {
    let mut child = Command::new(enforcer_binary().unwrap())
        .arg("--socket")
        .arg(lab.socket())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`enforcer {}` got no answer within {COMMAND_TIMEOUT:?}; the daemon's log:\n{}",
                args.join(" "),
                lab.daemon_log()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// The soft and hard "Max open files" of process `pid`.
fn open_files_limit(pid: i32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

fn descriptors(pid: i32) -> usize {
    std::fs::read_dir(Path::new("/proc").join(pid.to_string()).join("fd"))
        .unwrap()
        .count()
}

/// The highest count of idle connections closed that the daemon logged for `listener`.
fn closed_idle_logged(log: &str, listener: &str) -> usize {
    log.lines()
        .filter(|l| {
            l.contains("connection limit reached")
                && l.contains(&format!("listener=\"{listener}\""))
        })
        .filter_map(|l| {
            l.split("closed_idle=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .max()
        .unwrap_or(0)
}

/// Everything the daemon sent until it closed the connection, and when that was. Closing with
/// part of the request unread resets the connection after the answer: that counts as closed.
fn read_answer(stream: &mut UnixStream, sent: Instant) -> (String, Duration) {
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    let took = sent.elapsed();
    match read {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the connection is still open after {took:?}: {e}"),
    }
    (String::from_utf8(answer).unwrap(), took)
}

fn start(lab: &mut Lab) {
    let rules = lab.write_policy(POLICY).unwrap();
    let limit = format!("--nofile={SOFT_LIMIT}:{HARD_LIMIT}");
    lab.set_daemon_wrapper(&[tools::require(tools::PRLIMIT).to_str().unwrap(), &limit]);
    lab.start_daemon(&rules).unwrap();
}

#[test]
fn idle_connections_beyond_the_limits_leave_the_daemon_working() {
    let mut lab = Lab::new().unwrap();
    start(&mut lab);
    let pid = lab.daemon_pid().unwrap();
    // The daemon raised its own soft limit to the hard one.
    assert_eq!(open_files_limit(pid), (HARD_LIMIT, HARD_LIMIT));
    let baseline = descriptors(pid);
    let began = Instant::now();

    // With the crowd open, and a fresh part of it filling the slots before each command, every
    // command still gets its answer.
    let mut crowd = Crowd::new();
    crowd.open(&lab, CROWD);
    let status = ok(&control(&lab, &["status", "--json"]), "status");
    assert_eq!(
        status["platforms"][0]["platform"], "banned-media",
        "{status}"
    );
    crowd.open(&lab, MAX_CONNECTIONS);
    ok(&control(&lab, &["reload"]), "reload");
    crowd.open(&lab, MAX_CONNECTIONS);
    ok(
        &control(
            &lab,
            &["rules", "add", "more-media", "--prefix", "198.19.20.0/24"],
        ),
        "rules add",
    );
    crowd.open(&lab, MAX_CONNECTIONS);
    let m = lab.metrics().unwrap();
    assert!(
        m.metric("enforcer_policy_reloads_total", &[("result", "ok")])
            .unwrap()
            >= 2.0,
        "{}",
        m.text()
    );
    drop(crowd);

    // Connections beyond the limits are closed at once, long before the read timeout, and the
    // daemon's descriptors stay bounded.
    let mut crowd = Crowd::new();
    let opened = Instant::now();
    crowd.open(&lab, CROWD);
    let wanted = CROWD - MAX_CONNECTIONS;
    let mut closed = crowd.closed();
    while (closed.0 < wanted || closed.1 < wanted) && opened.elapsed() < REQUEST_TIMEOUT / 2 {
        std::thread::sleep(Duration::from_millis(50));
        closed = crowd.closed();
    }
    assert!(
        closed.0 >= wanted && closed.1 >= wanted,
        "of {CROWD} idle connections the daemon closed {} on the control socket and {} on the \
         metrics port within {:?}",
        closed.0,
        closed.1,
        opened.elapsed()
    );
    let held = descriptors(pid).saturating_sub(baseline);
    assert!(
        held <= 2 * MAX_CONNECTIONS + 2,
        "the daemon holds {held} more descriptors than before the crowd"
    );

    // Thousands of closed connections, a few log lines: at most one per listener and interval,
    // which sums up what was closed.
    let wanted = 2 * (CROWD - MAX_CONNECTIONS);
    let deadline = Instant::now() + LOG_INTERVAL + Duration::from_secs(3);
    let mut log = lab.daemon_log();
    while ["control", "metrics"]
        .iter()
        .any(|listener| closed_idle_logged(&log, listener) < wanted)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(200));
        log = lab.daemon_log();
    }
    for listener in ["control", "metrics"] {
        assert!(
            closed_idle_logged(&log, listener) >= wanted,
            "the log does not count {wanted} idle {listener} connections closed:\n{log}"
        );
    }
    let lines = log.matches("connection limit reached").count();
    let intervals = began.elapsed().as_secs() / LOG_INTERVAL.as_secs() + 1;
    assert!(
        lines as u64 <= 2 * intervals,
        "{lines} log lines about the limit in {:?}:\n{log}",
        began.elapsed()
    );
}

#[test]
fn a_request_line_that_never_ends_is_closed_and_an_overlong_one_refused() {
    let mut lab = Lab::new().unwrap();
    start(&mut lab);

    // No newline: the daemon answers an error and closes once the read timeout passes.
    let mut stream = UnixStream::connect(lab.socket()).unwrap();
    stream.set_read_timeout(Some(REQUEST_TIMEOUT * 3)).unwrap();
    let sent = Instant::now();
    stream.write_all(br#"{"command":"status""#).unwrap();
    let (answer, took) = read_answer(&mut stream, sent);
    assert!(
        took >= REQUEST_TIMEOUT - Duration::from_millis(500)
            && took <= REQUEST_TIMEOUT + Duration::from_secs(2),
        "closed after {took:?}"
    );
    let response: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(response["ok"], false, "{answer}");
    assert!(
        response["errors"][0]
            .as_str()
            .unwrap()
            .contains("no complete request"),
        "{answer}"
    );

    // Longer than the limit: refused at once, with the limit named.
    let mut stream = UnixStream::connect(lab.socket()).unwrap();
    stream.set_read_timeout(Some(REQUEST_TIMEOUT * 3)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sent = Instant::now();
    let writing = std::thread::spawn(move || {
        // The daemon may close before the last byte: a failed write is expected then.
        let _ = writer.write_all(&vec![b' '; MAX_REQUEST_LINE + 1]);
    });
    let (answer, took) = read_answer(&mut stream, sent);
    writing.join().unwrap();
    assert!(took < REQUEST_TIMEOUT, "answered after {took:?}");
    let response: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(response["ok"], false, "{answer}");
    assert!(
        response["errors"][0]
            .as_str()
            .unwrap()
            .contains("longer than"),
        "{answer}"
    );

    // The largest real request, `rules add` with many prefixes, fits the limit.
    let prefixes: Vec<String> = (0..10_000u32)
        .map(|i| format!("198.19.{}.{}/32", 128 + i / 250, i % 250))
        .collect();
    let mut args = vec!["rules", "add", "many"];
    for prefix in &prefixes {
        args.extend(["--prefix", prefix.as_str()]);
    }
    ok(&control(&lab, &args), "rules add with 10,000 prefixes");
    let status = ok(&control(&lab, &["status", "--json"]), "status");
    let many = status["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["platform"] == "many")
        .unwrap_or_else(|| panic!("{status}"));
    assert_eq!(many["prefixes_v4"], 10_000, "{status}");
}
