//! The grids of the paper's Table 1 (label noise) and Table 2 (training-set size): one run per
//! (grid value, loss, seed), then a table of test accuracies (mean and spread over seeds) as
//! Markdown and CSV and a PNG of top-5 accuracy against the grid value.
//!
//! Each run writes its own directory `OUT/<value>/<loss>/seed-<s>`; a grid that is started
//! again skips finished runs and resumes interrupted ones.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::style::{BLUE, RED};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{create_dir, read_json, write_atomic, write_json};
use crate::config::TrainConfig;
use crate::report::{line_chart, Series};
use crate::train::{train, Observer, RunResults};
use crate::TrainError;

/// Which table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Experiment {
    /// Table 1: label noise on the training labels.
    Cifar100Noise,
    /// Table 2: balanced training subsets of several sizes.
    ImagenetSubsets,
}

impl Experiment {
    fn variable(self) -> &'static str {
        match self {
            Experiment::Cifar100Noise => "noise",
            Experiment::ImagenetSubsets => "train size",
        }
    }

    fn apply(self, config: &mut TrainConfig, value: f64) {
        match self {
            Experiment::Cifar100Noise => config.data.noise = value,
            Experiment::ImagenetSubsets => config.data.train_size = Some(value as usize),
        }
    }
}

/// A grid: `configs` holds one fully set configuration per loss (they may differ in more than
/// the loss, as the paper's learning rates do); each is run at every value and seed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Grid {
    pub experiment: Experiment,
    pub values: Vec<f64>,
    pub configs: Vec<TrainConfig>,
    pub seeds: Vec<u64>,
}

/// Mean and population standard deviation over seeds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    pub mean: f64,
    pub std: f64,
}

impl Stat {
    fn of(values: &[f64]) -> Self {
        let n = values.len().max(1) as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        Self {
            mean,
            std: var.sqrt(),
        }
    }
}

/// One row of the table: a grid value and a loss.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub value: f64,
    pub loss: String,
    /// Test top-1 of the best-validation-top-1 checkpoint, over seeds.
    pub top1: Stat,
    /// Test top-k of the best-validation-top-k checkpoint, over seeds.
    pub topk: Stat,
    pub seeds: usize,
}

/// Runs every cell (skipping finished ones), then writes `table.md`, `table.csv`,
/// `table.json` and `topk.png` into `out`. `observer(cell)` gives the reporter of each run.
pub fn run_grid(
    grid: &Grid,
    out: &Path,
    mut observer: impl FnMut(&str) -> Box<dyn Observer>,
) -> Result<Vec<Row>, TrainError> {
    if grid.configs.is_empty() || grid.values.is_empty() || grid.seeds.is_empty() {
        return Err(TrainError::InvalidConfig(
            "empty grid (no losses, values or seeds)".into(),
        ));
    }
    let k = grid.configs[0].report_k;
    // Every cell is checked before the first one trains.
    for &value in &grid.values {
        for base in &grid.configs {
            let mut config = base.clone();
            grid.experiment.apply(&mut config, value);
            config.validate()?;
        }
    }
    create_dir(out)?;
    write_json(&out.join("grid.json"), grid)?;
    let mut rows = Vec::new();
    for &value in &grid.values {
        for base in &grid.configs {
            let mut top1 = Vec::new();
            let mut topk = Vec::new();
            for &seed in &grid.seeds {
                let mut config = base.clone();
                grid.experiment.apply(&mut config, value);
                config.seed = seed;
                let dir = cell_dir(out, value, &config, seed);
                let cell = format!(
                    "[{} {} {} seed {}] ",
                    grid.experiment.variable(),
                    value,
                    config.loss.kind.name(),
                    seed
                );
                let results = run_cell(&config, &dir, observer(&cell).as_mut())?;
                top1.push(results.best_top1.test.top(1));
                topk.push(results.best_topk.test.top(k));
            }
            rows.push(Row {
                value,
                loss: base.loss.label(),
                top1: Stat::of(&top1),
                topk: Stat::of(&topk),
                seeds: grid.seeds.len(),
            });
        }
    }
    write_table(out, grid, &rows, k)?;
    Ok(rows)
}

fn cell_dir(out: &Path, value: f64, config: &TrainConfig, seed: u64) -> PathBuf {
    out.join(format!("{value}"))
        .join(config.loss.kind.name())
        .join(format!("seed-{seed}"))
}

/// A finished run is read back; a started one is resumed; otherwise it is trained.
fn run_cell(
    config: &TrainConfig,
    dir: &Path,
    observer: &mut dyn Observer,
) -> Result<RunResults, TrainError> {
    let results = dir.join("results.json");
    if results.exists() {
        let done: RunResults = read_json(&results)?;
        if &done.config == config {
            return Ok(done);
        }
        return Err(other_run(dir));
    }
    if !dir.join("config.json").exists() {
        return train(Some(config), dir, observer);
    }
    if &crate::checkpoint::read_config(dir)? != config {
        return Err(other_run(dir));
    }
    train(None, dir, observer)
}

fn other_run(dir: &Path) -> TrainError {
    TrainError::InvalidConfig(format!(
        "{} holds a run with another configuration (remove it or use another --out)",
        dir.display()
    ))
}

/// The table as Markdown (also returned for printing).
pub fn markdown(grid: &Grid, rows: &[Row], k: usize) -> String {
    let mut md = format!(
        "| {} | loss | test top-1 (%) | test top-{k} (%) | seeds |\n|---|---|---|---|---|\n",
        grid.experiment.variable()
    );
    for r in rows {
        writeln!(
            md,
            "| {} | {} | {:.2} ± {:.2} | {:.2} ± {:.2} | {} |",
            r.value, r.loss, r.top1.mean, r.top1.std, r.topk.mean, r.topk.std, r.seeds
        )
        .unwrap();
    }
    md
}

fn write_table(out: &Path, grid: &Grid, rows: &[Row], k: usize) -> Result<(), TrainError> {
    write_atomic(&out.join("table.md"), markdown(grid, rows, k).as_bytes())?;
    let mut csv = format!(
        "{},loss,top1_mean,top1_std,top{k}_mean,top{k}_std,seeds\n",
        grid.experiment.variable().replace(' ', "_")
    );
    for r in rows {
        writeln!(
            csv,
            "{},{},{:.4},{:.4},{:.4},{:.4},{}",
            r.value, r.loss, r.top1.mean, r.top1.std, r.topk.mean, r.topk.std, r.seeds
        )
        .unwrap();
    }
    write_atomic(&out.join("table.csv"), csv.as_bytes())?;
    write_json(&out.join("table.json"), rows)?;
    let colors = [RED, BLUE, plotters::style::GREEN, plotters::style::MAGENTA];
    let mut series = Vec::new();
    for (config, color) in grid.configs.iter().zip(colors.iter().cycle()) {
        let label = config.loss.label();
        let mine = rows.iter().filter(|r| r.loss == label);
        let top = |f: fn(&Row) -> f64| mine.clone().map(|r| (r.value, f(r))).collect();
        series.push(Series::new(
            &format!("{label} top-{k}"),
            *color,
            top(|r| r.topk.mean),
        ));
        series.push(Series::dashed(
            &format!("{label} top-1"),
            *color,
            top(|r| r.top1.mean),
        ));
    }
    line_chart(
        &out.join("topk.png"),
        &format!("test accuracy against {}", grid.experiment.variable()),
        (grid.experiment.variable(), "test accuracy (%)"),
        &series,
    )
}
