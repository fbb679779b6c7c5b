//! The benchmarks' two comparisons as SVG charts for the README, drawn from their JSON files:
//! - docs/bench-flood.svg from bench-flood.json (bench_flood): the extra CPU per dropped packet
//!   over a bare XDP_DROP program of each configuration, median and min..max of the rounds, with
//!   the enforcer's goal (issue 16: at most 1/3 of ipset's and 1/5 of nftables');
//! - docs/bench-lookup.svg from bench-datapath.json (`cargo bench -p enforcer --bench datapath`):
//!   the in-program cost of a lookup over parsing against the prefix count, the enforcer's and a
//!   plain kernel LPM trie's, with the 30 ns goal.
//!
//! Usage: `bench_charts [--root DIR]` (DIR: the repository root by default); `cargo xtask bench`
//! runs it last.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow, bail};
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use serde_json::Value;

const WIDTH: u32 = 900;
const HEIGHT: u32 = 500;
const FONT: &str = "sans-serif";
/// Issue 16: the in-program cost at most this over a program that only parses.
const LOOKUP_GOAL_NS: f64 = 30.0;

/// One bar of the flood chart.
struct Bar {
    label: String,
    median: f64,
    min: f64,
    max: f64,
}

/// The configurations of bench-flood.json in the order drawn, with short labels.
const FLOOD_CONFIGURATIONS: [(&str, &str); 4] = [
    ("enforcer", "enforcer"),
    ("ipset_legacy", "ipset (iptables-legacy)"),
    ("ipset_nft", "ipset (iptables-nft)"),
    ("nftables", "nftables set"),
];

fn flood_bars(flood: &Value) -> Result<Vec<Bar>> {
    let mut bars = Vec::new();
    for (key, label) in FLOOD_CONFIGURATIONS {
        let Some(config) = flood["configurations"].get(key) else {
            continue;
        };
        let median = config["extra_ns_median"]
            .as_f64()
            .ok_or_else(|| anyhow!("bench-flood.json: {key} has no extra_ns_median"))?;
        let extras: Vec<f64> = config["rounds"]
            .as_array()
            .map(|rounds| {
                rounds
                    .iter()
                    .filter_map(|r| r["extra_ns"].as_f64())
                    .collect()
            })
            .unwrap_or_default();
        let min = extras.iter().copied().fold(median, f64::min);
        let max = extras.iter().copied().fold(median, f64::max);
        bars.push(Bar {
            label: format!("{label} {median:+.0}"),
            median,
            min,
            max,
        });
    }
    if bars.is_empty() {
        bail!("bench-flood.json: no configuration to draw");
    }
    Ok(bars)
}

/// The most the enforcer's extra cost may be by the goals: 1/3 of each ipset
/// configuration's, 1/5 of nftables'.
fn flood_goal(flood: &Value) -> Option<f64> {
    [("ipset_legacy", 3.0), ("ipset_nft", 3.0), ("nftables", 5.0)]
        .into_iter()
        .filter_map(|(key, divisor)| {
            Some(flood["configurations"].get(key)?["extra_ns_median"].as_f64()? / divisor)
        })
        .reduce(f64::min)
}

