//! `enforcer top`: a live console view of what the daemon enforces, refreshed every second from
//! the control socket. Rates are the difference of two successive samples. On a terminal it
//! draws with ratatui (crossterm: works over SSH, redraws on resize) until `q`, Esc or Ctrl-C;
//! when stdout is not a terminal (or with `--plain`) it prints a plain table every second, no
//! escape codes. No daemon at start: exit 1. A daemon that stops answering later: the view says
//! so and keeps retrying; plain mode exits 1.

use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Table};

use crate::control::protocol::{TopCounter, TopReply};
use crate::control::{self, Request};
use crate::policy::OTHER_SITE;

/// How often the daemon is asked.
const REFRESH: Duration = Duration::from_secs(1);
/// How long the view waits for a key before it looks for a new sample.
const KEY_POLL: Duration = Duration::from_millis(100);
/// A sample older than this is said to be late.
const STALE: Duration = Duration::from_secs(3);

#[derive(Debug, clap::Args)]
#[command(after_help = "Example: enforcer top --socket /run/enforcer/enforcer.sock")]
pub struct TopArgs {
    /// Print plain text snapshots even on a terminal (the default when stdout is not one).
    #[arg(long)]
    pub plain: bool,
    /// Plain text: stop after N snapshots (each one second after the one before).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Plain text: print one snapshot (rates over one second) and exit; same as --count 1.
    #[arg(long, conflicts_with = "count")]
    pub once: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TopError {
    #[error("the terminal: {0}")]
    Terminal(#[from] std::io::Error),
}

pub fn execute(socket: &Path, args: &TopArgs) -> ExitCode {
    // The first sample decides: no daemon, nothing to show (exit 1, as the other clients).
    let Some(first) = fetch_or_say(socket) else {
        return ExitCode::FAILURE;
    };
    let count = if args.once { Some(1) } else { args.count };
    let plain = args.plain || count.is_some() || !std::io::stdout().is_terminal();
    if plain {
        return plain_loop(socket, first, count);
    }
    match live(socket, first) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("enforcer top: {error}");
            ExitCode::FAILURE
        }
    }
}

/// One reply and when it arrived.
#[derive(Clone, Debug)]
struct Sample {
    reply: TopReply,
    at: Instant,
}

/// Asks the daemon once: its reply and when it arrived, or what went wrong.
fn fetch(socket: &Path) -> Result<Sample, String> {
    let reply = match control::call::<TopReply>(socket, &Request::Top) {
        Ok(Ok(reply)) => reply,
        Ok(Err(errors)) => return Err(errors.join("; ")),
        Err(error) => return Err(error.to_string()),
    };
    Ok(Sample {
        reply,
        at: Instant::now(),
    })
}

/// `fetch` where a failure ends the command: the failure is printed.
fn fetch_or_say(socket: &Path) -> Option<Sample> {
    fetch(socket).map_err(|message| eprintln!("{message}")).ok()
}

/// Plain snapshots every second, `count` of them or until stdout closes. Exit 1 when the
/// daemon stops answering.
fn plain_loop(socket: &Path, first: Sample, count: Option<u64>) -> ExitCode {
    let mut previous = first;
    let mut printed = 0u64;
    while count.is_none_or(|n| printed < n) {
        std::thread::sleep(REFRESH.saturating_sub(previous.at.elapsed()));
        let Some(current) = fetch_or_say(socket) else {
            return ExitCode::FAILURE;
        };
        let screen = Screen::build(Some(&previous), &current);
        let mut out = std::io::stdout().lock();
        // A closed pipe (`| head`) ends the view quietly.
        if out
            .write_all(screen.plain().as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            return ExitCode::SUCCESS;
        }
        previous = current;
        printed += 1;
    }
    ExitCode::SUCCESS
}

/// Per second from two readings of a counter `secs` apart: none for the first sample; a counter
/// that went down was reset (a platform id handed to a new platform, a new daemon) and counts
/// from zero.
pub fn rate(previous: Option<u64>, current: u64, secs: f64) -> Option<f64> {
    let previous = previous?;
    if secs <= 0.0 {
        return None;
    }
    let delta = if current >= previous {
        current - previous
    } else {
        current
    };
    // Counters stay far below 2^53 in any real run; precision beyond that does not matter.
    #[allow(clippy::cast_precision_loss)]
    Some(delta as f64 / secs)
}

