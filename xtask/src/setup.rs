//! `cargo xtask setup`: install, idempotently, what building and testing need.

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::util::{probe, run_cmd};

/// Debian packages, each with who uses it. Keep this list to what is really run: the tests
/// library checks that every program it runs (tests/src/tools.rs) has its package here.
const PACKAGES: &[&str] = &[
    // bpf-linker (built by `bpf_linker` below) links against LLVM 22 and its dependencies.
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    // `ip`: every namespace lab (tests/src/lab), the tests, the demo and the benches.
    "iproute2",
    // `ping`: tests/tests/dns_namespace.rs (the gateway stays reachable).
    "iputils-ping",
    // `dnsmasq`: the DNS servers of the resolver and learning tests (tests/src/dns.rs), the demo
    // and bench_resolve.
    "dnsmasq-base",
    // `ethtool`: every namespace lab (tests/src/lab) turns off checksum offload on the end hosts'
    // veths, so that frames the gateway holds and puts back carry complete checksums, as frames
    // from a real wire do.
    "ethtool",
    // `nft`: tests/tests/hostile_dns.rs (a forward rule that a held DNS response must still meet)
    // and bench_flood (nftables netdev ingress with an interval set, head to head).
    "nftables",
    // `cat`: bench_flood (reads a veth's threaded-NAPI switch inside a namespace's sysfs).
    // Essential in Debian; listed to say who uses it.
    "coreutils",
    // `trafgen`: bench_flood (floods the gateway's veth with 64-byte UDP frames).
    "netsniff-ng",
    // `ipset`: bench_flood (the hash:net set that iptables matches against, head to head).
    "ipset",
    // `iptables-legacy`, `iptables-nft`: bench_flood (raw PREROUTING + ipset, both back ends).
    "iptables",
    // `mount`/`umount`: tests/tests/atomic_switch.rs (a BPF filesystem of its own).
    "mount",
    // `setpriv`, `prlimit`: tests/tests/resources.rs and learn_namespace.rs (daemons with fewer
    // rights or descriptors). Essential in Debian; listed to say who uses it.
    "util-linux",
    // `promtool` and `prometheus`: tests/tests/deploy.rs (alert rules, a real scrape) and
    // fleet_deploy.rs (fleet rules, a real federation).
    "prometheus",
    // `systemd-analyze`: tests/tests/deploy.rs (verifies the shipped unit).
    "systemd",
    // `lintian`: `cargo xtask package` and tests/tests/package.rs check the .deb with it.
    "lintian",
    // `dpkg-shlibdeps` (cargo-deb's `$auto` dependencies): `cargo xtask package`.
    "dpkg-dev",
    // `man`: tests/tests/package.rs renders every installed man page (`man -l`).
    "man-db",
    // `chromium`: tests/tests/report.rs (renders `enforcer report`'s HTML headless to a PNG).
    "chromium",
    // `tmux`: tests/tests/top.rs (runs `enforcer top` in a real terminal and reads its pane).
    "tmux",
];

/// Rust components xtask runs: `cargo fmt` and `cargo clippy` on stable, and clippy on the
/// nightly toolchain that builds the eBPF crate (nightly rust-src is installed separately).
const STABLE_COMPONENTS: &[&str] = &["rustfmt", "clippy"];
const NIGHTLY_COMPONENTS: &[&str] = &["clippy"];

/// cargo-deb, which `cargo xtask package` builds the Debian package with (this version builds
/// on the pinned toolchain).
const CARGO_DEB_VERSION: &str = "3.8.0";

const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

pub fn run() -> Result<()> {
    require_root()?;
    debian_packages()?;
    nightly_rust_src()?;
    rust_components("stable", STABLE_COMPONENTS)?;
    rust_components("nightly", NIGHTLY_COMPONENTS)?;
    bpf_linker()?;
    cargo_deb()?;
    println!("setup: done");
    Ok(())
}

fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "setup must run as root (it installs packages, and the namespace tests create \
             network namespaces and attach XDP programs): run it again with sudo or as root"
        );
    }
    Ok(())
}

fn installed(package: &str) -> bool {
    let (ok, status) = probe(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]));
    ok && status.trim() == "install ok installed"
}

