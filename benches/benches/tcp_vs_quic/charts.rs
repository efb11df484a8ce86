//! SVG charts of the `tcp-vs-quic` rows: latency distributions (CDF), camera frames per second
//! over time, goodput, and the camera's frame rate against frame age across profiles.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use plotters::{coord::ranged1d::Ranged, prelude::*};

use super::Row;

/// What a row keeps for its chart.
#[derive(Debug, Default, Clone)]
pub(crate) struct Series {
    /// Per-item latency or age, microseconds.
    pub(crate) latencies_us: Vec<u64>,
    /// Frames delivered in each second of the run.
    pub(crate) fps: Vec<u32>,
    /// Goodput figures.
    pub(crate) goodput_mbit_s: Vec<f64>,
}

/// Counts per whole second of `offsets_us`.
pub(crate) fn per_second(offsets_us: impl Iterator<Item = u64>) -> Vec<u32> {
    let mut v: Vec<u32> = Vec::new();
    for t in offsets_us {
        let s = (t / 1_000_000) as usize;
        if v.len() <= s {
            v.resize(s + 1, 0);
        }
        v[s] += 1;
    }
    v
}

const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("chart: {e}")
}

/// Writes every chart the rows allow; returns the files written.
pub(crate) fn write_all(dir: &Path, rows: &[Row]) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let mut groups: Vec<(String, Vec<&Row>)> = Vec::new();
    for row in rows {
        let key = format!("{:?}-{}", row.workload, row.profile).to_lowercase();
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(row),
            None => groups.push((key, vec![row])),
        }
    }
    for (key, rows) in groups {
        if rows.iter().any(|r| !r.series.latencies_us.is_empty()) {
            let path = dir.join(format!("{key}-latency.svg"));
            cdf(&path, &key, &rows)?;
            written.push(path);
        }
        if rows.iter().any(|r| !r.series.fps.is_empty()) {
            let path = dir.join(format!("{key}-fps.svg"));
            fps(&path, &key, &rows)?;
            written.push(path);
        }
        if rows.iter().any(|r| !r.series.goodput_mbit_s.is_empty()) {
            let path = dir.join(format!("{key}-goodput.svg"));
            goodput(&path, &key, &rows)?;
            written.push(path);
        }
    }
    // One trade-off chart per workload with a camera, every profile in it.
    for (workload, name) in [
        (super::Workload::Camera, "camera"),
        (super::Workload::Telemetry, "telemetry"),
    ] {
        let cameras: Vec<Camera> = rows
            .iter()
            .filter(|r| r.workload == workload)
            .filter_map(Camera::of)
            .collect();
        if !cameras.is_empty() {
            let path = dir.join(format!("{name}-camera-tradeoff.svg"));
            tradeoff(&path, name, &cameras)?;
            written.push(path);
        }
    }
    Ok(written)
}

/// A row's camera figures: the camera workload's, or the camera beside the telemetry feeds.
struct Camera {
    /// The transport, controller and delivery: one colour and legend entry each.
    series: String,
    profile: String,
    fps: f64,
    age_p99_ms: f64,
}

impl Camera {
    fn of(row: &Row) -> Option<Self> {
        let (fps, age) = match row.workload {
            super::Workload::Camera => ("fps", "age_p99_ms"),
            super::Workload::Telemetry => ("camera_fps", "camera_age_p99_ms"),
            _ => return None,
        };
        let get = |k: &str| row.metrics.get(k).and_then(serde_json::Value::as_f64);
        Some(Self {
            series: label(row),
            profile: row.profile.clone(),
            fps: get(fps)?,
            age_p99_ms: get(age)?.max(1.0),
        })
    }
}

