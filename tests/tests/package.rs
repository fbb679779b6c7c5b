//! The Debian package, for real on this machine: `cargo xtask package` builds it (and a newer
//! one of the same tree), lintian passes, `dpkg -i` puts every file in place, creates the
//! `enforcer` group and copies the shipped rules into /etc/enforcer/rules; every man page
//! renders; the unit verifies. Then, in a lab, the installed binary enforces while a banned flow
//! runs through an upgrade (not one packet through, the program swapped through its link), a
//! removal (still dropped: fail-static) and a purge (detached, files and group gone).
//!
//! Systemd is not PID 1 here: the test plays its part, starting the installed binary with the
//! unit's ExecStart plus the lab's interfaces, policy, socket and metrics address, and stopping
//! it with SIGTERM where systemd would. Needs root; installs and purges the package `enforcer`,
//! so it refuses to run where that package (or /etc/enforcer) already exists.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use clap::CommandFactory as _;
use tests::lab::{INTERNET_V4, Lab, METRICS_ADDR, Side};
use tests::tools;

const PACKAGE: &str = "enforcer";
const UNIT: &str = "/lib/systemd/system/enforcer.service";
const CONFIG: &str = "/etc/enforcer/config.yaml";
const STATE: &str = "/var/lib/enforcer";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `cargo xtask package --profile dev` (the binary `cargo xtask test` built), lintian left to
/// the test; returns a copy of the .deb it printed in `dir` (cargo-deb clears its output
/// directory of older packages).
fn build_package(suffix: Option<&str>, dir: &Path) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(root())
        .args(["xtask", "package", "--profile", "dev", "--no-lintian"]);
    if let Some(suffix) = suffix {
        command.args(["--version-suffix", suffix]);
    }
    let output = command.stdin(Stdio::null()).output().unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let path = stdout
        .lines()
        .find_map(|line| line.strip_prefix("package: "))
        .unwrap_or_else(|| panic!("no `package: PATH` line: {stdout}"));
    let built = PathBuf::from(path.trim());
    let copy = dir.join(built.file_name().unwrap());
    std::fs::copy(&built, &copy).unwrap();
    copy
}

fn dpkg(args: &[&str]) -> Output {
    Command::new("dpkg")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn installed_version() -> Option<String> {
    let output = Command::new("dpkg-query")
        .args(["-W", "-f=${Status} ${Version}", PACKAGE])
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&output.stdout).into_owned();
    status
        .strip_prefix("install ok installed ")
        .map(str::to_owned)
}

fn group_exists() -> bool {
    std::fs::read_to_string("/etc/group")
        .unwrap()
        .lines()
        .any(|line| line.starts_with("enforcer:"))
}

/// Purges whatever the test installed, also when it fails half-way, and removes the copies of
/// the packages.
struct Purge {
    debs: PathBuf,
}

impl Drop for Purge {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.debs);
        let output = dpkg(&["--purge", PACKAGE]);
        if !output.status.success() {
            eprintln!("cleanup: dpkg --purge: {}", text(&output));
        }
        for dir in ["/etc/enforcer", STATE] {
            let _ = std::fs::remove_dir_all(dir);
        }
        if group_exists() {
            let _ = Command::new("groupdel").arg("enforcer").status();
        }
    }
}

/// The installed daemon, started the way the unit starts it (in the lab's gateway); killed on
/// drop.
struct Service {
    child: Child,
    log: PathBuf,
}

