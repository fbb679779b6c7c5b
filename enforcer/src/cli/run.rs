//! `enforcer run`: the daemon. Its options and their defaults are declared in
//! [`crate::settings`]; the daemon itself is [`crate::daemon::run`].

use std::path::PathBuf;
use std::process::ExitCode;

pub use crate::settings::RunArgs;
use crate::settings::{Settings, SettingsError};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Daemon(#[from] crate::daemon::DaemonError),
}

/// Runs the daemon; `socket` is the global `--socket`.
pub fn execute(args: RunArgs, socket: Option<PathBuf>) -> Result<ExitCode, RunError> {
    let settings = Settings::for_run(args, socket)?;
    crate::daemon::run(settings)?;
    Ok(ExitCode::SUCCESS)
}
