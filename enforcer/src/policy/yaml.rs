//! A YAML document as a tree of nodes that remember where they were written, so that every
//! validation error can point at the exact line and column of the offending key or value.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
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
}

/// Aliases are expanded by copying the anchored node; this caps the total so that nested
/// aliases ("billion laughs") cannot exhaust memory.
const MAX_NODES: usize = 1_000_000;

/// Parses every document of `text`.
pub fn parse(text: &str) -> Result<Vec<Document>, SyntaxError> {
    // A byte-order mark is not part of the first key.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut builder = Builder {
        lines: text.split('\n').collect(),
        ..Builder::default()
    };
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, true).map_err(|e| SyntaxError {
        pos: Pos::from_marker(*e.marker()),
        message: e.info().to_owned(),
    })?;
    if let Some(pos) = builder.too_large {
        return Err(SyntaxError {
            pos,
            message: format!("document has more than {MAX_NODES} nodes after expanding aliases"),
        });
    }
    Ok(builder.documents)
}

enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        pos: Pos,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
    },
}

#[derive(Default)]
struct Builder<'a> {
    lines: Vec<&'a str>,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    documents: Vec<Document>,
    document_start: Option<Pos>,
    nodes: usize,
    too_large: Option<Pos>,
}

impl Builder<'_> {
    /// A block sequence written without indentation under its key (`key:\n- a`) is marked at
    /// its first item rather than at the `-`; move back to the dash so errors point at it.
    fn sequence_pos(&self, pos: Pos) -> Pos {
        let Some(line) = self.lines.get(pos.line.wrapping_sub(1)) else {
            return pos;
        };
        let chars: Vec<char> = line.chars().collect();
        let at = pos.column - 1;
        if matches!(chars.get(at), Some('-' | '[')) {
            return pos;
        }
        let before = chars.get(..at).unwrap_or_default();
        before
            .iter()
            .rposition(|&c| c == '-')
            .filter(|&i| before[i + 1..].iter().all(|c| c.is_whitespace()))
            .map_or(pos, |i| Pos {
                line: pos.line,
                column: i + 1,
            })
    }

    /// Where the dash of item `index` of the block sequence at `seq` is. An empty item (a bare
    /// `-`) is marked by the parser at a later token, so it is found by counting the dashes in
    /// the sequence's column: nested content is always indented further.
    fn dash_pos(&self, seq: Pos, index: usize) -> Option<Pos> {
        let col = seq.column - 1;
        let first = seq.line.checked_sub(1)?;
        self.lines
            .iter()
            .enumerate()
            .skip(first)
            .filter(|&(i, line)| {
                let chars: Vec<char> = line.chars().take(col + 2).collect();
                chars.get(col) == Some(&'-')
                    && chars.get(col + 1).is_none_or(|c| c.is_whitespace())
                    && (i == first || chars[..col].iter().all(|c| c.is_whitespace()))
            })
            .nth(index)
            .map(|(i, _)| Pos {
                line: i + 1,
                column: seq.column,
            })
    }

    fn finish(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
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
}

fn count_nodes(node: &Node) -> usize {
    1 + match &node.value {
        Value::Scalar { .. } => 0,
        Value::Seq(items) => items.iter().map(count_nodes).sum(),
        Value::Map(entries) => entries
            .iter()
            .map(|(k, v)| count_nodes(k) + count_nodes(v))
            .sum(),
    }
}

impl MarkedEventReceiver for Builder<'_> {
    fn on_event(&mut self, event: Event, mark: Marker) {
        if self.too_large.is_some() {
            return;
        }
        let pos = Pos::from_marker(mark);
        self.nodes += 1;
        match event {
            Event::DocumentStart => self.document_start = Some(pos),
            Event::Scalar(text, style, anchor, _) => {
                let plain = style == TScalarStyle::Plain;
                // Empty values are marked at a later token; a bare `-` is found by its dash.
                let pos = match self.stack.last() {
                    Some(Frame::Seq {
                        pos: seq, items, ..
                    }) if plain && text.is_empty() => {
                        self.dash_pos(*seq, items.len()).unwrap_or(pos)
                    }
                    _ => pos,
                };
                let node = Node {
                    pos,
                    value: Value::Scalar { text, plain },
                };
                self.finish(node, anchor);
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq {
                pos: self.sequence_pos(pos),
                anchor,
                items: Vec::new(),
            }),
            Event::MappingStart(anchor, _) => self.stack.push(Frame::Map {
                pos,
                anchor,
                entries: Vec::new(),
                key: None,
            }),
            Event::SequenceEnd => {
                if let Some(Frame::Seq { pos, anchor, items }) = self.stack.pop() {
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
                // The parser rejects unknown aliases, so the lookup only fails on a parser bug.
                let Some(node) = self.anchors.get(&id) else {
                    return;
                };
                self.nodes += count_nodes(node);
                if self.nodes > MAX_NODES {
                    self.too_large = Some(pos);
                    return;
                }
                let node = node.clone();
                self.finish(node, 0);
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
        }
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
        assert!(err.message.contains("nodes"), "{err:?}");
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