impl Service {
    fn start(lab: &Lab, policy: &Path, n: usize) -> Service {
        let unit = std::fs::read_to_string(UNIT).unwrap();
        let exec = unit
            .lines()
            .find_map(|line| line.strip_prefix("ExecStart="))
            .expect("the unit has an ExecStart");
        let args: Vec<&str> = exec.split_whitespace().collect();
        assert_eq!(args[0], "/usr/bin/enforcer", "{exec}");
        let log = lab.dir().join(format!("service-{n}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.netns(Side::Gateway)])
            .args(&args)
            .args(["--iface", "g0:inside", "--iface", "g1:outside", "--rules"])
            .arg(policy)
            .arg("--socket")
            .arg(lab.dir().join("enforcer.sock"))
            .args(["--metrics", &METRICS_ADDR.to_string()])
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        let mut service = Service { child, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while lab.metrics().is_err() {
            if let Some(status) = service.child.try_wait().unwrap() {
                panic!("the daemon exited ({status}):\n{}", service.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not answer:\n{}",
                service.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        service
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait, as `systemctl stop` does.
    fn stop(mut self) {
        let pid = i32::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on our own child, not reaped yet.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "SIGTERM ignored");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The id of the XDP program on the gateway's `iface`, if one is attached.
fn program_id(lab: &Lab, iface: &str) -> Option<u32> {
    let text = lab
        .ip(Side::Gateway, &["-d", "link", "show", "dev", iface])
        .unwrap();
    let rest = text.split("prog/xdp id ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

/// Every man page the CLI definition calls for: enforcer(1) and one per visible subcommand.
fn expected_pages() -> Vec<String> {
    fn walk(command: &clap::Command, name: &str, out: &mut Vec<String>) {
        out.push(name.to_owned());
        for sub in command.get_subcommands() {
            if !sub.is_hide_set() && sub.get_name() != "help" {
                walk(sub, &format!("{name}-{}", sub.get_name()), out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&enforcer::cli::Cli::command(), "enforcer", &mut out);
    out
}

fn check_installed_files() {
    for (path, what) in [
        ("/usr/bin/enforcer", "the binary"),
        (UNIT, "the unit"),
        (CONFIG, "the config"),
        ("/usr/share/enforcer/rules/zoom.yaml", "the shipped rules"),
        (
            "/etc/enforcer/rules/zoom.yaml",
            "the rules copied on install",
        ),
        (
            "/usr/share/enforcer/grafana/enforcer-dashboard.json",
            "the dashboard",
        ),
        (
            "/usr/share/enforcer/prometheus/enforcer-alerts.yml",
            "the alert rules",
        ),
        (
            "/usr/share/bash-completion/completions/enforcer",
            "bash completion",
        ),
        (
            "/usr/share/zsh/vendor-completions/_enforcer",
            "zsh completion",
        ),
        (
            "/usr/share/fish/vendor_completions.d/enforcer.fish",
            "fish completion",
        ),
        ("/usr/share/doc/enforcer/copyright", "the copyright file"),
    ] {
        assert!(Path::new(path).is_file(), "{what}: {path} is missing");
    }
    assert_eq!(
        std::fs::read("/etc/enforcer/rules/zoom.yaml").unwrap(),
        std::fs::read("/usr/share/enforcer/rules/zoom.yaml").unwrap()
    );
    let shipped = std::fs::read_dir(root().join("rules")).unwrap().count();
    let copied = std::fs::read_dir("/etc/enforcer/rules").unwrap().count();
    assert_eq!(copied, shipped, "every shipped rule file is copied");
    let conffiles = Command::new("dpkg-query")
        .args(["-W", "-f=${Conffiles}", PACKAGE])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&conffiles.stdout).contains(CONFIG),
        "{CONFIG} is not a conffile: {}",
        text(&conffiles)
    );
    assert!(group_exists(), "no enforcer group");
    for completion in [
        "/usr/share/bash-completion/completions/enforcer",
        "/usr/share/zsh/vendor-completions/_enforcer",
        "/usr/share/fish/vendor_completions.d/enforcer.fish",
    ] {
        let script = std::fs::read_to_string(completion).unwrap();
        assert!(
            script.contains("explain") && script.contains("rollback"),
            "{completion}"
        );
    }
}

fn check_man_pages() {
    let pages = expected_pages();
    assert!(
        pages.contains(&"enforcer-rules-add".to_owned()),
        "{pages:?}"
    );
    for page in &pages {
        let path = format!("/usr/share/man/man1/{page}.1.gz");
        assert!(Path::new(&path).is_file(), "{path} is missing");
        let output = Command::new(tools::require(tools::MAN))
            .args(["-l", &path])
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "120")
            .env("LC_ALL", "C.UTF-8")
            .output()
            .unwrap();
        // Words only: troff justifies lines with extra spaces.
        let shown = String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        assert!(output.status.success(), "man -l {path}: {}", text(&output));
        assert!(
            output.stderr.is_empty(),
            "man -l {path} warns: {}",
            text(&output)
        );
        // The NAME section names the command, and the page carries its --help example.
        assert!(shown.contains(&format!("{page} - ")), "{path}:\n{shown}");
        let example = format!("Example: {}", page.replace('-', " "));
        assert!(
            shown.contains(&example),
            "{path} lacks `{example}`:\n{shown}"
        );
    }
}

fn check_unit_verifies() {
    let output = Command::new(tools::require(tools::SYSTEMD_ANALYZE))
        .args(["verify", UNIT])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{}", text(&output));
    // Warnings about the host (no systemd as PID 1 here) are not about the unit.
    let about_unit: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("enforcer.service"))
        .collect();
    assert!(about_unit.is_empty(), "{stderr}");
}

fn check_lintian(deb: &Path) {
    let output = Command::new(tools::require(tools::LINTIAN))
        .args(["--fail-on", "error,warning"])
        .arg(deb)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "lintian: {}", text(&output));
    let tags: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("E:") || l.starts_with("W:"))
        .collect();
    assert!(tags.is_empty(), "lintian: {stdout}");
}

#[test]
fn install_upgrade_remove_and_purge_keep_enforcing_until_purge() {
    assert!(tests::lab::is_root(), "the package test needs root");
    assert!(
        installed_version().is_none() && !Path::new("/etc/enforcer").exists(),
        "the package enforcer (or /etc/enforcer) is already on this machine: this test \
         installs and purges it, so it will not run here"
    );
    let debs = std::env::temp_dir().join(format!("enforcer-debs-{}", std::process::id()));
    std::fs::create_dir_all(&debs).unwrap();
    let _purge = Purge { debs: debs.clone() };
    let started = Instant::now();
    let old = build_package(None, &debs);
    let new = build_package(Some("test2"), &debs);
    eprintln!("two packages built in {:?}", started.elapsed());
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        old.ends_with(format!("enforcer_{version}_amd64.deb")),
        "{old:?}"
    );
    assert!(
        new.ends_with(format!("enforcer_{version}+test2_amd64.deb")),
        "{new:?}"
    );
    let started = Instant::now();
    check_lintian(&old);
    eprintln!("lintian took {:?}", started.elapsed());

    let output = dpkg(&["--install", &old.display().to_string()]);
    assert!(output.status.success(), "dpkg -i: {}", text(&output));
    assert_eq!(installed_version().as_deref(), Some(version));
    check_installed_files();
    check_man_pages();
    check_unit_verifies();

    // The lab: a banned prefix and an allowed one, both with a listening server.
    let lab = Lab::new().unwrap();
    let banned = SocketAddr::new(IpAddr::V4(INTERNET_V4[0]), 9000);
    let allowed = SocketAddr::new(IpAddr::V4(INTERNET_V4[3]), 9000);
    let server = lab.start_server(&[banned, allowed], &[]).unwrap();
    let policy = lab.dir().join("policy");
    std::fs::create_dir_all(&policy).unwrap();
    std::fs::write(
        policy.join("banned.yaml"),
        "platform: banned\nmatch:\n  - prefixes: [198.19.10.0/24]\n",
    )
    .unwrap();
    // The operator's edits: pins on the lab's BPF filesystem (the config names them, so purge
    // finds them), a comment in one shipped rule file, another one deleted.
    let bpffs = lab.dir().join("bpffs").join("enforcer");
    let config = std::fs::read_to_string(CONFIG).unwrap();
    assert!(config.contains("\nbpffs: "), "{config}");
    let config: String = config
        .lines()
        .map(|line| {
            if line.starts_with("bpffs:") {
                format!("bpffs: {}\n", bpffs.display())
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    std::fs::write(CONFIG, &config).unwrap();
    let zoom = Path::new("/etc/enforcer/rules/zoom.yaml");
    let edited = format!(
        "{}# the operator's note\n",
        std::fs::read_to_string(zoom).unwrap()
    );
    std::fs::write(zoom, &edited).unwrap();
    std::fs::remove_file("/etc/enforcer/rules/webex.yaml").unwrap();

    let service = Service::start(&lab, &policy, 1);
    let first_program = program_id(&lab, "g0").expect("attached on g0");
    assert!(program_id(&lab, "g1").is_some(), "attached on g1");
    assert!(
        bpffs.join("links").is_dir(),
        "pinned under the configured bpffs"
    );

    // A banned and an allowed datagram every millisecond from now on.
    let stream = lab
        .udp_stream(&[banned, allowed], Duration::from_millis(1))
        .unwrap();
    // More than 100 datagrams of the allowed flow since `since`.
    let flowing = |since: u64| server.wait_udp(&[(allowed, since + 101)], Duration::from_secs(10));
    assert!(flowing(0), "the allowed flow does not get through");

    // Upgrade: dpkg while the old daemon runs, then the restart systemd does (stop, start).
    let output = dpkg(&["--install", &new.display().to_string()]);
    assert!(
        output.status.success(),
        "dpkg -i (upgrade): {}",
        text(&output)
    );
    assert_eq!(
        installed_version(),
        Some(format!("{version}+test2")),
        "upgraded"
    );
    assert_eq!(
        std::fs::read_to_string(CONFIG).unwrap(),
        config,
        "conffile kept"
    );
    assert!(
        std::fs::read_to_string(zoom).unwrap() == edited,
        "the upgrade overwrote the operator's edit of {}",
        zoom.display()
    );
    assert!(
        !Path::new("/etc/enforcer/rules/webex.yaml").exists(),
        "an upgrade copies no rule back"
    );
    service.stop();
    let service = Service::start(&lab, &policy, 2);
    let second_program = program_id(&lab, "g0").expect("attached on g0 after the upgrade");
    assert_ne!(
        first_program,
        second_program,
        "the new daemon swaps its own program in:\n{}",
        service.log_text()
    );
    assert!(flowing(server.udp_count(allowed)), "flow after the upgrade");
    assert_eq!(
        server.udp_count(banned),
        0,
        "banned packets got through the upgrade"
    );

    // Removal: systemd would stop the daemon in prerm; the pinned program keeps enforcing.
    service.stop();
    let output = dpkg(&["--remove", PACKAGE]);
    assert!(output.status.success(), "dpkg -r: {}", text(&output));
    assert!(!Path::new("/usr/bin/enforcer").exists(), "binary removed");
    assert!(Path::new(CONFIG).exists(), "remove keeps the config");
    assert_eq!(
        program_id(&lab, "g0"),
        Some(second_program),
        "still attached"
    );
    assert!(flowing(server.udp_count(allowed)), "flow after the removal");
    assert_eq!(
        server.udp_count(banned),
        0,
        "banned packets got through after removal"
    );
    assert!(Path::new(STATE).is_dir(), "the state directory was used");

    // Purge: detached (the banned flow arrives), files and group gone.
    let output = dpkg(&["--purge", PACKAGE]);
    assert!(output.status.success(), "dpkg -P: {}", text(&output));
    assert_eq!(
        program_id(&lab, "g0"),
        None,
        "still attached to g0 after purge"
    );
    assert_eq!(
        program_id(&lab, "g1"),
        None,
        "still attached to g1 after purge"
    );
    assert!(!bpffs.exists(), "pins left in {}", bpffs.display());
    assert!(
        server.wait_udp(&[(banned, 1)], Duration::from_secs(5)),
        "the banned flow is still dropped after purge"
    );
    for gone in ["/etc/enforcer", STATE] {
        assert!(!Path::new(gone).exists(), "{gone} left after purge");
    }
    assert!(!group_exists(), "the enforcer group is left after purge");
    assert!(installed_version().is_none());
    drop(stream);
}
