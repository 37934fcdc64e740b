//! SVG charts of a `dndm bench` run (`--svg DIR`), drawn with plotters' SVG backend:
//!
//! - `throughput.svg`: per payload size, one bar per link; messages/s on the left, MB/s on
//!   the right. Both axes are logarithmic: in process runs ten to a hundred times faster than
//!   over a socket, and 64 KiB messages move a thousand times fewer messages than 8 B ones.
//! - `latency.svg`: the round trip by percentile, one line per link. The percentile axis
//!   stretches the tail (p50, p90, p99 and p99.9 equally spaced) and the time axis is
//!   logarithmic, so the median and the worst case are readable on one picture.
//!
//! Every chart is drawn into a string first and then written, so a failure names the file.

use std::fmt::Display;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{Link, Row, SIZES, rate, size_label};

/// Width and height of each chart, in pixels.
const SIZE: (u32, u32) = (1100, 460);

/// The percentiles marked on the latency chart's axis, as (quantile, label).
const PERCENTILES: [(f64, &str); 6] = [
    (0.0, "min"),
    (0.5, "p50"),
    (0.9, "p90"),
    (0.99, "p99"),
    (0.999, "p99.9"),
    (0.9999, "p99.99"),
];

/// Which figure of a throughput cell (bytes, messages/s, MB/s) a panel shows.
type Figure = fn(&(usize, f64, f64)) -> f64;

/// Most points drawn per latency line: enough for a smooth curve, few enough for a small file.
const MAX_POINTS: usize = 600;

/// Draws the charts of `rows` into `dir` (created if missing) and returns the files written.
///
/// # Errors
/// When `dir` cannot be created or a file cannot be written (the error names the path).
pub(super) fn write(dir: &Path, rows: &[Row]) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the chart directory {}", dir.display()))?;
    let mut written = Vec::new();
    for (name, svg) in [
        ("throughput.svg", throughput(rows)?),
        ("latency.svg", latency(rows)?),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, svg).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// The colour of a link, the same on every chart.
fn color(link: Link) -> RGBColor {
    match link {
        Link::InProcess => RGBColor(31, 119, 180),
        Link::Remote => RGBColor(255, 127, 14),
        Link::Mesh => RGBColor(44, 160, 44),
    }
}

/// A plotters error as an `anyhow` error naming the chart.
fn drawing(chart: &str) -> impl Fn(&dyn Display) -> anyhow::Error + '_ {
    move |e| anyhow::anyhow!("cannot draw {chart}: {e}")
}

/// A linear axis with labels at chosen points only (payload sizes, percentiles).
///
/// plotters' own `with_key_points` cannot take a label formatter on an `f64` axis.
struct Ticked {
    linear: RangedCoordf64,
    ticks: Vec<f64>,
}

impl Ticked {
    fn new(range: std::ops::Range<f64>, ticks: impl IntoIterator<Item = f64>) -> Self {
        Self {
            linear: range.into(),
            ticks: ticks.into_iter().collect(),
        }
    }
}

impl Ranged for Ticked {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.linear.map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        // Labelled grid lines only; no light lines between them.
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.linear.range()
    }
}

/// Two panels of grouped bars: messages/s and MB/s by payload size.
fn throughput(rows: &[Row]) -> anyhow::Result<String> {
    let fail = drawing("throughput.svg");
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(&e))?;
        let panels = root.split_evenly((1, 2));
        let metrics: [(&str, Figure); 2] = [
            ("messages/s by payload size (log scale)", |cell| cell.1),
            ("MB/s by payload size (log scale)", |cell| cell.2),
        ];
        for (panel, (title, value)) in panels.iter().zip(metrics) {
            bars(panel, title, rows, value, title.starts_with("messages")).map_err(|e| fail(&e))?;
        }
        root.present().map_err(|e| fail(&e))?;
    }
    Ok(svg)
}

