//! Files a run leaves for people: per-epoch metrics as CSV and JSON, `results.json`, and PNG
//! plots of the accuracy and loss curves.
//!
//! Every file is written atomically (a temporary file flushed to disk, then renamed), PNGs
//! included: they are drawn into memory and encoded before the write, so a full disk leaves
//! the previous plot, not a truncated one. `results.json` is written last, as it marks a run as
//! finished.

use std::fmt::Write as _;
use std::path::Path;

use plotters::element::{DashedPathElement, ErrorBar};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::checkpoint::{write_atomic, write_json};
use crate::config::TrainConfig;
use crate::train::{EpochMetrics, RunResults};
use crate::TrainError;

/// `metrics.csv` and `metrics.json` (rewritten after every epoch). Test columns are empty in
/// epochs where the test split was not evaluated.
pub fn write_history(
    out: &Path,
    config: &TrainConfig,
    history: &[EpochMetrics],
) -> Result<(), TrainError> {
    let k = config.report_k;
    let mut csv = String::from("epoch,lr,seconds,steps,skipped,train_loss");
    let tops = |prefix: &str| {
        (1..=k)
            .map(|j| format!(",{prefix}_top{j}"))
            .collect::<String>()
    };
    csv.push_str(&tops("train"));
    csv.push_str(&tops("train_true"));
    csv.push_str(",valid_loss");
    csv.push_str(&tops("valid"));
    csv.push_str(",test_loss");
    csv.push_str(&tops("test"));
    csv.push('\n');
    let accuracies = |csv: &mut String, values: &[f64]| {
        for j in 0..k {
            match values.get(j) {
                Some(a) => write!(csv, ",{a:.4}").unwrap(),
                None => csv.push(','),
            }
        }
    };
    for m in history {
        write!(
            csv,
            "{},{},{:.3},{},{},{:.6}",
            m.epoch, m.lr, m.seconds, m.steps, m.skipped, m.train.loss
        )
        .unwrap();
        accuracies(&mut csv, &m.train.accuracy);
        accuracies(&mut csv, &m.train_true_accuracy);
        write!(csv, ",{:.6}", m.valid.loss).unwrap();
        accuracies(&mut csv, &m.valid.accuracy);
        match &m.test {
            Some(test) => {
                write!(csv, ",{:.6}", test.loss).unwrap();
                accuracies(&mut csv, &test.accuracy);
            }
            None => {
                csv.push(',');
                accuracies(&mut csv, &[]);
            }
        }
        csv.push('\n');
    }
    write_atomic(&out.join("metrics.csv"), csv.as_bytes())?;
    write_json(&out.join("metrics.json"), history)
}

/// The accuracy curves of a run: training batches against the training labels and against the
/// true labels (they differ with label noise), validation, and test when it was measured.
pub fn accuracy_series(history: &[EpochMetrics], k: usize) -> Vec<Series> {
    let epochs = |f: &dyn Fn(&EpochMetrics) -> Option<f64>| -> Vec<(f64, f64)> {
        history
            .iter()
            .filter_map(|m| f(m).map(|v| (m.epoch as f64, v)))
            .collect()
    };
    let noisy = history
        .iter()
        .any(|m| m.train_true_accuracy != m.train.accuracy);
    let mut series = Vec::new();
    for (j, dashed) in [(1, false), (k, true)] {
        let make = |name: &str, color, points| {
            let name = format!("{name} top-{j}");
            if dashed {
                Series::dashed(&name, color, points)
            } else {
                Series::new(&name, color, points)
            }
        };
        let train_name = if noisy {
            "train (noisy labels)"
        } else {
            "train"
        };
        series.push(make(train_name, RED, epochs(&|m| Some(m.train.top(j)))));
        if noisy {
            let true_top = move |m: &EpochMetrics| m.train_true_accuracy.get(j - 1).copied();
            series.push(make("train (true labels)", MAGENTA, epochs(&true_top)));
        }
        series.push(make("valid", BLUE, epochs(&|m| Some(m.valid.top(j)))));
        let test = epochs(&|m| m.test.as_ref().map(|t| t.top(j)));
        if !test.is_empty() {
            series.push(make("test", GREEN, test));
        }
    }
    series
}

