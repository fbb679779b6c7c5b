//! The daemon's side of the control socket.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

use super::{MAX_LINE, Request, Response, handlers};
use crate::daemon::Daemon;

/// Group that may use the socket besides root, when it exists.
const GROUP: &str = "enforcer";

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

/// Serves requests on `listener` until the task is aborted. Needs the runtime.
pub fn spawn(
    listener: std::os::unix::net::UnixListener,
    daemon: Daemon,
) -> Result<JoinHandle<()>, ServerError> {
    let listener = UnixListener::from_std(listener).map_err(|source| ServerError::Bind {
        path: PathBuf::from("(control socket)"),
        source,
    })?;
    Ok(tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(serve(stream, daemon.clone()));
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

async fn serve(stream: UnixStream, daemon: Daemon) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read.take(MAX_LINE as u64));
    let mut line = String::new();
    let response = match reader.read_line(&mut line).await {
        Ok(0) => return,
        Ok(_) => match serde_json::from_str::<Request>(&line) {
            Ok(request) => {
                let handled =
                    tokio::task::spawn_blocking(move || handlers::handle(&daemon, request)).await;
                handled.unwrap_or_else(|e| Response::failure(vec![format!("request failed: {e}")]))
            }
            Err(e) => Response::failure(vec![format!("unreadable request: {e}")]),
        },
        Err(e) => Response::failure(vec![format!("reading the request: {e}")]),
    };
    let mut text = serde_json::to_string(&response).unwrap_or_else(|e| {
        format!("{{\"ok\":false,\"errors\":[\"encoding the response: {e}\"]}}")
    });
    text.push('\n');
    let _ = write.write_all(text.as_bytes()).await;
    let _ = write.shutdown().await;
}
