//! `cargo xtask test`: setup, then formatting, lints, build and every test. Every check runs
//! even when an earlier one failed (a formatting slip should not hide a test failure); the
//! summary lists each step and the exit status is non-zero when any failed.

use std::process::Command;

use anyhow::{Result, bail};

use crate::util::{cargo, run_cmd, step};

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
