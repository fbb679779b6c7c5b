//! `enforcer feeds update` against a real HTTPS server (rustls, a CA made at test time and
//! passed with --ca-file) serving copies of each feed format (tests/data/feeds) and broken ones:
//! every broken feed is refused with a clear error and leaves the files byte-identical; a clean
//! update plans (exit 2), applies (exit 0: only the feed-managed entries and data-date change,
//! comments kept) and the result passes `enforcer check`. No root needed.
//!
//! `cargo test -p tests --test feeds` (needs `cargo build -p enforcer` first, or ENFORCER_BIN).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tests::https::{Body, HttpsServer, Route};
use tests::lab::enforcer_binary;

const ZOOM_PATH: &str = "/docs/ipranges/ZoomMeetings.txt";
const MS_PATH: &str = "/endpoints/worldwide";
const MS_VERSION_PATH: &str = "/version/worldwide";
const AWS_PATH: &str = "/ip-ranges.json";
const MIRROR_PATH: &str = "/mirror/prefixes.txt";

fn sample(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/feeds")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn zoom_lines() -> Vec<String> {
    String::from_utf8(sample("ZoomMeetings.txt"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

const MIRROR_BODY: &str = "# our mirror\n203.0.113.0/24\n198.18.7.0/24  # media relay\n";

/// Every route as a clean update finds it.
fn serve_clean(server: &HttpsServer) {
    server.route(
        ZOOM_PATH,
        Route::bytes(sample("ZoomMeetings.txt")).modified("Mon, 30 Nov 2026 09:00:00 GMT"),
    );
    server.route(MS_PATH, Route::bytes(sample("microsoft-endpoints.json")));
    server.route(
        MS_VERSION_PATH,
        Route::bytes(sample("microsoft-version.json")),
    );
    server.route(AWS_PATH, Route::bytes(sample("ip-ranges.json")));
    server.route(
        MIRROR_PATH,
        Route::bytes(MIRROR_BODY).modified("Tue, 01 Dec 2026 07:30:00 GMT"),
    );
}

/// The policy before the update: each feed's entry a little behind its feed.
fn policy_files(server: &HttpsServer) -> Vec<(&'static str, String)> {
    let zoom = zoom_lines();
    // 46 of the 50 published prefixes and one the vendor no longer lists.
    let mut listed: Vec<String> = zoom[..46].iter().map(|p| format!("      - {p}")).collect();
    listed.push("      - 45.12.196.0/24  # retired by Zoom".to_owned());
    let zoom_yaml = format!(
        "# Zoom, from its published list.\n\
         platform: zoom\n\
         description: Zoom Meetings\n\
         action: drop\n\
         data-date: 2026-10-08 # the last update\n\
         feed:\n\
         \x20 kind: zoom-txt\n\
         \x20 url: {}\n\
         match:\n\
         \x20 # Names, by hand.\n\
         \x20 - domains: [zoom.us, \"*.zoom.us\"]\n\
         \x20 # ZoomMeetings.txt: rewritten by enforcer feeds update.\n\
         \x20 - prefixes:\n\
         {}\n\
         \x20 # Media ports, by hand.\n\
         \x20 - prefixes: [198.51.100.0/24]\n\
         \x20   protocol: udp\n\
         \x20   ports: [8801-8810]\n",
        server.url(ZOOM_PATH),
        listed.join("\n")
    );
    let teams = format!(
        "platform: teams\n\
         action: drop\n\
         data-date: 2026-10-01\n\
         feed:\n\
         \x20 kind: microsoft-endpoints\n\
         \x20 url: {}?clientrequestid=b10c5ed1-bad1-445f-b386-b919946339a7\n\
         \x20 select: {{service-area: Skype, ids: [11]}}\n\
         match:\n\
         \x20 - domains: [teams.microsoft.com]\n\
         \x20   enforce: name\n\
         \x20 - prefixes: [52.112.0.0/14, \"2603:1063::/38\"]  # ID 11\n",
        server.url(MS_PATH)
    );
    let chime = format!(
        "platform: chime\n\
         action: monitor\n\
         data-date: 2026-11-01\n\
         feed: {{kind: aws-ip-ranges, url: \"{}\", select: {{service: CHIME_MEETINGS}}}}\n\
         match:\n\
         \x20 - prefixes: [99.77.128.0/18, 3.80.16.0/23]\n",
        server.url(AWS_PATH)
    );
    let mirror = format!(
        "platform: mirror\n\
         # Our own list.\n\
         feed:\n\
         \x20 kind: cidr-list\n\
         \x20 url: {}\n\
         match:\n\
         \x20 - prefixes: [203.0.113.0/24]\n",
        server.url(MIRROR_PATH)
    );
    let other = "platform: other\nmatch:\n  - domains: [other.example]\n".to_owned();
    vec![
        ("chime.yaml", chime),
        ("mirror.yaml", mirror),
        ("other.yaml", other),
        ("teams.yaml", teams),
        ("zoom.yaml", zoom_yaml),
    ]
}

struct Setup {
    server: HttpsServer,
    dir: PathBuf,
    ca: PathBuf,
    originals: Vec<(&'static str, String)>,
}

impl Setup {
    fn new(name: &str) -> Setup {
        let server = HttpsServer::start().unwrap();
        serve_clean(&server);
        let dir = std::env::temp_dir().join(format!("feeds-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let rules = dir.join("rules");
        std::fs::create_dir_all(&rules).unwrap();
        let ca = dir.join("ca.pem");
        server.write_ca(&ca).unwrap();
        let originals = policy_files(&server);
        for (file, text) in &originals {
            std::fs::write(rules.join(file), text).unwrap();
        }
        Setup {
            server,
            dir,
            ca,
            originals,
        }
    }

    fn rules(&self) -> PathBuf {
        self.dir.join("rules")
    }

    fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        std::fs::read_dir(self.rules())
            .unwrap()
            .map(|e| {
                let path = e.unwrap().path();
                (
                    path.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read(&path).unwrap(),
                )
            })
            .collect()
    }

    /// `enforcer feeds update RULES --ca-file CA ARGS...`, without any proxy from the
    /// environment and with no daemon on the socket.
    fn update(&self, args: &[&str]) -> Output {
        self.update_env(args, &[])
    }

    fn update_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut command = Command::new(enforcer_binary().unwrap());
        command
            .args(["feeds", "update"])
            .arg(self.rules())
            .arg("--ca-file")
            .arg(&self.ca)
            .arg("--socket")
            .arg(self.dir.join("no-daemon.sock"))
            .args(args);
        for var in [
            "HTTPS_PROXY",
            "https_proxy",
            "ALL_PROXY",
            "all_proxy",
            "NO_PROXY",
            "no_proxy",
        ] {
            command.env_remove(var);
        }
        command.envs(env.iter().copied());
        command.output().unwrap()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A broken variant of one route: `feeds update --apply` exits 1 with `expected` in its output
/// and no file changes. The route is put back afterwards.
fn refused(setup: &Setup, path: &str, route: Route, expected: &[&str]) {
    let before = setup.snapshot();
    setup.server.route(path, route);
    let output = setup.update(&["--apply"]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{path}: {all}");
    for e in expected {
        assert!(all.contains(e), "{path}: expected `{e}` in:\n{all}");
    }
    assert_eq!(setup.snapshot(), before, "{path}: the files changed");
    // Also refused as a plan (--json names the feed and the error).
    let output = setup.update(&["--json"]);
    assert_eq!(output.status.code(), Some(1), "{path}: {}", text(&output));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let errors: Vec<&str> = json["feeds"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["error"].as_str())
        .collect();
    assert_eq!(errors.len(), 1, "{path}: {json}");
    assert!(errors[0].contains(expected[0]), "{path}: {json}");
    assert_eq!(setup.snapshot(), before, "{path}: the files changed");
    serve_clean(&setup.server);
}

#[test]
fn broken_feeds_are_refused_and_the_files_kept() {
    let setup = Setup::new("broken");
    let zoom = zoom_lines();
    let zoom_text = zoom.join("\n") + "\n";
    let ms = String::from_utf8(sample("microsoft-endpoints.json")).unwrap();
    let aws = String::from_utf8(sample("ip-ranges.json")).unwrap();

    // Truncated: a text list cut in the middle of a line, a JSON document cut short.
    let cut = &zoom_text[..zoom_text.len() - 9];
    refused(
        &setup,
        ZOOM_PATH,
        Route::bytes(cut),
        &["platform zoom", "format: line 50"],
    );
    refused(
        &setup,
        MS_PATH,
        Route::bytes(&ms[..ms.len() / 2]),
        &[
            "platform teams",
            "not the JSON of the Microsoft 365 endpoints web service",
        ],
    );
    // A /8 injected.
    refused(
        &setup,
        MIRROR_PATH,
        Route::bytes(format!("{MIRROR_BODY}17.0.0.0/8\n")),
        &["platform mirror", "prefix 17.0.0.0/8 is wider than /12"],
    );
    refused(
        &setup,
        AWS_PATH,
        Route::bytes(aws.replace("2600:1f18:4000::/40", "2600::/12")),
        &["platform chime", "prefix 2600::/12 is wider than /28"],
    );
    // The never-block list.
    refused(
        &setup,
        MIRROR_PATH,
        Route::bytes(format!("{MIRROR_BODY}10.20.0.0/16\n")),
        &[
            "platform mirror",
            "10.20.0.0/16 overlaps the never-block list",
            "10.0.0.0/8",
        ],
    );
    // Half the prefixes gone.
    refused(
        &setup,
        ZOOM_PATH,
        Route::bytes(zoom[..25].join("\n") + "\n"),
        &[
            "platform zoom",
            "22 of the platform's 47 feed-managed prefixes would be removed",
        ],
    );
    // Stale: older than the file's data-date, by the feed's own date and by Last-Modified.
    refused(
        &setup,
        AWS_PATH,
        Route::bytes(aws.replace("2026-11-20-08-13-05", "2026-10-02-08-13-05")),
        &[
            "platform chime",
            "stale: the feed's data is of 2026-10-02, older than the file's data-date 2026-11-01",
        ],
    );
    refused(
        &setup,
        ZOOM_PATH,
        Route::bytes(zoom_text.clone()).modified("Thu, 01 Oct 2026 09:00:00 GMT"),
        &["platform zoom", "stale: the feed's data is of 2026-10-01"],
    );
    refused(
        &setup,
        MS_VERSION_PATH,
        Route::bytes(r#"{"instance":"Worldwide","latest":"2026090100"}"#),
        &["platform teams", "stale: the feed's data is of 2026-09-01"],
    );
    // Not JSON.
    refused(
        &setup,
        AWS_PATH,
        Route::bytes("<html><body>Service Unavailable</body></html>"),
        &["platform chime", "not AWS's ip-ranges.json"],
    );
    // 50 MB: announced by Content-Length, and sent without one.
    for length in [true, false] {
        refused(
            &setup,
            ZOOM_PATH,
            Route {
                body: Body::Large {
                    size: 50 << 20,
                    length,
                },
                last_modified: None,
            },
            &["platform zoom", "the feed is larger than 10485760 bytes"],
        );
    }
    // Gone from the server.
    setup.server.remove(MIRROR_PATH);
    let output = setup.update(&[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).contains("the server answered HTTP 404"),
        "{}",
        text(&output)
    );
    serve_clean(&setup.server);

    // Without the CA the server is not trusted; through a proxy that is not there, nothing
    // is reached (HTTPS_PROXY is honoured).
    let before = setup.snapshot();
    let output = Command::new(enforcer_binary().unwrap())
        .args(["feeds", "update", "--apply"])
        .arg(setup.rules())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).to_lowercase().contains("certificate"),
        "{}",
        text(&output)
    );
    let hits = setup.server.hits().len();
    let output = setup.update_env(&["--apply"], &[("HTTPS_PROXY", "http://127.0.0.1:9")]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert_eq!(
        setup.server.hits().len(),
        hits,
        "the feeds were fetched past the proxy"
    );
    assert_eq!(setup.snapshot(), before);
}

#[test]
fn clean_update_plans_applies_and_checks() {
    let setup = Setup::new("clean");
    let before = setup.snapshot();

    // The plan: exit 2, nothing written.
    let output = setup.update(&["--json"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert_eq!(setup.snapshot(), before);
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let feeds: BTreeMap<String, &serde_json::Value> = json["feeds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["platform"].as_str().unwrap().to_owned(), f))
        .collect();
    assert_eq!(
        feeds.keys().collect::<Vec<_>>(),
        ["chime", "mirror", "teams", "zoom"],
        "{json}"
    );
    let zoom = zoom_lines();
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(strings(&feeds["zoom"]["added"]), zoom[46..].to_vec());
    assert_eq!(strings(&feeds["zoom"]["removed"]), ["45.12.196.0/24"]);
    assert_eq!(feeds["zoom"]["data_date"], "2026-11-30");
    assert_eq!(strings(&feeds["teams"]["added"]), ["52.122.0.0/15"]);
    assert_eq!(feeds["teams"]["data_date"], "2026-11-01");
    assert_eq!(strings(&feeds["chime"]["added"]), ["2600:1f18:4000::/40"]);
    assert_eq!(feeds["chime"]["data_date"], "2026-11-20");
    assert_eq!(strings(&feeds["mirror"]["added"]), ["198.18.7.0/24"]);
    assert_eq!(feeds["mirror"]["data_date"], "2026-12-01");
    for f in feeds.values() {
        assert!(f["error"].is_null(), "{f}");
        assert!(f["file"].as_str().unwrap().ends_with(".yaml"), "{f}");
    }
    // The same plan as text.
    let output = setup.update(&[]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let plan = text(&output);
    assert!(
        plan.contains("would change: 4 added, 1 removed, data-date 2026-11-30"),
        "{plan}"
    );
    assert!(plan.contains("  - 45.12.196.0/24"), "{plan}");

    // Apply: exit 0, only the feed-managed lists and data-date change.
    let output = setup.update(&["--apply"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(
        text(&output).contains("no daemon answers"),
        "{}",
        text(&output)
    );
    let after = setup.snapshot();
    let read = |name: &str| String::from_utf8(after[name].clone()).unwrap();
    let original = |name: &str| {
        setup
            .originals
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap()
            .1
            .clone()
    };
    let old_zoom_list: Vec<String> = zoom[..46]
        .iter()
        .map(|p| format!("      - {p}"))
        .chain(["      - 45.12.196.0/24  # retired by Zoom".to_owned()])
        .collect();
    let new_zoom_list: Vec<String> = zoom.iter().map(|p| format!("      - {p}")).collect();
    assert_eq!(
        read("zoom.yaml"),
        original("zoom.yaml")
            .replace(&old_zoom_list.join("\n"), &new_zoom_list.join("\n"))
            .replace("data-date: 2026-10-08 #", "data-date: 2026-11-30 #")
    );
    assert!(
        read("zoom.yaml").contains(
            "# Media ports, by hand.\n  - prefixes: [198.51.100.0/24]\n    protocol: udp\n"
        )
    );
    assert_eq!(
        read("teams.yaml"),
        original("teams.yaml")
            .replace(
                "[52.112.0.0/14, \"2603:1063::/38\"]  # ID 11",
                "[52.112.0.0/14, 52.122.0.0/15, \"2603:1063::/38\"]  # ID 11"
            )
            .replace("data-date: 2026-10-01", "data-date: 2026-11-01")
    );
    assert_eq!(
        read("chime.yaml"),
        original("chime.yaml")
            .replace(
                "[99.77.128.0/18, 3.80.16.0/23]",
                "[99.77.128.0/18, 3.80.16.0/23, \"2600:1f18:4000::/40\"]"
            )
            .replace("2026-11-01", "2026-11-20")
    );
    assert_eq!(
        read("mirror.yaml"),
        original("mirror.yaml")
            .replace("[203.0.113.0/24]", "[203.0.113.0/24, 198.18.7.0/24]")
            .replace(
                "# Our own list.\n",
                "# Our own list.\ndata-date: 2026-12-01\n"
            )
    );
    assert_eq!(after["other.yaml"], before["other.yaml"]);
    // No temporary file left behind.
    assert_eq!(after.len(), before.len(), "{:?}", after.keys());

    // The real `enforcer check` accepts the result.
    let check = Command::new(enforcer_binary().unwrap())
        .arg("check")
        .arg(setup.rules())
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check));

    // Nothing more to do: exit 0, and --apply writes nothing.
    let output = setup.update(&[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(text(&output).contains("zoom ("), "{}", text(&output));
    let output = setup.update(&["--apply"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(setup.snapshot(), after);

    // Removing a third is refused, and accepted with --force.
    setup.server.route(
        ZOOM_PATH,
        Route::bytes(zoom[..33].join("\n") + "\n").modified("Tue, 01 Dec 2026 09:00:00 GMT"),
    );
    let output = setup.update(&["--apply"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert_eq!(setup.snapshot(), after);
    let output = setup.update(&["--apply", "--force"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let forced =
        String::from_utf8(std::fs::read(setup.rules().join("zoom.yaml")).unwrap()).unwrap();
    assert!(
        forced.contains(&format!("      - {}\n  # Media ports", zoom[32])),
        "{forced}"
    );
    assert!(!forced.contains(&zoom[33]), "{forced}");
    assert!(
        forced.contains("data-date: 2026-12-01 # the last update"),
        "{forced}"
    );
}

/// Datagrams to each of `dsts` that arrive when 10 are sent to each, `control` last (it must
/// get all of its own).
fn delivered<const N: usize>(
    lab: &tests::lab::Lab,
    server: &tests::lab::Server,
    dsts: [std::net::SocketAddr; N],
    control: std::net::SocketAddr,
) -> [u64; N] {
    let before = dsts.map(|d| server.udp_count(d));
    let control_before = server.udp_count(control);
    for dst in dsts {
        lab.send_udp(dst, 10).unwrap();
    }
    lab.send_udp(control, 10).unwrap();
    assert!(
        server.wait_udp(
            &[(control, control_before + 10)],
            std::time::Duration::from_secs(5)
        ),
        "the control flow did not arrive"
    );
    assert!(server.settle());
    let mut after = dsts.map(|d| server.udp_count(d));
    for (a, b) in after.iter_mut().zip(before) {
        *a -= b;
    }
    after
}

/// An applied update is enforced: a daemon in a namespace lab runs a policy whose cidr-list
/// feed gains a prefix; `feeds update --apply` on its --socket makes it reload (source feeds),
/// and a flow to the new prefix, which passed before, is dropped (the old one stays dropped).
/// Needs root and a built daemon.
#[test]
fn applied_update_is_enforced_by_a_running_daemon() {
    use std::net::{IpAddr, SocketAddr};
    use tests::lab::{INTERNET_V4, Lab, json_ok};

    let mut lab = Lab::new().unwrap();
    let old = SocketAddr::new(IpAddr::V4(INTERNET_V4[0]), 443);
    let new = SocketAddr::new(IpAddr::V4(INTERNET_V4[2]), 443);
    let control = SocketAddr::new(IpAddr::V4(INTERNET_V4[4]), 443);
    let server = lab.start_server(&[old, new, control], &[]).unwrap();
    let https = HttpsServer::start().unwrap();
    https.route(
        MIRROR_PATH,
        Route::bytes("198.19.10.0/24\n198.19.20.0/24\n").modified("Tue, 01 Dec 2026 07:30:00 GMT"),
    );
    let policy = format!(
        "platform: media\n\
         data-date: 2026-11-01\n\
         feed: {{kind: cidr-list, url: \"{}\"}}\n\
         match:\n\
         \x20 # From the feed.\n\
         \x20 - prefixes: [198.19.10.0/24]\n",
        https.url(MIRROR_PATH)
    );
    let rules = lab.write_policy(&[("media.yaml", &policy)]).unwrap();
    lab.start_daemon(&rules).unwrap();
    let digest = |lab: &Lab| {
        json_ok(&lab.control(&["status", "--json"]).unwrap(), "status")["policy_digest"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let before = digest(&lab);
    assert_eq!(delivered(&lab, &server, [old, new], control), [0, 10]);

    let ca = lab.dir().join("feeds-ca.pem");
    https.write_ca(&ca).unwrap();
    let output = Command::new(enforcer_binary().unwrap())
        .args(["feeds", "update", "--apply"])
        .arg(&rules)
        .arg("--ca-file")
        .arg(&ca)
        .arg("--socket")
        .arg(lab.socket())
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(
        text(&output).contains("daemon reloaded (source feeds)"),
        "{}",
        text(&output)
    );
    let written = std::fs::read_to_string(rules.join("media.yaml")).unwrap();
    assert!(
        written.contains("  # From the feed.\n  - prefixes: [198.19.10.0/24, 198.19.20.0/24]\n"),
        "{written}"
    );
    assert_ne!(digest(&lab), before, "the daemon did not apply the update");
    assert_eq!(delivered(&lab, &server, [old, new], control), [0, 0]);
    assert!(
        lab.daemon_log().contains("feeds update"),
        "{}",
        lab.daemon_log()
    );
}
