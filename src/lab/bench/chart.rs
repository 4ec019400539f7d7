//! The report's charts (PNG):
//!
//! - freshness: p50 and p99 freshness in ms against the achieved ingest rate, one colour per
//!   scale, with the p99 target (250 ms at 10k spans/s);
//! - the comparison: for each scale and rate, one bar per system (MV, Job, the product) of the
//!   CPU seconds per hour of maintenance (the database's; for the product, its process's
//!   added), and beside it of freshness p99, both on
//!   log scales (the systems differ by orders of magnitude).
//!
//! Text uses DejaVu Sans loaded at run time; when no font is found a chart is drawn without any
//! text rather than not at all.

use super::compare::System;
use super::freshness::{FRESHNESS_RATE, FRESHNESS_TARGET_MS};
use super::scale::ScaleResult;
use super::stats::count;
use crate::error::{Error, Result};
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::path::Path;
use std::sync::OnceLock;

const FONT_PATHS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];
const COLOURS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

/// Registers "sans-serif" once; true when a font is available.
fn font() -> bool {
    static LOADED: OnceLock<bool> = OnceLock::new();
    *LOADED.get_or_init(|| {
        for path in FONT_PATHS {
            if let Ok(bytes) = std::fs::read(path) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

/// Draws the chart; returns whether it has text.
pub fn draw(path: &Path, results: &[ScaleResult]) -> Result<bool> {
    let with_text = font();
    match plot(path, results, with_text) {
        Ok(()) => Ok(with_text),
        // A font that loads but fails to render: fall back to a chart without text.
        Err(_) if with_text => plot(path, results, false).map(|_| false),
        Err(e) => Err(e),
    }
}

fn plot(path: &Path, results: &[ScaleResult], with_text: bool) -> Result<()> {
    let fail = |e: String| {
        Error::io(
            format!("drawing {}", path.display()),
            std::io::Error::other(e),
        )
    };
    let points: Vec<(f64, f64, f64)> = results
        .iter()
        .flat_map(|r| r.freshness.iter().map(|f| (f.achieved, f.p50(), f.p99())))
        .collect();
    let x_max = points.iter().map(|p| p.0).fold(1000.0, f64::max) * 1.08;
    let finite_max = points
        .iter()
        .flat_map(|p| [p.1, p.2])
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let y_max = finite_max.max(FRESHNESS_TARGET_MS * 2.0) * 1.12;
    // Unseen (infinite) percentiles are drawn at the top edge.
    let clamp = |v: f64| if v.is_finite() { v } else { y_max };

    let root = BitMapBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(20);
    if with_text {
        builder
            .caption(
                "Freshness under sustained ingest (lower is better)",
                ("sans-serif", 24),
            )
            .x_label_area_size(50)
            .y_label_area_size(70);
    }
    let mut chart = builder
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(|e| fail(e.to_string()))?;
    let mut mesh = chart.configure_mesh();
    mesh.light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.12));
    if with_text {
        mesh.x_desc("ingest rate (spans/s, achieved)")
            .y_desc("freshness (ms)")
            .x_label_formatter(&|x| count(x.max(0.0) as u64))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 16));
    }
    mesh.draw().map_err(|e| fail(e.to_string()))?;

    let target = chart
        .draw_series(DashedLineSeries::new(
            vec![(0.0, FRESHNESS_TARGET_MS), (x_max, FRESHNESS_TARGET_MS)],
            8,
            6,
            RED.mix(0.8).stroke_width(2),
        ))
        .map_err(|e| fail(e.to_string()))?;
    if with_text {
        target
            .label(format!(
                "p99 target at {} spans/s: {FRESHNESS_TARGET_MS:.0} ms",
                count(FRESHNESS_RATE as u64)
            ))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
    }
    for (i, r) in results.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let mut runs: Vec<(f64, f64, f64)> = r
            .freshness
            .iter()
            .map(|f| (f.achieved, clamp(f.p50()), clamp(f.p99())))
            .collect();
        runs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let p99: Vec<(f64, f64)> = runs.iter().map(|p| (p.0, p.2)).collect();
        let p50: Vec<(f64, f64)> = runs.iter().map(|p| (p.0, p.1)).collect();
        let s = chart
            .draw_series(LineSeries::new(p99.clone(), colour.stroke_width(3)).point_size(5))
            .map_err(|e| fail(e.to_string()))?;
        if with_text {
            s.label(format!("p99, {} spans", count(r.spans)))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(3))
                });
        }
        let s = chart
            .draw_series(LineSeries::new(
                p50.clone(),
                colour.mix(0.7).stroke_width(1),
            ))
            .map_err(|e| fail(e.to_string()))?;
        if with_text {
            s.label(format!("p50, {} spans", count(r.spans)))
                .legend(move |(x, y)| {
                    TriangleMarker::new((x + 10, y), 5, colour.mix(0.7).filled())
                });
        }
        chart
            .draw_series(
                p50.iter()
                    .map(|&(x, y)| TriangleMarker::new((x, y), 5, colour.mix(0.7).filled())),
            )
            .map_err(|e| fail(e.to_string()))?;
    }
    if with_text {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(|e| fail(e.to_string()))?;
    }
    root.present().map_err(|e| fail(e.to_string()))?;
    Ok(())
}

