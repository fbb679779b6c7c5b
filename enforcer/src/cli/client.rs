//! Shared by the subcommands that talk to the daemon: send, then print the typed reply or the
//! errors.

use std::path::Path;
use std::process::ExitCode;

use crate::control::protocol::PolicyChange;
use crate::control::{self, Reply, Request};

/// Sends `request`; on success prints `render(reply)` (or the reply as JSON with `json`), on
/// failure every error on stderr. Exit 0 on success, 1 otherwise.
pub fn run<R: Reply>(
    socket: &Path,
    request: &Request,
    json: bool,
    render: impl FnOnce(&R) -> String,
) -> ExitCode {
    run_with_exit(socket, request, json, render, |_| ExitCode::SUCCESS)
}

/// As [`run`], with the exit status of a successful reply given by `exit` (`plan` exits 2 when
/// its reply holds collateral).
pub fn run_with_exit<R: Reply>(
    socket: &Path,
    request: &Request,
    json: bool,
    render: impl FnOnce(&R) -> String,
    exit: impl FnOnce(&R) -> ExitCode,
) -> ExitCode {
    match control::call::<R>(socket, request) {
        Ok(Ok(reply)) => {
            if json {
                match serde_json::to_string_pretty(&reply) {
                    Ok(text) => println!("{text}"),
                    Err(error) => {
                        eprintln!("encoding the answer: {error}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print!("{}", render(&reply));
            }
            exit(&reply)
        }
        Ok(Err(errors)) => {
            for error in errors {
                eprintln!("{error}");
            }
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}

/// What a policy change did, in one line.
pub fn render_change(change: &PolicyChange) -> String {
    format!(
        "policy applied: {} platforms, {} IPv4 and {} IPv6 prefixes ({} inserted, {} updated, {} removed), digest {}\n",
        change.platforms,
        change.prefixes_v4,
        change.prefixes_v6,
        change.inserted,
        change.updated,
        change.removed,
        change.policy_digest,
    )
}
