//! The control socket (`--socket`): one JSON request per line from the CLI, one JSON response
//! per line from the daemon. `status`, `reload`, `explain` and `rules` go through it.

pub mod handlers;
pub mod server;

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Longest request or response line accepted.
pub const MAX_LINE: usize = 16 * 1024 * 1024;
/// How long the CLI waits for the daemon (a reload of a large policy takes a while).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    Status,
    Reload,
    Explain {
        target: String,
    },
    RulesList,
    RulesAdd {
        platform: String,
        domains: Vec<String>,
        prefixes: Vec<String>,
        action: Option<String>,
    },
    RulesRemove {
        platform: String,
        domains: Vec<String>,
        prefixes: Vec<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default)]
    pub result: serde_json::Value,
    #[serde(default)]
    pub errors: Vec<String>,
}

impl Response {
    pub fn success(result: impl Serialize) -> Self {
        match serde_json::to_value(result) {
            Ok(result) => Self {
                ok: true,
                result,
                errors: Vec::new(),
            },
            Err(e) => Self::failure(vec![format!("encoding the answer: {e}")]),
        }
    }

    pub fn failure(errors: Vec<String>) -> Self {
        Self {
            ok: false,
            result: serde_json::Value::Null,
            errors,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the daemon at {path}: {source} (is `enforcer run` running with this --socket?)"
    )]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("talking to the daemon at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the daemon at {path} answered something unreadable: {source}")]
    Decode {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Sends one request and waits for its response.
pub fn call(socket: &Path, request: &Request) -> Result<Response, ClientError> {
    let io = |source| ClientError::Io {
        path: socket.to_path_buf(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
        path: socket.to_path_buf(),
        source,
    })?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT)).map_err(io)?;
    let mut line = serde_json::to_vec(request).map_err(|source| ClientError::Decode {
        path: socket.to_path_buf(),
        source,
    })?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;
    let mut reader = BufReader::new(stream);
    let mut answer = String::new();
    reader.read_line(&mut answer).map_err(io)?;
    serde_json::from_str(&answer).map_err(|source| ClientError::Decode {
        path: socket.to_path_buf(),
        source,
    })
}
