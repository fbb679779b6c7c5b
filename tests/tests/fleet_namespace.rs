//! A fleet: 20 gateways, each a real daemon in its own lab (client, gateway and server
//! namespaces, XDP on the gateway's veths, a small policy and small maps), all following one
//! signed bundle repository that a plain HTTP server serves from a "distribution" namespace
//! bridged to every gateway. The publisher builds versions with the real `enforcer bundle`
//! commands into a work repository and deploys them to the served directory (targets, then
//! metadata, timestamp.json last), as an rsync to a web server would.
//!
//! Asserted (and printed): a new version reaches all 20 within two poll intervals and is
//! enforced (traffic on three gateways); a tampered target, an expired timestamp and an older
//! timestamp (rollback) are refused by all 20, counted as such on each, with version and
//! enforcement unchanged; with the server stopped nothing changes (unreachable counted); a
//! gateway restarted cold while the server is down (daemon stopped, its pins detached, its state
//! directory kept) enforces its last verified version; the server back, all look again.
//! Needs root and a built daemon.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use tests::lab::{INTERNET_V4, Lab, Metrics, Server, Side, enforcer_binary, json_ok};
use tests::static_http::StaticServer;

const GATEWAYS: usize = 20;
const INTERVAL: Duration = Duration::from_secs(2);
/// The longest gap between two looks: the interval plus its 10 % jitter.
const MAX_GAP: Duration = Duration::from_millis(2200);
/// How long every gateway gets to show a refusal or an outage (several looks).
const REFUSAL_DEADLINE: Duration = Duration::from_secs(15);
/// The traffic-checked gateways.
const CHECKED: [usize; 3] = [0, 7, 19];
const DIST_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 1);
const HTTP_PORT: u16 = 8080;

const V1: &str = "platform: video\nmatch:\n  - prefixes: [198.19.10.0/24]\n";
const V2: &str = "platform: video\nmatch:\n  - prefixes: [198.19.10.0/24, 198.19.20.0/24]\n";
const V3: &str =
    "platform: video\nmatch:\n  - prefixes: [198.19.10.0/24, 198.19.20.0/24, 198.19.30.0/24]\n";

fn at(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), port)
}

fn run(command: &mut Command) -> String {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?}: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The distribution namespace: a bridge every gateway has a port on, and the web server.
struct Dist {
    name: String,
}

impl Dist {
    fn new() -> Dist {
        let dist = Dist {
            name: format!("enf{}x999-dist", std::process::id()),
        };
        let _ = Command::new("ip")
            .args(["netns", "del", &dist.name])
            .output();
        run(Command::new("ip").args(["netns", "add", &dist.name]));
        let ip = |args: &[&str]| run(Command::new("ip").arg("-n").arg(&dist.name).args(args));
        ip(&["link", "add", "br0", "type", "bridge"]);
        ip(&["addr", "add", &format!("{DIST_V4}/24"), "dev", "br0"]);
        ip(&["link", "set", "br0", "up"]);
        ip(&["link", "set", "lo", "up"]);
        dist
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    /// A veth from gateway `index`'s namespace (`d0`, 198.18.100.(10+index)) to the bridge.
    fn connect(&self, lab: &Lab, index: usize) {
        let port = format!("dg{index}");
        run(Command::new("ip").args([
            "link",
            "add",
            "d0",
            "netns",
            &lab.netns(Side::Gateway),
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            &self.name,
        ]));
        run(Command::new("ip").args([
            "-n", &self.name, "link", "set", &port, "master", "br0", "up",
        ]));
        let address = format!("198.18.100.{}/24", 10 + index);
        lab.ip(Side::Gateway, &["addr", "add", &address, "dev", "d0"])
            .unwrap();
        lab.ip(Side::Gateway, &["link", "set", "d0", "up"]).unwrap();
    }
}

impl Drop for Dist {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// The publisher: rules, keys, a work repository, and the directory the server serves.
struct Publisher {
    dir: PathBuf,
}

impl Publisher {
    fn rules(&self) -> PathBuf {
        self.dir.join("rules")
    }
    fn work(&self) -> PathBuf {
        self.dir.join("work")
    }
    fn served(&self) -> PathBuf {
        self.dir.join("served")
    }
    fn key(&self) -> PathBuf {
        self.dir.join("keys/signing.key")
    }
    fn root(&self) -> PathBuf {
        self.dir.join("keys/root.json")
    }