/// `1.5`, `250`, `1.2k`, `3.4M`; `-` when unknown (the first sample).
pub fn human(value: Option<f64>) -> String {
    let Some(v) = value else {
        return "-".to_owned();
    };
    let v = v.max(0.0);
    if v == 0.0 {
        return "0".to_owned();
    }
    for (scale, suffix) in [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")] {
        if v >= scale {
            return format!("{:.1}{suffix}", v / scale);
        }
    }
    if v < 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// Bytes per second: `0 B/s`, `512 B/s`, `1.5 kB/s`, `3.0 MB/s`; `-` when unknown.
pub fn human_bytes(value: Option<f64>) -> String {
    let Some(v) = value else {
        return "-".to_owned();
    };
    let v = v.max(0.0);
    for (scale, unit) in [(1e12, "TB/s"), (1e9, "GB/s"), (1e6, "MB/s"), (1e3, "kB/s")] {
        if v >= scale {
            return format!("{:.1} {unit}", v / scale);
        }
    }
    format!("{v:.0} B/s")
}

/// `12s`, `3m 05s`, `2h 07m`, `4d 02h`.
pub fn age(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3_600 => format!("{}m {:02}s", secs / 60, secs % 60),
        3_600..86_400 => format!("{}h {:02}m", secs / 3_600, secs % 3_600 / 60),
        _ => format!("{}d {:02}h", secs / 86_400, secs % 86_400 / 3_600),
    }
}

/// `22:40:07 UTC` of Unix milliseconds.
fn clock(millis: u64) -> String {
    let (_, _, _, h, mi) = crate::report::clock::utc(millis);
    format!("{h:02}:{mi:02}:{:02} UTC", millis / 1000 % 60)
}

/// One titled table of the view.
#[derive(Clone, Debug, PartialEq)]
pub struct Section {
    pub title: String,
    pub header: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
    /// Said instead of the table when it has no rows.
    pub empty: &'static str,
}

/// What one refresh shows, independent of the layout: the TUI and the plain text draw it.
#[derive(Clone, Debug, PartialEq)]
pub struct Screen {
    pub summary: Vec<String>,
    pub sections: Vec<Section>,
}

/// Sum of the counters of `action` (all actions but drop with `pass`) in `direction` (both when
/// none).
fn total(counters: &[TopCounter], drop: bool, direction: Option<&str>, bytes: bool) -> u64 {
    counters
        .iter()
        .filter(|c| (c.action == "drop") == drop)
        .filter(|c| direction.is_none_or(|d| c.direction == d))
        .map(|c| if bytes { c.bytes } else { c.packets })
        .sum()
}

impl Screen {
    /// The view of `current`, with rates against `previous` (none: the first sample).
    fn build(previous: Option<&Sample>, current: &Sample) -> Self {
        let secs = previous.map_or(0.0, |p| current.at.duration_since(p.at).as_secs_f64());
        Self::from_replies(previous.map(|p| &p.reply), &current.reply, secs)
    }

