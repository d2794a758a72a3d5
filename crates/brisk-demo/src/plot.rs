//! The latency distribution of both variants as an SVG (plotters): each request's latency
//! against its percentile, on a log scale.

use std::path::Path;

use plotters::prelude::*;

/// Writes the plot of `naive` and `brisk` latencies (µs, sorted) to `path`.
pub(crate) fn latency(path: &Path, naive: &[u32], brisk: &[u32]) -> Result<(), String> {
    let curve = |sorted: &[u32]| -> Vec<(f64, f64)> {
        if sorted.is_empty() {
            return Vec::new();
        }
        (0..=999)
            .map(|step| {
                let q = f64::from(step) / 1000.0;
                let at = ((sorted.len() - 1) as f64 * q).round() as usize;
                (q * 100.0, (f64::from(sorted[at]) / 1000.0).max(0.01))
            })
            .collect()
    };
    let (a, b) = (curve(naive), curve(brisk));
    let top = a.iter().chain(&b).map(|(_, ms)| *ms).fold(1.0f64, f64::max) * 1.5;
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|error| error.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption("latency by percentile (ms, log scale)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..100f64, (0.01f64..top).log_scale())
        .map_err(|error| error.to_string())?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("ms")
        .draw()
        .map_err(|error| error.to_string())?;
    for (points, color, name) in [(a, RED, "naive"), (b, BLUE, "brisk")] {
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|error| error.to_string())?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|error| error.to_string())?;
    root.present().map_err(|error| error.to_string())
}

/// Writes the chaos run's timeline to `path`: requests and failures per second (`points`:
/// time in s, requests/s, failures/s) on a log scale (none is drawn at its floor, 0.5), with
/// each outage (`outages`: from, to, name) shaded.
pub(crate) fn timeline(
    path: &Path,
    points: &[(f64, f64, f64)],
    outages: &[(f64, f64, String)],
) -> Result<(), String> {
    let end = points.last().map_or(1.0, |point| point.0).max(1.0);
    let top = points
        .iter()
        .map(|point| point.1.max(point.2))
        .fold(1.0f64, f64::max)
        * 3.0;
    const FLOOR: f64 = 0.5;
    let root = SVGBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|error| error.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "requests and failures per second, log scale (shaded: a server down)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..end, (FLOOR..top).log_scale())
        .map_err(|error| error.to_string())?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("per second")
        .draw()
        .map_err(|error| error.to_string())?;
    chart
        .draw_series(outages.iter().map(|(from, to, _)| {
            Rectangle::new(
                [(*from, 0.0), (*to, top)],
                RGBColor(255, 200, 120).mix(0.4).filled(),
            )
        }))
        .map_err(|error| error.to_string())?;
    chart
        .draw_series(
            outages.iter().map(|(from, _, name)| {
                Text::new(name.clone(), (*from, top * 0.8), ("sans-serif", 13))
            }),
        )
        .map_err(|error| error.to_string())?;
    let series = [
        (
            points.iter().map(|p| (p.0, p.1)).collect::<Vec<_>>(),
            BLUE,
            "requests/s",
        ),
        (
            points.iter().map(|p| (p.0, p.2)).collect::<Vec<_>>(),
            RED,
            "failures/s",
        ),
    ];
    for (line, color, name) in series {
        chart
            .draw_series(LineSeries::new(line, color.stroke_width(2)))
            .map_err(|error| error.to_string())?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|error| error.to_string())?;
    root.present().map_err(|error| error.to_string())
}