/// One panel of [`throughput`]: for each payload size, a bar per row (link) of `value`.
fn bars(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    title: &str,
    rows: &[Row],
    value: Figure,
    legend: bool,
) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
    let values = rows
        .iter()
        .flat_map(|row| row.throughput.iter().map(value))
        .filter(|v| *v > 0.0);
    let (low, high) = values.fold((f64::MAX, f64::MIN_POSITIVE), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let low = if low > high { 1.0 } else { low };
    let sizes = SIZES.len();
    let x = Ticked::new(-0.5..sizes as f64 - 0.5, (0..sizes).map(|i| i as f64));
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(x, (low / 3.0..high * 6.0).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_label_formatter(&|i| {
            SIZES
                .get(i.round() as usize)
                .map(|(bytes, _)| size_label(*bytes))
                .unwrap_or_default()
        })
        .y_label_formatter(&|v| figure(*v))
        .label_style(("sans-serif", 13))
        .draw()?;
    let floor = low / 3.0;
    let group = 0.8;
    let width = group / rows.len().max(1) as f64;
    let text =
        TextStyle::from(("sans-serif", 11).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    for (j, row) in rows.iter().enumerate() {
        let fill = color(row.link);
        let bars = row.throughput.iter().enumerate().map(|(i, cell)| {
            let left = i as f64 - group / 2.0 + j as f64 * width;
            let top = value(cell).max(floor);
            Rectangle::new([(left, floor), (left + width * 0.9, top)], fill.filled())
        });
        let series = chart.draw_series(bars)?;
        if legend {
            series
                .label(row.link.label())
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 12, y + 6)], fill.filled()));
        }
        chart.draw_series(row.throughput.iter().enumerate().map(|(i, cell)| {
            let center = i as f64 - group / 2.0 + (j as f64 + 0.45) * width;
            Text::new(
                figure(value(cell)),
                (center, value(cell).max(floor) * 1.08),
                text.clone(),
            )
        }))?;
    }
    if legend {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.4))
            .label_font(("sans-serif", 14))
            .draw()?;
    }
    Ok(())
}

/// The tail position of quantile `q`: `-log10(1 - q)`, so p50 is at 0.3, p90 at 1, p99 at 2,
/// p99.9 at 3.
fn tail(q: f64) -> f64 {
    -(1.0 - q).log10()
}

/// Round trip by percentile, one line per row (link).
fn latency(rows: &[Row]) -> anyhow::Result<String> {
    let fail = drawing("latency.svg");
    let samples = rows.iter().map(|row| row.rtts_us.len()).max().unwrap_or(0);
    // The largest of n samples sits at quantile (n - 1) / n, i.e. tail log10(n).
    let right = (samples.max(10) as f64).log10();
    let values = rows.iter().flat_map(|row| row.rtts_us.iter().copied());
    let (low, high) = values.fold((u64::MAX, 1), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let low = low.clamp(1, high) as f64;
    let mut marks: Vec<(f64, &str)> = PERCENTILES
        .iter()
        .map(|&(q, label)| (tail(q), label))
        .filter(|(t, _)| *t <= right + 1e-9)
        .collect();
    // Every link runs as many round trips, so the right end is each line's maximum.
    if marks.last().is_some_and(|(t, _)| right - t > 0.2) {
        marks.push((right, "max"));
    }
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(&e))?;
        let x = Ticked::new(0.0..right, marks.iter().map(|(t, _)| *t));
        let mut chart = ChartBuilder::on(&root)
            .caption("round trip (8 B) by percentile", ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(72)
            .build_cartesian_2d(x, (low / 1.5..high as f64 * 1.5).log_scale())
            .map_err(|e| fail(&e))?;
        chart
            .configure_mesh()
            .x_label_formatter(&|t| {
                marks
                    .iter()
                    .find(|(mark, _)| (mark - t).abs() < 1e-9)
                    .map(|(_, label)| (*label).to_owned())
                    .unwrap_or_default()
            })
            .y_label_formatter(&|us| micros(*us))
            .y_desc("round trip")
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(|e| fail(&e))?;
        for row in rows {
            let stroke = color(row.link).stroke_width(2);
            chart
                .draw_series(LineSeries::new(curve(&row.rtts_us, right), stroke))
                .map_err(|e| fail(&e))?
                .label(format!(
                    "{}: p50 {}, p99 {}, max {}",
                    row.link.label(),
                    micros(row.rtt_p50_us as f64),
                    micros(row.rtt_p99_us as f64),
                    micros(row.rtt_max_us as f64)
                ))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], stroke));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.4))
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(|e| fail(&e))?;
        root.present().map_err(|e| fail(&e))?;
    }
    Ok(svg)
}

