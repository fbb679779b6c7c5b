//! Durations written as Prometheus writes them: `30m`, `12h`, `7d`, `2w`, `1h30m`.

use std::time::Duration;

use super::ReportError;

/// Units in Prometheus's order, with their length in milliseconds.
const UNITS: [(&str, u64); 7] = [
    ("y", 365 * 24 * 3_600_000),
    ("w", 7 * 24 * 3_600_000),
    ("d", 24 * 3_600_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// Parses `text` like Prometheus: one or more `NUMBER UNIT` parts, units from the largest down,
/// each at most once. Zero is refused: a report over no time says nothing.
pub fn parse(text: &str) -> Result<Duration, ReportError> {
    let bad = |why: &str| ReportError::Duration {
        text: text.to_owned(),
        why: why.to_owned(),
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad("empty"));
    }
    let mut total: u64 = 0;
    // Index in UNITS of the last unit seen: the next must be smaller.
    let mut last: Option<usize> = None;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad("expected a number, as in 30m, 12h, 7d or 2w"));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| bad("number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let index = UNITS
            .iter()
            .position(|(name, _)| *name == unit)
            .ok_or_else(|| bad("unit must be one of ms, s, m, h, d, w, y"))?;
        if last.is_some_and(|l| index <= l) {
            return Err(bad(
                "units must go from the largest to the smallest, each once",
            ));
        }
        last = Some(index);
        let millis = number
            .checked_mul(UNITS[index].1)
            .and_then(|m| total.checked_add(m))
            .ok_or_else(|| bad("too long"))?;
        total = millis;
        rest = &rest[unit_len..];
    }
    if total == 0 {
        return Err(bad("must be longer than zero"));
    }
    Ok(Duration::from_millis(total))
}

/// A range selector for PromQL, in milliseconds (exact, whatever the period's alignment).
pub fn selector(duration: Duration) -> String {
    format!("{}ms", duration.as_millis().max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_durations() {
        assert_eq!(parse("30m").unwrap(), Duration::from_secs(1_800));
        assert_eq!(parse("12h").unwrap(), Duration::from_secs(43_200));
        assert_eq!(parse("7d").unwrap(), Duration::from_secs(604_800));
        assert_eq!(parse("2w").unwrap(), Duration::from_secs(1_209_600));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5_400));
        assert_eq!(parse("1y").unwrap(), Duration::from_secs(365 * 86_400));
        assert_eq!(parse("1500ms").unwrap(), Duration::from_millis(1_500));
        assert_eq!(parse("90s").unwrap(), Duration::from_secs(90));
    }

    #[test]
    fn bad_durations_are_refused_with_the_text() {
        for text in [
            "",
            "7",
            "d",
            "7x",
            "7D",
            "-1d",
            "1m1h",
            "1h1h",
            "0d",
            "1.5h",
            "99999999999999999999d",
        ] {
            let error = parse(text).unwrap_err().to_string();
            assert!(error.contains(&format!("{text:?}")), "{text}: {error}");
        }
    }

    #[test]
    fn selectors_are_in_milliseconds() {
        assert_eq!(selector(Duration::from_secs(3_600)), "3600000ms");
        assert_eq!(selector(Duration::ZERO), "1ms");
    }
}
