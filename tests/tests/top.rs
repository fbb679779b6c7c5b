//! `enforcer top` against a real daemon in the namespace lab: in a real terminal (tmux) it shows
//! what an operator reads (the banned platform dropping a running flow, by site too, the name
//! the gateway just learned, resolver health, map fill, the policy digest) and `q` gives the
//! terminal back; piped, it prints plain snapshots without escape codes; with no daemon it
//! exits 1. Needs root and a built daemon.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use tests::dns::{Dnsmasq, Zone, client_lookup};
use tests::lab::{INTERNET_V4, Lab, Metrics, SERVER_V4, enforcer_binary, is_root, json_ok};
use tests::tools::{self, TMUX};

const MEDIA: &str = "platform: media\nmatch:\n  - prefixes: [198.19.10.0/24]\n  - domains: [\"*.media.example\"]\n    enforce: address\n";
const SITES: &str = "hq: [198.18.1.0/24, \"2001:db8:1::/64\"]\n";
/// Generous: the view refreshes every second; a loaded machine may be slow to start things.
const DEADLINE: Duration = Duration::from_secs(30);

/// A tmux server of the test's own (its own socket), killed however the test ends.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(name: &str, command: &str) -> Tmux {
        let tmux = Tmux {
            socket: name.to_owned(),
        };
        let out = tmux
            .run(&[
                "new-session",
                "-d",
                "-s",
                name,
                "-x",
                "200",
                "-y",
                "50",
                command,
            ])
            .unwrap();
        assert!(
            out.status.success(),
            "tmux new-session: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tmux
    }

    fn run(&self, args: &[&str]) -> std::io::Result<Output> {
        Command::new(tools::require(TMUX))
            .args(["-L", &self.socket])
            .args(args)
            .env_remove("TMUX")
            .output()
    }

    /// What the pane shows now, one string per screen line.
    fn capture(&self) -> String {
        let out = self
            .run(&["capture-pane", "-p", "-t", &self.socket])
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &str) {
        let out = self.run(&["send-keys", "-t", &self.socket, keys]).unwrap();
        assert!(out.status.success(), "tmux send-keys");
    }

    /// Polls the pane until `done` finds what it wants in it.
    fn wait_for<T>(&self, what: &str, done: impl Fn(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let pane = self.capture();
            if let Some(found) = done(&pane) {
                return found;
            }
            assert!(Instant::now() < deadline, "{what}; the pane:\n{pane}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// The cells of the first line holding the cell `first`, from that cell on (table borders
/// dropped; tables side by side share a line).
fn row<'a>(text: &'a str, first: &str) -> Option<Vec<&'a str>> {
    text.lines().find_map(|line| {
        let cells: Vec<&str> = line
            .split(|c: char| c.is_whitespace() || c == '│')
            .filter(|c| !c.is_empty())
            .collect();
        let at = cells.iter().position(|c| *c == first)?;
        Some(cells[at..].to_vec())
    })
}

/// A rate cell that says traffic moves: a number above zero (`-` is the first sample).
fn moving(cell: &str) -> bool {
    let number = cell.trim_end_matches(['k', 'M', 'G']);
    number.parse::<f64>().is_ok_and(|v| v > 0.0)
}

fn map_fill(m: &Metrics, map: &str) -> (String, String) {
    let get = |name: &str| {
        let v = m.metric(name, &[("map", map)]).unwrap();
        format!("{v:.0}")
    };
    (get("enforcer_map_entries"), get("enforcer_map_capacity"))
}

/// A lab with the media policy, sites, learning from the lab's DNS server, a learned name and a
/// banned flow running; returns the lab, its DNS server and the flow (all kept alive).
fn lab_with_traffic() -> (Lab, Dnsmasq, tests::lab::UdpStream) {
    let mut lab = Lab::new().unwrap();
    let dns = Dnsmasq::on_lab_server(
        &lab,
        &Zone::new()
            .local("example")
            .hosts_file(format!("{} x.media.example\n", INTERNET_V4[1])),
    )
    .unwrap();
    let sites = lab.dir().join("sites.yaml");
    std::fs::write(&sites, SITES).unwrap();
    let sites = sites.display().to_string();
    lab.add_daemon_args(&["--learn-from", &SERVER_V4.to_string(), "--sites", &sites]);
    let rules = lab.write_policy(&[("media.yaml", MEDIA)]).unwrap();
    lab.start_daemon(&rules).unwrap();
    assert!(
        client_lookup(&lab, SERVER_V4.into(), "x.media.example", RecordType::A).is_some(),
        "x.media.example got no answer"
    );
    let banned = SocketAddr::new(INTERNET_V4[0].into(), 5004);
    let stream = lab.udp_stream(&[banned], Duration::from_millis(5)).unwrap();
    (lab, dns, stream)
}

#[test]
fn top_in_a_terminal_shows_drops_learning_health_and_maps_and_quits_on_q() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let (mut lab, _dns, _stream) = lab_with_traffic();
    let status = json_ok(&lab.control(&["status", "--json"]).unwrap(), "status");
    let digest = status["policy_digest"].as_str().unwrap().to_owned();
    let health = if status["resolver"]["ok"].as_bool().unwrap() {
        "ok,"
    } else {
        "FAILING,"
    };
    let metrics = lab.metrics().unwrap();
    let (v4_entries, v4_capacity) = map_fill(&metrics, "prefixes_v4");

    let name = format!("top-{}", lab.id());
    let exit_file = lab.dir().join("top-exit");
    // After top: its exit status and the terminal's mode (raw mode would show -icanon -echo).
    let command = format!(
        "{} --socket {} top; echo \"top exited $?\" | tee {}; stty -a; sleep 600",
        enforcer_binary().unwrap().display(),
        lab.socket().display(),
        exit_file.display()
    );
    let tmux = Tmux::start(&name, &command);

    let drops = tmux.wait_for("no drop rate for media", |pane| {
        row(pane, "media")
            .filter(|cells| cells.get(1) == Some(&"drop") && moving(cells[2]))
            .map(|cells| cells[2].to_owned())
    });
    assert!(moving(&drops), "{drops}");
    let pane = tmux.capture();
    // By site: hq's clients send the flow, dropped.
    let hq = row(&pane, "hq").unwrap_or_else(|| panic!("no site row:\n{pane}"));
    assert_eq!(hq[1..3], ["media", "drop"], "{pane}");
    assert!(moving(hq[3]), "{pane}");
    // The name the gateway learned from the client's lookup, with its platform and address.
    let learned =
        row(&pane, "x.media.example").unwrap_or_else(|| panic!("no learned name:\n{pane}"));
    assert_eq!(
        learned[1..3],
        ["media", INTERNET_V4[1].to_string().as_str()],
        "{pane}"
    );
    assert!(learned[3..].contains(&"ago"), "{pane}");
    let resolver = row(&pane, "resolver:").unwrap_or_else(|| panic!("no resolver:\n{pane}"));
    assert_eq!(resolver[1], health, "{pane}");
    let map = row(&pane, "prefixes_v4").unwrap_or_else(|| panic!("no map fill:\n{pane}"));
    assert_eq!(
        map[1..3],
        [v4_entries.as_str(), v4_capacity.as_str()],
        "{pane}"
    );
    assert!(pane.contains(&format!("policy {digest}")), "{pane}");

    // A smaller terminal: the view redraws to its size.
    let out = tmux
        .run(&["resize-window", "-t", &name, "-x", "120", "-y", "40"])
        .unwrap();
    assert!(out.status.success(), "tmux resize-window");
    tmux.wait_for("no redraw at 120 columns", |pane| {
        pane.lines()
            .any(|l| l.starts_with("┌platforms") && l.ends_with('┐') && l.chars().count() == 120)
            .then_some(())
    });
    // The daemon goes away: the view says so and keeps running (and asking).
    lab.stop_daemon().unwrap();
    tmux.wait_for("no word of the missing daemon", |pane| {
        pane.contains("NO ANSWER from the daemon").then_some(())
    });

    tmux.keys("q");
    // Until `stty -a` (run after top and tee) has printed its settings.
    let after = tmux.wait_for("top did not exit on q", |pane| {
        (pane.contains("top exited") && pane.contains("baud;")).then(|| pane.to_owned())
    });
    assert_eq!(
        std::fs::read_to_string(&exit_file).unwrap().trim(),
        "top exited 0"
    );
    // The terminal came back: out of raw mode (canonical input, echo) and off the view's
    // alternate screen.
    let modes: Vec<&str> = after.split_whitespace().collect();
    assert!(
        modes.contains(&"icanon") && modes.contains(&"echo"),
        "{after}"
    );
    assert!(row(&after, "media").is_none(), "{after}");
}

