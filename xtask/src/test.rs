//! `cargo xtask test`: setup, then formatting, lints, build and every test. Every check runs
//! even when an earlier one failed (a formatting slip should not hide a test failure); the
//! summary lists each step and the exit status is non-zero when any failed.

use std::process::Command;

use anyhow::{Result, bail};

use crate::util::{cargo, root, run_cmd, step};

/// Clippy on the XDP program, built the way enforcer's build.rs builds it through aya-build:
/// nightly cargo, `core` built from source for bpfel-unknown-none, `bpf_target_arch` set.
fn ebpf_clippy() -> Command {
    let mut command = Command::new("rustup");
    command
        .current_dir(root())
        .args([
            "run",
            "nightly",
            "cargo",
            "clippy",
            "-p",
            "enforcer-ebpf",
            "--lib",
            "--bins",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--",
            "-D",
            "warnings",
        ])
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            format!("--cfg=bpf_target_arch=\"{}\"", std::env::consts::ARCH),
        )
        // As aya-build does: the toolchain's own compiler, not one cargo chose for xtask.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    command
}

pub fn run() -> Result<()> {
    step("setup");
    crate::setup::run()?;

    let mut results: Vec<(&str, bool)> = Vec::new();
    let mut check = |name: &'static str, command: &mut Command| {
        step(&format!("{name}: {}", crate::util::describe(command)));
        let ok = match run_cmd(command) {
            Ok(()) => true,
            Err(error) => {
                eprintln!("xtask: {name} failed: {error:#}");
                false
            }
        };
        results.push((name, ok));
        ok
    };

    check("fmt", cargo().args(["fmt", "--all", "--check"]));
    check(
        "clippy",
        cargo().args([
            "clippy",
            "-p",
            "enforcer",
            "-p",
            "enforcer-common",
            "-p",
            "xtask",
            "-p",
            "tests",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    );
    check("clippy (eBPF)", &mut ebpf_clippy());
    // The namespace tests run this binary (target/debug/enforcer).
    if check("build", cargo().args(["build", "-p", "enforcer"])) {
        check(
            "test",
            cargo().args([
                "test",
                "--no-fail-fast",
                "-p",
                "enforcer-common",
                "-p",
                "enforcer",
                "-p",
                "tests",
                "--",
                "--test-threads=2",
            ]),
        );
    } else {
        results.push(("test (skipped: the build failed)", false));
    }

    println!("==> summary");
    for (name, ok) in &results {
        println!("  {:<8} {name}", if *ok { "ok" } else { "FAILED" });
    }
    let failed: Vec<&str> = results
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(n, _)| *n)
        .collect();
    if !failed.is_empty() {
        bail!("failed: {}", failed.join(", "));
    }
    println!("test: all steps passed");
    Ok(())
}
