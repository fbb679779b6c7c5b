//! A YAML document as a tree of nodes that remember where they were written, so that every
//! validation error can point at the exact line and column of the offending key or value.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A position in the source; line and column both count from 1 (columns in characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    /// The parser's markers count lines from 1 but columns from 0.
    fn from_marker(mark: Marker) -> Self {
        Pos {
            line: mark.line(),
            column: mark.col() + 1,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// `plain` is false for quoted and block scalars, which are always strings (never null).
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// The first character of the node; for an empty mapping value (`key:`) only approximate,
    /// so callers report those at the key.
    pub pos: Pos,
    pub value: Value,
}

impl Node {
    /// An empty value (`key:`), `~` or `null`.
    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar { text, plain: true }
            if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// The text of a scalar that is not null.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } if !self.is_null() => Some(text),
            _ => None,
        }
    }

    /// What the node is, for "expected X, found Y" messages.
    pub fn kind(&self) -> &'static str {
        match &self.value {
            _ if self.is_null() => "nothing",
            Value::Scalar { .. } => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// One document of a YAML stream: where it starts, and its root node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    pub start: Pos,
    pub root: Node,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
    /// The text is well-formed but larger than [`limits`] allow (not a syntax error).
    pub over_limit: bool,
}

/// Bounds on what one YAML text may make the parser do, far above any real policy (the shipped
/// rule files are a few KB; a policy of a million prefixes is about 20 MB and 1M nodes), so
/// that a hostile or broken file is refused with an error instead of exhausting the stack,
/// memory or time of the daemon.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Bytes of one text.
    pub bytes: usize,
    /// Collections inside collections (a policy needs 4).
    pub depth: usize,
    /// Nodes of one text, aliases expanded.
    pub nodes: usize,
    /// Nodes that aliases may copy, in total.
    pub alias_nodes: usize,
    /// Bytes of scalar text that aliases may copy, in total.
    pub alias_bytes: usize,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        bytes: 64 << 20,
        depth: 64,
        nodes: 4_000_000,
        alias_nodes: 1_000_000,
        alias_bytes: 16 << 20,
    };
}

/// Parses every document of `text`. The event parser is driven here one event at a time (its
/// own `load` recurses once per nesting level and would overflow the stack on deep nesting),
/// and every limit is checked as the events arrive, so parsing stops at the first one crossed.
pub fn parse(text: &str) -> Result<Vec<Document>, SyntaxError> {
    parse_with(text, Limits::DEFAULT)
}

/// [`parse`] within `limits`.
pub fn parse_with(text: &str, limits: Limits) -> Result<Vec<Document>, SyntaxError> {
    if text.len() > limits.bytes {
        return Err(SyntaxError {
            pos: Pos { line: 1, column: 1 },
            message: format!(
                "the text is {} bytes; the limit is {} bytes",
                text.len(),
                limits.bytes
            ),
            over_limit: true,
        });
    }
    // A byte-order mark is not part of the first key.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut builder = Builder::new(text, limits);
    let mut parser = Parser::new_from_str(text);
    loop {
        let (event, mark) = parser.next_token().map_err(|e| SyntaxError {
            pos: Pos::from_marker(*e.marker()),
            message: e.info().to_owned(),
            over_limit: false,
        })?;
        if event == Event::StreamEnd {
            break;
        }
        builder.event(event, mark)?;
    }
    Ok(builder.documents)
}

enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        items: Vec<Node>,
        /// How far the search for the dashes of empty items got: the next line to look at
        /// (0-based) and the dashes found before it.
        dashes: (usize, usize),
    },
    Map {
        pos: Pos,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
    },
}

/// An anchored node and what copying it costs.
struct Anchored {
    node: Node,
    nodes: usize,
    bytes: usize,
}

struct Builder<'a> {
    limits: Limits,
    lines: Vec<&'a str>,
    /// Whether each line is ASCII, where a column is a byte offset.
    ascii: Vec<bool>,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Anchored>,
    documents: Vec<Document>,
    document_start: Option<Pos>,
    nodes: usize,
    alias_nodes: usize,
    alias_bytes: usize,
}

impl<'a> Builder<'a> {
    fn new(text: &'a str, limits: Limits) -> Self {
        let lines: Vec<&str> = text.split('\n').collect();
        Self {
            limits,
            ascii: lines.iter().map(|l| l.is_ascii()).collect(),
            lines,
            stack: Vec::new(),
            anchors: HashMap::new(),
            documents: Vec::new(),
            document_start: None,
            nodes: 0,
            alias_nodes: 0,
            alias_bytes: 0,
        }
    }

