//! `cargo xtask setup | build | test | demo | bench | package | fuzz`: the project's entry points.
//!
//! Every subcommand but `setup` runs `setup` first, so a fresh Debian machine (as root) needs
//! nothing but a Rust toolchain before `cargo xtask demo` or `cargo xtask test`.

mod bench;
mod build;
mod demo;
mod fuzz;
mod package;
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
    /// bpf-linker, cargo-deb.
    Setup,
    /// Setup, then build the enforcer (release).
    Build,
    /// Setup, then fmt, clippy, build and every test (the namespace tests included; needs root).
    Test,
    /// Setup, build, then run the namespace lab demonstration.
    Demo,
    /// Setup, then run the datapath benchmark (release).
    Bench,
    /// Setup, build, then the Debian package target/debian/enforcer_VERSION_amd64.deb
    /// (cargo-deb), checked with lintian.
    Package {
        /// Cargo profile of the packaged binary.
        #[arg(long, value_name = "PROFILE", default_value = "release")]
        profile: String,
        /// Package version WORKSPACE_VERSION+SUFFIX (e.g. `test2`: 0.1.0+test2), to build a
        /// newer package of the same tree.
        #[arg(long, value_name = "SUFFIX")]
        version_suffix: Option<String>,
        /// Skip lintian.
        #[arg(long)]
        no_lintian: bool,
    },
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
        Command::Package {
            profile,
            version_suffix,
            no_lintian,
        } => package::run(&package::Options {
            profile,
            version_suffix,
            lintian: !no_lintian,
        })
        .map(|_| ()),
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
