//! Rewriting a rule file for a feed: only the value of the feed-managed entry's `prefixes` and
//! the `data-date` value change; every other byte (comments, other entries, layout) is kept. The
//! spans come from the positions the YAML parser reports.

use std::fmt::Write as _;
use std::ops::Range;

use ipnet::IpNet;

use crate::policy::DataDate;
use crate::policy::yaml::{self, Node, Pos, Value};

use super::FeedError;

/// Where a file's feed-managed prefixes and `data-date` are written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spans {
    /// The `prefixes` value of the feed-managed entry (`[...]`, or the block list from its
    /// first dash to the end of its last item's line).
    prefixes: Range<usize>,
    /// `Some(indent)` for a block list, whose items go one a line with this indentation.
    block_indent: Option<String>,
    /// The `data-date` value, when the file has one.
    data_date: Option<Range<usize>>,
    /// Where a new `data-date` line goes (the start of the `feed` key's line) and its indent.
    feed_line: (usize, String),
}

fn rewrite_error(why: impl Into<String>) -> FeedError {
    FeedError::Rewrite(why.into())
}

/// Byte offsets of positions in one text.
struct Offsets<'a> {
    text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> Offsets<'a> {
    fn new(text: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Offsets { text, line_starts }
    }

    /// The byte offset of a position (line from 1, column from 1 in characters).
    fn of(&self, pos: Pos) -> Option<usize> {
        let start = *self.line_starts.get(pos.line.checked_sub(1)?)?;
        let line = &self.text[start..];
        let (at, _) = line.char_indices().nth(pos.column.checked_sub(1)?)?;
        Some(start + at)
    }

    /// The whitespace before `offset` on its line.
    fn indent(&self, offset: usize) -> &'a str {
        let start = self.text[..offset].rfind('\n').map_or(0, |i| i + 1);
        &self.text[start..offset]
    }
}

/// The end of the scalar starting at `start`: after its closing quote, or the end of a plain
/// scalar (before a comment, a flow indicator or the end of the line; trailing blanks left).
fn scalar_end(text: &str, start: usize, in_flow: bool) -> Option<usize> {
    let rest = &text[start..];
    let mut chars = rest.char_indices();
    match chars.next()? {
        (_, '"') => {
            let mut escaped = false;
            for (i, c) in chars {
                match c {
                    '\\' if !escaped => escaped = true,
                    '"' if !escaped => return Some(start + i + 1),
                    _ => escaped = false,
                }
            }
            None
        }
        (_, '\'') => {
            let bytes = rest.as_bytes();
            let mut i = 1;
            while i < bytes.len() {
                if bytes[i] == b'\'' {
                    if bytes.get(i + 1) == Some(&b'\'') {
                        i += 2;
                        continue;
                    }
                    return Some(start + i + 1);
                }
                i += 1;
            }
            None
        }
        _ => {
            let mut end = rest.len();
            let mut previous = ' ';
            for (i, c) in rest.char_indices() {
                let stop = c == '\n'
                    || (c == '#' && previous.is_whitespace())
                    || (in_flow && matches!(c, ',' | ']' | '}'));
                if stop {
                    end = i;
                    break;
                }
                previous = c;
            }
            Some(start + rest[..end].trim_end().len())
        }
    }
}

/// The end of the flow sequence whose `[` is at `start` (after its `]`), skipping quoted
/// scalars and comments.
fn flow_end(text: &str, start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = start;
    let mut previous = ' ';
    while i < text.len() {
        let c = text[i..].chars().next()?;
        match c {
            '"' | '\'' => {
                i = scalar_end(text, i, true)?;
                previous = c;
                continue;
            }
            '#' if previous.is_whitespace() => {
                i = text[i..].find('\n').map_or(text.len(), |n| i + n);
                continue;
            }
            '[' | '{' => depth += 1,
            ']' | '}' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
        previous = c;
        i += c.len_utf8();
    }
    None
}

fn key<'n>(pairs: &'n [(Node, Node)], name: &str) -> Option<(&'n Node, &'n Node)> {
    pairs
        .iter()
        .find(|(k, _)| k.as_str() == Some(name))
        .map(|(k, v)| (k, v))
}

