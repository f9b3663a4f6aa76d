//! The SVG charts, drawn with `plotters`' SVG backend (no font file is read: the SVG names a font family
//! and the viewer draws the text):
//! - `cpu_per_chunk.svg`: relay CPU per relayed chunk against the number of streams, one line per relay;
//! - `memory_per_stream.svg`: resident memory per open stream against the number of streams;
//! - `added_ttfe.svg`: the time to first event a relay adds, p50 and p99, at one stream (one core, and
//!   separate cores) and under load.
//!
//! Both axes of the first two are logarithmic: the relays differ by factors, and so do the levels.
//! The bars are the medians over the runs; the whiskers their min-max.

use std::path::Path;

use plotters::prelude::*;

use crate::report::{Row, Stat};

/// One colour per relay, the same in every chart.
fn colour(peer: &str) -> RGBColor {
    match peer {
        "tokenpipe" => RGBColor(214, 39, 40),
        "tokio-hyper" => RGBColor(31, 119, 180),
        "axum-reqwest" => RGBColor(44, 160, 44),
        "nginx" => RGBColor(148, 103, 189),
        "python-fastapi" => RGBColor(255, 127, 14),
        "floor" => RGBColor(90, 90, 90),
        _ => RGBColor(23, 190, 207),
    }
}

/// The relays present in `rows`, in table order.
fn peers_of<'a>(rows: &[&'a Row]) -> Vec<&'a str> {
    let mut peers: Vec<&str> = Vec::new();
    for r in rows {
        if !peers.contains(&r.peer.as_str()) {
            peers.push(&r.peer);
        }
    }
    peers
}

/// Draws all three charts into `dir`.
pub fn draw_all(dir: &Path, rows: &[Row], largest: u64) -> Result<(), String> {
    let load: Vec<&Row> = rows
        .iter()
        .filter(|r| r.scenario == "load" && r.peer != "direct")
        .collect();
    against_streams(
        &dir.join("cpu_per_chunk.svg"),
        "Relay CPU per relayed chunk (one worker, user + system)",
        "µs per chunk",
        &load,
        |r| r.cpu_us_per_chunk,
    )?;
    let memory: Vec<&Row> = load.iter().copied().filter(|r| r.streams >= 100).collect();
    against_streams(
        &dir.join("memory_per_stream.svg"),
        "Resident memory per open stream (RssAnon growth / streams)",
        "KiB per stream",
        &memory,
        |r| r.kib_per_stream,
    )?;
    added_ttfe(&dir.join("added_ttfe.svg"), rows, largest)
}

/// A figure against the number of streams, one line per relay, log-log, with min-max whiskers.
fn against_streams(
    path: &Path,
    title: &str,
    y_label: &str,
    rows: &[&Row],
    figure: impl Fn(&Row) -> Option<Stat>,
) -> Result<(), String> {
    let points: Vec<(&Row, Stat)> = rows.iter().filter_map(|r| Some((*r, figure(r)?))).collect();
    if points.is_empty() {
        return Ok(());
    }
    let floor_of = |v: f64| v.max(0.01);
    let x_max = points.iter().map(|(r, _)| r.streams).max().unwrap_or(1) as f64 * 1.5;
    let x_min = points.iter().map(|(r, _)| r.streams).min().unwrap_or(1) as f64 / 1.5;
    let y_max = points.iter().map(|(_, s)| s.max).fold(0.0, f64::max) * 2.0;
    let y_min = points
        .iter()
        .map(|(_, s)| floor_of(s.min))
        .fold(f64::INFINITY, f64::min)
        / 2.0;

    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(70)
        .build_cartesian_2d((x_min..x_max).log_scale(), (y_min..y_max).log_scale())
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("concurrent streams")
        .y_desc(y_label)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y}"))
        .draw()
        .map_err(|e| err(&e))?;
    for peer in peers_of(rows) {
        let c = colour(peer);
        let series: Vec<(f64, Stat)> = points
            .iter()
            .filter(|(r, _)| r.peer == peer)
            .map(|(r, s)| (r.streams as f64, *s))
            .collect();
        chart
            .draw_series(LineSeries::new(
                series.iter().map(|(x, s)| (*x, floor_of(s.median))),
                c.stroke_width(2),
            ))
            .map_err(|e| err(&e))?
            .label(peer)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart
            .draw_series(
                series
                    .iter()
                    .map(|(x, s)| Circle::new((*x, floor_of(s.median)), 4, c.filled())),
            )
            .map_err(|e| err(&e))?;
        chart
            .draw_series(series.iter().map(|(x, s)| {
                ErrorBar::new_vertical(
                    *x,
                    floor_of(s.min),
                    floor_of(s.median),
                    floor_of(s.max),
                    c,
                    8,
                )
            }))
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}

