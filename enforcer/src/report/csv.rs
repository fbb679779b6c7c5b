//! The report's table as CSV (RFC 4180: CRLF line ends, fields quoted when they hold a comma, a
//! quote or a line break, quotes doubled). Labels come from Prometheus and may hold anything.

use super::Row;

pub const HEADER: &str = "site,platform,action,stage,packets,bytes";

/// One field, quoted when it must be.
pub fn field(text: &str) -> String {
    if text.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// The header and one line per row, the numbers as the page shows them.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(HEADER);
    out.push_str("\r\n");
    for row in rows {
        let fields = [
            field(&row.key.site),
            field(&row.key.platform),
            field(&row.key.action),
            field(&row.stage),
            format!("{:.0}", row.packets),
            format!("{:.0}", row.bytes),
        ];
        out.push_str(&fields.join(","));
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::counters::Key;

    #[test]
    fn fields_are_quoted_per_rfc_4180() {
        assert_eq!(field("teams"), "teams");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("two\nlines"), "\"two\nlines\"");
        assert_eq!(field("cr\r"), "\"cr\r\"");
        assert_eq!(field(""), "");
    }

    #[test]
    fn one_line_per_row_with_crlf() {
        let rows = vec![Row {
            key: Key {
                site: "min,istry".to_owned(),
                platform: "teams".to_owned(),
                action: "drop".to_owned(),
            },
            stage: "drop".to_owned(),
            packets: 12.0,
            bytes: 3_400_000_000.0,
        }];
        assert_eq!(
            table(&rows),
            "site,platform,action,stage,packets,bytes\r\n\"min,istry\",teams,drop,drop,12,3400000000\r\n"
        );
    }
}
