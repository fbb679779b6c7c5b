//! The self-contained HTML page: inline CSS, inline SVG, no script and no outside asset, so it
//! can be mailed to a director and opened anywhere. Every text from Prometheus is escaped.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::SystemTime;

use super::{Report, ReportError, Step, charts, clock, site_order};

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222;max-width:1000px}\
h1{margin-bottom:0.2em}h2{margin-top:1.6em;border-bottom:1px solid #ccc}\
.meta{color:#555}table{border-collapse:collapse;margin:0.5em 0}\
th,td{border:1px solid #ccc;padding:0.25em 0.6em;text-align:left}\
th{background:#eef}td.num{text-align:right;font-variant-numeric:tabular-nums}\
.drop{background:#fcd9d9}.monitor{background:#fff1c2}.allow{background:#dcf5dc}\
.unknown{color:#888}.chart{margin:0.5em 0}";

/// `text` made safe for HTML text and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A CSS class for a stage, from a fixed list (never the label itself).
fn stage_class(stage: &str) -> &'static str {
    match stage {
        "drop" => "drop",
        "monitor" => "monitor",
        "allow" => "allow",
        _ => "unknown",
    }
}

fn is_dropped(stage: &str) -> bool {
    stage.split('/').any(|a| a == "drop")
}

/// The whole page.
pub fn page(report: &Report, now: SystemTime) -> Result<String, ReportError> {
    let generated = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| ReportError::Clock)?
        .as_millis();
    let generated = u64::try_from(generated).map_err(|_| ReportError::Clock)?;
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>Compliance by site: {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1>Compliance by site</h1>\n<p class=\"meta\">Period: {} to {} (last {})<br>\
         Prometheus: {}<br>Generated: {}</p>\n",
        escape(&report.since),
        clock::format_utc(report.start_ms),
        clock::format_utc(report.end_ms),
        escape(&report.since),
        escape(&report.prometheus),
        clock::format_utc(generated),
    );
    if report.series == 0 || report.rows.is_empty() {
        out.push_str(
            "<p><strong>No site traffic recorded</strong>: Prometheus holds no \
             enforcer_site_packets_total or enforcer_site_bytes_total series for this period.</p>\n",
        );
        out.push_str("</body>\n</html>\n");
        return Ok(out);
    }
    let sites: Vec<String> = {
        let mut sites: Vec<String> = report
            .rows
            .iter()
            .map(|r| r.key.site.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        sites.sort_by(|a, b| site_order(a).cmp(&site_order(b)));
        sites
    };
    // Packets per platform and site, every action.
    let mut totals: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    // The stage of each platform and site.
    let mut stages: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for row in &report.rows {
        *totals
            .entry(row.key.platform.clone())
            .or_default()
            .entry(row.key.site.clone())
            .or_default() += row.packets;
        stages
            .entry(row.key.platform.clone())
            .or_default()
            .insert(row.key.site.clone(), row.stage.clone());
    }
    still_using(&mut out, &totals, &stages, &sites);
    table(&mut out, report);

    let hourly = report.step == Step::Hour;
    let labels: Vec<String> = report
        .buckets
        .iter()
        .map(|(start, _)| clock::bucket_label(*start, hourly))
        .collect();
    if hourly {
        out.push_str(
            "<h2>Trend per hour</h2>\n<p>Packets per site and hour (UTC): the period is under \
             2 days, so the trend is by hour rather than by day.</p>\n",
        );
    } else {
        out.push_str("<h2>Daily trend</h2>\n<p>Packets per site and day (UTC).</p>\n");
    }
    for (platform, lines) in &report.trend {
        out.push_str("<div class=\"chart\">\n");
        out.push_str(&charts::trend(platform, &labels, lines, &sites)?);
        out.push_str("</div>\n");
    }
    out.push_str("<h2>Packets per site</h2>\n<div class=\"chart\">\n");
    out.push_str(&charts::per_site(&sites, &totals)?);
    out.push_str("</div>\n</body>\n</html>\n");
    Ok(out)
}

/// "Sites still using each banned platform": the platforms dropped for some site (all
/// platforms seen when none is yet), each with the sites that sent it packets in the period.
fn still_using(
    out: &mut String,
    totals: &BTreeMap<String, BTreeMap<String, f64>>,
    stages: &BTreeMap<String, BTreeMap<String, String>>,
    sites: &[String],
) {
    let banned: Vec<&String> = stages
        .iter()
        .filter(|(_, per_site)| per_site.values().any(|s| is_dropped(s)))
        .map(|(platform, _)| platform)
        .collect();
    out.push_str("<h2>Sites still using each banned platform</h2>\n");
    let listed: Vec<&String> = if banned.is_empty() {
        out.push_str(
            "<p>No platform is dropped for any site yet: every platform seen is listed.</p>\n",
        );
        stages.keys().collect()
    } else {
        out.push_str(
            "<p>Platforms dropped for at least one site, with every site that sent them \
             packets in the period (dropped or not).</p>\n",
        );
        banned
    };
    out.push_str("<ul>\n");
    for platform in listed {
        let per_site = totals.get(platform);
        let using: Vec<String> = sites
            .iter()
            .filter_map(|site| {
                let packets = per_site?.get(site).copied().unwrap_or(0.0);
                (packets > 0.0).then(|| {
                    let stage = stages
                        .get(platform)
                        .and_then(|s| s.get(site))
                        .map_or("unknown", String::as_str);
                    format!(
                        "{} ({packets:.0} packets, stage <span class=\"{}\">{}</span>)",
                        escape(site),
                        stage_class(stage),
                        escape(stage)
                    )
                })
            })
            .collect();
        let _ = writeln!(
            out,
            "<li><strong>{}</strong>: {}</li>",
            escape(platform),
            if using.is_empty() {
                "no site".to_owned()
            } else {
                using.join(", ")
            }
        );
    }
    out.push_str("</ul>\n");
}

/// The table: a line per site, platform and action, as in the CSV.
fn table(out: &mut String, report: &Report) {
    out.push_str(
        "<h2>Traffic by site and platform</h2>\n<p>Packets and bytes counted over the period \
         (summed over gateways), by the action applied; the stage is the action in force for \
         the site at the end of the period.</p>\n<table>\n<tr><th>Site</th><th>Platform</th>\
         <th>Stage</th><th>Action</th><th>Packets</th><th>Bytes</th></tr>\n",
    );
    for row in &report.rows {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td>\
             <td class=\"num\">{:.0}</td><td class=\"num\">{:.0}</td></tr>",
            escape(&row.key.site),
            escape(&row.key.platform),
            stage_class(&row.stage),
            escape(&row.stage),
            escape(&row.key.action),
            row.packets,
            row.bytes,
        );
    }
    out.push_str("</table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::counters::Key;
    use crate::report::{Row, buckets};

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(escape("teams"), "teams");
    }

    fn report(rows: Vec<Row>) -> Report {
        let start = 1_796_256_000_000;
        let end = start + 3 * 3_600_000;
        let mut trend: BTreeMap<String, BTreeMap<String, Vec<f64>>> = BTreeMap::new();
        for row in &rows {
            trend
                .entry(row.key.platform.clone())
                .or_default()
                .insert(row.key.site.clone(), vec![row.packets, 0.0, 1.0]);
        }
        Report {
            prometheus: "http://prom.example:9090/?a=<b>".to_owned(),
            since: "3h".to_owned(),
            start_ms: start,
            end_ms: end,
            step: Step::Hour,
            buckets: buckets(start, end, Step::Hour),
            series: rows.len(),
            rows,
            trend,
        }
    }

    fn row(site: &str, platform: &str, action: &str, stage: &str, packets: f64) -> Row {
        Row {
            key: Key {
                site: site.to_owned(),
                platform: platform.to_owned(),
                action: action.to_owned(),
            },
            stage: stage.to_owned(),
            packets,
            bytes: packets * 100.0,
        }
    }

    #[test]
    fn hostile_labels_are_escaped_everywhere() {
        let evil = "<script>alert('x')</script>";
        let page = page(
            &report(vec![
                row(evil, "teams", "drop", "drop", 5.0),
                row("a", evil, "monitor", evil, 7.0),
            ]),
            SystemTime::now(),
        )
        .unwrap();
        assert!(!page.contains("<script"), "{page}");
        assert!(page.contains("&lt;script&gt;"), "{page}");
        assert!(!page.contains("<b>"), "{page}");
        assert_eq!(
            page.matches("<svg").count(),
            3,
            "two trends and the bar chart"
        );
    }

    #[test]
    fn page_lists_sites_still_using_banned_platforms() {
        let page = page(
            &report(vec![
                row("a", "teams", "drop", "drop", 5.0),
                row("b", "teams", "monitor", "monitor", 9.0),
                row("c", "teams", "monitor", "monitor", 0.0),
                row("a", "zoom", "monitor", "monitor", 4.0),
            ]),
            SystemTime::now(),
        )
        .unwrap();
        let section = page
            .split_once("Sites still using")
            .and_then(|(_, rest)| rest.split_once("</ul>"))
            .map(|(s, _)| s)
            .unwrap();
        assert!(
            section.contains("<strong>teams</strong>: a (5 packets"),
            "{section}"
        );
        assert!(section.contains("b (9 packets"), "{section}");
        // No packets: not using it; zoom is dropped nowhere: not banned.
        assert!(!section.contains("c ("), "{section}");
        assert!(!section.contains("zoom"), "{section}");
        assert!(page.contains("Trend per hour"), "{page}");
        assert!(page.contains("<td class=\"num\">9</td><td class=\"num\">900</td>"));
    }

    #[test]
    fn an_empty_period_says_so() {
        let page = page(&report(vec![]), SystemTime::now()).unwrap();
        assert!(page.contains("No site traffic recorded"), "{page}");
        assert!(!page.contains("<svg"));
    }
}
