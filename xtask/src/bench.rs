//! `cargo xtask bench`: setup, then the datapath benchmark (release, needs root for BPF).

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
    )
}
