//! Turning the paths of a policy into the rule files to read.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::yaml::Limits;
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
/// A directory without rule files and a file over the size limit are diagnostics (so that other
/// problems are reported too); anything unreadable stops the load.
pub fn read_sources(
    paths: &[PathBuf],
    diagnostics: &mut Vec<Diagnostic>,
) -> Result<Vec<Source>, PolicyError> {
    let mut sources = Vec::new();
    for path in paths {
        let meta = fs::metadata(path).map_err(|e| io_error(path, e))?;
        if !meta.is_dir() {
            sources.extend(read(path.clone(), false, diagnostics)?);
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
            sources.extend(read(file, managed, diagnostics)?);
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

/// The file's text; a file larger than the parser takes is not read past the limit (it may be
/// growing, or huge), only reported.
fn read(
    path: PathBuf,
    managed: bool,
    diagnostics: &mut Vec<Diagnostic>,
) -> Result<Option<Source>, PolicyError> {
    let limit = Limits::DEFAULT.bytes;
    let file = fs::File::open(&path).map_err(|e| io_error(&path, e))?;
    let mut text = String::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    file.take(cap)
        .read_to_string(&mut text)
        .map_err(|e| io_error(&path, e))?;
    if text.len() > limit {
        diagnostics.push(Diagnostic {
            location: Location {
                path,
                line: 0,
                column: 0,
            },
            message: format!(
                "the file is larger than {} MiB, the limit for a rule file",
                limit >> 20
            ),
        });
        return Ok(None);
    }
    Ok(Some(Source {
        path,
        text,
        managed,
    }))
}

fn io_error(path: &Path, source: std::io::Error) -> PolicyError {
    PolicyError::Io {
        path: path.to_path_buf(),
        source,
    }
}
