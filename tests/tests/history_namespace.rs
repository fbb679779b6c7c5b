//! Policy history and rollback through the real binary: three changes (the watcher applying an
//! edited file, two `rules add`), then `rollback --to` the first digest: the policy files, the
//! digest in force and what is enforced are the first version's again, the history lists every
//! change with its source and user, the watcher does not re-apply the files the rollback wrote,
//! an unknown digest changes nothing (exit 1), and without a daemon `history` and `rollback`
//! exit 1. Needs root and a built daemon.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use tests::lab::{INTERNET_V4, INTERNET_V6, Lab, Server, json_ok as ok};

const FIRST: &str = "# the first version\nplatform: ban\nmatch:\n  - prefixes: [198.19.10.0/24]\n";
const SECOND: &str =
    "# the second version\nplatform: ban\nmatch:\n  - prefixes: [198.19.30.0/24]\n";
const TIMEOUT: Duration = Duration::from_secs(5);

fn at(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

/// The policy directory's rule files, by name.
fn files(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && !n.starts_with('.'))
        .map(|n| {
            let text = std::fs::read_to_string(dir.join(&n)).unwrap();
            (n, text)
        })
        .collect()
}

/// Whether datagrams from the client reach `dst`: five are sent to it, then five to `control`
/// (which no version blocks); once those arrived, anything to `dst` that passed has too.
fn delivered(lab: &Lab, server: &Server, dst: SocketAddr, control: SocketAddr) -> bool {
    let before = server.udp_count(dst);
    let before_control = server.udp_count(control);
    lab.send_udp(dst, 5).unwrap();
    lab.send_udp(control, 5).unwrap();
    assert!(
        server.wait_udp(&[(control, before_control + 5)], TIMEOUT),
        "the control flow to {control} stopped"
    );
    assert!(server.settle(), "the lab server stopped");
    server.udp_count(dst) > before
}

fn digest(lab: &Lab) -> String {
    let status = ok(&lab.control(&["status", "--json"]).unwrap(), "status");
    status["policy_digest"].as_str().unwrap().to_owned()
}

/// `history --json` as (digest, source, user, current), oldest first.
fn history(lab: &Lab) -> Vec<(String, String, String, bool)> {
    let reply = ok(&lab.control(&["history", "--json"]).unwrap(), "history");
    reply["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            assert!(v["time"].as_u64().unwrap() > 1_700_000_000, "{v}");
            (
                v["digest"].as_str().unwrap().to_owned(),
                v["source"].as_str().unwrap().to_owned(),
                v["user"].as_str().unwrap().to_owned(),
                v["current"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn reloads_ok(lab: &Lab) -> f64 {
    lab.metrics()
        .unwrap()
        .metric("enforcer_policy_reloads_total", &[("result", "ok")])
        .unwrap()
}

#[test]
fn three_changes_then_a_rollback_to_the_first() {
    let mut lab = Lab::new().unwrap();
    // Blocked by the first version only; by the second and later only; by the third and later.
    let first_only = at(INTERNET_V4[0], 443);
    let later = at(INTERNET_V4[3], 443);
    let added = at(INTERNET_V4[2], 443);
    let control = at(INTERNET_V4[4], 443);
    let server = lab
        .start_server(&[first_only, later, added, control], &[])
        .unwrap();
    let rules = lab
        .write_policy(&[
            ("ban.yaml", FIRST),
            (
                "other.yaml",
                "platform: other\nmatch:\n  - prefixes: [\"2001:db8:50::/48\"]\n",
            ),
        ])
        .unwrap();
    lab.start_daemon(&rules).unwrap();
    let first_files = files(&rules);
    let first = digest(&lab);
    assert!(!delivered(&lab, &server, first_only, control));
    assert!(delivered(&lab, &server, later, control));

    // 1: the file is edited; the watcher applies it.
    std::fs::write(rules.join("ban.yaml"), SECOND).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    while digest(&lab) == first {
        assert!(
            Instant::now() < deadline,
            "the watcher did not apply the edit"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A reload of unchanged files is no new version.
    ok(&lab.control(&["reload"]).unwrap(), "reload");
    // 2 and 3: `rules add`.
    ok(
        &lab.control(&["rules", "add", "added", "--prefix", "198.19.20.0/24"])
            .unwrap(),
        "rules add",
    );
    let v6 = format!("{}/128", INTERNET_V6[2]);
    ok(
        &lab.control(&["rules", "add", "added", "--prefix", &v6])
            .unwrap(),
        "rules add",
    );
    let third = digest(&lab);
    assert!(delivered(&lab, &server, first_only, control));
    assert!(!delivered(&lab, &server, later, control));
    assert!(!delivered(&lab, &server, added, control));
    let before = history(&lab);
    let sources: Vec<&str> = before.iter().map(|v| v.1.as_str()).collect();
    assert_eq!(sources, ["start", "watcher", "rules-add", "rules-add"]);
    assert_eq!(before[0].0, first);
    assert_eq!(
        (before[0].2.as_str(), before[1].2.as_str()),
        ("daemon", "daemon")
    );
    assert_eq!(before[2].2, "root");
    assert_eq!(
        before[3],
        (third.clone(), "rules-add".into(), "root".into(), true)
    );

    // An unknown digest: exit 1, nothing changed.
    let unknown = lab.control(&["rollback", "--to", "0123zz"]).unwrap();
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("no version"),
        "{unknown:?}"
    );
    assert_eq!(digest(&lab), third);
    assert_eq!(history(&lab), before);
    assert!(rules.join("enforcer-managed.yaml").exists());

    // Back to the first, named by a prefix of its digest.
    let out = lab.control(&["rollback", "--to", &first[..7]]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains(&format!("rolled back from {third} to {first}")),
        "{text}"
    );
    assert_eq!(
        files(&rules),
        first_files,
        "the files are not the first version's"
    );
    assert_eq!(digest(&lab), first);
    assert!(
        !delivered(&lab, &server, first_only, control),
        "the first version's ban"
    );
    assert!(
        delivered(&lab, &server, later, control),
        "a later version's ban"
    );
    assert!(
        delivered(&lab, &server, added, control),
        "a later version's ban"
    );
    let after = history(&lab);
    let sources: Vec<&str> = after.iter().map(|v| v.1.as_str()).collect();
    assert_eq!(
        sources,
        ["start", "watcher", "rules-add", "rules-add", "rollback"]
    );
    assert_eq!(
        after[4],
        (first.clone(), "rollback".into(), "root".into(), true)
    );
    assert!(after[..4].iter().all(|v| !v.3));

    // The watcher does not fight it: the files it sees are those applied.
    let applied = reloads_ok(&lab);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        reloads_ok(&lab),
        applied,
        "the watcher re-applied the rollback"
    );
    assert_eq!(history(&lab).len(), 5);
    assert_eq!(digest(&lab), first);

    // Without a daemon: exit 1.
    lab.stop_daemon().unwrap();
    for args in [&["history", "--json"][..], &["rollback"][..]] {
        let out = lab.control(args).unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("cannot reach the daemon"),
            "{out:?}"
        );
    }
}