/// Finds the feed-managed entry (the first `match` item with `prefixes` and neither `protocol`
/// nor `ports`) and `data-date` of a rule file.
pub fn spans(text: &str) -> Result<Spans, FeedError> {
    let documents = yaml::parse(text).map_err(|e| rewrite_error(e.message))?;
    let root = documents
        .first()
        .map(|d| &d.root)
        .ok_or_else(|| rewrite_error("the file is empty"))?;
    let Value::Map(pairs) = &root.value else {
        return Err(rewrite_error("the file is not a platform mapping"));
    };
    let offsets = Offsets::new(text);
    let at = |pos: Pos| {
        offsets
            .of(pos)
            .ok_or_else(|| rewrite_error(format!("no text at line {}", pos.line)))
    };
    let (feed_key, _) = key(pairs, "feed").ok_or_else(|| rewrite_error("the file has no feed"))?;
    let feed_at = at(feed_key.pos)?;
    let feed_line_start = text[..feed_at].rfind('\n').map_or(0, |i| i + 1);
    let feed_line = (feed_line_start, offsets.indent(feed_at).to_owned());

    let data_date = match key(pairs, "data-date") {
        Some((_, value)) if !value.is_null() => {
            let start = at(value.pos)?;
            let end = scalar_end(text, start, false)
                .ok_or_else(|| rewrite_error("unterminated `data-date`"))?;
            Some(start..end)
        }
        _ => None,
    };

    let Some((
        _,
        Node {
            value: Value::Seq(items),
            ..
        },
    )) = key(pairs, "match")
    else {
        return Err(rewrite_error("the file has no `match` list"));
    };
    let managed = items.iter().find_map(|item| match &item.value {
        Value::Map(entry) if key(entry, "protocol").is_none() && key(entry, "ports").is_none() => {
            key(entry, "prefixes").map(|(_, v)| v)
        }
        _ => None,
    });
    let Some(
        list @ Node {
            value: Value::Seq(prefixes),
            ..
        },
    ) = managed
    else {
        return Err(FeedError::NoManagedEntry);
    };
    let start = at(list.pos)?;
    let (end, block_indent) = if text[start..].starts_with('[') {
        let end = flow_end(text, start).ok_or_else(|| rewrite_error("unterminated `[`"))?;
        (end, None)
    } else {
        let last = prefixes
            .last()
            .ok_or_else(|| rewrite_error("the feed-managed list is empty"))?;
        let last_at = at(last.pos)?;
        let end =
            scalar_end(text, last_at, false).ok_or_else(|| rewrite_error("unterminated prefix"))?;
        // A comment after the last item was about that item: it goes with the old list.
        let end = text[end..].find('\n').map_or(text.len(), |n| end + n);
        (end, Some(offsets.indent(start).to_owned()))
    };
    Ok(Spans {
        prefixes: start..end,
        block_indent,
        data_date,
        feed_line,
    })
}

/// IPv6 prefixes are quoted, as the shipped files write them (a plain scalar with colons reads
/// badly and invites mistakes).
fn item(net: &IpNet) -> String {
    match net {
        IpNet::V4(_) => net.to_string(),
        IpNet::V6(_) => format!("\"{net}\""),
    }
}

/// The new list in the style of the old one: flow (`[a, b]`) or block (one `- a` a line).
fn list(prefixes: &[IpNet], block_indent: Option<&str>) -> String {
    match block_indent {
        None => format!(
            "[{}]",
            prefixes.iter().map(item).collect::<Vec<_>>().join(", ")
        ),
        Some(indent) => prefixes
            .iter()
            .map(|p| format!("- {}", item(p)))
            .collect::<Vec<_>>()
            .join(&format!("\n{indent}")),
    }
}