/// The plots (`accuracy.png`, `loss.png`), then `results.json`.
pub fn write_results(
    out: &Path,
    results: &RunResults,
    history: &[EpochMetrics],
) -> Result<(), TrainError> {
    let k = results.config.report_k;
    let title = format!(
        "{} on {}, {}",
        results.config.loss.label(),
        results.config.data.source.name(),
        results.config.model.name()
    );
    line_chart(
        &out.join("accuracy.png"),
        &format!("accuracy: {title}"),
        &Axes::new("epoch", "accuracy (%)"),
        &accuracy_series(history, k),
    )?;
    let epochs = |f: &dyn Fn(&EpochMetrics) -> Option<f64>| -> Vec<(f64, f64)> {
        history
            .iter()
            .filter_map(|m| f(m).map(|v| (m.epoch as f64, v)))
            .collect()
    };
    let mut loss = vec![
        Series::new("train", RED, epochs(&|m| Some(m.train.loss))),
        Series::new("valid", BLUE, epochs(&|m| Some(m.valid.loss))),
    ];
    let test = epochs(&|m| m.test.as_ref().map(|t| t.loss));
    if !test.is_empty() {
        loss.push(Series::new("test", GREEN, test));
    }
    line_chart(
        &out.join("loss.png"),
        &format!("loss: {title}"),
        &Axes::new("epoch", "loss"),
        &loss,
    )?;
    write_json(&out.join("results.json"), results)
}

/// One curve of a chart, optionally with an error bar (a half-width) at each point.
pub struct Series {
    pub name: String,
    pub color: RGBColor,
    pub dashed: bool,
    pub points: Vec<(f64, f64)>,
    pub errors: Option<Vec<f64>>,
}

impl Series {
    pub fn new(name: &str, color: RGBColor, points: Vec<(f64, f64)>) -> Self {
        Self {
            name: name.to_string(),
            color,
            dashed: false,
            points,
            errors: None,
        }
    }

    pub fn dashed(name: &str, color: RGBColor, points: Vec<(f64, f64)>) -> Self {
        Self {
            dashed: true,
            ..Self::new(name, color, points)
        }
    }

    /// Error bars of `errors[i]` above and below point `i`.
    pub fn with_errors(mut self, errors: Vec<f64>) -> Self {
        self.errors = Some(errors);
        self
    }
}

/// Axis labels and ticks.
pub struct Axes {
    pub x_label: String,
    pub y_label: String,
    /// Ticks exactly at these x values (the levels of a grid) instead of round numbers.
    pub x_ticks: Option<Vec<f64>>,
    /// A logarithmic x axis (training-set sizes).
    pub log_x: bool,
}

impl Axes {
    pub fn new(x_label: &str, y_label: &str) -> Self {
        Axes {
            x_label: x_label.into(),
            y_label: y_label.into(),
            x_ticks: None,
            log_x: false,
        }
    }
}

fn register_font() {
    // The bytes are a static DejaVu Sans; registering twice only replaces the entry.
    let _ =
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
}

const WIDTH: u32 = 960;
const HEIGHT: u32 = 560;
/// Width of the legend column, right of the plot.
const LEGEND: u32 = 250;

/// About ten round tick positions (multiples of 1, 2 or 5 times a power of ten) in `[lo, hi]`.
fn nice_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = hi - lo;
    if !(span.is_finite() && span > 0.0) {
        return vec![lo];
    }
    let raw = span / 10.0;
    let power = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * power)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * power);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// Draws `series` with the legend beside the plot (never over the data) and writes the PNG
