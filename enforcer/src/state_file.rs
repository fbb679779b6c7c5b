//! The layout of the state files that hold lists (`addresses.json`, `learned.json`): one JSON
//! object whose header fields come first on the first line, then the list with one entry a line,
//! then the closing line. The whole is ordinary JSON; the line layout is what lets a damaged file
//! (truncated, or with a garbled entry) lose only the entries it damaged: each entry is read and
//! checked on its own, and every one that is wrong is reported by place and then left out.

use serde::Serialize;
use serde_json::Value;

/// One entry as read, with where it was (`entry N` or `line N`) for messages.
pub struct Item {
    pub place: String,
    pub value: Value,
}

/// What a file holds: the entries that could be read, and a message for each part that could
/// not (the caller adds the file's path).
#[derive(Default)]
pub struct Items {
    pub items: Vec<Item>,
    pub problems: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    #[error("version {0}, this enforcer reads version {1}")]
    Version(u64, u32),
    #[error("not a state file: {0}")]
    NotAStateFile(String),
}

/// The file of `version`: the header `fields` after the version on the first line, then `list`,
/// one entry a line.
pub fn render<T: Serialize>(
    version: u32,
    fields: &[(&str, Value)],
    list: &str,
    entries: impl IntoIterator<Item = T>,
) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = format!("{{\"version\":{version},").into_bytes();
    for (name, value) in fields {
        serde_json::to_writer(&mut out, name)?;
        out.push(b':');
        serde_json::to_writer(&mut out, value)?;
        out.push(b',');
    }
    serde_json::to_writer(&mut out, list)?;
    out.extend_from_slice(b":[");
    let mut first = true;
    for entry in entries {
        out.extend_from_slice(if first { b"\n" } else { b",\n" });
        first = false;
        serde_json::to_writer(&mut out, &entry)?;
    }
    out.extend_from_slice(b"\n]}\n");
    Ok(out)
}

/// Reads the entries of `list` from a file of `version`. A file that is valid JSON gives every
/// entry of the list; one that is not (truncated, garbled) gives every line that holds a whole
/// entry, with a problem naming what was wrong, provided its first line is this version's header.
pub fn parse(bytes: &[u8], version: u32, list: &str) -> Result<Items, LayoutError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(whole) => whole_file(whole, version, list),
        Err(error) => line_by_line(bytes, version, list, &error),
    }
}

fn whole_file(whole: Value, version: u32, list: &str) -> Result<Items, LayoutError> {
    let found = whole.get("version").and_then(Value::as_u64);
    match found {
        Some(v) if v == u64::from(version) => {}
        Some(v) => return Err(LayoutError::Version(v, version)),
        None => return Err(LayoutError::NotAStateFile("no version".into())),
    }
    let Some(Value::Array(entries)) = whole.get(list) else {
        return Err(LayoutError::NotAStateFile(format!("no `{list}` list")));
    };
    let items = entries
        .iter()
        .enumerate()
        .map(|(i, value)| Item {
            place: format!("entry {}", i + 1),
            value: value.clone(),
        })
        .collect();
    Ok(Items {
        items,
        problems: Vec::new(),
    })
}

fn line_by_line(
    bytes: &[u8],
    version: u32,
    list: &str,
    error: &serde_json::Error,
) -> Result<Items, LayoutError> {
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text.lines().enumerate();
    let header = lines.next().map(|(_, l)| l.trim()).unwrap_or_default();
    let opening = format!("{{\"version\":{version},");
    let list_start = format!("\"{list}\":[");
    if !(header.starts_with(&opening) && header.ends_with(&list_start)) {
        return Err(LayoutError::NotAStateFile(error.to_string()));
    }
    let mut out = Items {
        items: Vec::new(),
        problems: vec![format!(
            "not valid JSON ({error}); reading the entries line by line"
        )],
    };
    for (index, line) in lines {
        let entry = line.trim().trim_end_matches(',');
        if entry.is_empty() || entry == "]}" {
            continue;
        }
        let place = format!("line {}", index + 1);
        match serde_json::from_str::<Value>(entry) {
            Ok(value @ Value::Object(_)) => out.items.push(Item { place, value }),
            Ok(_) => out.problems.push(format!("{place}: not an entry")),
            Err(error) => out.problems.push(format!("{place}: not an entry: {error}")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn file() -> Vec<u8> {
        render(
            3,
            &[("saved_at", json!(1.5))],
            "things",
            [json!({"a": 1}), json!({"a": 2}), json!({"a": 3})],
        )
        .unwrap()
    }

    fn values(items: &Items) -> Vec<Value> {
        items.items.iter().map(|i| i.value.clone()).collect()
    }

    #[test]
    fn a_whole_file_is_json_with_one_entry_a_line() {
        let bytes = file();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert_eq!(
            text,
            "{\"version\":3,\"saved_at\":1.5,\"things\":[\n{\"a\":1},\n{\"a\":2},\n{\"a\":3}\n]}\n"
        );
        let items = parse(&bytes, 3, "things").unwrap();
        assert_eq!(values(&items).len(), 3);
        assert!(items.problems.is_empty());
        assert_eq!(
            parse(&bytes, 4, "things").err(),
            Some(LayoutError::Version(3, 4))
        );
    }

    #[test]
    fn a_damaged_file_keeps_every_whole_entry_and_names_the_rest() {
        let text = String::from_utf8(file()).unwrap();
        // Truncated inside the last entry.
        let cut = &text[..text.find("{\"a\":3").unwrap() + 4];
        let items = parse(cut.as_bytes(), 3, "things").unwrap();
        assert_eq!(values(&items), vec![json!({"a": 1}), json!({"a": 2})]);
        assert_eq!(items.problems.len(), 2, "{:?}", items.problems);
        assert!(
            items.problems[1].starts_with("line 4: "),
            "{:?}",
            items.problems
        );
        // A garbled line in the middle.
        let garbled = text.replace("{\"a\":2}", "{\"a\":\u{0}");
        let items = parse(garbled.as_bytes(), 3, "things").unwrap();
        assert_eq!(values(&items), vec![json!({"a": 1}), json!({"a": 3})]);
        assert!(
            items.problems[1].starts_with("line 3: "),
            "{:?}",
            items.problems
        );
        // Without this version's header nothing is guessed.
        assert!(parse(b"{\"version\":3", 4, "things").is_err());
        assert!(parse(b"garbage", 3, "things").is_err());
    }
}
