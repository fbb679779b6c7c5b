//! `enforcer detach`: remove the program, links and pins, with or without a running daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::datapath::attach::{self, AttachError};

pub const DEFAULT_BPFFS: &str = "/sys/fs/bpf/enforcer";

#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("target").required(true).multiple(true))]
#[command(after_help = "Example: enforcer detach --all")]
pub struct DetachArgs {
    /// Interface to detach from (repeatable).
    #[arg(long = "iface", value_name = "IF", group = "target")]
    pub interfaces: Vec<String>,
    /// Detach from every interface and remove all pins (uninstall).
    #[arg(long, group = "target")]
    pub all: bool,
    /// Directory of the pins.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_BPFFS)]
    pub bpffs: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum DetachError {
    #[error(transparent)]
    Attach(#[from] AttachError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no pinned link for interface {0} under the --bpffs directory")]
    NotAttached(String),
}

pub fn execute(args: &DetachArgs) -> Result<ExitCode, DetachError> {
    let pinned = attach::pinned_links(&args.bpffs)?;
    for interface in &args.interfaces {
        if !pinned.iter().any(|(i, _, _)| i == interface) {
            return Err(DetachError::NotAttached(interface.clone()));
        }
    }
    let mut detached = 0;
    for (interface, mode, path) in &pinned {
        if args.all || args.interfaces.contains(interface) {
            attach::detach_link(path)?;
            tracing::info!(interface, mode = mode.as_str(), "detached");
            detached += 1;
        }
    }
    // Without any link the maps enforce nothing: remove them with the last one.
    if args.all || attach::pinned_links(&args.bpffs)?.is_empty() {
        remove_tree(&args.bpffs)?;
    }
    println!("detached {detached} interface(s)");
    Ok(ExitCode::SUCCESS)
}

fn remove_tree(dir: &std::path::Path) -> Result<(), DetachError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(DetachError::Io {
            path: dir.to_path_buf(),
            source,
        }),
    }
}
