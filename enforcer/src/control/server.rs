//! The daemon's side of the control socket.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::unix::OwnedReadHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

use super::{MAX_REQUEST_LINE, Request, Response, handlers};
use crate::connections::{Gate, REQUEST_TIMEOUT, Slot};
use crate::daemon::Daemon;

/// Group that may use the socket besides root, when it exists.
const GROUP: &str = "enforcer";
/// How long a client has to take its answer (the CLI reads it at once).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a request could not be read.
#[derive(Debug, thiserror::Error)]
enum RequestError {
    #[error("no complete request line within {} s", REQUEST_TIMEOUT.as_secs())]
    Timeout,
    #[error("the request is longer than {MAX_REQUEST_LINE} bytes, the limit of one request line")]
    TooLong,
    #[error("reading the request: {0}")]
    Io(std::io::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("--socket {path}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--socket {path}: another daemon is answering on it")]
    InUse { path: PathBuf },
}

/// Binds `path` (mode 0660, group `enforcer` when it exists). Done before capabilities are
/// dropped, since giving the socket to the group needs CAP_CHOWN.
pub fn bind(path: &Path) -> Result<std::os::unix::net::UnixListener, ServerError> {
    let bind_error = |source| ServerError::Bind {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(bind_error)?;
    }
    if path.exists() {
        // A socket nobody answers on is left over from a daemon that died: replace it.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ServerError::InUse {
                path: path.to_path_buf(),
            });
        }
        std::fs::remove_file(path).map_err(bind_error)?;
    }
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(bind_error)?;
    listener.set_nonblocking(true).map_err(bind_error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(bind_error)?;
    set_group(path);
    tracing::info!(socket = %path.display(), "control socket listening");
    Ok(listener)
}

/// Serves requests on `listener`, as many at once as `gate` allows, until the task is aborted.
/// Needs the runtime.
pub fn spawn(
    listener: std::os::unix::net::UnixListener,
    daemon: Daemon,
    gate: Arc<Gate>,
) -> Result<JoinHandle<()>, ServerError> {
    let listener = UnixListener::from_std(listener).map_err(|source| ServerError::Bind {
        path: PathBuf::from("(control socket)"),
        source,
    })?;
    Ok(tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    // Without a slot the connection is closed at once (the gate logs it).
                    if let Some(slot) = gate.admit().await {
                        tokio::spawn(serve(stream, slot, daemon.clone()));
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "control socket accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }))
}

fn set_group(path: &Path) {
    let Some(gid) = crate::sys::group_id(GROUP) else {
        return;
    };
    if let Err(error) = std::os::unix::fs::chown(path, Some(0), Some(gid)) {
        tracing::warn!(%error, "could not give the control socket to group {GROUP}");
    }
}

async fn serve(stream: UnixStream, mut slot: Slot, daemon: Daemon) {
    let user = peer_user(&stream);
    let (read, mut write) = stream.into_split();
    let request = tokio::select! {
        () = slot.closing() => return,
        request = read_request(read) => request,
    };
    if !slot.busy() {
        return;
    }
    let response = match request {
        Ok(None) => return,
        Ok(Some(line)) => match serde_json::from_slice::<Request>(&line) {
            Ok(request) => {
                let handled =
                    tokio::task::spawn_blocking(move || handlers::handle(&daemon, request, &user))
                        .await;
                handled.unwrap_or_else(|e| Response::failure(vec![format!("request failed: {e}")]))
            }
            Err(e) => Response::failure(vec![format!("unreadable request: {e}")]),
        },
        Err(e) => Response::failure(vec![e.to_string()]),
    };
    let mut text = serde_json::to_string(&response).unwrap_or_else(|e| {
        format!("{{\"ok\":false,\"errors\":[\"encoding the response: {e}\"]}}")
    });
    text.push('\n');
    let _ = tokio::time::timeout(ANSWER_TIMEOUT, async {
        write.write_all(text.as_bytes()).await?;
        write.shutdown().await
    })
    .await;
}

/// Who is on the other end (SO_PEERCRED), for the policy history: the user name when the
/// passwd database has one, else the uid; `unknown` when the kernel does not say.
fn peer_user(stream: &UnixStream) -> String {
    match stream.peer_cred() {
        Ok(cred) => crate::sys::user_name(cred.uid()).unwrap_or_else(|| cred.uid().to_string()),
        Err(error) => {
            tracing::warn!(%error, "control connection: no peer credentials");
            "unknown".to_owned()
        }
    }
}

/// The request line (None when the client left without sending one), within REQUEST_TIMEOUT
/// and MAX_REQUEST_LINE. A last line without its newline counts when the client closes after it.
async fn read_request(read: OwnedReadHalf) -> Result<Option<Vec<u8>>, RequestError> {
    let most = u64::try_from(MAX_REQUEST_LINE + 1).unwrap_or(u64::MAX);
    let mut reader = BufReader::new(read.take(most));
    let mut line = Vec::new();
    match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_until(b'\n', &mut line)).await {
        Err(_) => Err(RequestError::Timeout),
        Ok(Err(e)) => Err(RequestError::Io(e)),
        Ok(Ok(0)) => Ok(None),
        Ok(Ok(_)) if !line.ends_with(b"\n") && line.len() > MAX_REQUEST_LINE => {
            Err(RequestError::TooLong)
        }
        Ok(Ok(_)) => Ok(Some(line)),
    }
}
