//! The command line as an operator types it: values are parsed with the policy's vocabulary by
//! every command, and `check` builds its never-block list as `run` does.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output};

const GARBAGE: &str =
    "invalid prefix `resolver`: expected an address or a CIDR like 192.0.2.0/24 or 2001:db8::/32";

fn enforcer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_enforcer"))
        .args(args)
        .output()
        .expect("running the enforcer binary")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A directory of its own for one test, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("enforcer-cli-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const POLICY: &str = "platform: video\nmatch:\n  - prefixes: [198.51.100.0/24]\n";

#[test]
fn check_takes_a_bare_address_as_never_block() {
    let dir = TempDir::new("bare");
    let policy = dir.write("video.yaml", POLICY);
    let clean = enforcer(&["check", &policy]);
    assert_eq!(clean.status.code(), Some(0), "{}", stderr(&clean));

    let refused = enforcer(&["check", "--never-block", "198.51.100.53", &policy]);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert_eq!(
        stderr(&refused),
        format!(
            "{policy}:3:16: prefix `198.51.100.0/24` overlaps the never-block range 198.51.100.53/32\n"
        )
    );
}

#[test]
fn check_honours_the_daemons_config_file() {
    let dir = TempDir::new("config");
    let policy = dir.write("video.yaml", POLICY);
    // The resolver's address is in the daemon's never-block list, so it is in check's.
    let config = dir.write("config.yaml", "resolver: [\"198.51.100.53:5353\"]\n");
    let refused = enforcer(&["check", "--config", &config, &policy]);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("overlaps the never-block range 198.51.100.53/32"),
        "{}",
        stderr(&refused)
    );
    let config = dir.write("bad.yaml", "never-block: [resolver]\n");
    let bad = enforcer(&["check", "--config", &config, &policy]);
    assert_eq!(bad.status.code(), Some(1), "{}", stderr(&bad));
    assert!(
        stderr(&bad).contains(&format!("{config}:1:15: never-block: {GARBAGE}")),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn run_takes_a_bare_address_as_never_block() {
    // Accepted: the daemon gets as far as asking for an interface.
    let output = enforcer(&["run", "--never-block", "192.0.2.53"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("no interface given"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn garbage_never_block_gets_the_same_words_from_run_and_check() {
    for args in [
        ["run", "--iface", "lo", "--never-block", "resolver"],
        ["check", "--never-block", "resolver", "--", "rules"],
    ] {
        let output = enforcer(&args);
        // clap's usage error: nothing was started.
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        let error = stderr(&output);
        assert!(
            error.contains("'--never-block <CIDR>'") && error.contains(GARBAGE),
            "{args:?}: {error}"
        );
    }
}

#[test]
fn rules_add_refuses_what_a_rule_file_refuses_before_asking_the_daemon() {
    let socket = "/nonexistent/enforcer.sock";
    let output = enforcer(&[
        "--socket",
        socket,
        "rules",
        "add",
        "video",
        "--domain",
        "a_b.video.example",
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(
            "'--domain <D>': invalid domain `a_b.video.example`: character `_` is not allowed"
        ),
        "{}",
        stderr(&output)
    );
    // A valid domain gets as far as the (absent) daemon.
    let output = enforcer(&[
        "--socket",
        socket,
        "rules",
        "add",
        "video",
        "--domain",
        "ab.video.example",
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("cannot reach the daemon"),
        "{}",
        stderr(&output)
    );
}

/// `check` compiles the policy as the daemon does: a policy the datapath cannot hold (more
/// rules on a prefix than a slot holds, more prefixes than the table holds) is refused.
#[test]
fn check_refuses_what_the_datapath_cannot_hold() {
    let dir = TempDir::new("capacity");
    let ports: Vec<String> = (1..=33).map(|p| p.to_string()).collect();
    let crowded = dir.write(
        "crowded.yaml",
        &format!(
            "platform: a\nmatch:\n  - prefixes: [198.51.100.0/24]\n    protocol: tcp\n    \
             ports: [{}]\n",
            ports.join(", ")
        ),
    );
    let output = enforcer(&["check", &crowded]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(
        stderr(&output),
        format!(
            "{crowded}: the datapath cannot hold this policy: 198.51.100.0/24: 33 rules apply to \
             this prefix (with the prefixes that contain it); the datapath holds at most 32\n"
        )
    );

    // One more IPv4 prefix than the table holds by default (MAX_PREFIXES_V4 = 1,000,000).
    let mut text = String::from("platform: big\nmatch:\n  - prefixes:\n");
    for i in 0..=1_000_000u32 {
        let [_, a, b, c] = i.to_be_bytes();
        text.push_str(&format!("      - 20.{a}.{b}.{c}/32\n"));
    }
    let big = dir.write("big.yaml", &text);
    let output = enforcer(&["check", &big]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(
        stderr(&output),
        format!(
            "{big}: the datapath cannot hold this policy: 1000001 IPv4 prefixes exceed the \
             datapath's capacity of 1000000\n"
        )
    );

    // The daemon's --max-prefixes-v4 from its config file is the capacity `check` holds to.
    let config = dir.write("enforcer.yaml", "max-prefixes-v4: 1000\n");
    let text: String = (0..=1_000u32).fold(
        String::from("platform: small\nmatch:\n  - prefixes:\n"),
        |mut text, i| {
            let [_, _, b, c] = i.to_be_bytes();
            text.push_str(&format!("      - 20.0.{b}.{c}/32\n"));
            text
        },
    );
    let small = dir.write("small.yaml", &text);
    let output = enforcer(&["check", &small]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let output = enforcer(&["check", "--config", &config, &small]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("1001 IPv4 prefixes exceed the datapath's capacity of 1000"),
        "{}",
        stderr(&output)
    );
}

/// `check` reads the files as the daemon can after dropping its capabilities: a file of
/// another owner with mode 0600, or in a directory it may not search, is refused even when
/// `check` runs as root.
#[test]
fn check_refuses_files_the_daemon_cannot_read() {
    use std::os::unix::fs::{PermissionsExt, chown};
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root (a root daemon without DAC capabilities is the case)");
        return;
    }
    let dir = TempDir::new("unreadable");
    let set_mode = |path: &str, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    let policy = dir.write("video.yaml", POLICY);
    let nobody = Some(65534);
    chown(&policy, nobody, nobody).unwrap();
    set_mode(&policy, 0o600);
    let output = enforcer(&["check", &policy]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(
        stderr(&output),
        format!(
            "{policy}: Permission denied (os error 13): the daemon reads rule files without \
             CAP_DAC_OVERRIDE or CAP_DAC_READ_SEARCH, so their owner, group and mode must let its \
             user read them (and search their directories)\n"
        )
    );
    // Readable by others: fine.
    set_mode(&policy, 0o644);
    let output = enforcer(&["check", &policy]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    // A directory of another owner that only it may enter.
    let sub = dir.0.join("private");
    std::fs::create_dir(&sub).unwrap();
    let inner = sub.join("video.yaml");
    std::fs::write(&inner, POLICY).unwrap();
    chown(&sub, nobody, nobody).unwrap();
    set_mode(sub.to_str().unwrap(), 0o700);
    let output = enforcer(&["check", sub.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).starts_with(&format!("{}: Permission denied", sub.display())),
        "{}",
        stderr(&output)
    );
}