    /// `enforcer bundle build` of `policy`; returns (version, digest).
    fn build(&self, policy: &str) -> (u64, String) {
        std::fs::write(self.rules().join("video.yaml"), policy).unwrap();
        let out = run(Command::new(enforcer_binary().unwrap())
            .args(["bundle", "build", "--rules"])
            .arg(self.rules())
            .arg("--repo")
            .arg(self.work())
            .arg("--key")
            .arg(self.key()));
        // "version N digest D (...)"
        let words: Vec<&str> = out.split_whitespace().collect();
        assert_eq!((words[0], words[2]), ("version", "digest"), "{out}");
        (words[1].parse().unwrap(), words[3].to_owned())
    }

    /// The same policy re-signed with a timestamp that expired a minute ago (the library: the
    /// command line refuses such an expiry).
    fn build_expired(&self) {
        let args = enforcer::cli::bundle::BuildArgs {
            rules: self.rules(),
            repo: self.work(),
            key: self.key(),
            root: None,
            expires: None,
            config: None,
        };
        let now = SystemTime::now();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(enforcer::cli::bundle::build_expiring(
                &args,
                now,
                now - Duration::from_secs(60),
            ))
            .unwrap();
    }

    /// Copies the work repository to the served one: targets, then metadata, timestamp.json
    /// last, each file by rename. `targets` says what becomes of the target files (content
    /// addressed: a name once served means the same bytes to every mirror but a compromised one).
    fn deploy(&self, targets: Targets) {
        for sub in ["targets", "metadata"] {
            let from = self.work().join(sub);
            let to = self.served().join(sub);
            std::fs::create_dir_all(&to).unwrap();
            let mut names: Vec<String> = std::fs::read_dir(&from)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort_by_key(|n| n == "timestamp.json");
            for name in names {
                let served = to.join(&name).exists();
                let mut bytes = std::fs::read(from.join(&name)).unwrap();
                if sub == "targets" {
                    match targets {
                        Targets::TamperNew if !served => bytes = tampered(&bytes),
                        Targets::KeepServed if served => continue,
                        _ => {}
                    }
                }
                put(&to.join(&name), &bytes);
            }
        }
    }

