//! The report's charts as inline SVG (plotters' SVG backend escapes every text it draws, so
//! labels from Prometheus cannot break out of the <svg>).

use std::collections::BTreeMap;

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use super::ReportError;

const FONT: &str = "sans-serif";
const WIDTH: u32 = 960;
const HEIGHT: u32 = 360;

fn draw_error<E: std::error::Error>(error: E) -> ReportError {
    ReportError::Chart(error.to_string())
}

/// A site's colour, the same in every chart.
pub fn color(index: usize) -> RGBColor {
    let (r, g, b) = Palette99::pick(index).rgb();
    RGBColor(r, g, b)
}

/// The x axis of `n` segments; a range of one value has no width, so one segment gets an empty
/// neighbour.
fn segments(
    n: u32,
) -> plotters::coord::ranged1d::SegmentedCoord<plotters::coord::types::RangedCoordu32> {
    (0..n.max(2) - 1).into_segmented()
}

/// Room above the highest value; a chart of zeros still gets an axis.
fn top(max: f64) -> f64 {
    if max > 0.0 { max * 1.15 } else { 1.0 }
}

/// A line per site: packets per bucket of one platform. `sites` gives each site's colour index.
pub fn trend(
    platform: &str,
    labels: &[String],
    lines: &BTreeMap<String, Vec<f64>>,
    sites: &[String],
) -> Result<String, ReportError> {
    let n = u32::try_from(labels.len()).map_err(draw_error)?;
    let max = lines
        .values()
        .flat_map(|v| v.iter().copied())
        .fold(0.0, f64::max);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("{platform}: packets per site"), (FONT, 22))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(80)
            .build_cartesian_2d(segments(n), 0.0..top(max))
            .map_err(draw_error)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            // The default fine grid reads as noise on paper.
            .light_line_style(TRANSPARENT)
            .x_labels(labels.len().clamp(1, 16))
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => usize::try_from(*i)
                    .ok()
                    .and_then(|i| labels.get(i).cloned())
                    .unwrap_or_default(),
                _ => String::new(),
            })
            .y_label_formatter(&|v| format!("{v:.0}"))
            .y_desc("packets")
            .label_style((FONT, 15))
            .draw()
            .map_err(draw_error)?;
        for (site, values) in lines {
            let index = sites.iter().position(|s| s == site).unwrap_or(0);
            let style = color(index).stroke_width(2);
            let points: Vec<(SegmentValue<u32>, f64)> = (0..n)
                .zip(values)
                .map(|(i, v)| (SegmentValue::CenterOf(i), *v))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), style))
                .map_err(draw_error)?
                .label(site.as_str())
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 18, y)], color(index).stroke_width(3))
                });
            chart
                .draw_series(
                    points
                        .into_iter()
                        .map(|p| Circle::new(p, 3, color(index).filled())),
                )
                .map_err(draw_error)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font((FONT, 15))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(draw_error)?;
        root.present().map_err(draw_error)?;
    }
    Ok(svg)
}