fn flood_chart(flood: &Value) -> Result<String> {
    let bars = flood_bars(flood)?;
    let goal = flood_goal(flood);
    let top = bars.iter().map(|b| b.max).fold(0.0, f64::max) * 1.15;
    let bottom = bars.iter().map(|b| b.min).fold(0.0, f64::min);
    let n = u32::try_from(bars.len())?;
    let labels: Vec<String> = bars.iter().map(|b| b.label.clone()).collect();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Extra CPU per dropped packet over a bare XDP_DROP program",
                (FONT, 20),
            )
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d((0..n - 1).into_segmented(), bottom..top)
            .map_err(draw_error)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .y_desc("ns per packet (median of paired rounds; whiskers: min..max)")
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => labels
                    .get(usize::try_from(*i).unwrap_or(usize::MAX))
                    .cloned()
                    .unwrap_or_default(),
                _ => String::new(),
            })
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style((FONT, 14))
            .draw()
            .map_err(draw_error)?;
        chart
            .draw_series((0..n).zip(&bars).map(|(i, bar)| {
                let color = if i == 0 {
                    RGBColor(31, 119, 180)
                } else {
                    RGBColor(170, 170, 170)
                };
                let mut rect = Rectangle::new(
                    [
                        (SegmentValue::Exact(i), 0.0),
                        (SegmentValue::Exact(i + 1), bar.median),
                    ],
                    color.filled(),
                );
                rect.set_margin(0, 0, 30, 30);
                rect
            }))
            .map_err(draw_error)?;
        chart
            .draw_series((0..n).zip(&bars).map(|(i, bar)| {
                ErrorBar::new_vertical(
                    SegmentValue::CenterOf(i),
                    bar.min,
                    bar.median,
                    bar.max,
                    BLACK.stroke_width(2),
                    14,
                )
            }))
            .map_err(draw_error)?;
        if let Some(goal) = goal {
            chart
                .draw_series(LineSeries::new(
                    [(SegmentValue::Exact(0), goal), (SegmentValue::Last, goal)],
                    RED.stroke_width(2),
                ))
                .map_err(draw_error)?
                .label(format!(
                    "enforcer's goal: at most 1/3 of ipset's and 1/5 of nftables' ({goal:.0} ns)"
                ))
                .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED.stroke_width(2)));
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.9))
                .border_style(BLACK)
                .label_font((FONT, 14))
                .position(SeriesLabelPosition::UpperRight)
                .draw()
                .map_err(draw_error)?;
        }
        root.present().map_err(draw_error)?;
    }
    Ok(svg)
}

/// One line of the lookup chart: (x position, ns) per prefix count measured.
struct Line {
    label: String,
    color: RGBColor,
    dashed: bool,
    points: Vec<(u32, f64)>,
}

fn short_count(n: u64) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

/// The prefix counts measured (IPv4, IPv6), in order, and whether the enforcer's maps held each.
fn lookup_sizes(rows: &[Value]) -> Vec<(u64, u64, bool)> {
    let mut sizes: Vec<(u64, u64, bool)> = Vec::new();
    for row in rows {
        let v4 = row["prefixes_v4"].as_u64().unwrap_or(0);
        let v6 = row["prefixes_v6"].as_u64().unwrap_or(0);
        let fits = row["fits"].as_bool().unwrap_or(false);
        match sizes.iter_mut().find(|s| s.0 == v4) {
            Some(size) => size.2 &= fits,
            None => sizes.push((v4, v6, fits)),
        }
    }
    sizes.sort_by_key(|s| s.0);
    sizes
}

fn lookup_lines(rows: &[Value], sizes: &[(u64, u64, bool)]) -> Vec<Line> {
    let mut lines = Vec::new();
    for (family, dashed) in [("ipv4", false), ("ipv6", true)] {
        for (what, key, color) in [
            (
                "enforcer",
                "enforcer_extra_ns_median",
                RGBColor(31, 119, 180),
            ),
            ("LPM trie", "lpm_extra_ns_median", RGBColor(255, 127, 14)),
        ] {
            for (addresses, shade) in [("hit", 1.0), ("miss", 0.55)] {
                let points: Vec<(u32, f64)> = rows
                    .iter()
                    .filter(|r| r["family"] == family && r["addresses"] == addresses)
                    .filter_map(|r| {
                        let v4 = r["prefixes_v4"].as_u64()?;
                        let x = sizes.iter().position(|s| s.0 == v4)?;
                        Some((u32::try_from(x).ok()?, r[key].as_f64()?))
                    })
                    .collect();
                if points.is_empty() {
                    continue;
                }
                let mix = |c: u8| (f64::from(c) * shade + 255.0 * (1.0 - shade)) as u8;
                lines.push(Line {
                    label: format!(
                        "{what}, {family} {addresses}{}",
                        if dashed { " (dashed)" } else { "" }
                    ),
                    color: RGBColor(mix(color.0), mix(color.1), mix(color.2)),
                    dashed,
                    points,
                });
            }
        }
    }
    lines
}

