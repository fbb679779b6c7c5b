//! `cargo xtask setup | build | test | demo | bench | fuzz`: the project's entry points.
//!
//! Every subcommand but `setup` runs `setup` first, so a fresh Debian machine (as root) needs
//! nothing but a Rust toolchain before `cargo xtask demo` or `cargo xtask test`.

mod bench;
mod build;
mod demo;
mod fuzz;
mod setup;
mod test;
mod util;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Build, test and demonstrate the enforcer"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install what this machine lacks: Debian packages, nightly rust-src, rustfmt and clippy,
    /// bpf-linker.
    Setup,
    /// Setup, then build the enforcer (release).
    Build,
    /// Setup, then fmt, clippy, build and every test (the namespace tests included; needs root).
    Test,
    /// Setup, build, then run the namespace lab demonstration.
    Demo,
    /// Setup, then run the datapath benchmark (release).
    Bench,
    /// Setup, install cargo-fuzz if missing, then run the fuzz targets of fuzz/ (nightly,
    /// sanitizers) for N minutes in all; fails when any crashes, naming the saved input.
    Fuzz {
        /// Minutes in all, shared equally by the targets run.
        #[arg(long, value_name = "N")]
        minutes: u64,
        /// Run only this target (policy_file, dns_message, dns_event, reference_frame,
        /// control_request, config_file).
        #[arg(long, value_name = "NAME")]
        target: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::run(),
        Command::Build => build::run(),
        Command::Test => test::run(),
        Command::Demo => demo::run(),
        Command::Bench => bench::run(),
        Command::Fuzz { minutes, target } => fuzz::run(minutes, target.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