fn debian_packages() -> Result<()> {
    let mut missing = Vec::new();
    for package in PACKAGES {
        if installed(package) {
            println!("setup: {package} present");
        } else {
            println!("setup: {package} missing");
            missing.push(*package);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    println!("setup: installing {}", missing.join(" "));
    run_cmd(
        Command::new("apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    // Packages with daemons (prometheus) must not start them here: without a policy-rc.d that
    // says so, put one in place for the duration of the install.
    let guard = ServiceStartGuard::install()?;
    let result = run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    );
    drop(guard);
    result?;
    for package in &missing {
        if !installed(package) {
            bail!("{package} is still not installed after apt-get install");
        }
        println!("setup: {package} installed");
    }
    Ok(())
}

/// A temporary `policy-rc.d` that forbids starting services, removed on drop; does nothing
/// when the machine already has one.
struct ServiceStartGuard {
    created: bool,
}

impl ServiceStartGuard {
    fn install() -> Result<Self> {
        let path = Path::new(POLICY_RC_D);
        if path.exists() {
            return Ok(Self { created: false });
        }
        std::fs::write(
            path,
            "#!/bin/sh\n# temporary, by cargo xtask setup\nexit 101\n",
        )
        .with_context(|| format!("writing {POLICY_RC_D}"))?;
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("making {POLICY_RC_D} executable"))?;
        Ok(Self { created: true })
    }
}

impl Drop for ServiceStartGuard {
    fn drop(&mut self) {
        if self.created {
            let _ = std::fs::remove_file(POLICY_RC_D);
        }
    }
}

fn nightly_rust_src() -> Result<()> {
    let (ok, toolchains) = probe(Command::new("rustup").args(["toolchain", "list"]));
    if !ok {
        bail!("rustup not found: install Rust with rustup (https://rustup.rs) first");
    }
    let has_nightly = toolchains
        .lines()
        .any(|line| line.starts_with("nightly-") || line.starts_with("nightly "));
    if !has_nightly {
        println!("setup: installing the nightly toolchain with rust-src");
        return run_cmd(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]));
    }
    let (_, components) =
        probe(Command::new("rustup").args(["+nightly", "component", "list", "--installed"]));
    if components.lines().any(|line| line.starts_with("rust-src")) {
        println!("setup: nightly rust-src present");
        return Ok(());
    }
    println!("setup: installing nightly rust-src");
    run_cmd(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

/// Adds the missing `components` to `toolchain` (which must already be installed).
fn rust_components(toolchain: &str, components: &[&str]) -> Result<()> {
    let (ok, installed) = probe(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        toolchain,
    ]));
    if !ok {
        bail!("`rustup component list --toolchain {toolchain}` failed: is {toolchain} installed?");
    }
    // Installed components are listed with their target triple (`clippy-x86_64-...`), except
    // target-independent ones.
    let has = |component: &str| {
        installed
            .lines()
            .any(|line| line == component || line.starts_with(&format!("{component}-")))
    };
    let missing: Vec<&str> = components.iter().copied().filter(|c| !has(c)).collect();
    if missing.is_empty() {
        println!("setup: {toolchain} {} present", components.join(", "));
        return Ok(());
    }
    println!("setup: installing {toolchain} {}", missing.join(", "));
    run_cmd(
        Command::new("rustup")
            .args(["component", "add", "--toolchain", toolchain])
            .args(&missing),
    )
}

fn bpf_linker() -> Result<()> {
    let (ok, version) = probe(Command::new("bpf-linker").arg("--version"));
    if ok {
        println!("setup: {} present", version.trim());
        return Ok(());
    }
    println!("setup: installing bpf-linker (builds against LLVM 22; takes a few minutes)");
    let path = match std::env::var_os("PATH") {
        Some(path) => {
            let mut dirs = vec![Path::new(LLVM_PREFIX).join("bin")];
            dirs.extend(std::env::split_paths(&path));
            std::env::join_paths(dirs).context("building PATH")?
        }
        None => format!("{LLVM_PREFIX}/bin").into(),
    };
    run_cmd(
        crate::util::cargo()
            .args([
                "install",
                "bpf-linker",
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("PATH", path)
            .env("LLVM_SYS_221_PREFIX", LLVM_PREFIX),
    )?;
    let (ok, version) = probe(Command::new("bpf-linker").arg("--version"));
    if !ok {
        bail!(
            "bpf-linker was installed but `bpf-linker --version` fails: is ~/.cargo/bin on PATH?"
        );
    }
    println!("setup: {} installed", version.trim());
    Ok(())
}

fn cargo_deb() -> Result<()> {
    let (ok, version) = probe(crate::util::cargo().args(["deb", "--version"]));
    if ok
        && version
            .split_whitespace()
            .any(|word| word == CARGO_DEB_VERSION)
    {
        println!("setup: cargo-deb {CARGO_DEB_VERSION} present");
        return Ok(());
    }
    println!("setup: installing cargo-deb {CARGO_DEB_VERSION}");
    run_cmd(crate::util::cargo().args([
        "install",
        "cargo-deb",
        "--version",
        CARGO_DEB_VERSION,
        "--locked",
    ]))
}