/// Added time to first event, p50 and p99 bars per relay, in up to four panels: one stream on one
/// core, one stream on separate cores, 1,000 streams, the largest level. Log scale: a median at or
/// below 1 µs (the relay is no slower than the mock reached directly, within the noise) is drawn at 1.
fn added_ttfe(path: &Path, rows: &[Row], largest: u64) -> Result<(), String> {
    let panels: Vec<(String, Vec<&Row>)> = [
        ("1 stream, all on one core".to_string(), "ttfe-one-core", 1),
        ("1 stream, separate cores".to_string(), "ttfe-two-cores", 1),
        ("at 1,000 streams (probe)".to_string(), "load", 1_000),
        (format!("at {largest} streams (probe)"), "load", largest),
    ]
    .into_iter()
    .map(|(title, scenario, streams)| {
        let rs: Vec<&Row> = rows
            .iter()
            .filter(|r| {
                r.scenario == scenario
                    && r.streams == streams
                    && r.peer != "direct"
                    && r.added_ttfe_p50_us.is_some()
            })
            .collect();
        (title, rs)
    })
    .filter(|(_, rs)| !rs.is_empty())
    .collect();
    if panels.is_empty() {
        return Ok(());
    }
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let root = SVGBackend::new(path, (1000, 760)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = root
        .titled(
            "Time to first event added by the relay (relay minus direct to the mock): p50 solid, p99 light",
            ("sans-serif", 20),
        )
        .map_err(|e| err(&e))?;
    let areas = root.split_evenly((2, 2));
    for ((title, rs), area) in panels.iter().zip(areas.iter()) {
        let y_max = rs
            .iter()
            .filter_map(|r| r.added_ttfe_p99_us.map(|s| s.max))
            .fold(10.0, f64::max)
            * 2.0;
        let names: Vec<String> = rs.iter().map(|r| r.peer.clone()).collect();
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.5f64..(rs.len() as f64 - 0.5), (1f64..y_max).log_scale())
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(rs.len())
            .x_label_style(("sans-serif", 11))
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 0.01 && i >= 0.0 {
                    names.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_desc("µs")
            .y_label_formatter(&|y| format!("{y}"))
            .draw()
            .map_err(|e| err(&e))?;
        for (i, r) in rs.iter().enumerate() {
            let c = colour(&r.peer);
            let x = i as f64;
            for (stat, left, style) in [
                (r.added_ttfe_p50_us, x - 0.32, c.filled()),
                (r.added_ttfe_p99_us, x + 0.02, c.mix(0.4).filled()),
            ] {
                let Some(s) = stat else { continue };
                let top = s.median.max(1.0);
                chart
                    .draw_series([Rectangle::new([(left, 1.0), (left + 0.3, top)], style)])
                    .map_err(|e| err(&e))?;
                chart
                    .draw_series([ErrorBar::new_vertical(
                        left + 0.15,
                        s.min.max(1.0),
                        top,
                        s.max.max(1.0),
                        BLACK.stroke_width(1),
                        6,
                    )])
                    .map_err(|e| err(&e))?;
            }
        }
    }
    root.present().map_err(|e| err(&e))
}
