//! `cargo xtask bench`: setup, then the datapath benchmark (release, needs root for BPF).

use anyhow::Result;

use crate::util::{cargo, run_cmd, step};

pub fn run() -> Result<()> {
    step("setup");
    crate::setup::run()?;
    step("bench: cargo bench -p enforcer --bench datapath");
    run_cmd(cargo().args(["bench", "-p", "enforcer", "--bench", "datapath"]))
}
