//! Files a run leaves for people: per-epoch metrics as CSV and JSON, `results.json`, and PNG
//! plots of the accuracy and loss curves.

use std::fmt::Write as _;
use std::path::Path;

use plotters::element::DashedPathElement;
use plotters::prelude::*;

use crate::checkpoint::{write_atomic, write_json};
use crate::config::TrainConfig;
use crate::train::{EpochMetrics, RunResults};
use crate::TrainError;

/// `metrics.csv` and `metrics.json` (rewritten after every epoch).
pub fn write_history(
    out: &Path,
    config: &TrainConfig,
    history: &[EpochMetrics],
) -> Result<(), TrainError> {
    let k = config.report_k;
    let mut csv = String::from("epoch,lr,seconds");
    for split in ["train", "valid", "test"] {
        write!(csv, ",{split}_loss").unwrap();
        for j in 1..=k {
            write!(csv, ",{split}_top{j}").unwrap();
        }
    }
    csv.push('\n');
    for m in history {
        write!(csv, "{},{},{:.3}", m.epoch, m.lr, m.seconds).unwrap();
        for split in [&m.train, &m.valid, &m.test] {
            write!(csv, ",{:.6}", split.loss).unwrap();
            for a in &split.accuracy {
                write!(csv, ",{a:.4}").unwrap();
            }
        }
        csv.push('\n');
    }
    write_atomic(&out.join("metrics.csv"), csv.as_bytes())?;
    write_json(&out.join("metrics.json"), history)
}

/// `results.json`, `accuracy.png` and `loss.png`.
pub fn write_results(
    out: &Path,
    results: &RunResults,
    history: &[EpochMetrics],
) -> Result<(), TrainError> {
    write_json(&out.join("results.json"), results)?;
    let k = results.config.report_k;
    let epochs = |f: &dyn Fn(&EpochMetrics) -> f64| -> Vec<(f64, f64)> {
        history.iter().map(|m| (m.epoch as f64, f(m))).collect()
    };
    let title = format!(
        "{} on {}, {}",
        results.config.loss.label(),
        results.config.data.source.name(),
        results.config.model.name()
    );
    let accuracy = vec![
        Series::new("train top-1", RED, epochs(&|m| m.train.top(1))),
        Series::new("valid top-1", BLUE, epochs(&|m| m.valid.top(1))),
        Series::new("test top-1", GREEN, epochs(&|m| m.test.top(1))),
        Series::dashed(&format!("train top-{k}"), RED, epochs(&|m| m.train.top(k))),
        Series::dashed(&format!("valid top-{k}"), BLUE, epochs(&|m| m.valid.top(k))),
        Series::dashed(&format!("test top-{k}"), GREEN, epochs(&|m| m.test.top(k))),
    ];
    line_chart(
        &out.join("accuracy.png"),
        &format!("accuracy: {title}"),
        ("epoch", "accuracy (%)"),
        &accuracy,
    )?;
    let loss = vec![
        Series::new("train", RED, epochs(&|m| m.train.loss)),
        Series::new("valid", BLUE, epochs(&|m| m.valid.loss)),
        Series::new("test", GREEN, epochs(&|m| m.test.loss)),
    ];
    line_chart(
        &out.join("loss.png"),
        &format!("loss: {title}"),
        ("epoch", "loss"),
        &loss,
    )
}

/// One curve of a chart.
pub struct Series {
    pub name: String,
    pub color: RGBColor,
    pub dashed: bool,
    pub points: Vec<(f64, f64)>,
}

impl Series {
    pub fn new(name: &str, color: RGBColor, points: Vec<(f64, f64)>) -> Self {
        Self {
            name: name.to_string(),
            color,
            dashed: false,
            points,
        }
    }

    pub fn dashed(name: &str, color: RGBColor, points: Vec<(f64, f64)>) -> Self {
        Self {
            dashed: true,
            ..Self::new(name, color, points)
        }
    }
}

fn register_font() {
    // The bytes are a static DejaVu Sans; registering twice only replaces the entry.
    let _ =
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
}

/// Draws `series` into a PNG with a legend.
pub fn line_chart(
    path: &Path,
    title: &str,
    (x_label, y_label): (&str, &str),
    series: &[Series],
) -> Result<(), TrainError> {
    register_font();
    let plot_err = |e: &dyn std::fmt::Display| TrainError::Plot {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let points = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points.filter(|(x, y)| x.is_finite() && y.is_finite()) {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1e-9 {
        x1 = x0 + 1.0;
    }
    let margin = ((y1 - y0) * 0.05).max(1e-6);
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(x0..x1, (y0 - margin)..(y1 + margin))
        .map_err(|e| plot_err(&e))?;
    // One tick per distinct x (epochs, noise levels) up to a dozen, printed without noise.
    let mut xs: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    chart
        .configure_mesh()
        .x_labels(xs.len().clamp(2, 12))
        .x_label_formatter(&|x| format!("{}", (x * 100.0).round() / 100.0))
        .x_desc(x_label)
        .y_desc(y_label)
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(|e| plot_err(&e))?;
    for s in series {
        let style = s.color.stroke_width(2);
        let points = s.points.iter().copied();
        let drawn = if s.dashed {
            chart.draw_series(DashedLineSeries::new(points, 6, 4, style))
        } else {
            chart.draw_series(LineSeries::new(points, style))
        }
        .map_err(|e| plot_err(&e))?;
        let color = s.color;
        let label = drawn.label(&s.name);
        if s.dashed {
            label.legend(move |(x, y)| {
                DashedPathElement::new(vec![(x, y), (x + 20, y)], 5, 3, color.stroke_width(2))
            });
        } else {
            label.legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        }
        chart
            .draw_series(
                s.points
                    .iter()
                    .map(|&p| Circle::new(p, 3, s.color.filled())),
            )
            .map_err(|e| plot_err(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| plot_err(&e))?;
    root.present().map_err(|e| plot_err(&e))
}
