//! `cargo xtask demo`: setup, build, then the namespace lab demonstration.

use anyhow::Result;

use crate::util::{cargo, run_cmd, step};

pub fn run() -> Result<()> {
    step("setup");
    crate::setup::run()?;
    step("build: cargo build -p enforcer");
    run_cmd(cargo().args(["build", "-p", "enforcer"]))?;
    step("demo: cargo run -p tests --bin demo");
    run_cmd(cargo().args(["run", "--quiet", "-p", "tests", "--bin", "demo"]))
}
