//! Finding and running the real `enforcer` binary.

use std::path::PathBuf;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

/// The `enforcer` binary: `ENFORCER_BIN` when set, else the one cargo built next to the running
/// executable (target/<profile>/deps/<test> or target/<profile>/<bin> → target/<profile>/enforcer).
pub fn enforcer_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("ENFORCER_BIN") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("ENFORCER_BIN={} does not exist", path.display());
        }
        return Ok(path);
    }
    let exe = std::env::current_exe().context("locating the running executable")?;
    let mut dir = exe
        .parent()
        .context("the running executable has no directory")?
        .to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    let path = dir.join("enforcer");
    if !path.is_file() {
        bail!(
            "{} not found: run `cargo build -p enforcer` first (same profile as the tests), \
             or set ENFORCER_BIN",
            path.display()
        );
    }
    Ok(path)
}

/// A running daemon process and its log file.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap_or(i32::MAX)
    }

    pub fn signal(&self, signal: i32) -> Result<()> {
        // SAFETY: plain kill(2) on our own child, which has not been reaped yet.
        if unsafe { libc::kill(self.pid(), signal) } != 0 {
            let error = std::io::Error::last_os_error();
            bail!("kill({}, {signal}): {error}", self.pid());
        }
        Ok(())
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().context("waiting for the daemon")? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The log so far (stdout and stderr together).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
