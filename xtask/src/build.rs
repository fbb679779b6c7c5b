//! `cargo xtask build`: setup, then a release build of the daemon.

use anyhow::Result;

use crate::util::{cargo, root, run_cmd, step};

pub fn run() -> Result<()> {
    step("setup");
    crate::setup::run()?;
    step("build: cargo build --release -p enforcer");
    run_cmd(cargo().args(["build", "--release", "-p", "enforcer"]))?;
    println!(
        "build: {}",
        root().join("target/release/enforcer").display()
    );
    Ok(())
}
