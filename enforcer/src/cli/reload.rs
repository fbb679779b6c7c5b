//! `enforcer reload`: the daemon re-reads its policy; on any error it keeps the running one.

use std::path::Path;
use std::process::ExitCode;

use super::client;
use crate::control::Request;

pub fn execute(socket: &Path) -> ExitCode {
    client::run(
        socket,
        &Request::Reload { source: None },
        false,
        client::render_change,
    )
}