/// The comparison's colours: MV, Job, the product.
const SYSTEM_COLOURS: [RGBColor; 3] = [
    RGBColor(214, 39, 40),
    RGBColor(255, 127, 14),
    RGBColor(31, 119, 180),
];

/// One group of bars: its label and, per system, (CPU s per hour: the database's, and the
/// product's process added to its own, freshness p99 in s).
type Group = (String, Vec<Bar>);

/// One bar's system and values.
type Bar = (System, f64, f64);

/// A panel of the comparison chart: its title, its y axis, and which value of a bar it shows.
type Panel = (&'static str, &'static str, fn(&Bar) -> f64);

/// The comparison's groups (scale and rate), from the results.
fn comparison_groups(results: &[ScaleResult]) -> Vec<Group> {
    let mut out = Vec::new();
    for r in results {
        let Some(c) = &r.comparison else { continue };
        for rate in &c.compare.rates {
            let Some(b) = rate.baseline() else { continue };
            let bars = System::ALL
                .iter()
                .filter_map(|&sys| {
                    rate.cell(sys).map(|cell| {
                        let process = cell.worker_per_hour().unwrap_or(0.0);
                        (sys, cell.cpu_per_hour(b) + process, cell.p99() / 1000.0)
                    })
                })
                .collect::<Vec<_>>();
            if !bars.is_empty() {
                out.push((
                    format!("{} spans, {}/s", count(r.spans), count(rate.rate as u64)),
                    bars,
                ));
            }
        }
    }
    out
}

/// Whether the results have anything for the comparison chart.
pub fn has_comparison(results: &[ScaleResult]) -> bool {
    !comparison_groups(results).is_empty()
}

/// Draws the comparison chart; returns whether it has text.
pub fn draw_comparison(path: &Path, results: &[ScaleResult]) -> Result<bool> {
    let with_text = font();
    match plot_comparison(path, results, with_text) {
        Ok(()) => Ok(with_text),
        Err(_) if with_text => plot_comparison(path, results, false).map(|_| false),
        Err(e) => Err(e),
    }
}

