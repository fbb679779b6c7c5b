//! `cargo xtask bench`: setup, then the datapath benchmark, then the namespace benches and the
//! head-to-head flood (release, needs root for BPF), then the charts of both comparisons.

use anyhow::Result;

use crate::util::{cargo, run_cmd, step};

pub fn run() -> Result<()> {
    step("setup");
    crate::setup::run()?;
    step("bench: cargo bench -p enforcer --bench datapath");
    run_cmd(cargo().args(["bench", "-p", "enforcer", "--bench", "datapath"]))?;
    step("build: cargo build --release -p enforcer -p tests");
    run_cmd(cargo().args(["build", "--release", "-p", "enforcer", "-p", "tests"]))?;
    let release = crate::util::root().join("target/release");
    step("bench: resolution and set updates (target/release/bench_resolve)");
    run_cmd(
        std::process::Command::new(release.join("bench_resolve"))
            .env("ENFORCER_BIN", release.join("enforcer")),
    )?;
    step("bench: learning from DNS answers (target/release/bench_learn)");
    run_cmd(
        std::process::Command::new(release.join("bench_learn"))
            .env("ENFORCER_BIN", release.join("enforcer")),
    )?;
    step("bench: policy changes on a live gateway (target/release/bench_ops)");
    run_cmd(
        std::process::Command::new(release.join("bench_ops"))
            .env("ENFORCER_BIN", release.join("enforcer")),
    )?;
    // Writes its section of BENCHMARKS.md and bench-flood.json at the repository root.
    step("bench: head to head, CPU per dropped packet (target/release/bench_flood)");
    run_cmd(
        std::process::Command::new(release.join("bench_flood"))
            .arg("--out")
            .arg(crate::util::root())
            .env("ENFORCER_BIN", release.join("enforcer")),
    )?;
    // From bench-flood.json and bench-datapath.json, for the README.
    step("charts: docs/bench-flood.svg, docs/bench-lookup.svg (target/release/bench_charts)");
    run_cmd(
        std::process::Command::new(release.join("bench_charts"))
            .arg("--root")
            .arg(crate::util::root()),
    )
}