    /// Line `index` (0-based) and the byte offset of its character `column` (0-based):
    /// directly on ASCII lines (nearly all), else by walking the line.
    fn line_at(&self, index: usize, column: usize) -> Option<(&'a str, usize)> {
        let line = *self.lines.get(index)?;
        if self.ascii.get(index).copied().unwrap_or(false) {
            return (column < line.len()).then_some((line, column));
        }
        line.char_indices().nth(column).map(|(i, _)| (line, i))
    }

    /// A block sequence written without indentation under its key (`key:\n- a`) is marked at
    /// its first item rather than at the `-`; move back to the dash so errors point at it.
    /// Looks only at the characters between the mark and the dash, so that a long line of
    /// flow sequences costs no more than its length.
    fn sequence_pos(&self, pos: Pos) -> Pos {
        let Some((line, at)) = self.line_at(pos.line.wrapping_sub(1), pos.column - 1) else {
            return pos;
        };
        if matches!(line[at..].chars().next(), Some('-' | '[')) {
            return pos;
        }
        let mut column = pos.column - 1;
        for c in line[..at].chars().rev() {
            column -= 1;
            if c == '-' {
                return Pos {
                    line: pos.line,
                    column: column + 1,
                };
            }
            if !c.is_whitespace() {
                break;
            }
        }
        pos
    }

    /// Where the dash of the next item of the block sequence at `seq` is, `dashes` being how
    /// far the previous search got. An empty item (a bare `-`) is marked by the parser at a
    /// later token, so it is found by counting the dashes in the sequence's column: nested
    /// content is always indented further. The search goes on from where it stopped, so a
    /// sequence's lines are read once however many empty items it has.
    fn dash_pos(&self, seq: Pos, index: usize, dashes: &mut (usize, usize)) -> Option<Pos> {
        let col = seq.column - 1;
        let first = seq.line.checked_sub(1)?;
        let (mut line, mut found) = (*dashes).max((first, 0));
        while line < self.lines.len() {
            let found_at = self.line_at(line, col);
            line += 1;
            let is_dash = found_at.is_some_and(|(text, at)| {
                let rest = &text[at..];
                rest.starts_with('-')
                    && rest[1..].chars().next().is_none_or(char::is_whitespace)
                    && (line - 1 == first || text[..at].chars().all(char::is_whitespace))
            });
            if !is_dash {
                continue;
            }
            found += 1;
            if found > index {
                *dashes = (line, found);
                return Some(Pos {
                    line,
                    column: seq.column,
                });
            }
        }
        *dashes = (line, found);
        None
    }