    pub fn from_replies(previous: Option<&TopReply>, now: &TopReply, secs: f64) -> Self {
        let now_secs = now.time_ms / 1000;
        let mut summary = Vec::new();
        summary.push(format!(
            "policy {}   at {}",
            now.policy_digest,
            clock(now.time_ms)
        ));
        let interfaces: Vec<String> = now
            .interfaces
            .iter()
            .map(|i| format!("{} ({}, {})", i.name, i.mode, i.role))
            .collect();
        summary.push(format!("interfaces: {}", interfaces.join(", ")));
        let last = now.resolver.last_success.map_or_else(
            || "never".to_owned(),
            |t| format!("{} ago", age(now_secs.saturating_sub(t))),
        );
        summary.push(format!(
            "resolver: {}, last answer {last}",
            if now.resolver.ok { "ok" } else { "FAILING" }
        ));
        let unmatched_now: u64 = now.passed.iter().map(|p| p.packets).sum();
        let unmatched_before = previous.map(|p| p.passed.iter().map(|p| p.packets).sum());
        let blocked_now: u64 = now.platforms.iter().map(|p| p.dns_blocked).sum();
        let blocked_before = previous.map(|p| p.platforms.iter().map(|p| p.dns_blocked).sum());
        summary.push(format!(
            "unmatched passed: {} pkt/s   DNS blocked: {} /s",
            human(rate(unmatched_before, unmatched_now, secs)),
            human(rate(blocked_before, blocked_now, secs)),
        ));

        let mut platforms = Section {
            title: "platforms (per second; out = egress, in = ingress)".to_owned(),
            header: vec![
                "platform",
                "action",
                "drop out",
                "drop in",
                "drop bytes",
                "pass out",
                "pass in",
                "pass bytes",
                "dns blocks",
                "dropped",
            ],
            rows: Vec::new(),
            empty: "no policy loaded",
        };
        for p in &now.platforms {
            let before =
                previous.and_then(|r| r.platforms.iter().find(|q| q.platform == p.platform));
            let r = |drop: bool, direction: Option<&str>, bytes: bool| {
                rate(
                    before.map(|b| total(&b.counters, drop, direction, bytes)),
                    total(&p.counters, drop, direction, bytes),
                    secs,
                )
            };
            platforms.rows.push(vec![
                p.platform.clone(),
                p.action.clone(),
                human(r(true, Some("egress"), false)),
                human(r(true, Some("ingress"), false)),
                human_bytes(r(true, None, true)),
                human(r(false, Some("egress"), false)),
                human(r(false, Some("ingress"), false)),
                human_bytes(r(false, None, true)),
                human(rate(before.map(|b| b.dns_blocked), p.dns_blocked, secs)),
                total(&p.counters, true, None, false).to_string(),
            ]);
        }

        let mut sites = Section {
            title: "sites (per second)".to_owned(),
            header: vec!["site", "platform", "stage", "packets", "bytes", "total"],
            rows: Vec::new(),
            empty: "no sites configured: every client is site other",
        };
        if now.sites.iter().any(|s| s.site != OTHER_SITE) {
            for s in &now.sites {
                let before = previous.and_then(|r| {
                    r.sites
                        .iter()
                        .find(|q| q.site == s.site && q.platform == s.platform)
                });
                sites.rows.push(vec![
                    s.site.clone(),
                    s.platform.clone(),
                    s.action.clone(),
                    human(rate(before.map(|b| b.packets), s.packets, secs)),
                    human_bytes(rate(before.map(|b| b.bytes), s.bytes, secs)),
                    s.packets.to_string(),
                ]);
            }
        }

        let learned = Section {
            title: "recently learned names".to_owned(),
            header: vec!["name", "platform", "address", "when"],
            rows: now
                .learned
                .iter()
                .map(|l| {
                    vec![
                        l.name.clone(),
                        l.platform.clone(),
                        l.address.clone(),
                        format!("{} ago", age(now_secs.saturating_sub(l.time))),
                    ]
                })
                .collect(),
            empty: "none learned yet",
        };
        let maps = Section {
            title: "map fill".to_owned(),
            header: vec!["map", "entries", "capacity", "fill"],
            rows: now
                .maps
                .iter()
                .map(|m| {
                    // A ratio for display: precision loss is irrelevant.
                    #[allow(clippy::cast_precision_loss)]
                    let fill = if m.capacity == 0 {
                        0.0
                    } else {
                        m.entries as f64 * 100.0 / m.capacity as f64
                    };
                    vec![
                        m.map.clone(),
                        m.entries.to_string(),
                        m.capacity.to_string(),
                        format!("{fill:.1}%"),
                    ]
                })
                .collect(),
            empty: "no maps",
        };
        Self {
            summary,
            sections: vec![platforms, sites, learned, maps],
        }
    }