/// The points of one latency line: sample `i` of `n` (ascending) at tail position
/// `tail(i / n)`, thinned to about [`MAX_POINTS`] evenly spaced along `0..right`; the last
/// sample (the maximum) is always kept.
fn curve(sorted: &[u64], right: f64) -> Vec<(f64, f64)> {
    let n = sorted.len();
    let step = right / MAX_POINTS as f64;
    let mut points: Vec<(f64, f64)> = Vec::with_capacity(MAX_POINTS + 1);
    for (i, &us) in sorted.iter().enumerate() {
        let position = tail(i as f64 / n as f64);
        let last = i + 1 == n;
        if last || points.last().is_none_or(|(t, _)| position - t >= step) {
            points.push((position, us.max(1) as f64));
        }
    }
    points
}

/// `0.6`, `8.5`, `42`, `1.4k`, `1.23M`: small figures keep a decimal.
fn figure(value: f64) -> String {
    if value < 10.0 {
        format!("{value:.1}")
    } else {
        rate(value)
    }
}

/// `850 µs`, `1.2 ms`, `2.5 s`.
fn micros(us: f64) -> String {
    if us >= 1e6 {
        format!("{:.1} s", us / 1e6)
    } else if us >= 1e3 {
        format!("{:.1} ms", us / 1e3)
    } else {
        format!("{us:.0} µs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(link: Link, scale: f64, rtts_us: Vec<u64>) -> Row {
        let at = |q| super::super::percentile(&rtts_us, q);
        Row {
            link,
            throughput: SIZES
                .iter()
                .map(|&(size, _)| {
                    let rate = scale / (size as f64).sqrt();
                    (size, rate, rate * size as f64 / 1e6)
                })
                .collect(),
            rtt_p50_us: at(0.5),
            rtt_p90_us: at(0.9),
            rtt_p99_us: at(0.99),
            rtt_p999_us: at(0.999),
            rtt_max_us: at(1.0),
            rtts_us,
        }
    }

    /// Every text node of `svg`, which must be well-formed XML with an `svg` root.
    fn texts(svg: &str) -> String {
        let document = roxmltree::Document::parse(svg).unwrap();
        assert_eq!(document.root_element().tag_name().name(), "svg");
        document
            .descendants()
            .filter_map(|node| node.text())
            .collect::<Vec<_>>()
            .join("|")
    }

    #[test]
    fn both_charts_are_svg_naming_every_link_size_and_percentile() {
        let rows = vec![
            row(Link::InProcess, 1e7, (1..=5000).collect()),
            row(Link::Remote, 1e6, (100..=2100).collect()),
            row(Link::Mesh, 9e5, vec![150; 3]),
        ];
        let throughput = texts(&throughput(&rows).unwrap());
        for label in [
            "in-process",
            "remote",
            "mesh",
            "8 B",
            "1 KiB",
            "64 KiB",
            "MB/s",
        ] {
            assert!(throughput.contains(label), "{label} in {throughput}");
        }
        let latency = texts(&latency(&rows).unwrap());
        for label in [
            "in-process: p50",
            "remote: p50",
            "mesh: p50",
            "p90",
            "p99.9",
            "max",
        ] {
            assert!(latency.contains(label), "{label} in {latency}");
        }
        // 5000 samples reach p99.9 (tail 3) but not p99.99 (tail 4).
        assert!(!latency.contains("p99.99"), "{latency}");
    }

    #[test]
    fn write_creates_the_directory_and_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("charts");
        let rows = vec![row(Link::Remote, 1e6, vec![90, 100, 120])];
        let written = write(&target, &rows).unwrap();
        assert_eq!(
            written,
            [target.join("throughput.svg"), target.join("latency.svg")]
        );
        for path in written {
            texts(&std::fs::read_to_string(path).unwrap());
        }
    }

    #[test]
    fn a_latency_line_is_thinned_but_keeps_its_ends() {
        let sorted: Vec<u64> = (1..=100_000).collect();
        let right = (sorted.len() as f64).log10();
        let points = curve(&sorted, right);
        assert!(points.len() <= MAX_POINTS + 2, "{}", points.len());
        assert_eq!(points.first(), Some(&(0.0, 1.0)));
        assert_eq!(points.last().map(|p| p.1), Some(100_000.0));
        assert!(
            points
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
        );
    }

    #[test]
    fn figures_keep_a_decimal_below_ten() {
        assert_eq!(figure(0.59), "0.6");
        assert_eq!(figure(42.4), "42");
        assert_eq!(figure(1_410_000.0), "1.41M");
    }

    #[test]
    fn durations_read_in_their_unit() {
        assert_eq!(micros(850.0), "850 µs");
        assert_eq!(micros(1234.0), "1.2 ms");
        assert_eq!(micros(2_500_000.0), "2.5 s");
    }
}