/// atomically.
pub fn line_chart(
    path: &Path,
    title: &str,
    axes: &Axes,
    series: &[Series],
) -> Result<(), TrainError> {
    let mut pixels = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    draw(&mut pixels, title, axes, series).map_err(|message| TrainError::Plot {
        path: path.to_path_buf(),
        message,
    })?;
    let image =
        image::RgbImage::from_raw(WIDTH, HEIGHT, pixels).ok_or_else(|| TrainError::Plot {
            path: path.to_path_buf(),
            message: "pixel buffer of the wrong size".into(),
        })?;
    let mut png = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| TrainError::Plot {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    write_atomic(path, &png)
}

fn draw(pixels: &mut [u8], title: &str, axes: &Axes, series: &[Series]) -> Result<(), String> {
    register_font();
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let x_of = |x: f64| if axes.log_x { x.log10() } else { x };
    let finite = |(x, y): (f64, f64)| x_of(x).is_finite() && y.is_finite();
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for s in series {
        for (i, &(x, y)) in s.points.iter().enumerate() {
            if !finite((x, y)) {
                continue;
            }
            let e = s
                .errors
                .as_ref()
                .and_then(|e| e.get(i))
                .copied()
                .unwrap_or(0.0);
            let e = if e.is_finite() { e } else { 0.0 };
            (x0, x1) = (x0.min(x_of(x)), x1.max(x_of(x)));
            (y0, y1) = (y0.min(y - e), y1.max(y + e));
        }
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    // Room either side of the first and last grid level.
    let x_pad = ((x1 - x0) * 0.04).max(if x1 > x0 { 0.0 } else { 0.5 });
    let margin = ((y1 - y0) * 0.06).max(1e-6);
    let root = BitMapBackend::with_buffer(pixels, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (plot, legend) = root.split_horizontally(WIDTH - LEGEND);
    // Ticks at the grid's own levels when given, at round numbers otherwise.
    let ticks: Vec<f64> = match &axes.x_ticks {
        Some(t) => t
            .iter()
            .map(|&x| x_of(x))
            .filter(|x| x.is_finite())
            .collect(),
        None => {
            // Whole numbers (epochs) get whole-number ticks.
            let integral = series
                .iter()
                .flat_map(|s| s.points.iter())
                .all(|&(x, _)| x.fract() == 0.0);
            let ticks = nice_ticks(x0, x1);
            if integral && ticks.iter().any(|t| t.fract() != 0.0) {
                (x0.ceil() as i64..=x1.floor() as i64)
                    .map(|t| t as f64)
                    .collect()
            } else {
                ticks
            }
        }
    };
    let mut chart = ChartBuilder::on(&plot)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d((x0 - x_pad)..(x1 + x_pad), (y0 - margin)..(y1 + margin))
        .map_err(|e| err(&e))?;
    let log_x = axes.log_x;
    let label = move |x: f64| {
        let x = if log_x { 10f64.powf(x).round() } else { x };
        let rounded = (x * 1000.0).round() / 1000.0;
        format!("{rounded}")
    };
    // plotters puts x labels at round numbers of its own; ours go where the ticks are.
    chart
        .configure_mesh()
        .x_desc(axes.x_label.as_str())
        .y_desc(axes.y_label.as_str())
        .light_line_style(WHITE.mix(0.0))
        .disable_x_mesh()
        .x_label_formatter(&|_| String::new())
        .set_tick_mark_size(LabelAreaPosition::Bottom, 0)
        .draw()
        .map_err(|e| err(&e))?;
    let style = ("sans-serif", 14)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Center, VPos::Top));
    for &x in &ticks {
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(x, y0 - margin), (x, y1 + margin)],
                BLACK.mix(0.1),
            )))
            .map_err(|e| err(&e))?;
        let (px, py) = chart.backend_coord(&(x, y0 - margin));
        root.draw(&PathElement::new(vec![(px, py), (px, py + 5)], BLACK))
            .map_err(|e| err(&e))?;
        root.draw(&Text::new(label(x), (px, py + 8), style.clone()))
            .map_err(|e| err(&e))?;
    }
    for s in series {
        let style = s.color.stroke_width(2);
        let points: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter(|&&p| finite(p))
            .map(|&(x, y)| (x_of(x), y))
            .collect();
        if s.dashed {
            chart
                .draw_series(DashedLineSeries::new(points.iter().copied(), 6, 4, style))
                .map_err(|e| err(&e))?;
        } else {
            chart
                .draw_series(LineSeries::new(points.iter().copied(), style))
                .map_err(|e| err(&e))?;
        }
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 3, s.color.filled())))
            .map_err(|e| err(&e))?;
        if let Some(errors) = &s.errors {
            let bars = s
                .points
                .iter()
                .zip(errors)
                .filter(|&(&p, e)| finite(p) && e.is_finite())
                .map(|(&(x, y), &e)| ErrorBar::new_vertical(x_of(x), y - e, y, y + e, style, 8));
            chart.draw_series(bars).map_err(|e| err(&e))?;
        }
    }
    // The legend, in its own column.
    for (i, s) in series.iter().enumerate() {
        let y = 60 + 24 * i as i32;
        let style = s.color.stroke_width(2);
        if s.dashed {
            legend
                .draw(&DashedPathElement::new(vec![(8, y), (36, y)], 5, 3, style))
                .map_err(|e| err(&e))?;
        } else {
            legend
                .draw(&PathElement::new(vec![(8, y), (36, y)], style))
                .map_err(|e| err(&e))?;
        }
        legend
            .draw(&Text::new(s.name.clone(), (44, y - 8), ("sans-serif", 14)))
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_inside_the_range() {
        assert_eq!(
            nice_ticks(1.0, 60.0),
            vec![10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
        );
        assert_eq!(nice_ticks(3.0, 3.0), vec![3.0]);
        let small = nice_ticks(0.0, 0.8);
        assert_eq!(small.len(), 9);
        for (i, t) in small.iter().enumerate() {
            assert!((t - 0.1 * i as f64).abs() < 1e-12, "{small:?}");
        }
    }
}
