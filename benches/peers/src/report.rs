//! The Markdown tables printed at the end of a run.

use std::fmt::Write as _;

use crate::RowResult;
use crate::payload::Kind;

/// Renders one throughput table per payload kind and one round-trip table. Ratios are to the
/// Zenoh row (higher is better for throughput, lower for round trips); the last throughput
/// column is the largest size's rate as a share of raw TCP's.
pub(crate) fn render(rows: &[RowResult], sizes: &[usize], kinds: &[Kind]) -> String {
    let mut out = String::new();
    let zenoh = rows.iter().find(|r| r.zenoh);
    let raw = rows.iter().find(|r| r.raw);
    let largest = sizes.iter().copied().max();
    // Writing to a String cannot fail; the results are ignored below.
    for &kind in kinds {
        let _ = writeln!(out, "\n### Throughput, {} payloads\n", kind.label());
        let mut header = String::from("| row |");
        let mut rule = String::from("|---|");
        for &size in sizes {
            let size = size_label(size);
            let _ = write!(header, " {size} msgs/s | {size} MB/s | ÷ zenoh |");
            rule.push_str("---:|---:|---:|");
        }
        if let Some(largest) = largest {
            let _ = write!(header, " {} ÷ raw tcp |", size_label(largest));
            rule.push_str("---:|");
        }
        let _ = writeln!(out, "{header}\n{rule}");
        for row in rows {
            let _ = write!(out, "| {} |", row.label);
            for &size in sizes {
                let rate = rate_of(row, kind, size);
                let base = zenoh.and_then(|z| rate_of(z, kind, size));
                let _ = write!(
                    out,
                    " {} | {} | {} |",
                    rate.map_or_else(dash, fmt_rate),
                    rate.map_or_else(dash, |r| format!("{:.0}", r * size as f64 / 1e6)),
                    ratio(rate, base),
                );
            }
            if let Some(largest) = largest {
                let share = rate_of(row, kind, largest)
                    .zip(raw.and_then(|r| rate_of(r, kind, largest)))
                    .map_or_else(dash, |(r, base)| format!("{:.0} %", 100.0 * r / base));
                let _ = write!(out, " {share} |");
            }
            out.push('\n');
        }
    }
    let _ = writeln!(
        out,
        "\n### Round trip, 8 B ping-pong\n\n| row | p50 | ÷ zenoh | p99 | ÷ zenoh |\n|---|---:|---:|---:|---:|"
    );
    for row in rows {
        let p50 = row.p50.as_secs_f64() * 1e6;
        let p99 = row.p99.as_secs_f64() * 1e6;
        let _ = writeln!(
            out,
            "| {} | {p50:.0} µs | {} | {p99:.0} µs | {} |",
            row.label,
            ratio(Some(p50), zenoh.map(|z| z.p50.as_secs_f64() * 1e6)),
            ratio(Some(p99), zenoh.map(|z| z.p99.as_secs_f64() * 1e6)),
        );
    }
    out
}

/// Merges several passes over the same rows into one, keeping each figure's median (the upper
/// one of an even count).
pub(crate) fn median(passes: Vec<Vec<RowResult>>) -> Vec<RowResult> {
    let mut passes = passes.into_iter();
    let Some(mut rows) = passes.next() else {
        return Vec::new();
    };
    let rest: Vec<Vec<RowResult>> = passes.collect();
    if rest.is_empty() {
        return rows;
    }
    for (i, row) in rows.iter_mut().enumerate() {
        let others: Vec<&RowResult> = rest.iter().filter_map(|pass| pass.get(i)).collect();
        for t in &mut row.throughput {
            let mut rates: Vec<f64> = others
                .iter()
                .filter_map(|o| rate_of(o, t.kind, t.size))
                .chain([t.rate])
                .collect();
            rates.sort_by(f64::total_cmp);
            t.rate = rates[rates.len() / 2];
        }
        let mut p50: Vec<_> = others.iter().map(|o| o.p50).chain([row.p50]).collect();
        let mut p99: Vec<_> = others.iter().map(|o| o.p99).chain([row.p99]).collect();
        p50.sort_unstable();
        p99.sort_unstable();
        row.p50 = p50[p50.len() / 2];
        row.p99 = p99[p99.len() / 2];
    }
    rows
}

fn rate_of(row: &RowResult, kind: Kind, size: usize) -> Option<f64> {
    row.throughput
        .iter()
        .find(|t| t.kind == kind && t.size == size)
        .map(|t| t.rate)
}

fn ratio(value: Option<f64>, base: Option<f64>) -> String {
    value
        .zip(base)
        .filter(|(_, base)| *base > 0.0)
        .map_or_else(dash, |(v, b)| format!("{:.2}×", v / b))
}

fn dash() -> String {
    "–".into()
}

fn size_label(size: usize) -> String {
    if size >= 1024 && size.is_multiple_of(1024) {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

fn fmt_rate(rate: f64) -> String {
    if rate >= 1e6 {
        format!("{:.2}M", rate / 1e6)
    } else if rate >= 1e4 {
        format!("{:.1}k", rate / 1e3)
    } else {
        format!("{rate:.0}")
    }
}
