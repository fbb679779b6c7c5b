//! Making sure the pin directory lives on a BPF filesystem.

use std::io;
use std::path::Path;

use crate::sys;

/// `f_type` of a BPF filesystem (linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

#[derive(Debug, thiserror::Error)]
pub enum BpffsError {
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("--bpffs {0} has no parent directory to mount a BPF filesystem on")]
    NoParent(String),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> BpffsError + '_ {
    move |source| BpffsError::Io {
        path: path.display().to_string(),
        source,
    }
}

pub fn is_bpffs(path: &Path) -> Result<bool, BpffsError> {
    Ok(sys::statfs_type(path).map_err(io_at(path))? == BPF_FS_MAGIC)
}

/// Creates `dir`, mounting a BPF filesystem on its parent first when the parent is not one.
/// Returns whether a mount was made.
pub fn ensure(dir: &Path) -> Result<bool, BpffsError> {
    let parent = dir
        .parent()
        .ok_or_else(|| BpffsError::NoParent(dir.display().to_string()))?;
    std::fs::create_dir_all(parent).map_err(io_at(parent))?;
    let mut mounted = false;
    if !is_bpffs(parent)? {
        sys::mount_bpffs(parent).map_err(io_at(parent))?;
        mounted = true;
        if private_mount_namespace() {
            tracing::warn!(
                mount = %parent.display(),
                "mounted a BPF filesystem inside a private mount namespace (as under `ip netns exec`): \
                 pins die with this namespace, so enforcement will not outlive the daemon; \
                 pass --bpffs on a BPF filesystem mounted in the host namespace"
            );
        } else {
            tracing::info!(mount = %parent.display(), "mounted a BPF filesystem");
        }
    }
    std::fs::create_dir_all(dir).map_err(io_at(dir))?;
    Ok(mounted)
}

/// True when this process does not share PID 1's mount namespace.
fn private_mount_namespace() -> bool {
    match (
        std::fs::read_link("/proc/self/ns/mnt"),
        std::fs::read_link("/proc/1/ns/mnt"),
    ) {
        (Ok(own), Ok(init)) => own != init,
        _ => false,
    }
}
