//! `cargo xtask fuzz --minutes N [--target NAME]`: setup, cargo-fuzz if missing, then each fuzz
//! target of fuzz/ (or the one named) for its share of N minutes. Fails when any target found a
//! crash, a hang or a leak, naming the input libFuzzer saved for it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::util::{probe, root, run_cmd, step};

/// Each target with the libFuzzer options it runs with. The YAML targets stay at 4 KiB inputs
/// (the largest shipped rule file): deeper nesting and alias blow-ups are the YAML limits' own
/// tests, not this run's.
const TARGETS: &[(&str, &[&str])] = &[
    ("policy_file", &["-max_len=4096"]),
    ("dns_message", &["-max_len=1500"]),
    // A ring-buffer record is 48 bytes of header and a 2,048-byte packet.
    ("dns_event", &["-max_len=2200"]),
    ("reference_frame", &["-max_len=1600"]),
    ("control_request", &["-max_len=4096"]),
    ("config_file", &["-max_len=4096"]),
];

/// Options of every run: a hang is an input that takes over 10 s, and memory is bounded.
const COMMON: &[&str] = &["-timeout=10", "-rss_limit_mb=2048", "-print_final_stats=1"];

pub fn run(minutes: u64, target: Option<&str>) -> Result<()> {
    let targets: Vec<(&str, &[&str])> = match target {
        Some(name) => vec![
            *TARGETS
                .iter()
                .find(|(n, _)| *n == name)
                .with_context(|| format!("no fuzz target `{name}`; the targets: {}", names()))?,
        ],
        None => TARGETS.to_vec(),
    };
    if minutes == 0 {
        bail!("--minutes must be at least 1");
    }
    let count = targets.len();
    let share = (minutes * 60 / count as u64).max(1);

    step("setup");
    crate::setup::run()?;
    cargo_fuzz()?;

    let fuzz_dir = root().join("fuzz");
    step("fuzz: cargo +nightly fuzz build -O -a");
    run_cmd(nightly_fuzz(&fuzz_dir).args(["build", "-O", "-a"]))?;

    let mut failed = Vec::new();
    for (name, options) in targets {
        step(&format!("fuzz: {name} for {share} s"));
        let artifacts = fuzz_dir.join("artifacts").join(name);
        let before = files(&artifacts);
        // New inputs go to the first directory (not committed); the second is the corpus in
        // the repository, read as seeds.
        let scratch = fuzz_dir.join("corpus-new").join(name);
        std::fs::create_dir_all(&scratch)
            .with_context(|| format!("creating {}", scratch.display()))?;
        let mut command = nightly_fuzz(&fuzz_dir);
        command
            .args(["run", "-O", "-a", name])
            .arg(&scratch)
            .arg(fuzz_dir.join("corpus").join(name))
            .arg("--")
            .arg(format!("-max_total_time={share}"))
            .args(COMMON)
            .args(options);
        if let Err(error) = run_cmd(&mut command) {
            let found: Vec<PathBuf> = files(&artifacts).difference(&before).cloned().collect();
            eprintln!("xtask: fuzz target {name} failed: {error:#}");
            for path in &found {
                eprintln!("xtask: {name}: input saved at {}", path.display());
            }
            failed.push((name, found));
        }
    }
    if !failed.is_empty() {
        let list: Vec<String> = failed
            .iter()
            .map(|(name, found)| {
                let paths: Vec<String> = found.iter().map(|p| p.display().to_string()).collect();
                format!("{name} ({})", paths.join(", "))
            })
            .collect();
        bail!(
            "fuzzing found problems: {}; reproduce one with `cargo +nightly fuzz run -O -a \
             TARGET FILE` in fuzz/",
            list.join("; ")
        );
    }
    println!("fuzz: {count} target(s), {share} s each: nothing found");
    Ok(())
}

fn names() -> String {
    TARGETS
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `cargo +nightly fuzz` run in the fuzz crate (sanitizers need nightly).
fn nightly_fuzz(fuzz_dir: &Path) -> Command {
    let mut command = Command::new("rustup");
    command
        .current_dir(fuzz_dir)
        .args(["run", "nightly", "cargo", "fuzz"])
        // As for the eBPF build: the toolchain's own compiler, not the one cargo set for xtask.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    command
}

/// Installs cargo-fuzz unless `cargo fuzz` already runs.
fn cargo_fuzz() -> Result<()> {
    let (ok, version) = probe(Command::new("cargo").args(["fuzz", "--version"]));
    if ok {
        println!("fuzz: {} present", version.trim());
        return Ok(());
    }
    println!("fuzz: installing cargo-fuzz");
    run_cmd(crate::util::cargo().args(["install", "cargo-fuzz", "--locked"]))
}

/// The files in `dir` (none when it does not exist yet).
fn files(dir: &Path) -> BTreeSet<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}