    fn timestamp(&self) -> Vec<u8> {
        std::fs::read(self.served().join("metadata/timestamp.json")).unwrap()
    }
}

/// What a deploy does with the target files.
#[derive(Clone, Copy)]
enum Targets {
    /// Every target as built (repairs a tampered one).
    AsBuilt,
    /// Targets not served before are served tampered, as a compromised mirror would.
    TamperNew,
    /// Targets already served stay as served: re-signing metadata must not repair a tampered
    /// target while the old, still valid timestamp is served (a gateway looking in between would
    /// rightly take the repaired version).
    KeepServed,
}

/// The bundle `bytes` with 198.19.30.0/24 made 198.19.31.0/24 and its digest made to match, as
/// a compromised mirror would: only the signed metadata's hash of the file can tell.
fn tampered(bytes: &[u8]) -> Vec<u8> {
    let mut bundle: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    let text = bundle["files"]["video.yaml"].as_str().unwrap().to_owned();
    let changed = text.replace("198.19.30.0/24", "198.19.31.0/24");
    assert_ne!(text, changed, "nothing to tamper with");
    let policy = enforcer::policy::parse_policy_str(
        Path::new("video.yaml"),
        &changed,
        &enforcer::policy::LoadOptions::default(),
    )
    .unwrap();
    bundle["files"]["video.yaml"] = changed.into();
    bundle["digest"] = enforcer::daemon::policy_digest(&policy).into();
    serde_json::to_vec(&bundle).unwrap()
}

/// Writes a file by rename, as a web server's deploy would.
fn put(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("deploying");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Gateway {
    lab: Lab,
    /// The lab's internet server, on the traffic-checked gateways.
    server: Option<Server>,
}

/// Whether datagrams from the client reach `dst`, proven by a control flow that no version
/// blocks (as in the history test).
fn delivered(g: &Gateway, dst: SocketAddr) -> bool {
    let server = g.server.as_ref().unwrap();
    let control = at(INTERNET_V4[4], 5000);
    let before = server.udp_count(dst);
    let before_control = server.udp_count(control);
    g.lab.send_udp(dst, 5).unwrap();
    g.lab.send_udp(control, 5).unwrap();
    assert!(
        server.wait_udp(&[(control, before_control + 5)], Duration::from_secs(5)),
        "the control flow to {control} stopped"
    );
    assert!(server.settle(), "the lab server stopped");
    server.udp_count(dst) > before
}

fn metric(m: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
    m.metric(name, labels)
        .unwrap_or_else(|e| panic!("{name}{labels:?}: {e:#}"))
}

fn version(m: &Metrics) -> f64 {
    metric(m, "enforcer_bundle_version", &[])
}

fn fetches(m: &Metrics, result: &str) -> f64 {
    metric(m, "enforcer_bundle_fetches_total", &[("result", result)])
}

/// Scrapes every gateway until `done` holds for each (or `deadline` passes); returns when each
/// first did, from `since`.
fn wait_all(
    gateways: &[Gateway],
    since: Instant,
    deadline: Duration,
    what: &str,
    done: impl Fn(usize, &Metrics) -> bool,
) -> Vec<Duration> {
    let mut when: Vec<Option<Duration>> = vec![None; gateways.len()];
    while when.iter().any(Option::is_none) {
        for (i, g) in gateways.iter().enumerate() {
            if when[i].is_none() && done(i, &g.lab.metrics().unwrap()) {
                when[i] = Some(since.elapsed());
            }
        }
        if since.elapsed() > deadline {
            let missing: Vec<usize> = (0..gateways.len()).filter(|i| when[*i].is_none()).collect();
            let log = gateways[missing[0]].lab.daemon_log();
            panic!(
                "{what}: gateways {missing:?} did not within {deadline:?}; the first one's log:\n{log}"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    when.into_iter().map(Option::unwrap_or_default).collect()
}

/// Each gateway's counter of `result` now.
fn counts(gateways: &[Gateway], result: &str) -> Vec<f64> {
    gateways
        .iter()
        .map(|g| fetches(&g.lab.metrics().unwrap(), result))
        .collect()
}

fn summary(times: &[Duration]) -> String {
    let mut sorted = times.to_vec();
    sorted.sort();
    format!(
        "min {:.2} s, median {:.2} s, max {:.2} s",
        sorted[0].as_secs_f64(),
        sorted[sorted.len() / 2].as_secs_f64(),
        sorted[sorted.len() - 1].as_secs_f64()
    )
}

/// Every gateway refuses the repository as it is served now with `result`; version and the
/// checked enforcement stay.
fn refused_by_all(gateways: &[Gateway], result: &str, version_in_force: f64) {
    let before = counts(gateways, result);
    let ok_before = counts(gateways, "ok");
    let started = Instant::now();
    let times = wait_all(gateways, started, REFUSAL_DEADLINE, result, |i, m| {
        fetches(m, result) > before[i]
    });
    println!("{result}: counted by all {GATEWAYS} ({})", summary(&times));
    for (i, g) in gateways.iter().enumerate() {
        let m = g.lab.metrics().unwrap();
        assert_eq!(version(&m), version_in_force, "gateway {i} after {result}");
        assert_eq!(
            fetches(&m, "ok"),
            ok_before[i],
            "gateway {i} applied something"
        );
    }
    let log = gateways[0].lab.daemon_log();
    assert!(
        log.contains(&format!("bundle refused ({result})"))
            || (result == "unreachable" && log.contains("bundle repository unreachable")),
        "no log line names the refusal ({result}):\n{log}"
    );
}

#[test]
fn twenty_gateways_follow_one_signed_repository() {
    let started = Instant::now();
    let publisher = Publisher {
        dir: std::env::temp_dir().join(format!("enforcer-fleet-{}", std::process::id())),
    };
    let _ = std::fs::remove_dir_all(&publisher.dir);
    std::fs::create_dir_all(publisher.rules()).unwrap();
    run(Command::new(enforcer_binary().unwrap())
        .args(["bundle", "keygen", "--out"])
        .arg(publisher.dir.join("keys")));
    let (v1, _) = publisher.build(V1);
    assert_eq!(v1, 1);
    publisher.deploy(Targets::AsBuilt);

    let dist = Dist::new();
    let mut http =
        StaticServer::start(&dist.path(), at(DIST_V4, HTTP_PORT), &publisher.served()).unwrap();
    let url = format!("http://{DIST_V4}:{HTTP_PORT}/");

    let newly_banned = at(INTERNET_V4[2], 5000); // 198.19.20.5: banned from version 2
    let third = at(INTERNET_V4[3], 5000); // 198.19.30.5: banned from version 3
    let control = at(INTERNET_V4[4], 5000);
    let mut gateways = Vec::new();
    for i in 0..GATEWAYS {
        let mut lab = Lab::new().unwrap();
        dist.connect(&lab, i);
        lab.add_daemon_args(&["--max-prefixes-v4", "1024", "--max-prefixes-v6", "1024"]);
        let server = CHECKED.contains(&i).then(|| {
            lab.start_server(&[newly_banned, third, control], &[])
                .unwrap()
        });
        lab.spawn_daemon_following(&url, &publisher.root(), INTERVAL)
            .unwrap();
        gateways.push(Gateway { lab, server });
    }
    for g in &mut gateways {
        g.lab.wait_ready(Duration::from_secs(60)).unwrap();
    }
    let setup = started.elapsed();
    for (i, g) in gateways.iter().enumerate() {
        assert_eq!(version(&g.lab.metrics().unwrap()), 1.0, "gateway {i}");
    }
    for &i in &CHECKED {
        assert!(delivered(&gateways[i], newly_banned), "gateway {i}");
    }
    println!(
        "{GATEWAYS} gateways up at version 1 in {:.1} s",
        setup.as_secs_f64()
    );

    // 1. A new version reaches every gateway within two poll intervals.
    let (v2, digest2) = publisher.build(V2);
    assert_eq!(v2, 2);
    publisher.deploy(Targets::AsBuilt);
    let published = Instant::now();
    let times = wait_all(
        &gateways,
        published,
        Duration::from_secs(30),
        "version 2",
        |_, m| version(m) == 2.0,
    );
    println!(
        "version 2 from publish to each gateway's metrics: {} (interval {} s)",
        summary(&times),
        INTERVAL.as_secs()
    );
    let mut each: Vec<String> = times
        .iter()
        .map(|t| format!("{:.2}", t.as_secs_f64()))
        .collect();
    each.sort();
    println!("  each (s): {}", each.join(" "));
    let slowest = times.iter().max().copied().unwrap_or_default();
    assert!(
        slowest <= MAX_GAP * 2,
        "version 2 took {slowest:?} to reach the last gateway (two intervals: {:?})",
        MAX_GAP * 2
    );
    for &i in &CHECKED {
        assert!(
            !delivered(&gateways[i], newly_banned),
            "gateway {i} still lets version 2's ban through"
        );
    }
    let status = json_ok(
        &gateways[0].lab.control(&["status", "--json"]).unwrap(),
        "status",
    );
    assert_eq!(status["bundle"]["version"], 2, "{status}");
    assert!(
        status["bundle"]["age_seconds"].as_u64().unwrap() < 120,
        "{status}"
    );
    assert_eq!(status["policy_digest"], digest2.as_str(), "{status}");
    let history = json_ok(
        &gateways[0].lab.control(&["history", "--json"]).unwrap(),
        "history",
    );
    let sources: Vec<&str> = history["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources, ["start", "bundle"], "{history}");
    // Local edits are refused in bundle mode.
    let edit = gateways[0]
        .lab
        .control(&["rules", "add", "local", "--prefix", "198.19.40.0/24"])
        .unwrap();
    assert!(!edit.status.success());
    assert!(
        String::from_utf8_lossy(&edit.stderr).contains("follows the bundle repository"),
        "{edit:?}"
    );
    let version2_timestamp = publisher.timestamp();

    // 2. A tampered target, an expired timestamp, an older timestamp: refused by all 20.
    let (v3, digest3) = publisher.build(V3);
    assert_eq!(v3, 3);
    publisher.deploy(Targets::TamperNew);
    refused_by_all(&gateways, "invalid", 2.0);
    for &i in &CHECKED {
        assert!(
            delivered(&gateways[i], third),
            "gateway {i} applied the tampered version"
        );
        assert!(!delivered(&gateways[i], newly_banned), "gateway {i}");
    }

    publisher.build_expired();
    publisher.deploy(Targets::KeepServed);
    refused_by_all(&gateways, "expired", 2.0);
    for &i in &CHECKED {
        assert!(
            delivered(&gateways[i], third),
            "gateway {i} applied the expired version"
        );
    }

    // Signed again in time: version 3 is taken.
    let (again, _) = publisher.build(V3);
    assert_eq!(again, 3, "an unchanged policy keeps its version");
    publisher.deploy(Targets::AsBuilt);
    let times = wait_all(
        &gateways,
        Instant::now(),
        REFUSAL_DEADLINE,
        "version 3",
        |_, m| version(m) == 3.0,
    );
    println!("version 3 (re-signed in time): {}", summary(&times));
    for &i in &CHECKED {
        assert!(!delivered(&gateways[i], third), "gateway {i}");
    }

    // Bundle mode: the policy files are the daemon's copy (not watched); `reload` puts the
    // last verified bundle back; `rollback` is refused.
    let g1 = &gateways[1];
    let copy = g1.lab.state_dir().join("bundle/policy/video.yaml");
    assert_eq!(std::fs::read_to_string(&copy).unwrap(), V3);
    std::fs::write(&copy, V1).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let digest_of = |g: &Gateway| {
        json_ok(&g.lab.control(&["status", "--json"]).unwrap(), "status")["policy_digest"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        digest_of(g1),
        digest3,
        "a hand edit was applied in bundle mode"
    );
    json_ok(&g1.lab.control(&["reload"]).unwrap(), "reload");
    assert_eq!(std::fs::read_to_string(&copy).unwrap(), V3);
    assert_eq!(digest_of(g1), digest3);
    let rollback = g1.lab.control(&["rollback"]).unwrap();
    assert!(
        !rollback.status.success()
            && String::from_utf8_lossy(&rollback.stderr).contains("follows the bundle repository"),
        "{rollback:?}"
    );

    put(
        &publisher.served().join("metadata/timestamp.json"),
        &version2_timestamp,
    );
    refused_by_all(&gateways, "rollback", 3.0);
    for &i in &CHECKED {
        assert!(!delivered(&gateways[i], third), "gateway {i} rolled back");
        assert!(!delivered(&gateways[i], newly_banned), "gateway {i}");
    }
    publisher.deploy(Targets::AsBuilt);

    // 3. The server stops: nothing changes.
    http.stop();
    let down = Instant::now();
    refused_by_all(&gateways, "unreachable", 3.0);
    for &i in &CHECKED {
        assert!(!delivered(&gateways[i], third), "gateway {i}");
    }

    // 4. Gateway 0 restarted cold while the server is down: the daemon stopped, its program,
    // links and maps detached (nothing enforces), its state directory kept.
    let g0 = &mut gateways[0];
    g0.lab.stop_daemon().unwrap();
    let bpffs = g0.lab.bpffs().display().to_string();
    json_ok(
        &g0.lab
            .enforcer(&["detach", "--all", "--bpffs", &bpffs])
            .unwrap(),
        "detach",
    );
    assert!(!g0.lab.xdp_attached("g0").unwrap());
    assert!(delivered(g0, third), "nothing should enforce after detach");
    g0.lab
        .start_daemon_following(&url, &publisher.root(), INTERVAL)
        .unwrap();
    let m = g0.lab.metrics().unwrap();
    assert_eq!(version(&m), 3.0);
    assert!(
        !delivered(&gateways[0], third),
        "the cold start does not enforce version 3"
    );
    let status = json_ok(
        &gateways[0].lab.control(&["status", "--json"]).unwrap(),
        "status",
    );
    assert_eq!(status["policy_digest"], digest3.as_str(), "{status}");
    let wait = Instant::now();
    wait_all(
        &gateways[..1],
        wait,
        REFUSAL_DEADLINE,
        "unreachable after the cold start",
        |_, m| fetches(m, "unreachable") >= 1.0,
    );
    println!(
        "server down for {:.1} s so far; the cold-started gateway enforces version 3",
        down.elapsed().as_secs_f64()
    );

    // 5. The server comes back: every gateway looks again and stays at version 3.
    http = StaticServer::start(&dist.path(), at(DIST_V4, HTTP_PORT), &publisher.served()).unwrap();
    let before = counts(&gateways, "unchanged");
    let back = Instant::now();
    let times = wait_all(
        &gateways,
        back,
        REFUSAL_DEADLINE,
        "unchanged after the outage",
        |i, m| fetches(m, "unchanged") > before[i],
    );
    println!(
        "server back: every gateway looked again ({})",
        summary(&times)
    );
    for (i, g) in gateways.iter().enumerate() {
        assert_eq!(version(&g.lab.metrics().unwrap()), 3.0, "gateway {i}");
    }
    assert!(http.hits() > 0);
    println!("fleet test took {:.1} s", started.elapsed().as_secs_f64());
    drop(gateways);
    drop(http);
    drop(dist);
}