    fn finish(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            let (nodes, bytes) = weight(&node);
            self.anchors.insert(
                anchor,
                Anchored {
                    node: node.clone(),
                    nodes,
                    bytes,
                },
            );
        }
        match self.stack.last_mut() {
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                Some(k) => entries.push((k, node)),
                None => *key = Some(node),
            },
            None => self.documents.push(Document {
                start: self.document_start.unwrap_or(node.pos),
                root: node,
            }),
        }
    }

    /// Counts `nodes` more nodes, refusing the text past the limit.
    fn count(&mut self, nodes: usize, pos: Pos) -> Result<(), SyntaxError> {
        self.nodes = self.nodes.saturating_add(nodes);
        if self.nodes > self.limits.nodes {
            return Err(over_limit(
                pos,
                format!(
                    "the text has more than {} nodes (aliases expanded)",
                    self.limits.nodes
                ),
            ));
        }
        Ok(())
    }

    /// Opens a collection, refusing nesting past the limit.
    fn open(&mut self, frame: Frame, pos: Pos) -> Result<(), SyntaxError> {
        if self.stack.len() >= self.limits.depth {
            return Err(over_limit(
                pos,
                format!(
                    "collections are nested more than {} deep",
                    self.limits.depth
                ),
            ));
        }
        self.stack.push(frame);
        Ok(())
    }

    fn event(&mut self, event: Event, mark: Marker) -> Result<(), SyntaxError> {
        let pos = Pos::from_marker(mark);
        match event {
            Event::DocumentStart => {
                // Anchors belong to their document.
                self.anchors.clear();
                self.document_start = Some(pos);
            }
            Event::Scalar(text, style, anchor, _) => {
                self.count(1, pos)?;
                let plain = style == TScalarStyle::Plain;
                // Empty values are marked at a later token; a bare `-` is found by its dash.
                let mut dash = None;
                if let Some(Frame::Seq {
                    pos: seq,
                    items,
                    dashes,
                    ..
                }) = self.stack.last()
                    && plain
                    && text.is_empty()
                {
                    let mut cursor = *dashes;
                    dash = Some((self.dash_pos(*seq, items.len(), &mut cursor), cursor));
                }
                let pos = match dash {
                    Some((found, cursor)) => {
                        if let Some(Frame::Seq { dashes, .. }) = self.stack.last_mut() {
                            *dashes = cursor;
                        }
                        found.unwrap_or(pos)
                    }
                    None => pos,
                };
                let node = Node {
                    pos,
                    value: Value::Scalar { text, plain },
                };
                self.finish(node, anchor);
            }
            Event::SequenceStart(anchor, _) => {
                self.count(1, pos)?;
                let frame = Frame::Seq {
                    pos: self.sequence_pos(pos),
                    anchor,
                    items: Vec::new(),
                    dashes: (0, 0),
                };
                self.open(frame, pos)?;
            }
            Event::MappingStart(anchor, _) => {
                self.count(1, pos)?;
                let frame = Frame::Map {
                    pos,
                    anchor,
                    entries: Vec::new(),
                    key: None,
                };
                self.open(frame, pos)?;
            }
            Event::SequenceEnd => {
                if let Some(Frame::Seq {
                    pos, anchor, items, ..
                }) = self.stack.pop()
                {
                    let node = Node {
                        pos,
                        value: Value::Seq(items),
                    };
                    self.finish(node, anchor);
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map {
                    pos,
                    anchor,
                    entries,
                    ..
                }) = self.stack.pop()
                {
                    // A block mapping is marked after its first key; point at the key instead.
                    let pos = entries.first().map_or(pos, |(k, _)| pos.min(k.pos));
                    let node = Node {
                        pos,
                        value: Value::Map(entries),
                    };
                    self.finish(node, anchor);
                }
            }
            Event::Alias(id) => {
                let Some(anchored) = self.anchors.get(&id) else {
                    return Err(SyntaxError {
                        pos,
                        message: "alias to an anchor not defined in this document".to_owned(),
                        over_limit: false,
                    });
                };
                let (nodes, bytes) = (anchored.nodes, anchored.bytes);
                self.alias_nodes = self.alias_nodes.saturating_add(nodes);
                self.alias_bytes = self.alias_bytes.saturating_add(bytes);
                let limits = self.limits;
                if self.alias_nodes > limits.alias_nodes || self.alias_bytes > limits.alias_bytes {
                    return Err(over_limit(
                        pos,
                        format!(
                            "aliases expand to more than {} nodes or {} bytes of text",
                            limits.alias_nodes, limits.alias_bytes
                        ),
                    ));
                }
                self.count(nodes, pos)?;
                if let Some(anchored) = self.anchors.get(&id) {
                    let node = anchored.node.clone();
                    self.finish(node, 0);
                }
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
        }
        Ok(())
    }
}

fn over_limit(pos: Pos, message: String) -> SyntaxError {
    SyntaxError {
        pos,
        message,
        over_limit: true,
    }
}