/// A bar per site, stacked by platform: packets over the period. `totals` maps platform, then
/// site, to packets.
pub fn per_site(
    sites: &[String],
    totals: &BTreeMap<String, BTreeMap<String, f64>>,
) -> Result<String, ReportError> {
    let n = u32::try_from(sites.len()).map_err(draw_error)?;
    let site_total = |site: &str| -> f64 {
        totals
            .values()
            .filter_map(|per_site| per_site.get(site))
            .sum()
    };
    let max = sites.iter().map(|s| site_total(s)).fold(0.0, f64::max);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Packets per site over the period", (FONT, 22))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(80)
            .build_cartesian_2d(segments(n), 0.0..top(max))
            .map_err(draw_error)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            // The default fine grid reads as noise on paper.
            .light_line_style(TRANSPARENT)
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => usize::try_from(*i)
                    .ok()
                    .and_then(|i| sites.get(i).cloned())
                    .unwrap_or_default(),
                _ => String::new(),
            })
            .y_label_formatter(&|v| format!("{v:.0}"))
            .y_desc("packets")
            .label_style((FONT, 15))
            .draw()
            .map_err(draw_error)?;
        // Each platform's segment sits on the platforms before it.
        let mut base = vec![0.0; sites.len()];
        for (p, (platform, per_site)) in totals.iter().enumerate() {
            // Platforms take colours after the sites' so the two never look alike.
            let fill = color(sites.len() + p);
            let mut bars = Vec::new();
            for (i, site) in sites.iter().enumerate() {
                let value = per_site.get(site).copied().unwrap_or(0.0);
                let Ok(x) = u32::try_from(i) else { continue };
                let Some(bottom) = base.get_mut(i) else {
                    continue;
                };
                if value > 0.0 {
                    let mut bar = Rectangle::new(
                        [
                            (SegmentValue::Exact(x), *bottom),
                            (SegmentValue::Exact(x + 1), *bottom + value),
                        ],
                        fill.filled(),
                    );
                    bar.set_margin(0, 0, 12, 12);
                    bars.push(bar);
                }
                *bottom += value;
            }
            chart
                .draw_series(bars)
                .map_err(draw_error)?
                .label(platform.as_str())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], fill.filled()));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font((FONT, 15))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(draw_error)?;
        root.present().map_err(draw_error)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_labels_stay_text() {
        let sites = vec!["<script>alert(1)</script>".to_owned(), "b&c".to_owned()];
        let mut lines = BTreeMap::new();
        lines.insert(sites[0].clone(), vec![1.0, 5.0]);
        lines.insert(sites[1].clone(), vec![2.0, 0.0]);
        let svg = trend(
            "</svg><img src=x>",
            &["a".into(), "b".into()],
            &lines,
            &sites,
        )
        .unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(!svg.contains("<script"), "{svg}");
        assert!(!svg.contains("<img"), "{svg}");
        assert!(svg.contains("&lt;script&gt;"), "{svg}");
        let totals: BTreeMap<String, BTreeMap<String, f64>> = [(
            "\"teams\"".to_owned(),
            sites.iter().map(|s| (s.clone(), 3.0)).collect(),
        )]
        .into_iter()
        .collect();
        let svg = per_site(&sites, &totals).unwrap();
        assert!(!svg.contains("<script"), "{svg}");
        assert_eq!(svg.matches("</svg>").count(), 1);
    }

    fn fill(c: RGBColor) -> String {
        format!("fill=\"#{:02X}{:02X}{:02X}\"", c.0, c.1, c.2)
    }

    #[test]
    fn a_single_site_and_a_single_bucket_are_drawn() {
        let sites = vec!["a".to_owned()];
        let totals: BTreeMap<String, BTreeMap<String, f64>> = [(
            "teams".to_owned(),
            [("a".to_owned(), 5.0)].into_iter().collect(),
        )]
        .into_iter()
        .collect();
        let svg = per_site(&sites, &totals).unwrap();
        // The legend's swatch and the bar, both of some width.
        let widths: Vec<f64> = svg
            .lines()
            .filter(|l| l.starts_with("<rect") && l.contains(&fill(color(1))))
            .filter_map(|l| l.split("width=\"").nth(1)?.split('"').next()?.parse().ok())
            .collect();
        assert_eq!(widths.len(), 2, "{svg}");
        assert!(widths.iter().all(|w| *w > 0.0), "{widths:?}");
        let lines = [("a".to_owned(), vec![5.0])].into_iter().collect();
        let svg = trend("teams", &["12-03".to_owned()], &lines, &sites).unwrap();
        // The point's circle.
        assert!(svg.contains("<circle"), "{svg}");
    }

    #[test]
    fn charts_of_nothing_still_draw() {
        let svg = per_site(&[], &BTreeMap::new()).unwrap();
        assert!(svg.starts_with("<svg"));
        let svg = trend("teams", &[], &BTreeMap::new(), &[]).unwrap();
        assert!(svg.contains("teams"));
    }
}
