//! `cargo xtask package`: the Debian package `target/debian/enforcer_VERSION_amd64.deb`, built
//! with cargo-deb from `[package.metadata.deb]` in enforcer/Cargo.toml.
//!
//! Steps: setup (cargo-deb and lintian included), build the binary, let the binary write its
//! own man pages and completions (`enforcer generate-assets`, so they always match the CLI),
//! derive the packaged unit from deploy/enforcer.service (ExecStart /usr/bin/enforcer), run
//! cargo-deb, then lintian (any tag not overridden in deploy/debian/lintian-overrides fails).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::util::{cargo, describe, root, run_cmd, step};

/// Where the unit says the binary is when installed by hand, and where the package puts it.
const MANUAL_BINARY: &str = "/usr/local/bin/enforcer";
const PACKAGED_BINARY: &str = "/usr/bin/enforcer";

#[derive(Debug, Clone)]
pub struct Options {
    /// Cargo profile of the packaged binary (`release` for a real package; the package test
    /// uses `dev`, the binary `cargo xtask test` already built).
    pub profile: String,
    /// Appended to the workspace version as `+SUFFIX` (e.g. `test2` → 0.1.0+test2), so a test
    /// can build a newer package of the same tree.
    pub version_suffix: Option<String>,
    /// Run lintian on the result (on by default).
    pub lintian: bool,
}

/// The target directory: `CARGO_TARGET_DIR` when set (relative to the workspace root), else
/// `target/` of the workspace.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root().join(dir),
        None => root().join("target"),
    }
}

/// The directory cargo writes a profile's binaries into.
fn profile_dir(profile: &str) -> &str {
    match profile {
        "dev" | "test" => "debug",
        "bench" => "release",
        other => other,
    }
}

/// A Debian version may hold these (and `+` separates ours from the suffix).
fn check_suffix(suffix: &str) -> Result<()> {
    let valid = !suffix.is_empty()
        && suffix.len() <= 64
        && suffix.starts_with(|c: char| c.is_ascii_alphanumeric())
        && suffix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '~'));
    if !valid {
        bail!(
            "--version-suffix {suffix:?}: use letters, digits, '.', '+' or '~' (up to 64), \
             starting with a letter or digit"
        );
    }
    Ok(())
}

pub fn run(options: &Options) -> Result<PathBuf> {
    if let Some(suffix) = &options.version_suffix {
        check_suffix(suffix)?;
    }
    step("setup");
    crate::setup::run()?;

    step(&format!(
        "build: cargo build --profile {} -p enforcer",
        options.profile
    ));
    run_cmd(cargo().args(["build", "--profile", &options.profile, "-p", "enforcer"]))?;

    let bin_dir = target_dir().join(profile_dir(&options.profile));
    let assets = bin_dir.join("package");
    step(&format!("assets: {}", assets.display()));
    generate_assets(&bin_dir.join("enforcer"), &assets)?;

    let mut deb = cargo();
    deb.args([
        "deb",
        "-p",
        "enforcer",
        "--no-build",
        "--profile",
        &options.profile,
    ]);
    if options.profile != "release" {
        // A test package: a bigger file, built in a fraction of the time.
        deb.arg("--fast");
    }
    if let Some(suffix) = &options.version_suffix {
        deb.args([
            "--deb-version",
            &format!("{}+{suffix}", env!("CARGO_PKG_VERSION")),
        ]);
    }
    step(&format!("package: {}", describe(&deb)));
    let output = deb
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("starting `{}`", describe(&deb)))?;
    if !output.status.success() {
        bail!("`{}` failed ({})", describe(&deb), output.status);
    }
    // cargo-deb prints the path of the package it wrote.
    let stdout = String::from_utf8_lossy(&output.stdout);
    let path = stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| line.ends_with(".deb"))
        .map(PathBuf::from)
        .with_context(|| format!("cargo-deb printed no .deb path: {stdout}"))?;

    if options.lintian {
        step(&format!("lintian {}", path.display()));
        lintian(&path)?;
    }
    println!("package: {}", path.display());
    Ok(path)
}

/// Man pages (gzipped, as Debian wants), completions and the packaged unit into `dir`.
fn generate_assets(binary: &Path, dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    run_cmd(Command::new(binary).arg("generate-assets").arg(dir))?;
    let man = dir.join("man");
    let mut pages = 0;
    for entry in std::fs::read_dir(&man).with_context(|| format!("reading {}", man.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "1") {
            // -n: no name or time stamp inside, so the package is reproducible.
            run_cmd(Command::new("gzip").arg("-9nf").arg(&path))?;
            pages += 1;
        }
    }
    if pages == 0 {
        bail!(
            "{} wrote no man page into {}",
            binary.display(),
            man.display()
        );
    }

    // A native package's changelog is /usr/share/doc/PACKAGE/changelog.gz.
    let changelog = dir.join("changelog");
    std::fs::copy(root().join("deploy/debian/changelog"), &changelog)
        .with_context(|| format!("copying deploy/debian/changelog to {}", changelog.display()))?;
    run_cmd(Command::new("gzip").arg("-9nf").arg(&changelog))?;

    let source = root().join("deploy/enforcer.service");
    let unit = std::fs::read_to_string(&source)
        .with_context(|| format!("reading {}", source.display()))?;
    let (manual, packaged) = (
        format!("ExecStart={MANUAL_BINARY} "),
        format!("ExecStart={PACKAGED_BINARY} "),
    );
    if unit.matches(&manual).count() != 1 {
        bail!(
            "{}: expected one `{manual}...` line to point at {PACKAGED_BINARY}",
            source.display()
        );
    }
    let unit = unit.replace(&manual, &packaged);
    let target = dir.join("enforcer.service");
    std::fs::write(&target, unit).with_context(|| format!("writing {}", target.display()))?;
    println!("assets: {pages} man pages, 3 completions, the unit");
    Ok(())
}

/// Fails on any error or warning tag that deploy/debian/lintian-overrides does not justify.
fn lintian(deb: &Path) -> Result<()> {
    run_cmd(
        Command::new("lintian")
            .args(["--fail-on", "error,warning", "--display-info"])
            .arg(deb),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_are_debian_version_characters() {
        assert!(check_suffix("test2").is_ok());
        assert!(check_suffix("git20261203.1").is_ok());
        for bad in ["", "-1", "a b", "x/y", "../x", "1_2"] {
            assert!(check_suffix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn profiles_map_to_their_directories() {
        assert_eq!(profile_dir("dev"), "debug");
        assert_eq!(profile_dir("release"), "release");
    }
}