/// The nodes of `node` and the bytes of its scalars (recursion is bounded by `Limits::depth`).
fn weight(node: &Node) -> (usize, usize) {
    let add = |(n, b): (usize, usize), (m, c): (usize, usize)| (n + m, b + c);
    match &node.value {
        Value::Scalar { text, .. } => (1, text.len()),
        Value::Seq(items) => items.iter().map(weight).fold((1, 0), add),
        Value::Map(entries) => entries
            .iter()
            .map(|(k, v)| add(weight(k), weight(v)))
            .fold((1, 0), add),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(node: &Node) -> (&str, usize, usize) {
        (node.as_str().unwrap(), node.pos.line, node.pos.column)
    }

    fn map(node: &Node) -> &[(Node, Node)] {
        match &node.value {
            Value::Map(entries) => entries,
            other => panic!("not a map: {other:?}"),
        }
    }

    fn seq(node: &Node) -> &[Node] {
        match &node.value {
            Value::Seq(items) => items,
            other => panic!("not a seq: {other:?}"),
        }
    }

    #[test]
    fn positions_count_from_one_and_point_at_first_char() {
        let docs = parse("a: \"x\"\nlist:\n  - k: 'v'\n    n: 3\n").unwrap();
        assert_eq!(docs.len(), 1);
        let root = &docs[0].root;
        assert_eq!(root.pos, Pos { line: 1, column: 1 });
        let entries = map(root);
        assert_eq!(scalar(&entries[0].0), ("a", 1, 1));
        assert_eq!(scalar(&entries[0].1), ("x", 1, 4));
        let list = &entries[1].1;
        assert_eq!(list.pos, Pos { line: 3, column: 3 });
        let item = &seq(list)[0];
        assert_eq!(item.pos, Pos { line: 3, column: 5 });
        assert_eq!(scalar(&map(item)[0].1), ("v", 3, 8));
        assert_eq!(scalar(&map(item)[1].1), ("3", 4, 8));
    }

    #[test]
    fn flow_collections_and_indentless_sequences() {
        let docs = parse("f: {a: [1, 2]}\ns:\n- x\n").unwrap();
        let entries = map(&docs[0].root);
        assert_eq!(entries[0].1.pos, Pos { line: 1, column: 4 });
        assert_eq!(map(&entries[0].1)[0].1.pos, Pos { line: 1, column: 8 });
        // The dash, not the item.
        assert_eq!(entries[1].1.pos, Pos { line: 3, column: 1 });
        assert_eq!(scalar(&seq(&entries[1].1)[0]), ("x", 3, 3));
    }

    #[test]
    fn null_and_quoted_scalars() {
        let docs = parse("a:\nb: ~\nc: ''\nd: \"null\"\ne: null\n").unwrap();
        let e = map(&docs[0].root);
        assert!(e[0].1.is_null());
        assert!(e[1].1.is_null());
        assert!(!e[2].1.is_null());
        assert_eq!(e[2].1.as_str(), Some(""));
        assert_eq!(e[3].1.as_str(), Some("null"));
        assert!(e[4].1.is_null());
    }

    #[test]
    fn empty_items_point_at_their_dash() {
        let text = "l:\n  -\n  - # none\n\n  - x:\n    - y\n  -\nm:\n- - a\n  -\n";
        let docs = parse(text).unwrap();
        let items = seq(&map(&docs[0].root)[0].1);
        assert!(items[0].is_null());
        assert_eq!(items[0].pos, Pos { line: 2, column: 3 });
        assert_eq!(items[1].pos, Pos { line: 3, column: 3 });
        assert_eq!(items[3].pos, Pos { line: 7, column: 3 });
        let outer = seq(&map(&docs[0].root)[1].1);
        assert_eq!(
            seq(&outer[0])[1].pos,
            Pos {
                line: 10,
                column: 3
            }
        );
    }

    #[test]
    fn byte_order_mark_is_skipped() {
        let docs = parse("\u{feff}a: 1\n").unwrap();
        assert_eq!(scalar(&map(&docs[0].root)[0].0), ("a", 1, 1));
    }

    #[test]
    fn aliases_are_expanded() {
        let docs = parse("a: &x [1, 2]\nb: *x\n").unwrap();
        let e = map(&docs[0].root);
        assert_eq!(e[0].1, e[1].1);
    }

    /// Ten levels of ten aliases each (10^10 nodes once expanded) stop at the alias budget, at
    /// the alias that crosses a million copied nodes, long before the text's own node limit.
    #[test]
    fn alias_bombs_are_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let err = parse(&text).unwrap_err();
        assert!(err.over_limit, "{err:?}");
        assert_eq!(
            err.message,
            "aliases expand to more than 1000000 nodes or 16777216 bytes of text"
        );
        // Lines 2-5 copy 123,440 nodes; the eighth `*a4` (111,111 nodes each) of line 6
        // crosses a million.
        assert_eq!(
            err.pos,
            Pos {
                line: 6,
                column: 45
            }
        );
    }

    /// The error for `text` under `limits`, which must be a limit's.
    fn over(text: &str, limits: Limits) -> SyntaxError {
        let err = parse_with(text, limits).unwrap_err();
        assert!(err.over_limit, "{err:?}");
        err
    }

    const SMALL: Limits = Limits {
        bytes: 1000,
        depth: 3,
        nodes: 20,
        alias_nodes: 6,
        alias_bytes: 10,
    };

    #[test]
    fn each_limit_is_enforced_at_the_node_that_crosses_it() {
        // Text size: before any parsing.
        let err = over(&"a: 1\n".repeat(201), SMALL);
        assert_eq!(err.pos, Pos { line: 1, column: 1 });
        assert_eq!(
            err.message,
            "the text is 1005 bytes; the limit is 1000 bytes"
        );
        // Depth: the fourth collection.
        assert!(parse_with("- - - x\n", SMALL).is_ok());
        let err = over("a:\n  - - - x\n", SMALL);
        assert_eq!(err.pos, Pos { line: 2, column: 7 });
        assert_eq!(err.message, "collections are nested more than 3 deep");
        // Nodes: the 21st (one list and 20 items).
        assert!(parse_with(&format!("[{}]", ["x"; 19].join(", ")), SMALL).is_ok());
        let err = over(&format!("[{}]", ["x"; 20].join(", ")), SMALL);
        assert_eq!(
            err.pos,
            Pos {
                line: 1,
                column: 59
            }
        );
        assert_eq!(
            err.message,
            "the text has more than 20 nodes (aliases expanded)"
        );
        // Alias copies, counted in nodes and in bytes of text.
        assert!(parse_with("a: &a [x, y]\nb: [*a, *a]\n", SMALL).is_ok());
        let err = over("a: &a [x, y]\nb: [*a, *a]\nc: *a\n", SMALL);
        assert_eq!(err.pos, Pos { line: 3, column: 4 });
        assert!(
            err.message
                .starts_with("aliases expand to more than 6 nodes"),
            "{err:?}"
        );
        let err = over("a: &a abcdef\nb: *a\nc: *a\n", SMALL);
        assert_eq!(err.pos, Pos { line: 3, column: 4 });
        assert!(err.message.ends_with("or 10 bytes of text"), "{err:?}");
    }

    /// A file of aliases to a large scalar (71 KB grew to 141 MB before the limit) stops at the
    /// byte budget of alias copies.
    #[test]
    fn aliases_to_a_large_scalar_are_refused() {
        let big = "x".repeat(64 * 1024);
        let text = format!("a: &a \"{big}\"\nb: [{}]\n", ["*a"; 2000].join(", "));
        let err = parse(&text).unwrap_err();
        assert!(
            err.over_limit && err.message.contains("16777216 bytes"),
            "{err:?}"
        );
        // The 257th copy crosses 16 MiB.
        assert_eq!(
            err.pos,
            Pos {
                line: 2,
                column: 5 + 256 * 4
            }
        );
    }

    /// Runs `test` (a test of this module) alone in a child process, so that a stack overflow
    /// fails the test instead of aborting every test.
    fn in_child_process(test: &str) -> std::process::Output {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env("ENFORCER_YAML_CHILD", "1")
            .output()
            .unwrap()
    }

    /// 20,000 nested `- ` (40 KB) overflowed the stack and aborted the daemon at start-up.
    #[test]
    fn deep_nesting_is_refused_without_overflowing_the_stack() {
        if std::env::var_os("ENFORCER_YAML_CHILD").is_some() {
            let text = format!("match:\n  {}x\n", "- ".repeat(20_000));
            let err = parse(&text).unwrap_err();
            assert_eq!(
                err.pos,
                Pos {
                    line: 2,
                    column: 3 + 2 * 63
                }
            );
            assert_eq!(err.message, "collections are nested more than 64 deep");
            let flow = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
            assert!(parse(&flow).is_err());
            println!("child done");
            return;
        }
        let output = in_child_process(
            "policy::yaml::tests::deep_nesting_is_refused_without_overflowing_the_stack",
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("child done"),
            "the child failed ({}):\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Shapes that took the position fix-ups quadratic time: 30,000 `[]` on one line (25-55 s
    /// in the daemon) and 30,000 bare dashes (111 s). Each takes well under a second now.
    #[test]
    fn long_lines_and_many_empty_items_parse_in_linear_time() {
        let flow = format!("a: [{}]\n", ["[]"; 30_000].join(", "));
        let dashes = format!("a:\n{}", "  -\n".repeat(30_000));
        for text in [flow, dashes] {
            let started = std::time::Instant::now();
            let docs = parse(&text).unwrap();
            let elapsed = started.elapsed();
            assert_eq!(seq(&map(&docs[0].root)[0].1).len(), 30_000);
            assert!(elapsed < std::time::Duration::from_secs(3), "{elapsed:?}");
        }
        // The dashes are still found.
        let docs = parse("a:\n  -\n  -\n  -\n").unwrap();
        let items = seq(&map(&docs[0].root)[0].1);
        assert_eq!(items[2].pos, Pos { line: 4, column: 3 });
    }

    #[test]
    fn syntax_errors_carry_one_based_positions() {
        let err = parse("a: b: c\n").unwrap_err();
        assert_eq!(err.pos, Pos { line: 1, column: 5 });
        let err = parse("a: [1, 2\n").unwrap_err();
        assert_eq!(err.pos, Pos { line: 2, column: 1 });
        let err = parse("a: \"open\n").unwrap_err();
        assert_eq!(err.pos, Pos { line: 1, column: 4 });
    }

    #[test]
    fn empty_and_multiple_documents() {
        assert!(parse("").unwrap().is_empty());
        assert!(parse("# only a comment\n").unwrap().is_empty());
        let docs = parse("a: 1\n---\nb: 2\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].start, Pos { line: 2, column: 1 });
    }
}
