//! `enforcer history [--json]`: the applied policies the daemon keeps (STATE-DIR/history).

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use super::client;
use crate::control::Request;
use crate::control::protocol::HistoryReply;

/// `history`'s options (the help text is on `Command::History`).
#[derive(Debug, clap::Args)]
#[command(after_help = "Example: enforcer history")]
pub struct HistoryArgs {
    /// Print the daemon's answer as JSON: {"versions": [{"digest", "time", "source", "user",
    /// "current"}]}, oldest first, times in Unix seconds.
    #[arg(long)]
    pub json: bool,
}

pub fn execute(socket: &Path, args: &HistoryArgs) -> ExitCode {
    client::run(socket, &Request::History, args.json, render)
}

fn render(history: &HistoryReply) -> String {
    let mut out = String::new();
    if history.versions.is_empty() {
        out.push_str("no policy recorded yet\n");
        return out;
    }
    let _ = writeln!(
        out,
        "  {:<16}  {:<20}  {:<12}  user",
        "digest", "applied", "source"
    );
    for v in &history.versions {
        let mark = if v.current { '*' } else { ' ' };
        let when = crate::report::clock::format_utc(v.time.saturating_mul(1000));
        let _ = writeln!(
            out,
            "{mark} {:<16}  {:<20}  {:<12}  {}",
            v.digest, when, v.source, v.user
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::protocol::HistoryVersion;

    #[test]
    fn newest_last_with_the_current_marked() {
        let version = |digest: &str, source: &str, current| HistoryVersion {
            digest: digest.into(),
            time: 1_796_299_200,
            source: source.into(),
            user: "root".into(),
            current,
        };
        let text = render(&HistoryReply {
            versions: vec![
                version("00000000000000aa", "start", false),
                version("00000000000000bb", "rules-add", true),
            ],
        });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[1].starts_with("  00000000000000aa  2026-12-03 12:00 UTC"),
            "{text}"
        );
        assert!(lines[2].starts_with("* 00000000000000bb"), "{text}");
        assert!(
            lines[2].contains("rules-add") && lines[2].ends_with("root"),
            "{text}"
        );
    }
}