/// `text` with the feed-managed prefixes replaced by `prefixes` (in that order; `None` leaves
/// them) and `data-date` set to `date` (added before the `feed` key when missing).
pub fn rewrite(
    text: &str,
    prefixes: Option<&[IpNet]>,
    date: Option<DataDate>,
) -> Result<String, FeedError> {
    let spans = spans(text)?;
    let mut edits: Vec<(Range<usize>, String)> = Vec::new();
    if let Some(prefixes) = prefixes {
        edits.push((
            spans.prefixes.clone(),
            list(prefixes, spans.block_indent.as_deref()),
        ));
    }
    match (date, &spans.data_date) {
        (Some(date), Some(range)) => edits.push((range.clone(), date.to_string())),
        (Some(date), None) => {
            let (at, indent) = &spans.feed_line;
            let mut line = String::new();
            let _ = writeln!(line, "{indent}data-date: {date}");
            edits.push((*at..*at, line));
        }
        (None, _) => {}
    }
    // Edits from the end, so the earlier offsets stay valid.
    edits.sort_by_key(|(range, _)| std::cmp::Reverse(range.start));
    let mut out = text.to_owned();
    for (range, replacement) in edits {
        out.replace_range(range, &replacement);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    const BLOCK: &str = "\
# Zoom. Comments stay.
platform: zoom
action: drop
data-date: 2026-10-08   # when read
feed: {kind: zoom-txt, url: \"https://assets.zoom.us/docs/ipranges/ZoomMeetings.txt\"}
match:
  - domains: [zoom.us]
  # The feed's prefixes.
  - prefixes:
      - 3.7.35.0/25
      # inside the list
      - \"2407:30c0::/32\"   # trailing
  # Ports: by hand.
  - prefixes: [198.51.100.0/24]
    protocol: udp
    ports: [8801-8810]
";

    #[test]
    fn block_list_rewritten_and_everything_else_kept() {
        let new = nets(&["3.7.35.0/25", "3.235.82.0/23", "2407:30c0::/32"]);
        let date = DataDate::new(2026, 12, 1);
        let out = rewrite(BLOCK, Some(&new), date).unwrap();
        let expected = BLOCK
            .replace(
                "- 3.7.35.0/25\n      # inside the list\n      - \"2407:30c0::/32\"   # trailing",
                "- 3.7.35.0/25\n      - 3.235.82.0/23\n      - \"2407:30c0::/32\"",
            )
            .replace("2026-10-08", "2026-12-01");
        assert_eq!(out, expected);
        // The result is a valid policy with exactly the new prefixes in the managed entry.
        let policy = crate::policy::parse_policy_str(
            std::path::Path::new("z.yaml"),
            &out,
            &Default::default(),
        )
        .unwrap();
        let zoom = &policy.platforms[0];
        assert_eq!(zoom.entries[1].prefixes, new);
        assert_eq!(zoom.entries[2].prefixes, nets(&["198.51.100.0/24"]));
        assert_eq!(zoom.data_date, date);
    }

    #[test]
    fn flow_list_and_missing_date() {
        let text = "\
platform: teams
# The feed.
feed:
  kind: microsoft-endpoints
  url: https://endpoints.office.com/endpoints/worldwide?clientrequestid=b10c5ed1-bad1-445f-b386-b919946339a7
  select: {service-area: Skype, ids: [11]}
match:
  - domains: [teams.microsoft.com]
    enforce: name
  - prefixes: [52.112.0.0/14, \"2603:1063::/38\"]  # ID 11
";
        let new = nets(&["52.112.0.0/14", "52.122.0.0/15", "2603:1063::/38"]);
        let out = rewrite(text, Some(&new), DataDate::new(2026, 11, 1)).unwrap();
        let expected = text
            .replace("# The feed.\n", "# The feed.\ndata-date: 2026-11-01\n")
            .replace(
                "[52.112.0.0/14, \"2603:1063::/38\"]",
                "[52.112.0.0/14, 52.122.0.0/15, \"2603:1063::/38\"]",
            );
        assert_eq!(out, expected);
        // Without a date, only the list changes.
        let out = rewrite(text, Some(&new[..1]), None).unwrap();
        assert_eq!(
            out,
            text.replace("[52.112.0.0/14, \"2603:1063::/38\"]", "[52.112.0.0/14]")
        );
    }

    #[test]
    fn no_managed_entry() {
        let text = "platform: x\nfeed: {kind: cidr-list, url: https://x/y}\nmatch:\n  - prefixes: [198.51.100.0/24]\n    protocol: udp\n";
        assert!(matches!(
            rewrite(text, Some(&nets(&["198.51.100.0/24"])), None),
            Err(FeedError::NoManagedEntry)
        ));
    }

    #[test]
    fn scalar_ends() {
        assert_eq!(scalar_end("a: 'x''y' # c", 3, false), Some(9));
        assert_eq!(scalar_end("a: \"x\\\"y\" z", 3, false), Some(9));
        assert_eq!(scalar_end("a: 1.2.3.0/24   # c\n", 3, false), Some(13));
        assert_eq!(flow_end("[a, \"]\", b] # x", 0), Some(11));
    }
}
