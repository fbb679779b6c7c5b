//! UTC dates for the page, from Unix milliseconds (no time-zone database: the report says UTC).

/// (year, month, day, hour, minute) of a Unix time in milliseconds, UTC.
pub fn utc(millis: u64) -> (u64, u64, u64, u64, u64) {
    let secs = millis / 1000;
    let (days, of_day) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 (never negative here).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day, of_day / 3_600, of_day % 3_600 / 60)
}

/// `2026-12-03 18:20 UTC`.
pub fn format_utc(millis: u64) -> String {
    let (y, mo, d, h, mi) = utc(millis);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02} UTC")
}

/// `2026-12-03 18:20:07Z`: a Unix time in seconds, for operators' terminals (status, the demo).
pub fn format_utc_seconds(secs: u64) -> String {
    let (y, mo, d, h, mi) = utc(secs.saturating_mul(1000));
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{:02}Z", secs % 60)
}

/// `12-03` (day buckets) or `18:00` (hour buckets, with the day when it is midnight).
pub fn bucket_label(millis: u64, hourly: bool) -> String {
    let (_, mo, d, h, mi) = utc(millis);
    if hourly && h != 0 {
        format!("{h:02}:{mi:02}")
    } else if hourly {
        format!("{mo:02}-{d:02} {h:02}:{mi:02}")
    } else {
        format!("{mo:02}-{d:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(format_utc(0), "1970-01-01 00:00 UTC");
        // 2000-02-29 12:34:56 (a leap day of a century leap year).
        assert_eq!(format_utc(951_827_696_000), "2000-02-29 12:34 UTC");
        // 2026-12-03 18:20:00.
        assert_eq!(format_utc(1_796_322_000_000), "2026-12-03 18:20 UTC");
        assert_eq!(bucket_label(1_796_322_000_000, false), "12-03");
        assert_eq!(bucket_label(1_796_322_000_000, true), "18:20");
        assert_eq!(bucket_label(1_796_256_000_000, true), "12-03 00:00");
        assert_eq!(format_utc_seconds(951_827_696), "2000-02-29 12:34:56Z");
        assert_eq!(format_utc_seconds(1_796_322_007), "2026-12-03 18:20:07Z");
    }
}