/// Frames per second against frame age p99 (log), one point per row, one colour per
/// transport, labelled with the profile: up and to the left is better.
fn tradeoff(path: &Path, workload: &str, cameras: &[Camera]) -> Result<()> {
    let root = SVGBackend::new(path, (1000, 620)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let max_age = cameras.iter().map(|c| c.age_p99_ms).fold(100.0, f64::max);
    let top = cameras.iter().map(|c| c.fps).fold(30.0, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{workload} workload: camera frames per second against frame age p99"),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((5f64..max_age * 3.0).log_scale(), 0f64..top * 1.1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("frame age p99 (ms, log)")
        .y_desc("frames delivered per second")
        .draw()
        .map_err(err)?;
    let mut series: Vec<&str> = Vec::new();
    for c in cameras {
        if !series.contains(&c.series.as_str()) {
            series.push(&c.series);
        }
    }
    for (i, name) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points = cameras.iter().filter(|c| c.series == *name);
        chart
            .draw_series(points.clone().map(|c| {
                EmptyElement::at((c.age_p99_ms, c.fps))
                    + Circle::new((0, 0), 4, color.filled())
                    + Text::new(
                        c.profile.clone(),
                        (6, -4 - 10 * (i as i32 % 3)),
                        ("sans-serif", 12).into_font().color(&color),
                    )
            }))
            .map_err(err)?
            .label(name.to_string())
            .legend(move |(x, y)| Circle::new((x + 10, y), 4, color.filled()));
    }
    legend(&mut chart)?;
    root.present().map_err(err)?;
    Ok(())
}

fn label(row: &Row) -> String {
    match row.delivery {
        "reliable" => format!("{} ({})", row.transport, row.cc),
        delivery => format!("{} ({}, {delivery})", row.transport, row.cc),
    }
}

/// Latency CDF, log-scaled milliseconds.
fn cdf(path: &Path, title: &str, rows: &[&Row]) -> Result<()> {
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let max_ms = rows
        .iter()
        .flat_map(|r| r.series.latencies_us.iter())
        .max()
        .map_or(1.0, |&m| m as f64 / 1e3)
        .max(1.0);
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{title}: latency distribution"), ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((0.1f64..max_ms * 1.2).log_scale(), 0f64..1.0)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("latency / age (ms, log)")
        .y_desc("fraction of items")
        .draw()
        .map_err(err)?;
    for (i, row) in rows.iter().enumerate() {
        let mut v: Vec<f64> = row
            .series
            .latencies_us
            .iter()
            .map(|&u| (u as f64 / 1e3).max(0.1))
            .collect();
        if v.is_empty() {
            continue;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len() as f64;
        // At most ~2,000 points per line.
        let step = (v.len() / 2_000).max(1);
        let points: Vec<(f64, f64)> = v
            .iter()
            .enumerate()
            .step_by(step)
            .map(|(k, &x)| (x, (k + 1) as f64 / n))
            .collect();
        line(&mut chart, i, row, points)?;
    }
    legend(&mut chart)?;
    root.present().map_err(err)?;
    Ok(())
}

/// One row's line, in the row's colour, with its legend entry.
fn line<'a, 'b: 'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, Cartesian2d<X, Y>>,
    i: usize,
    row: &Row,
    points: Vec<(f64, f64)>,
) -> Result<()>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    let color = COLORS[i % COLORS.len()];
    chart
        .draw_series(LineSeries::new(points, color.stroke_width(2)))
        .map_err(err)?
        .label(label(row))
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    Ok(())
}

fn legend<'a, 'b: 'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, Cartesian2d<X, Y>>,
) -> Result<()>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    Ok(())
}

fn fps(path: &Path, title: &str, rows: &[&Row]) -> Result<()> {
    let root = SVGBackend::new(path, (900, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let secs = rows.iter().map(|r| r.series.fps.len()).max().unwrap_or(1) as f64;
    let top = rows
        .iter()
        .flat_map(|r| r.series.fps.iter())
        .max()
        .copied()
        .unwrap_or(30)
        .max(30) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{title}: frames delivered per second"),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..secs, 0f64..top * 1.1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("fps")
        .draw()
        .map_err(err)?;
    for (i, row) in rows.iter().enumerate() {
        let points: Vec<(f64, f64)> = row
            .series
            .fps
            .iter()
            .enumerate()
            .map(|(s, &n)| (s as f64 + 0.5, f64::from(n)))
            .collect();
        line(&mut chart, i, row, points)?;
    }
    legend(&mut chart)?;
    root.present().map_err(err)?;
    Ok(())
}

fn goodput(path: &Path, title: &str, rows: &[&Row]) -> Result<()> {
    let root = SVGBackend::new(path, (900, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let top = rows
        .iter()
        .flat_map(|r| r.series.goodput_mbit_s.iter())
        .copied()
        .fold(1.0, f64::max);
    let n = rows.len();
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{title}: goodput (Mbit/s)"), ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..n as f64, 0f64..top * 1.15)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("Mbit/s")
        .draw()
        .map_err(err)?;
    for (i, row) in rows.iter().enumerate() {
        let value = row.series.goodput_mbit_s.first().copied().unwrap_or(0.0);
        let color = COLORS[i % COLORS.len()];
        let x = i as f64;
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(x + 0.15, 0.0), (x + 0.85, value)],
                color.filled(),
            )))
            .map_err(err)?;
        chart
            .draw_series(std::iter::once(Text::new(
                format!("{} {value:.1}", label(row)),
                (x + 0.15, value * 1.02 + top * 0.02),
                ("sans-serif", 14),
            )))
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}