fn top_plain(socket: &Path, args: &[&str]) -> Output {
    Command::new(enforcer_binary().unwrap())
        .arg("--socket")
        .arg(socket)
        .arg("top")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn top_piped_prints_plain_snapshots() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let (mut lab, _dns, _stream) = lab_with_traffic();
    let out = top_plain(&lab.socket(), &["--count", "2"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains('\u{1b}'), "escape codes in:\n{text:?}");
    assert_eq!(text.matches("\nplatforms ").count(), 2, "{text}");
    let header = row(&text, "platform").unwrap_or_else(|| panic!("{text}"));
    assert_eq!(header[2..4], ["drop", "out"], "{text}");
    let media = row(&text, "media").unwrap_or_else(|| panic!("{text}"));
    assert_eq!(media[1], "drop", "{text}");
    assert!(moving(media[2]), "{text}");
    assert!(row(&text, "x.media.example").is_some(), "{text}");

    // A daemon that goes away while plain snapshots run: exit 1, saying why.
    let mut top = Command::new(enforcer_binary().unwrap())
        .arg("--socket")
        .arg(lab.socket())
        .args(["top", "--count", "120"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    lab.stop_daemon().unwrap();
    let deadline = Instant::now() + DEADLINE;
    while top.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "top kept running without a daemon"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = top.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the daemon"), "{stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\nplatforms "),
        "no snapshot before the daemon went"
    );
}

#[test]
fn top_without_a_daemon_exits_1_and_says_why() {
    let socket = PathBuf::from("/nonexistent/enforcer-top-test.sock");
    let out = top_plain(&socket, &["--once"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot reach the daemon at /nonexistent/enforcer-top-test.sock"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}
