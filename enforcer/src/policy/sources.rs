//! Turning the paths of a policy into the rule files to read.

use std::fs;
use std::path::{Path, PathBuf};

use super::{Diagnostic, Location, PolicyError};

/// Written by `enforcer rules add/remove`; its platforms may extend those of other files.
pub const MANAGED_FILE: &str = "enforcer-managed.yaml";

/// A rule file and its text.
pub struct Source {
    pub path: PathBuf,
    pub text: String,
    /// The managed file of a policy directory.
    pub managed: bool,
}

/// Reads every rule file: a file path as given, a directory's `*.yaml` files in name order.
/// A directory without rule files is a diagnostic (so that other problems are reported too);
/// anything unreadable stops the load.
pub fn read_sources(
    paths: &[PathBuf],
    diagnostics: &mut Vec<Diagnostic>,
) -> Result<Vec<Source>, PolicyError> {
    let mut sources = Vec::new();
    for path in paths {
        let meta = fs::metadata(path).map_err(|e| io_error(path, e))?;
        if !meta.is_dir() {
            sources.push(read(path.clone(), false)?);
            continue;
        }
        let files = rule_files(path)?;
        if files.is_empty() {
            diagnostics.push(Diagnostic {
                location: Location {
                    path: path.clone(),
                    line: 0,
                    column: 0,
                },
                message: "directory contains no *.yaml rule files".to_owned(),
            });
        }
        for file in files {
            let managed = file.file_name().is_some_and(|n| n == MANAGED_FILE);
            sources.push(read(file, managed)?);
        }
    }
    Ok(sources)
}

/// The `*.yaml` regular files (symlinks followed) of `dir`, sorted by name. Hidden files are
/// skipped: they are editor swap files and half-written temporaries, not rules.
fn rule_files(dir: &Path) -> Result<Vec<PathBuf>, PolicyError> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
        let path = entry.map_err(|e| io_error(dir, e))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.starts_with('.') || !name.ends_with(".yaml") {
            continue;
        }
        if fs::metadata(&path)
            .map_err(|e| io_error(&path, e))?
            .is_file()
        {
            files.push(path);
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

fn read(path: PathBuf, managed: bool) -> Result<Source, PolicyError> {
    match fs::read_to_string(&path) {
        Ok(text) => Ok(Source {
            path,
            text,
            managed,
        }),
        Err(e) => Err(io_error(&path, e)),
    }
}

fn io_error(path: &Path, source: std::io::Error) -> PolicyError {
    PolicyError::Io {
        path: path.to_path_buf(),
        source,
    }
}
