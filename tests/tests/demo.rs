//! The demo that `cargo xtask demo` runs, run here as an operator would see it, so that a
//! broken demo fails CI: it exits 0, every expectation it checks holds, the gateway answers the
//! banned names itself, a rule added live blocks, and it ends with its summary.
//! Needs root, dnsmasq and a built daemon (the demo finds it beside itself).

use std::process::Command;
use std::time::Instant;

#[test]
fn the_demo_walks_through_and_every_expectation_holds() {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_demo"))
        .output()
        .expect("running the demo binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the demo exited with {} after {:?}:\n{stdout}\n{stderr}",
        out.status,
        started.elapsed()
    );
    for expected in [
        "1. Build a lab",
        "NXDOMAIN from the gateway",
        "$ enforcer rules add demo-live",
        "The metrics that moved",
        "enforcer_dns_blocked_total{",
        "What you just saw",
        "expectations held",
    ] {
        assert!(
            stdout.contains(expected),
            "the demo's output lacks {expected:?}:\n{stdout}"
        );
    }
    assert!(
        !stdout.contains("UNEXPECTED"),
        "a row is marked UNEXPECTED:\n{stdout}"
    );
}