fn plot_comparison(path: &Path, results: &[ScaleResult], with_text: bool) -> Result<()> {
    let fail = |e: String| {
        Error::io(
            format!("drawing {}", path.display()),
            std::io::Error::other(e),
        )
    };
    let groups = comparison_groups(results);
    let root = BitMapBackend::new(path, (1200, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    let panels = root.split_evenly((1, 2));
    let values = |pick: fn(&Bar) -> f64| {
        groups
            .iter()
            .flat_map(|g| g.1.iter().map(pick))
            .filter(|v| v.is_finite() && *v > 0.0)
            .collect::<Vec<f64>>()
    };
    let specs: [Panel; 2] = [
        (
            "CPU per hour of maintenance (lower is better)",
            "CPU seconds per hour (log scale)",
            |b| b.1,
        ),
        (
            "Freshness p99 (lower is better)",
            "seconds from commit to summarized (log scale)",
            |b| b.2,
        ),
    ];
    let n = groups.len().max(1) as f64;
    for (panel, (title, y_desc, pick)) in panels.iter().zip(specs) {
        let vs = values(pick);
        let lo = vs.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = vs.iter().copied().fold(0.0, f64::max);
        let (lo, hi) = if vs.is_empty() {
            (0.01, 1.0)
        } else {
            (lo / 3.0, hi * 3.0)
        };
        let mut builder = ChartBuilder::on(panel);
        builder.margin(15);
        if with_text {
            builder
                .caption(title, ("sans-serif", 18))
                .x_label_area_size(40)
                .y_label_area_size(70);
        }
        let mut chart = builder
            .build_cartesian_2d(-0.5..(n - 0.5), (lo..hi).log_scale())
            .map_err(|e| fail(e.to_string()))?;
        let labels: Vec<String> = groups.iter().map(|g| g.0.clone()).collect();
        let label_of = move |x: &f64| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < labels.len() {
                labels[i as usize].clone()
            } else {
                String::new()
            }
        };
        let mut mesh = chart.configure_mesh();
        mesh.light_line_style(WHITE.mix(0.0))
            .bold_line_style(BLACK.mix(0.12))
            .disable_x_mesh();
        if with_text {
            mesh.x_labels(groups.len().max(1) + 1)
                .x_label_formatter(&label_of)
                .y_desc(y_desc)
                .y_label_formatter(&|y| {
                    if *y >= 1.0 {
                        format!("{y:.0}")
                    } else {
                        format!("{y}")
                    }
                })
                .label_style(("sans-serif", 13))
                .axis_desc_style(("sans-serif", 14));
        } else {
            mesh.x_labels(0).y_labels(0);
        }
        mesh.draw().map_err(|e| fail(e.to_string()))?;
        for (k, &sys) in System::ALL.iter().enumerate() {
            let colour = SYSTEM_COLOURS[k];
            let bars: Vec<(f64, f64)> = groups
                .iter()
                .enumerate()
                .filter_map(|(i, g)| {
                    g.1.iter()
                        .find(|b| b.0 == sys)
                        .map(pick)
                        .filter(|v| v.is_finite() && *v > 0.0)
                        .map(|v| (i as f64, v))
                })
                .collect();
            let s = chart
                .draw_series(bars.iter().map(|&(x, v)| {
                    let x0 = x - 0.36 + k as f64 * 0.24;
                    Rectangle::new([(x0, lo), (x0 + 0.22, v)], colour.filled())
                }))
                .map_err(|e| fail(e.to_string()))?;
            if with_text {
                s.label(sys.name()).legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 14, y + 5)], colour.filled())
                });
            }
        }
        if with_text {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.3))
                .label_font(("sans-serif", 13))
                .draw()
                .map_err(|e| fail(e.to_string()))?;
        }
    }
    root.present().map_err(|e| fail(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::bench::freshness::FreshnessRun;

    fn sample() -> Vec<ScaleResult> {
        let run = |rate: u32, ms: f64| FreshnessRun {
            rate,
            achieved: rate as f64,
            batches: 3,
            samples_ms: vec![ms, ms * 1.5, f64::INFINITY],
            ..Default::default()
        };
        vec![ScaleResult {
            spans: 1_000_000,
            freshness: vec![run(1000, 200.0), run(5000, 400.0)],
            ..Default::default()
        }]
    }

    #[test]
    fn draws_the_comparison() {
        use crate::lab::bench::compare::{Baseline, Cell, CellOutcome, CompareRuns, RateRuns};
        use crate::lab::bench::scale::Comparison;
        let cell = |cpu: f64, fresh: f64| Cell {
            seconds: 120.0,
            cpu_s: cpu,
            freshness_ms: vec![fresh, fresh * 2.0],
            ..Default::default()
        };
        let rates = vec![RateRuns {
            rate: 1000,
            baseline: Ok(Baseline {
                seconds: 40.0,
                spans: 40_000,
                cpu_s: 1.0,
                wal_bytes: 1,
                ingest_wal_bytes: None,
            }),
            cells: vec![
                CellOutcome {
                    system: System::View,
                    result: Ok(cell(30.0, 60_000.0)),
                },
                CellOutcome {
                    system: System::Job,
                    result: Err("failed".into()),
                },
                CellOutcome {
                    system: System::Product,
                    result: Ok(cell(5.0, 80.0)),
                },
            ],
        }];
        let results = vec![ScaleResult {
            spans: 1_000_000,
            comparison: Some(Comparison {
                compare: CompareRuns {
                    rates,
                    ..Default::default()
                },
                ..Default::default()
            }),
            ..Default::default()
        }];
        assert!(has_comparison(&results));
        assert!(!has_comparison(&sample()));
        let dir = tempfile::tempdir().unwrap();
        for text in [false, true] {
            let path = dir.path().join(format!("comparison-{text}.png"));
            plot_comparison(&path, &results, text && font()).unwrap();
            assert!(std::fs::metadata(&path).unwrap().len() > 0);
        }
    }

    #[test]
    fn draws_with_and_without_text() {
        let dir = tempfile::tempdir().unwrap();
        let bare = dir.path().join("bare.png");
        plot(&bare, &sample(), false).unwrap();
        assert!(std::fs::metadata(&bare).unwrap().len() > 0);
        let labelled = dir.path().join("labelled.png");
        draw(&labelled, &sample()).unwrap();
        assert!(std::fs::metadata(&labelled).unwrap().len() > 0);
    }
}
