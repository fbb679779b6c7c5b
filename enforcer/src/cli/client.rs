//! Shared by the subcommands that talk to the daemon: send, then print the answer or the errors.

use std::path::Path;
use std::process::ExitCode;

use crate::control::{self, Request, Response};

/// Sends `request`; on success prints `render(result)` (or the JSON result with `json`), on
/// failure every error on stderr. Exit 0 on success, 1 otherwise.
pub fn run(
    socket: &Path,
    request: &Request,
    json: bool,
    render: impl FnOnce(&serde_json::Value) -> String,
) -> ExitCode {
    match control::call(socket, request) {
        Ok(Response {
            ok: true, result, ..
        }) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&result).unwrap_or_default()
                );
            } else {
                print!("{}", render(&result));
            }
            ExitCode::SUCCESS
        }
        Ok(Response { errors, .. }) => {
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

/// A string field of a JSON object, empty when missing.
pub fn text<'a>(value: &'a serde_json::Value, key: &str) -> &'a str {
    value.get(key).and_then(|v| v.as_str()).unwrap_or_default()
}

/// An integer field of a JSON object, 0 when missing.
pub fn number(value: &serde_json::Value, key: &str) -> u64 {
    value.get(key).and_then(|v| v.as_u64()).unwrap_or_default()
}

/// The items of an array field, empty when missing.
pub fn items<'a>(value: &'a serde_json::Value, key: &str) -> &'a [serde_json::Value] {
    value
        .get(key)
        .and_then(|v| v.as_array())
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// A list of strings as `a, b, c`.
pub fn joined(value: &serde_json::Value, key: &str) -> String {
    items(value, key)
        .iter()
        .filter_map(|v| v.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a policy change did, in one line.
pub fn render_change(result: &serde_json::Value) -> String {
    format!(
        "policy applied: {} platforms, {} IPv4 and {} IPv6 prefixes ({} inserted, {} updated, {} removed), digest {}\n",
        number(result, "platforms"),
        number(result, "prefixes_v4"),
        number(result, "prefixes_v6"),
        number(result, "inserted"),
        number(result, "updated"),
        number(result, "removed"),
        text(result, "policy_digest"),
    )
}