    /// Aligned plain text, no escape codes.
    pub fn plain(&self) -> String {
        let mut out = String::new();
        for line in &self.summary {
            let _ = writeln!(out, "{line}");
        }
        for section in &self.sections {
            let _ = writeln!(out, "\n{}", section.title);
            if section.rows.is_empty() {
                let _ = writeln!(out, "  {}", section.empty);
                continue;
            }
            let widths = section.widths();
            let mut line = |cells: Vec<&str>| {
                let mut text = String::new();
                for (i, cell) in cells.iter().enumerate() {
                    let width = widths.get(i).copied().unwrap_or(0);
                    // Names to the left, numbers to the right.
                    if i < section.left_columns() {
                        let _ = write!(text, "  {cell:<width$}");
                    } else {
                        let _ = write!(text, "  {cell:>width$}");
                    }
                }
                let _ = writeln!(out, "{}", text.trim_end());
            };
            line(section.header.clone());
            for row in &section.rows {
                line(row.iter().map(String::as_str).collect());
            }
        }
        out.push('\n');
        out
    }
}

impl Section {
    /// Widest cell of each column, header included.
    fn widths(&self) -> Vec<usize> {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        widths
    }

    /// How many leading columns hold names (left-aligned); the rest hold numbers.
    fn left_columns(&self) -> usize {
        match self.header.first().copied() {
            Some("platform") => 2,
            Some("site") => 3,
            Some("name") => 3,
            _ => 1,
        }
    }
}

/// Restores the terminal however the view ends (ratatui's panic hook covers panics).
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// What the live view holds between frames.
struct Live {
    socket: PathBuf,
    previous: Option<Sample>,
    current: Sample,
    /// The last failure, while the daemon does not answer.
    error: Option<String>,
}

fn live(socket: &Path, first: Sample) -> Result<(), TopError> {
    let (sender, samples) = mpsc::channel();
    let worker_socket = socket.to_path_buf();
    // The daemon is asked from a thread of its own: a slow answer never blocks `q`.
    std::thread::spawn(move || {
        let mut next = Instant::now() + REFRESH;
        loop {
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
            // From now, not from the plan: a slow answer is not followed by a burst.
            next = Instant::now() + REFRESH;
            if sender.send(fetch(&worker_socket)).is_err() {
                return;
            }
        }
    });
    let mut terminal = ratatui::try_init()?;
    let _restore = Restore;
    let mut view = Live {
        socket: socket.to_path_buf(),
        previous: None,
        current: first,
        error: None,
    };
    loop {
        terminal.draw(|frame| view.draw(frame))?;
        if event::poll(KEY_POLL)? {
            match event::read()? {
                Event::Key(key) if quits(key) => return Ok(()),
                // The next draw takes the new size.
                Event::Resize(..) => terminal.autoresize()?,
                _ => {}
            }
        }
        while let Ok(sample) = samples.try_recv() {
            match sample {
                Ok(sample) => {
                    view.previous = Some(std::mem::replace(&mut view.current, sample));
                    view.error = None;
                }
                Err(message) => view.error = Some(message),
            }
        }
    }
}

/// `q`, Esc or Ctrl-C (raw mode turns Ctrl-C into a key, not a signal).
fn quits(key: KeyEvent) -> bool {
    let ctrl_c = key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL);
    key.kind != KeyEventKind::Release
        && (ctrl_c || matches!(key.code, KeyCode::Char('q' | 'Q') | KeyCode::Esc))
}

impl Live {
    fn draw(&self, frame: &mut ratatui::Frame<'_>) {
        let screen = Screen::build(self.previous.as_ref(), &self.current);
        let bold = Style::default().add_modifier(Modifier::BOLD);
        let mut head: Vec<Line<'_>> = vec![Line::styled(
            format!("enforcer top — {}", self.socket.display()),
            bold,
        )];
        head.extend(screen.summary.iter().map(|s| Line::raw(s.as_str())));
        match &self.error {
            Some(message) => head.push(Line::styled(
                format!("NO ANSWER from the daemon (retrying every second): {message}"),
                bold.fg(Color::Red),
            )),
            // An answer that is late (the daemon busy with a large reload) is said too.
            None if self.current.at.elapsed() > STALE => head.push(Line::styled(
                format!(
                    "waiting for the daemon: last answer {} ago",
                    age(self.current.at.elapsed().as_secs())
                ),
                bold.fg(Color::Yellow),
            )),
            None => head.push(Line::raw("q, Esc or Ctrl-C quits; refreshed every second")),
        }
        let [platforms, sites, learned, maps] = screen.sections.as_slice() else {
            return;
        };
        let height = |s: &Section| u16::try_from(s.rows.len().max(1) + 3).unwrap_or(u16::MAX);
        let head_height = u16::try_from(head.len()).unwrap_or(u16::MAX);
        // Platforms and sites as tall as their rows; learned names and maps take the rest.
        let [top, body, sites_area, bottom] = Layout::vertical([
            Constraint::Length(head_height),
            Constraint::Length(height(platforms)),
            Constraint::Length(height(sites).min(12)),
            Constraint::Min(height(maps)),
        ])
        .areas(frame.area());
        frame.render_widget(Paragraph::new(head), top);
        table(frame, platforms, body);
        table(frame, sites, sites_area);
        let [left, right] =
            Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)])
                .areas(bottom);
        table(frame, learned, left);
        table(frame, maps, right);
    }
}