fn lookup_chart(datapath: &Value) -> Result<String> {
    let rows = datapath["lookups"]
        .as_array()
        .ok_or_else(|| anyhow!("bench-datapath.json: no lookups"))?;
    let sizes = lookup_sizes(rows);
    let lines = lookup_lines(rows, &sizes);
    if lines.is_empty() {
        bail!("bench-datapath.json: no lookup to draw");
    }
    let values = lines.iter().flat_map(|l| l.points.iter().map(|p| p.1));
    let top = values.clone().fold(LOOKUP_GOAL_NS, f64::max) * 1.1;
    let bottom = values.fold(0.0, f64::min);
    let labels: Vec<String> = sizes
        .iter()
        .map(|(v4, v6, fits)| {
            let mark = if *fits {
                ""
            } else {
                " (enforcer: does not fit)"
            };
            if *v6 > 0 {
                format!("{} + {} v6{mark}", short_count(*v4), short_count(*v6))
            } else {
                format!("{}{mark}", short_count(*v4))
            }
        })
        .collect();
    let n = u32::try_from(sizes.len())?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "In-program cost of a lookup over parsing, many distinct addresses",
                (FONT, 20),
            )
            .margin(16)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d((0..n - 1).into_segmented(), bottom..top)
            .map_err(draw_error)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc("IPv4 prefixes (+ IPv6 prefixes)")
            .y_desc("ns per packet over a program that only parses (median of rounds)")
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => labels
                    .get(usize::try_from(*i).unwrap_or(usize::MAX))
                    .cloned()
                    .unwrap_or_default(),
                _ => String::new(),
            })
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style((FONT, 13))
            .draw()
            .map_err(draw_error)?;
        for line in &lines {
            let style = line.color.stroke_width(2);
            let points = line
                .points
                .iter()
                .map(|&(x, y)| (SegmentValue::CenterOf(x), y));
            let color = line.color;
            let drawn = if line.dashed {
                chart
                    .draw_series(DashedLineSeries::new(points.clone(), 6, 4, style))
                    .map_err(draw_error)?;
                chart.draw_series(points.map(|p| Circle::new(p, 3, color.filled())))
            } else {
                chart.draw_series(LineSeries::new(points, style).point_size(3))
            }
            .map_err(draw_error)?;
            let dashed = line.dashed;
            drawn.label(line.label.clone()).legend(move |(x, y)| {
                let style = color.stroke_width(2);
                let gap = if dashed { 6 } else { 0 };
                EmptyElement::at((x, y))
                    + PathElement::new([(0, 0), (7, 0)], style)
                    + PathElement::new([(7 + gap, 0), (20, 0)], style)
            });
        }
        chart
            .draw_series(LineSeries::new(
                [
                    (SegmentValue::Exact(0), LOOKUP_GOAL_NS),
                    (SegmentValue::Last, LOOKUP_GOAL_NS),
                ],
                RED.stroke_width(1),
            ))
            .map_err(draw_error)?
            .label(format!("goal: at most {LOOKUP_GOAL_NS:.0} ns"))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED.stroke_width(1)));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font((FONT, 13))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(draw_error)?;
        root.present().map_err(draw_error)?;
    }
    Ok(svg)
}

/// Plotters' errors borrow the backend; keep their text.
fn draw_error<E: std::fmt::Display>(error: E) -> anyhow::Error {
    anyhow!("drawing: {error}")
}

