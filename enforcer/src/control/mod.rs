//! The control socket (`--socket`): one JSON request per line from the CLI, one JSON response
//! per line from the daemon. `status`, `reload`, `explain` and `rules` go through it.

pub mod handlers;
pub mod protocol;
pub mod server;

pub use protocol::{Reply, Request, Response};

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest request line the daemon reads (1 MiB, without its newline). The largest real
/// request, `rules add` with many prefixes, takes at most 21 bytes an IPv4 prefix and 46 an IPv6
/// one: at least 49,000 IPv4 or 22,000 IPv6 prefixes fit. docs/reference.md ("Limits on clients").
pub const MAX_REQUEST_LINE: usize = 1024 * 1024;
/// How long the CLI waits for the daemon (a reload of a large policy takes a while).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

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
    #[error(
        "the request is {size} bytes long, more than the {MAX_REQUEST_LINE} bytes the daemon reads: split it"
    )]
    TooLong { size: usize },
    #[error("the daemon at {path} answered something unreadable: {source}")]
    Decode {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Sends one request and reads its typed reply: `Ok(Err(errors))` when the daemon refused it.
pub fn call<R: Reply>(
    socket: &Path,
    request: &Request,
) -> Result<Result<R, Vec<String>>, ClientError> {
    let response = exchange(socket, request)?;
    if !response.ok {
        return Ok(Err(response.errors));
    }
    serde_json::from_value(response.result)
        .map(Ok)
        .map_err(|source| ClientError::Decode {
            path: socket.to_path_buf(),
            source,
        })
}

/// Sends one request and waits for its response envelope.
fn exchange(socket: &Path, request: &Request) -> Result<Response, ClientError> {
    let io = |source| ClientError::Io {
        path: socket.to_path_buf(),
        source,
    };
    let mut line = serde_json::to_vec(request).map_err(|source| ClientError::Decode {
        path: socket.to_path_buf(),
        source,
    })?;
    if line.len() > MAX_REQUEST_LINE {
        return Err(ClientError::TooLong { size: line.len() });
    }
    line.push(b'\n');
    let mut stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
        path: socket.to_path_buf(),
        source,
    })?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT)).map_err(io)?;
    stream.write_all(&line).map_err(io)?;
    let mut reader = BufReader::new(stream);
    let mut answer = String::new();
    reader.read_line(&mut answer).map_err(io)?;
    serde_json::from_str(&answer).map_err(|source| ClientError::Decode {
        path: socket.to_path_buf(),
        source,
    })
}