/// A section as a bordered table, columns as wide as their widest cell.
fn table(frame: &mut ratatui::Frame<'_>, section: &Section, area: Rect) {
    let block = Block::bordered().title(section.title.as_str());
    if section.rows.is_empty() {
        frame.render_widget(Paragraph::new(section.empty).block(block), area);
        return;
    }
    let widths = section
        .widths()
        .into_iter()
        .map(|w| Constraint::Length(u16::try_from(w).unwrap_or(u16::MAX)));
    let rows = section
        .rows
        .iter()
        .map(|r| Row::new(r.iter().map(String::as_str)));
    let header = Row::new(section.header.iter().copied())
        .style(Style::default().add_modifier(Modifier::BOLD));
    frame.render_widget(
        Table::new(rows, widths)
            .header(header)
            .column_spacing(2)
            .block(block),
        area,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::protocol::{
        InterfaceStatus, ResolverStatus, SiteStatus, TopLearned, TopMap, TopPassed, TopPlatform,
    };

    fn reply(time_ms: u64, dropped_out: u64, dns_blocked: u64) -> TopReply {
        let counter = |action: &str, direction: &str, packets: u64| TopCounter {
            action: action.into(),
            direction: direction.into(),
            packets,
            bytes: packets * 100,
        };
        TopReply {
            time_ms,
            interfaces: vec![InterfaceStatus {
                name: "eth0".into(),
                mode: "skb".into(),
                role: "inside".into(),
            }],
            policy_digest: "00ff00ff00ff00ff".into(),
            resolver: ResolverStatus {
                ok: true,
                last_success: Some(time_ms / 1000 - 65),
            },
            platforms: vec![TopPlatform {
                platform: "a-very-long-platform-name".into(),
                action: "drop".into(),
                counters: vec![
                    counter("drop", "egress", dropped_out),
                    counter("drop", "ingress", 7),
                    counter("monitor", "egress", 0),
                ],
                dns_blocked,
            }],
            sites: vec![SiteStatus {
                site: "other".into(),
                platform: "a-very-long-platform-name".into(),
                action: "drop".into(),
                packets: dropped_out + 7,
                bytes: (dropped_out + 7) * 100,
            }],
            passed: vec![TopPassed {
                reason: "no_match".into(),
                packets: 0,
                bytes: 0,
            }],
            learned: vec![TopLearned {
                name: "x.media.example".into(),
                platform: "media".into(),
                address: "198.19.10.1".into(),
                time: time_ms / 1000 - 5,
            }],
            maps: vec![TopMap {
                map: "prefixes_v4".into(),
                entries: 250,
                capacity: 1000,
            }],
        }
    }

    #[test]
    fn q_esc_and_ctrl_c_quit_other_keys_do_not() {
        let key = |code, modifiers| KeyEvent::new(code, modifiers);
        assert!(quits(key(KeyCode::Char('q'), KeyModifiers::NONE)));
        assert!(quits(key(KeyCode::Esc, KeyModifiers::NONE)));
        assert!(quits(key(KeyCode::Char('c'), KeyModifiers::CONTROL)));
        assert!(!quits(key(KeyCode::Char('c'), KeyModifiers::NONE)));
        assert!(!quits(key(KeyCode::Char('x'), KeyModifiers::NONE)));
        let mut release = key(KeyCode::Char('q'), KeyModifiers::NONE);
        release.kind = KeyEventKind::Release;
        assert!(!quits(release));
    }

    #[test]
    fn rates_need_two_samples_and_survive_a_reset() {
        // First sample: no rate yet, not a made-up zero.
        assert_eq!(rate(None, 500, 1.0), None);
        assert_eq!(rate(Some(100), 600, 2.0), Some(250.0));
        // A counter that went down was reset (a reload handed its id to a new platform, or a
        // new daemon): what it counted since counts, never a negative or huge rate.
        assert_eq!(rate(Some(10_000), 40, 1.0), Some(40.0));
        assert_eq!(rate(Some(5), 5, 0.0), None);
    }

    #[test]
    fn numbers_read_the_same_whatever_the_size() {
        assert_eq!(human(None), "-");
        assert_eq!(human(Some(0.0)), "0");
        assert_eq!(human(Some(2.54)), "2.5");
        assert_eq!(human(Some(499.6)), "500");
        assert_eq!(human(Some(1_250.0)), "1.2k");
        assert_eq!(human(Some(3_400_000.0)), "3.4M");
        assert_eq!(human_bytes(Some(512.0)), "512 B/s");
        assert_eq!(human_bytes(Some(1_500.0)), "1.5 kB/s");
        assert_eq!(human_bytes(Some(2_000_000.0)), "2.0 MB/s");
        assert_eq!(human_bytes(None), "-");
        assert_eq!(age(5), "5s");
        assert_eq!(age(65), "1m 05s");
        assert_eq!(age(7_260), "2h 01m");
        assert_eq!(age(180_000), "2d 02h");
    }

    #[test]
    fn the_first_view_has_no_rates_the_second_has() {
        let first = reply(1_796_299_200_000, 1_000, 3);
        let screen = Screen::from_replies(None, &first, 0.0);
        let row = &screen.sections[0].rows[0];
        assert_eq!(row[0], "a-very-long-platform-name");
        assert_eq!(row[2], "-", "{row:?}");
        // The total is known from the first sample.
        assert_eq!(row[9], "1007");
        let second = reply(1_796_299_202_000, 1_500, 5);
        let screen = Screen::from_replies(Some(&first), &second, 2.0);
        let row = &screen.sections[0].rows[0];
        // 500 packets out in 2 s; nothing new in; 500 packets of 100 bytes; 2 blocks in 2 s.
        assert_eq!(
            row[2..9],
            ["250", "0", "25.0 kB/s", "0", "0", "0 B/s", "1.0"],
            "{row:?}"
        );
        assert!(
            screen
                .summary
                .contains(&"resolver: ok, last answer 1m 05s ago".to_owned()),
            "{:?}",
            screen.summary
        );
        assert_eq!(screen.sections[2].rows[0][3], "5s ago");
        assert_eq!(screen.sections[3].rows[0][1..], ["250", "1000", "25.0%"]);
        // Without named sites the site table says so rather than repeat the platforms.
        assert!(screen.sections[1].rows.is_empty());
    }

    #[test]
    fn plain_text_is_aligned_and_has_no_escape_codes() {
        let first = reply(1_796_299_200_000, 1_000, 3);
        let second = reply(1_796_299_201_000, 1_100, 3);
        let text = Screen::from_replies(Some(&first), &second, 1.0).plain();
        assert!(!text.contains('\u{1b}'), "{text}");
        let lines: Vec<&str> = text.lines().collect();
        let head = lines
            .iter()
            .position(|l| l.trim_start().starts_with("platform "))
            .unwrap();
        let (header, row) = (lines[head], lines[head + 1]);
        // Right-aligned numbers end under the end of their heading.
        let end = |line: &str, word: &str| line.find(word).map(|i| i + word.len());
        assert_eq!(end(header, "drop out"), end(row, "100"), "{text}");
        assert!(
            row.starts_with("  a-very-long-platform-name  drop"),
            "{text}"
        );
        assert!(text.contains("no sites configured"), "{text}");
        assert!(text.contains("x.media.example"), "{text}");
    }
}