fn read_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn main() -> Result<()> {
    let mut root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow!("the tests crate has no parent directory"))?
        .to_path_buf();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--root" => {
                root = PathBuf::from(args.next().ok_or_else(|| anyhow!("--root needs a value"))?)
            }
            other => bail!("unknown argument {other}: bench_charts [--root DIR]"),
        }
    }
    let docs = root.join("docs");
    std::fs::create_dir_all(&docs).with_context(|| format!("creating {}", docs.display()))?;
    for (input, output, chart) in [
        (
            "bench-flood.json",
            "bench-flood.svg",
            flood_chart as fn(&Value) -> Result<String>,
        ),
        ("bench-datapath.json", "bench-lookup.svg", lookup_chart),
    ] {
        let svg = chart(&read_json(&root.join(input))?).context(input)?;
        let path = docs.join(output);
        std::fs::write(&path, svg).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod unit {
    use super::*;

    fn flood() -> Value {
        let config = |median: f64, rounds: &[f64]| {
            serde_json::json!({
                "extra_ns_median": median,
                "rounds": rounds.iter().map(|e| serde_json::json!({"extra_ns": e})).collect::<Vec<_>>(),
            })
        };
        serde_json::json!({"configurations": {
            "enforcer": config(530.0, &[320.0, 530.0, 875.0]),
            "ipset_legacy": config(270.0, &[95.0, 270.0, 375.0]),
            "nftables": config(705.0, &[530.0, 705.0, 1130.0]),
        }})
    }

    /// Every configuration present is a bar labelled with its median, whiskers span the rounds,
    /// and the goal line sits at the strictest of the ratios.
    #[test]
    fn flood_chart_shows_each_configuration_and_the_goal() {
        let bars = flood_bars(&flood()).unwrap();
        let labels: Vec<&str> = bars.iter().map(|b| b.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "enforcer +530",
                "ipset (iptables-legacy) +270",
                "nftables set +705"
            ]
        );
        assert_eq!((bars[0].min, bars[0].max), (320.0, 875.0));
        assert_eq!(flood_goal(&flood()), Some(90.0));
        let svg = flood_chart(&flood()).unwrap();
        for text in labels {
            assert!(svg.contains(text), "{text} missing from the chart");
        }
        assert!(svg.contains("(90 ns)"), "the goal line's label");
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
    }

    /// One line per implementation, family and kind of address, with a point per prefix count
    /// measured; a count the enforcer's maps did not hold is marked and has no enforcer point.
    #[test]
    fn lookup_chart_has_a_line_per_series_and_marks_what_did_not_fit() {
        let row = |v4: u64, family: &str, addresses: &str, enforcer: Option<f64>, lpm: f64| {
            serde_json::json!({
                "prefixes_v4": v4, "prefixes_v6": v4 / 4, "family": family,
                "addresses": addresses, "fits": enforcer.is_some(),
                "enforcer_extra_ns_median": enforcer, "lpm_extra_ns_median": lpm,
            })
        };
        let datapath = serde_json::json!({"lookups": [
            row(0, "ipv4", "miss", Some(5.0), 20.0),
            row(1_000, "ipv4", "hit", Some(12.0), 90.0),
            row(1_000, "ipv4", "miss", Some(6.0), 60.0),
            row(1_000_000, "ipv4", "hit", None, 400.0),
            row(1_000_000, "ipv6", "hit", None, 500.0),
        ]});
        let rows = datapath["lookups"].as_array().unwrap();
        let sizes = lookup_sizes(rows);
        assert_eq!(
            sizes,
            [
                (0, 0, true),
                (1_000, 250, true),
                (1_000_000, 250_000, false)
            ]
        );
        let lines = lookup_lines(rows, &sizes);
        let summary: Vec<(&str, Vec<(u32, f64)>)> = lines
            .iter()
            .map(|l| (l.label.as_str(), l.points.clone()))
            .collect();
        assert_eq!(
            summary,
            [
                ("enforcer, ipv4 hit", vec![(1, 12.0)]),
                ("enforcer, ipv4 miss", vec![(0, 5.0), (1, 6.0)]),
                ("LPM trie, ipv4 hit", vec![(1, 90.0), (2, 400.0)]),
                ("LPM trie, ipv4 miss", vec![(0, 20.0), (1, 60.0)]),
                ("LPM trie, ipv6 hit (dashed)", vec![(2, 500.0)]),
            ]
        );
        let svg = lookup_chart(&datapath).unwrap();
        assert!(svg.contains("1M + 250k v6 (enforcer: does not fit)"));
        assert!(svg.contains("goal: at most 30 ns"));
        for (label, _) in summary {
            assert!(svg.contains(label), "{label} missing from the legend");
        }
    }
}
