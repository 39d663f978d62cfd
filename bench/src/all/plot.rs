//! The latency plot: each path's open-loop latency by percentile (all
//! rounds pooled), percentiles on a "nines" axis (90%, 99%, 99.9% equally
//! spaced) and latency on a log axis, so the KMS path's tens of
//! milliseconds and the others' fractions of one fit in one figure. SVG
//! only: plotters' SVG backend writes text as <text> for the viewer to set.

use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;

use super::measure::Open;
use super::paths::PathKind;

const COLOURS: [RGBColor; 6] = [
    RGBColor(0, 0, 0),
    RGBColor(0, 150, 57),
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
];

/// Up to 99.9%: with a few tens of thousands of requests per path, the
/// percentiles above that rest on a handful of samples.
const MAX_NINES: f64 = 3.0;

fn pooled(open: &[Open], kind: PathKind) -> anyhow::Result<Option<Histogram<u64>>> {
    let mut runs = open.iter().filter(|o| o.kind == kind);
    let Some(first) = runs.next() else {
        return Ok(None);
    };
    let mut all = first.histogram.clone();
    for o in runs {
        all.add(&o.histogram)?;
    }
    Ok(Some(all))
}

/// (nines, µs) along the curve: nines = -log10(1 - q).
fn curve(histogram: &Histogram<u64>) -> Vec<(f64, f64)> {
    (0..=60)
        .map(|i| {
            let nines = MAX_NINES * f64::from(i) / 60.0;
            let q = 1.0 - 10f64.powf(-nines);
            (
                nines,
                (histogram.value_at_quantile(q) as f64 / 1000.0).max(1.0),
            )
        })
        .collect()
}

pub fn latency(open: &[Open], rate: f64, out: &Path) -> anyhow::Result<()> {
    let mut series = Vec::new();
    for kind in PathKind::ALL {
        if let Some(histogram) = pooled(open, kind)? {
            series.push((kind, curve(&histogram)));
        }
    }
    let (mut lo, mut hi) = (f64::INFINITY, 1.0f64);
    for (_, points) in &series {
        for &(_, us) in points {
            lo = lo.min(us);
            hi = hi.max(us);
        }
    }
    let lo = if lo.is_finite() { lo * 0.8 } else { 1.0 };
    let hi = hi * 1.25;
    let fail = |e: &dyn std::fmt::Display| anyhow::anyhow!("plot {}: {e}", out.display());
    let root = SVGBackend::new(out, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Latency by percentile, open loop ({rate:.0} requests/s; KMS path at its own rate)"
            ),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..MAX_NINES, (lo..hi).log_scale())
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (µs, log scale)")
        .x_labels(4)
        .y_labels(12)
        .x_label_formatter(&|nines| format!("{}%", round_pct(100.0 * (1.0 - 10f64.powf(-nines)))))
        .y_label_formatter(&|us| format!("{us:.0}"))
        .draw()
        .map_err(|e| fail(&e))?;
    for (i, (kind, points)) in series.into_iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))
            .map_err(|e| fail(&e))?
            .label(kind.label())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}

/// 0, 90, 99, 99.9 rather than 99.90000000000001.
fn round_pct(pct: f64) -> f64 {
    (pct * 1000.0).round() / 1000.0
}
