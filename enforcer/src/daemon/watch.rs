//! Noticing that the policy files changed: names, sizes and modification times.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Names, sizes and modification times of a policy's files.
pub type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

/// The fingerprint of `--rules`: the file, or the directory's `*.yaml` files.
pub fn fingerprint(path: &Path) -> Fingerprint {
    let stat = |p: PathBuf| {
        let meta = std::fs::metadata(&p).ok();
        let size = meta.as_ref().map_or(0, std::fs::Metadata::len);
        let modified = meta.and_then(|m| m.modified().ok());
        (p, size, modified)
    };
    if !path.is_dir() {
        return vec![stat(path.to_path_buf())];
    }
    let mut files: Fingerprint = std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.starts_with('.') && n.ends_with(".yaml"))
        })
        .map(stat)
        .collect();
    files.sort();
    files
}
