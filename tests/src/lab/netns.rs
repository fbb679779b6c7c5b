//! Running code inside a network namespace from Rust, without external tools.
//!
//! Network namespace membership is per thread: a fresh thread that calls
//! `setns(CLONE_NEWNET)` lives in the namespace from then on, and every socket it creates
//! belongs to that namespace (and stays there when handed to other threads).

use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use anyhow::{Context as _, Result, bail};

/// Where `ip netns add NAME` bind-mounts the namespace.
pub fn path_of(name: &str) -> PathBuf {
    Path::new("/var/run/netns").join(name)
}

/// Moves the calling thread into the network namespace at `path`.
pub fn enter(path: &Path) -> Result<()> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: a valid descriptor of a namespace file; CLONE_NEWNET only affects this thread.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        bail!(
            "setns({}, CLONE_NEWNET): {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Runs `f` on a new thread inside the namespace at `path` and returns its result. A panic in
/// `f` (a failed assertion) is propagated to the caller.
pub fn run_in<T, F>(path: &Path, f: F) -> Result<T>
where
    T: Send,
    F: FnOnce() -> Result<T> + Send,
{
    std::thread::scope(|scope| {
        let handle = scope.spawn(|| {
            enter(path)?;
            f()
        });
        match handle.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Starts `f` on a named thread inside the namespace at `path`; for long-running servers.
pub fn spawn_in<T, F>(path: PathBuf, name: &str, f: F) -> Result<JoinHandle<Result<T>>>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            enter(&path)?;
            f()
        })
        .context("spawning a namespace thread")
}
