//! The grids of the paper's Table 1 (label noise) and Table 2 (training-set size), run under a
//! protocol that is fair to both losses:
//!
//! 1. For every level of the grid and every loss, the learning rate is chosen from a small grid
//!    by the best validation top-k accuracy (the validation split has clean labels) of the
//!    first seed's runs; the paper's protocols keep the paper's rates unless a grid is given.
//! 2. The chosen rate is run with every seed (the first seed's run is the selection run), and
//!    the tables give the mean and the sample standard deviation over seeds of the test top-1
//!    (of the best-validation-top-1 checkpoint) and top-k (of the best-validation-top-k one).
//! 3. `report.md` holds the tables, the plots (accuracy against the grid variable with error
//!    bars; learning curves of one seed showing training accuracy against the noisy and the
//!    true labels), the exact configuration, and a plain statement of what the paper claims and
//!    what this run measured.
//!
//! Each run writes its own directory `OUT/<level>/<loss>/lr-<lr>/seed-<s>`; a grid started again
//! reads finished runs back and resumes interrupted ones. The grid loads its data once.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use plotters::style::{RGBColor, BLACK, BLUE, GREEN, MAGENTA, RED};

/// Orange, which plotters does not name.
const ORANGE: RGBColor = RGBColor(240, 140, 0);
use serde::{Deserialize, Serialize};
use smooth_topk_data::Loader;

use crate::checkpoint::{read_json, write_atomic, write_json, RunLock};
use crate::config::{LossKind, TrainConfig};
use crate::data::{self, DataCache};
use crate::protocol::Protocol;
use crate::report::{accuracy_series, line_chart, Axes, Series};
use crate::step_bench;
use crate::train::{train, EpochMetrics, Observer, RunResults, Start};
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

    /// What the paper reports for this table, in our words.
    fn claim(self) -> &'static str {
        match self {
            Experiment::Cifar100Noise => {
                "The paper (Table 1: CIFAR-100, DenseNet 40-40, label noise 0 to 0.8 within groups \
                 of 5 classes) reports that the smooth top-5 SVM L_{5,1} is as good as \
                 cross-entropy on top-5 accuracy without noise and increasingly better as the \
                 noise grows, and better on top-1 at high noise, because cross-entropy fits the \
                 noisy labels while the top-5 loss does not need to."
            }
            Experiment::ImagenetSubsets => {
                "The paper (Table 2: ImageNet subsets of 64k to 1.28M images, ResNet-18) reports \
                 that the smooth top-5 SVM L_{5,0.1} gives better top-5 accuracy than \
                 cross-entropy when training data is scarce, the advantage shrinking as the \
                 training set grows, with cross-entropy as good or better on top-1 with all the \
                 data."
            }
        }
    }
}

/// A value of the grid variable.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    Noise(f64),
    /// Training images (balanced per class); `None` is the whole training split.
    TrainSize(Option<usize>),
}

impl Level {
    fn apply(self, config: &mut TrainConfig) {
        match self {
            Level::Noise(p) => config.data.noise = p,
            Level::TrainSize(size) => config.data.train_size = size,
        }
    }

    /// As printed in tables and directory names.
    pub fn label(self) -> String {
        match self {
            Level::Noise(p) => format!("{p}"),
            Level::TrainSize(Some(n)) => format!("{n}"),
            Level::TrainSize(None) => "all".into(),
        }
    }
}

/// A grid: `configs` holds one fully set configuration per loss (they may differ in more than
/// the loss, as the paper's learning rates do); each is run at every level and seed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Grid {
    pub experiment: Experiment,
    pub protocol: Protocol,
    pub levels: Vec<Level>,
    pub configs: Vec<TrainConfig>,
    pub seeds: Vec<u64>,
    /// Learning rates tried per loss and level (empty: each configuration's own rate).
    pub lr_grid: Vec<f64>,
}

/// Mean and sample standard deviation over seeds (`None` with a single seed: no spread was
/// measured).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    pub mean: f64,
    pub std: Option<f64>,
}

impl Stat {
    fn of(values: &[f64]) -> Self {
        let n = values.len().max(1) as f64;
        let mean = values.iter().sum::<f64>() / n;
        let std = (values.len() > 1).then(|| {
            let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
            var.sqrt()
        });
        Self { mean, std }
    }

    fn show(&self) -> String {
        match self.std {
            Some(std) => format!("{:.2} ± {:.2}", self.mean, std),
            None => format!("{:.2}", self.mean),
        }
    }
}

/// One learning rate tried at a level: the selection run's best validation accuracies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrTrial {
    pub lr: f64,
    /// `None` when the run diverged.
    pub valid_top1: Option<f64>,
    pub valid_topk: Option<f64>,
    /// Why the run stopped, when it diverged (such a rate is never chosen).
    #[serde(default)]
    pub diverged: Option<String>,
}

/// One row of the table: a level and a loss.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub level: Level,
    /// The plotted value: the noise, or the number of training images.
    pub x: f64,
    pub loss: String,
    pub kind: LossKind,
    /// The learning rate used (chosen from `trials` when a grid was searched).
    pub lr: f64,
    pub trials: Vec<LrTrial>,
    /// Test top-1 of the best-validation-top-1 checkpoint, over seeds.
    pub top1: Stat,
    /// Test top-k of the best-validation-top-k checkpoint, over seeds.
    pub topk: Stat,
    pub top1_values: Vec<f64>,
    pub topk_values: Vec<f64>,
    /// Last-epoch training top-1 against the training labels and the true labels (mean over
    /// seeds): with label noise, the first far above the second means the noise was fitted.
    pub train_top1_last: f64,
    pub train_true_top1_last: f64,
    pub seeds: usize,
    /// Seeds whose run of the chosen rate diverged (left out of the statistics).
    #[serde(default)]
    pub diverged_seeds: Vec<u64>,
    /// The directory of the first seed's run.
    pub first_run: PathBuf,
}

/// Everything a grid measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GridResults {
    pub grid: Grid,
    pub rows: Vec<Row>,
    pub k: usize,
    /// Training and evaluation time of every run of the grid, summed (over all the sessions
    /// that ran them; a diverged run's time is not counted).
    #[serde(default)]
    pub run_seconds: f64,
}

/// Describes how a grid was started, for the report.
#[derive(Clone, Debug, Default)]
pub struct RunInfo {
    pub command: String,
}

/// Runs every cell (skipping finished ones), then writes `table.md`, `table.csv`, the plots,
/// `report.md` and, last, `table.json`. `observer(cell)` gives the reporter of each run;
/// `say` receives the grid's own messages (the time estimate).
pub fn run_grid(
    grid: &Grid,
    out: &Path,
    loader: &Loader,
    info: &RunInfo,
    mut observer: impl FnMut(&str) -> Box<dyn Observer>,
    say: &mut dyn FnMut(&str),
) -> Result<GridResults, TrainError> {
    if grid.configs.is_empty() || grid.levels.is_empty() || grid.seeds.is_empty() {
        return Err(TrainError::InvalidConfig(
            "empty grid (no losses, levels or seeds)".into(),
        ));
    }
    if let Some(lr) = grid
        .lr_grid
        .iter()
        .find(|lr| !(lr.is_finite() && **lr > 0.0))
    {
        return Err(TrainError::InvalidConfig(format!(
            "learning rate = {lr} in the grid (must be > 0)"
        )));
    }
    let k = grid.configs[0].report_k;
    // Every cell is checked before the first one trains.
    for &level in &grid.levels {
        for base in &grid.configs {
            for lr in lrs(grid, base) {
                let mut config = base.clone();
                level.apply(&mut config);
                config.lr = lr;
                config.validate()?;
            }
        }
    }
    // One process per grid: the cells lock their own directories, the grid its own files.
    let lock = RunLock::acquire(out)?;
    write_json(&out.join("grid.json"), grid)?;
    let started = Instant::now();
    let mut cache = DataCache::default();
    estimate(grid, out, loader, &mut cache, say)?;

    let mut rows = Vec::new();
    let mut run_seconds = 0.0;
    for &level in &grid.levels {
        for base in &grid.configs {
            let mut config = base.clone();
            level.apply(&mut config);
            let first = grid.seeds[0];
            let mut run = |lr: f64, seed: u64| -> Result<(PathBuf, Cell), TrainError> {
                let mut c = config.clone();
                c.lr = lr;
                c.seed = seed;
                let dir = cell_dir(out, level, &c);
                let cell = format!(
                    "[{} {} {} lr {} seed {}] ",
                    grid.experiment.variable(),
                    level.label(),
                    c.loss.kind.name(),
                    lr,
                    seed
                );
                let results = run_cell(&c, &dir, loader, &mut cache, observer(&cell).as_mut())?;
                if let Cell::Done(r) = &results {
                    run_seconds += r.seconds;
                }
                Ok((dir, results))
            };
            let mut trials = Vec::new();
            let mut selection_runs = Vec::new();
            for &lr in &grid.lr_grid {
                let (dir, cell) = run(lr, first)?;
                trials.push(trial(lr, &cell));
                selection_runs.push((dir, cell));
            }
            if !grid.lr_grid.is_empty() && select_lr(&trials).is_none() {
                return Err(TrainError::InvalidConfig(format!(
                    "every learning rate of {:?} diverged for {} at {} {}",
                    grid.lr_grid,
                    config.loss.kind.name(),
                    grid.experiment.variable(),
                    level.label()
                )));
            }
            let (lr, selection_run) = match select_lr(&trials) {
                Some(i) => (trials[i].lr, Some(selection_runs.swap_remove(i))),
                None => (config.lr, None),
            };
            let mut runs = Vec::new();
            let mut diverged_seeds = Vec::new();
            for &seed in &grid.seeds {
                let (dir, cell) = match (&selection_run, seed == first) {
                    (Some(run), true) => run.clone(),
                    _ => run(lr, seed)?,
                };
                match cell {
                    Cell::Done(results) => runs.push((dir, *results)),
                    Cell::Diverged(_) => diverged_seeds.push(seed),
                }
            }
            if runs.is_empty() {
                return Err(TrainError::InvalidConfig(format!(
                    "the chosen learning rate {lr} diverged with every seed for {} at {} {}",
                    config.loss.kind.name(),
                    grid.experiment.variable(),
                    level.label()
                )));
            }
            let mut row = row(level, base, lr, trials, &runs, k)?;
            row.diverged_seeds = diverged_seeds;
            rows.push(row);
        }
    }
    let results = GridResults {
        grid: grid.clone(),
        rows,
        k,
        run_seconds,
    };
    write_outputs(out, &results, info, started.elapsed().as_secs_f64())?;
    drop(lock);
    Ok(results)
}

fn trial(lr: f64, cell: &Cell) -> LrTrial {
    match cell {
        Cell::Done(results) => LrTrial {
            lr,
            valid_top1: Some(results.best_top1.selected_value),
            valid_topk: Some(results.best_topk.selected_value),
            diverged: None,
        },
        Cell::Diverged(why) => LrTrial {
            lr,
            valid_top1: None,
            valid_topk: None,
            diverged: Some(why.clone()),
        },
    }
}

/// The chosen trial: the best validation top-k of the runs that did not diverge; a tie keeps
/// the earlier (smaller) rate.
fn select_lr(trials: &[LrTrial]) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, t) in trials.iter().enumerate() {
        if let Some(v) = t.valid_topk.filter(|v| v.is_finite()) {
            if best.is_none_or(|(_, b)| v > b) {
                best = Some((i, v));
            }
        }
    }
    best.map(|(i, _)| i)
}

/// How a cell of the grid ended.
#[derive(Clone, Debug)]
enum Cell {
    Done(Box<RunResults>),
    /// The run diverged (the message says where); recorded in `diverged.json`.
    Diverged(String),
}

/// The learning rates a configuration is run with.
fn lrs(grid: &Grid, config: &TrainConfig) -> Vec<f64> {
    if grid.lr_grid.is_empty() {
        vec![config.lr]
    } else {
        grid.lr_grid.clone()
    }
}

fn row(
    level: Level,
    base: &TrainConfig,
    lr: f64,
    trials: Vec<LrTrial>,
    runs: &[(PathBuf, RunResults)],
    k: usize,
) -> Result<Row, TrainError> {
    let top1: Vec<f64> = runs.iter().map(|(_, r)| r.best_top1.test.top(1)).collect();
    let topk: Vec<f64> = runs.iter().map(|(_, r)| r.best_topk.test.top(k)).collect();
    let mut last = (0.0, 0.0);
    for (dir, _) in runs {
        let history: Vec<EpochMetrics> = read_json(&dir.join("metrics.json"))?;
        if let Some(m) = history.last() {
            last.0 += m.train.top(1);
            last.1 += m.train_true_accuracy.first().copied().unwrap_or(f64::NAN);
        }
    }
    let n = runs.len().max(1) as f64;
    let x = match level {
        Level::Noise(p) => p,
        Level::TrainSize(_) => runs.first().map_or(0.0, |(_, r)| r.train_images as f64),
    };
    Ok(Row {
        level,
        x,
        loss: base.loss.label(),
        kind: base.loss.kind,
        lr,
        trials,
        top1: Stat::of(&top1),
        topk: Stat::of(&topk),
        top1_values: top1,
        topk_values: topk,
        train_top1_last: last.0 / n,
        train_true_top1_last: last.1 / n,
        seeds: runs.len(),
        diverged_seeds: Vec::new(),
        first_run: runs.first().map(|(d, _)| d.clone()).unwrap_or_default(),
    })
}

fn cell_dir(out: &Path, level: Level, config: &TrainConfig) -> PathBuf {
    out.join(level.label())
        .join(config.loss.kind.name())
        .join(format!("lr-{}", config.lr))
        .join(format!("seed-{}", config.seed))
}

/// A finished (or diverged) run is read back; a started one is resumed; otherwise it is trained.
/// A divergence is recorded in `diverged.json` and ends the cell, not the grid.
fn run_cell(
    config: &TrainConfig,
    dir: &Path,
    loader: &Loader,
    cache: &mut DataCache,
    observer: &mut dyn Observer,
) -> Result<Cell, TrainError> {
    let results = dir.join("results.json");
    if results.exists() {
        let done: RunResults = read_json(&results)?;
        if &done.config == config {
            return Ok(Cell::Done(Box::new(done)));
        }
        return Err(other_run(dir));
    }
    let started = dir.join("config.json").exists();
    if started && &crate::checkpoint::read_config(dir)? != config {
        return Err(other_run(dir));
    }
    let diverged = dir.join(DIVERGED);
    if started && diverged.exists() {
        return Ok(Cell::Diverged(read_json(&diverged)?));
    }
    let start = if started {
        Start::Resume { lr: None }
    } else {
        Start::New(config)
    };
    match train(start, dir, loader, cache, observer) {
        Ok(results) => Ok(Cell::Done(Box::new(results))),
        Err(e @ TrainError::Diverged { .. }) => {
            let why = e.to_string();
            let _lock = RunLock::acquire(dir)?;
            write_json(&diverged, &why)?;
            Ok(Cell::Diverged(why))
        }
        Err(e) => Err(e),
    }
}

/// The record of a cell whose run diverged.
const DIVERGED: &str = "diverged.json";

/// The outcome of a cell if it has one, without running anything.
fn read_cell(dir: &Path) -> Option<Cell> {
    if let Ok(results) = read_json::<RunResults>(&dir.join("results.json")) {
        return Some(Cell::Done(Box::new(results)));
    }
    read_json::<String>(&dir.join(DIVERGED))
        .ok()
        .map(Cell::Diverged)
}

fn other_run(dir: &Path) -> TrainError {
    TrainError::InvalidConfig(format!(
        "{} holds a run with another configuration (remove it or use another --out)",
        dir.display()
    ))
}

/// Prints the estimated time of the cells still to run, from a training step and an
/// evaluation pass of each loss's configuration measured now on this machine (on random
/// inputs: data loading excluded). Steps already taken by interrupted runs are left out.
fn estimate(
    grid: &Grid,
    out: &Path,
    loader: &Loader,
    cache: &mut DataCache,
    say: &mut dyn FnMut(&str),
) -> Result<(), TrainError> {
    /// Work still to do for one loss configuration.
    struct Work {
        config: TrainConfig,
        classes: usize,
        steps: f64,
        evaluations: f64,
    }
    let mut work: Vec<Work> = Vec::new();
    let mut cells = 0usize;
    for (c, base) in grid.configs.iter().enumerate() {
        for &level in &grid.levels {
            let mut config = base.clone();
            level.apply(&mut config);
            let data = data::load(&config.data, config.seed, loader, cache)?;
            let dir = |lr: f64, seed: u64| {
                let mut c = config.clone();
                c.lr = lr;
                c.seed = seed;
                cell_dir(out, level, &c)
            };
            let (first, later) = (grid.seeds[0], &grid.seeds[1..]);
            // The cells to run: the selection runs, then the chosen rate's other seeds (the
            // chosen rate is known once every selection run has finished; until then, the
            // other seeds count as still to run).
            let mut todo: Vec<PathBuf> = Vec::new();
            let mut extra = 0usize;
            if grid.lr_grid.is_empty() {
                todo.extend(grid.seeds.iter().map(|&s| dir(config.lr, s)));
            } else {
                let done: Vec<Option<Cell>> = grid
                    .lr_grid
                    .iter()
                    .map(|&lr| read_cell(&dir(lr, first)))
                    .collect();
                todo.extend(
                    grid.lr_grid
                        .iter()
                        .zip(&done)
                        .filter(|(_, d)| d.is_none())
                        .map(|(&lr, _)| dir(lr, first)),
                );
                if todo.is_empty() {
                    let trials: Vec<LrTrial> = grid
                        .lr_grid
                        .iter()
                        .zip(&done)
                        .filter_map(|(&lr, d)| d.as_ref().map(|r| trial(lr, r)))
                        .collect();
                    let lr = select_lr(&trials).map_or(config.lr, |i| trials[i].lr);
                    todo.extend(later.iter().map(|&s| dir(lr, s)));
                } else {
                    extra = later.len();
                }
            }
            todo.retain(|d| read_cell(d).is_none());
            let batches = data.train.len().div_ceil(config.batch_size).max(1);
            // A step limit ends a run early (after its epoch's evaluation).
            let total = config.epochs.saturating_mul(batches);
            let per_run = config.max_steps.map_or(total, |m| m.min(total));
            let done_steps: usize = todo
                .iter()
                .filter_map(|d| {
                    read_json::<crate::checkpoint::RunState>(&d.join("checkpoint/state.json")).ok()
                })
                .map(|state| state.steps_done.min(per_run))
                .sum();
            let runs = todo.len() + extra;
            let steps = (runs as f64) * per_run as f64 - done_steps as f64;
            let epochs = steps / batches as f64;
            let per_epoch_eval = data.valid.len()
                + if config.test_every_epoch {
                    data.test.len()
                } else {
                    0
                };
            let crops = if config.data.ten_crop { 10 } else { 1 };
            let final_eval = (2 * crops * (data.valid.len() + data.test.len())) as f64;
            let evaluations = epochs * per_epoch_eval as f64 + runs as f64 * final_eval;
            cells += runs;
            match work.get_mut(c) {
                Some(w) => {
                    w.steps += steps;
                    w.evaluations += evaluations;
                }
                None => work.push(Work {
                    config,
                    classes: data.classes,
                    steps,
                    evaluations,
                }),
            }
        }
    }
    if cells == 0 {
        say("every run of the grid has finished; writing the report");
        return Ok(());
    }
    let mut total = 0.0;
    let mut parts = Vec::new();
    for w in work.iter().filter(|w| w.steps > 0.0 || w.evaluations > 0.0) {
        let cost = step_bench::measure(&w.config, w.classes, 3)?;
        total += w.steps * cost.train_step + w.evaluations * cost.eval_image;
        parts.push(format!(
            "{}: {:.0} steps of {:.1} ms, {:.0} evaluated images of {:.2} ms",
            w.config.loss.kind.name(),
            w.steps,
            cost.train_step * 1e3,
            w.evaluations,
            cost.eval_image * 1e3
        ));
    }
    say(&format!(
        "estimated time: {} for {cells} runs ({}; measured just now on random inputs, data \
         loading not included)",
        duration(total),
        parts.join("; ")
    ));
    Ok(())
}

/// `1 h 02 min`, `12 min`, `45 s`.
fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..=99 => format!("{s} s"),
        100..=3599 => format!("{} min", (s + 30) / 60),
        _ => format!("{} h {:02} min", s / 3600, (s % 3600) / 60),
    }
}

/// The Markdown table of results.
pub fn markdown(results: &GridResults) -> String {
    let k = results.k;
    let grid = &results.grid;
    let noise = grid.experiment == Experiment::Cifar100Noise;
    let mut md = format!(
        "| {} | loss | lr | test top-1 (%) | test top-{k} (%) |{} seeds |\n|---|---|---|---|---|{}---|\n",
        grid.experiment.variable(),
        if noise {
            " train top-1 at the end, noisy / true labels (%) |"
        } else {
            ""
        },
        if noise { "---|" } else { "" },
    );
    for r in &results.rows {
        let level = match r.level {
            Level::TrainSize(None) => format!("all ({})", r.x),
            other => other.label(),
        };
        let train = if noise {
            format!(
                " {:.1} / {:.1} |",
                r.train_top1_last, r.train_true_top1_last
            )
        } else {
            String::new()
        };
        let seeds = if r.diverged_seeds.is_empty() {
            r.seeds.to_string()
        } else {
            format!("{} (seeds {:?} diverged)", r.seeds, r.diverged_seeds)
        };
        writeln!(
            md,
            "| {level} | {} | {} | {} | {} |{train} {seeds} |",
            r.kind.name(),
            r.lr,
            r.top1.show(),
            r.topk.show(),
        )
        .unwrap();
    }
    if results.grid.seeds.len() == 1 {
        md.push_str("\nOne seed per cell: no spread was measured.\n");
    } else {
        writeln!(
            md,
            "\nMean ± sample standard deviation over {} seeds.",
            results.grid.seeds.len()
        )
        .unwrap();
    }
    md
}

/// SVM minus CE at one level, for one accuracy: the difference of the means and its standard
/// error (`None` with one seed).
#[derive(Clone, Copy)]
struct Difference {
    diff: f64,
    se: Option<f64>,
}

impl Difference {
    fn of(ce: &Row, svm: &Row, top1: bool) -> Self {
        let (a, b) = if top1 {
            (ce.top1, svm.top1)
        } else {
            (ce.topk, svm.topk)
        };
        let se = match (a.std, b.std) {
            (Some(x), Some(y)) => Some((x * x / ce.seeds as f64 + y * y / svm.seeds as f64).sqrt()),
            _ => None,
        };
        Difference {
            diff: b.mean - a.mean,
            se,
        }
    }

    /// More than twice its standard error from zero.
    fn clear(&self) -> bool {
        self.se.is_some_and(|se| self.diff.abs() > 2.0 * se)
    }

    fn show(&self) -> String {
        match self.se {
            Some(se) => format!(
                "{:+.2} (standard error {se:.2}{})",
                self.diff,
                if self.clear() {
                    ", more than twice it"
                } else {
                    ""
                }
            ),
            None => format!("{:+.2}", self.diff),
        }
    }

    /// Whether `later` is larger than `self` by more than twice their combined standard error.
    fn grows_to(&self, later: &Difference) -> Option<bool> {
        let (a, b) = (self.se?, later.se?);
        Some(later.diff - self.diff > 2.0 * (a * a + b * b).sqrt())
    }
}

/// The comparison of the two losses at each level, and what it says about the claim.
fn statement(results: &GridResults) -> String {
    let k = results.k;
    let grid = &results.grid;
    let variable = grid.experiment.variable();
    let find =
        |kind: LossKind| -> Vec<&Row> { results.rows.iter().filter(|r| r.kind == kind).collect() };
    let (ce, svm) = (find(LossKind::Ce), find(LossKind::Svm));
    if ce.is_empty() || svm.is_empty() || ce.len() != svm.len() {
        return "The grid does not hold cross-entropy and the smooth SVM at the same levels, so \
                it says nothing about the claim."
            .into();
    }
    let pairs: Vec<(&Row, &Row)> = ce.iter().copied().zip(svm.iter().copied()).collect();
    let top1: Vec<Difference> = pairs
        .iter()
        .map(|(c, s)| Difference::of(c, s, true))
        .collect();
    let topk: Vec<Difference> = pairs
        .iter()
        .map(|(c, s)| Difference::of(c, s, false))
        .collect();
    let count = |d: &[Difference]| {
        (
            d.iter().filter(|d| d.diff > 0.0).count(),
            d.iter().filter(|d| d.diff > 0.0 && d.clear()).count(),
            d.iter().filter(|d| d.diff < 0.0 && d.clear()).count(),
        )
    };
    let levels = pairs.len();
    let mut text = String::new();
    let (wk, ck, lk) = count(&topk);
    let (w1, c1, l1) = count(&top1);
    writeln!(
        text,
        "The smooth SVM's mean test top-{k} is higher than cross-entropy's at {wk} of {levels} \
         levels (by more than twice the standard error of the difference at {ck}; clearly lower \
         at {lk}); its mean top-1 is higher at {w1} of {levels} (clearly at {c1}; clearly lower \
         at {l1}). SVM minus CE, in points of accuracy:\n"
    )
    .unwrap();
    for ((c, _), (d1, dk)) in pairs.iter().zip(top1.iter().zip(&topk)) {
        writeln!(
            text,
            "- {variable} {}: top-1 {}, top-{k} {}",
            c.level.label(),
            d1.show(),
            dk.show()
        )
        .unwrap();
    }
    let (first, last) = (0, levels - 1);
    if levels > 1 {
        let trend = |d: &[Difference], name: &str| {
            let grows = d[first].grows_to(&d[last]);
            let shrinks = d[last].grows_to(&d[first]);
            format!(
                "the {name} difference goes from {:+.2} at {variable} {} to {:+.2} at {}{}",
                d[first].diff,
                pairs[first].0.level.label(),
                d[last].diff,
                pairs[last].0.level.label(),
                match (grows, shrinks) {
                    (Some(true), _) => ", a clear increase",
                    (_, Some(true)) => ", a clear decrease",
                    (Some(false), Some(false)) => ", a change within twice its standard error",
                    _ => "",
                }
            )
        };
        writeln!(
            text,
            "\nAcross the grid, {}; {}.",
            trend(&topk, &format!("top-{k}")),
            trend(&top1, "top-1")
        )
        .unwrap();
    }
    if grid.experiment == Experiment::Cifar100Noise {
        if let Some((c, s)) = pairs
            .iter()
            .rev()
            .find(|(c, _)| matches!(c.level, Level::Noise(p) if p > 0.0))
        {
            writeln!(
                text,
                "\nWhether the noise was fitted: at {variable} {}, cross-entropy's training top-1 \
                 at the last epoch is {:.1}% against the noisy labels and {:.1}% against the true \
                 ones (the smooth SVM: {:.1}% and {:.1}%).",
                c.level.label(),
                c.train_top1_last,
                c.train_true_top1_last,
                s.train_top1_last,
                s.train_true_top1_last
            )
            .unwrap();
        }
    }
    let verdict = match grid.experiment {
        Experiment::Cifar100Noise => {
            let better = wk == levels;
            let grows = topk[first].grows_to(&topk[last]);
            match (better, grows) {
                (true, Some(true)) => "This run agrees with the claim on top-5: the SVM is better at every noise level and its advantage grows with the noise.".to_string(),
                (true, _) => "This run agrees with part of the claim: the SVM's top-5 is higher at every noise level, but its advantage does not grow with the noise beyond the spread between seeds, as the paper's does.".to_string(),
                (false, _) => format!("This run does not show the claim: the SVM's top-5 is higher at {wk} of {levels} noise levels only."),
            }
        }
        Experiment::ImagenetSubsets => {
            let shrinks = topk[last].grows_to(&topk[first]);
            let small_better = topk[first].diff > 0.0 && topk[first].clear();
            match (small_better, shrinks) {
                (true, Some(true)) => "This run agrees with the claim on top-5: the SVM is clearly better with the least data and its advantage shrinks as the training set grows.".to_string(),
                (true, _) => "This run agrees with part of the claim: the SVM's top-5 is clearly better with the least data, but its advantage does not shrink with more data beyond the spread between seeds.".to_string(),
                (false, _) => "This run does not show the claim: the SVM's top-5 is not clearly better than cross-entropy's with the least data.".to_string(),
            }
        }
    };
    writeln!(text, "\n{verdict}").unwrap();
    if grid.seeds.len() == 1 {
        text.push_str("\nWith one seed no spread was measured, so no difference can be told from seed-to-seed noise.\n");
    }
    text
}

/// Every loss of the grid other than cross-entropy and the smooth SVM against each of them, at
/// every level: the differences of the mean test accuracies and their standard errors.
fn other_losses(results: &GridResults) -> Option<String> {
    let k = results.k;
    let rows_of =
        |kind: LossKind| -> Vec<&Row> { results.rows.iter().filter(|r| r.kind == kind).collect() };
    let others: Vec<LossKind> = results
        .grid
        .configs
        .iter()
        .map(|c| c.loss.kind)
        .filter(|k| !matches!(k, LossKind::Ce | LossKind::Svm))
        .collect();
    if others.is_empty() {
        return None;
    }
    let settings: Vec<String> = results
        .grid
        .configs
        .iter()
        .filter(|c| others.contains(&c.loss.kind))
        .map(|c| format!("`{}`", c.loss.label()))
        .collect();
    let mut text = format!(
        "Settings: {} (their authors' defaults where they have them); only the learning rate is \
         chosen per loss and level, as for the others. Each loss minus the baseline, in points \
         of test accuracy, per level of {} (standard errors in brackets; * marks a difference \
         of more than twice it):\n\n| loss | against | accuracy |",
        settings.join(", "),
        results.grid.experiment.variable()
    );
    let levels: Vec<Level> = results.grid.levels.clone();
    for level in &levels {
        write!(text, " {} |", level.label()).unwrap();
    }
    text.push_str(" higher at | clearly higher / lower at |\n|---|---|---|");
    text.push_str(&"---|".repeat(levels.len() + 2));
    text.push('\n');
    for kind in others {
        let mine = rows_of(kind);
        for base in [LossKind::Ce, LossKind::Svm] {
            let theirs = rows_of(base);
            if theirs.len() != mine.len() {
                continue;
            }
            for top1 in [false, true] {
                let diffs: Vec<Difference> = theirs
                    .iter()
                    .zip(&mine)
                    .map(|(b, m)| Difference::of(b, m, top1))
                    .collect();
                write!(
                    text,
                    "| {} | {} | top-{} |",
                    kind.name(),
                    base.name(),
                    if top1 { 1 } else { k }
                )
                .unwrap();
                for d in &diffs {
                    match d.se {
                        Some(se) => write!(
                            text,
                            " {:+.2} ({se:.2}){} |",
                            d.diff,
                            if d.clear() { "*" } else { "" }
                        ),
                        None => write!(text, " {:+.2} |", d.diff),
                    }
                    .unwrap();
                }
                let higher = diffs.iter().filter(|d| d.diff > 0.0).count();
                let clear_up = diffs.iter().filter(|d| d.diff > 0.0 && d.clear()).count();
                let clear_down = diffs.iter().filter(|d| d.diff < 0.0 && d.clear()).count();
                writeln!(
                    text,
                    " {higher} of {} | {clear_up} / {clear_down} |",
                    diffs.len()
                )
                .unwrap();
            }
        }
    }
    Some(text)
}

/// What separates this run from the paper's, for the report.
fn differences_from_the_paper(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::CpuNoise | Protocol::CpuSize => {
            "This is the CPU-scale analogue, not the paper's experiment: a multilayer perceptron \
             (one hidden layer of 256) instead of DenseNet 40-40 or ResNet-18, the built-in \
             synthetic images (100 classes in 20 groups of 5 confusable classes, 32x32) instead \
             of CIFAR-100 or ImageNet, 20 training images per class (the size grid: 5 to 40) and \
             60 epochs instead of 300 or 120, and learning rates chosen per loss on the clean \
             validation split. The MLP's top-1 stays near 20% on this data, where a convnet \
             reaches about 90%, so the comparison is between two weak classifiers; it is the \
             regime of little data and (with noise) of a model that fits its noisy labels, which \
             is where the paper places the SVM's advantage. The paper's own protocol runs with \
             `--scale paper` on the real data."
        }
        Protocol::Cifar100Noise | Protocol::ImagenetSubsets => {
            "This is the paper's protocol on the given data. Remaining differences from the \
             paper's runs: the models, initialisation and SGD are burn's (not PyTorch's), the \
             validation split and the label noise are drawn with this project's generators, and \
             unless a learning-rate grid was given the rates are the paper's."
        }
        Protocol::Quick => "The quick protocol is a smoke test, not an experiment of the paper.",
    }
}

/// Colours of a loss's learning curves: validation, training against the training labels,
/// training against the true labels.
fn shades(kind: LossKind) -> (RGBColor, RGBColor, RGBColor) {
    match kind {
        LossKind::Ce => (RED, RGBColor(140, 0, 0), RGBColor(255, 150, 0)),
        LossKind::Svm => (BLUE, RGBColor(0, 0, 130), RGBColor(0, 190, 230)),
        LossKind::HardSvm => (GREEN, RGBColor(0, 100, 0), RGBColor(150, 210, 0)),
        LossKind::Entr => (MAGENTA, RGBColor(110, 0, 110), RGBColor(230, 130, 230)),
        LossKind::Noised => (BLACK, RGBColor(70, 70, 70), RGBColor(160, 160, 160)),
        LossKind::TopkCe => (ORANGE, RGBColor(150, 90, 0), RGBColor(250, 200, 90)),
    }
}

fn palette(kind: LossKind) -> RGBColor {
    match kind {
        LossKind::Ce => RED,
        LossKind::Svm => BLUE,
        LossKind::HardSvm => GREEN,
        LossKind::Entr => MAGENTA,
        LossKind::Noised => BLACK,
        LossKind::TopkCe => ORANGE,
    }
}

/// Tables, plots, `report.md`, then `table.json` (last: it marks a finished grid).
fn write_outputs(
    out: &Path,
    results: &GridResults,
    info: &RunInfo,
    seconds: f64,
) -> Result<(), TrainError> {
    let grid = &results.grid;
    let k = results.k;
    let md = markdown(results);
    write_atomic(&out.join("table.md"), md.as_bytes())?;
    let mut csv = format!(
        "{},loss,lr,top1_mean,top1_std,top{k}_mean,top{k}_std,train_top1_last,train_true_top1_last,seeds\n",
        grid.experiment.variable().replace(' ', "_")
    );
    let std = |s: &Stat| s.std.map_or(String::new(), |v| format!("{v:.4}"));
    for r in &results.rows {
        writeln!(
            csv,
            "{},{},{},{:.4},{},{:.4},{},{:.4},{:.4},{}",
            r.level.label(),
            r.kind.name(),
            r.lr,
            r.top1.mean,
            std(&r.top1),
            r.topk.mean,
            std(&r.topk),
            r.train_top1_last,
            r.train_true_top1_last,
            r.seeds
        )
        .unwrap();
    }
    write_atomic(&out.join("table.csv"), csv.as_bytes())?;

    let sizes = grid.experiment == Experiment::ImagenetSubsets;
    let mut xs: Vec<f64> = results.rows.iter().map(|r| r.x).collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    let axes = |y: &str| Axes {
        x_label: if sizes {
            "training images".into()
        } else {
            "label noise".into()
        },
        y_label: y.into(),
        x_ticks: Some(xs.clone()),
        log_x: sizes,
    };
    for (j, file) in [(1, "top1.png"), (k, "topk.png")] {
        let mut series = Vec::new();
        for config in &grid.configs {
            let mine: Vec<&Row> = results
                .rows
                .iter()
                .filter(|r| r.kind == config.loss.kind)
                .collect();
            let stat = |r: &Row| if j == 1 { r.top1 } else { r.topk };
            let points = mine.iter().map(|r| (r.x, stat(r).mean)).collect();
            let errors = mine
                .iter()
                .map(|r| stat(r).std.unwrap_or(f64::NAN))
                .collect();
            series.push(
                Series::new(&config.loss.label(), palette(config.loss.kind), points)
                    .with_errors(errors),
            );
        }
        let spread = if grid.seeds.len() > 1 {
            format!(", mean ± std over {} seeds", grid.seeds.len())
        } else {
            ", one seed".into()
        };
        line_chart(
            &out.join(file),
            &format!(
                "test top-{j} against {}{spread}",
                grid.experiment.variable()
            ),
            &axes(&format!("test top-{j} accuracy (%)")),
            &series,
        )?;
    }
    // Learning curves of the first seed at the first and last levels.
    let mut curves = Vec::new();
    let ends: Vec<Level> = {
        let mut e = vec![grid.levels[0]];
        if grid.levels.len() > 1 {
            e.push(grid.levels[grid.levels.len() - 1]);
        }
        e
    };
    for level in ends {
        let mut series = Vec::new();
        for r in results.rows.iter().filter(|r| r.level == level) {
            let history: Vec<EpochMetrics> = read_json(&r.first_run.join("metrics.json"))?;
            for s in accuracy_series(&history, k) {
                // Top-1 curves only, coloured by loss; train dashed.
                if !s.name.ends_with("top-1") {
                    continue;
                }
                let mut s = s;
                let (valid, noisy, truth) = shades(r.kind);
                s.color = if s.name.contains("true") {
                    truth
                } else if s.name.starts_with("train") {
                    noisy
                } else {
                    valid
                };
                s.dashed = s.name.starts_with("train");
                s.name = format!("{}: {}", r.kind.name(), s.name);
                series.push(s);
            }
        }
        let file = format!("curves-{}.png", level.label());
        line_chart(
            &out.join(&file),
            &format!(
                "top-1 by epoch, {} {}, first seed",
                grid.experiment.variable(),
                level.label()
            ),
            &Axes::new("epoch", "top-1 accuracy (%)"),
            &series,
        )?;
        curves.push((level, file));
    }

    let mut report = String::new();
    let title = match grid.experiment {
        Experiment::Cifar100Noise => "Top-k accuracy under label noise (Table 1 of the paper)",
        Experiment::ImagenetSubsets => {
            "Top-k accuracy against training-set size (Table 2 of the paper)"
        }
    };
    writeln!(report, "# {title}\n").unwrap();
    writeln!(
        report,
        "Protocol `{}`; {} runs taking {} of training and evaluation in all (summed over the \
         runs, on one process at a time); this invocation of the command took {}.",
        grid.protocol.name(),
        results
            .rows
            .iter()
            .map(|r| r.seeds + r.diverged_seeds.len() + r.trials.len().saturating_sub(1))
            .sum::<usize>(),
        duration(results.run_seconds),
        duration(seconds)
    )
    .unwrap();
    if !info.command.is_empty() {
        writeln!(report, "\nCommand: `{}`", info.command).unwrap();
    }
    writeln!(
        report,
        "\n## What the paper claims\n\n{}",
        grid.experiment.claim()
    )
    .unwrap();
    writeln!(
        report,
        "\n## What this run measured\n\n{}",
        statement(results)
    )
    .unwrap();
    if let Some(text) = other_losses(results) {
        writeln!(report, "\n## The other losses\n\n{text}").unwrap();
    }
    writeln!(
        report,
        "\n## How this run differs from the paper's\n\n{}\n",
        differences_from_the_paper(grid.protocol)
    )
    .unwrap();
    writeln!(report, "## Results\n\n{md}").unwrap();
    writeln!(
        report,
        "Test top-1 is that of the checkpoint with the best validation top-1, test top-{k} that \
         of the best validation top-{k}, as in the paper.\n\n![test top-{k}](topk.png)\n\n![test \
         top-1](top1.png)\n"
    )
    .unwrap();
    if !grid.lr_grid.is_empty() {
        writeln!(
            report,
            "## Learning rates\n\nChosen per loss and level from {:?} by the best validation \
             top-{k} of the first seed (clean validation labels):\n\n| {} | loss | lr | best \
             valid top-1 | best valid top-{k} | chosen |\n|---|---|---|---|---|---|",
            grid.lr_grid,
            grid.experiment.variable()
        )
        .unwrap();
        for r in &results.rows {
            for t in &r.trials {
                let value = |v: Option<f64>| match (v, &t.diverged) {
                    (Some(v), _) => format!("{v:.2}"),
                    (None, Some(_)) => "diverged".into(),
                    (None, None) => "-".into(),
                };
                writeln!(
                    report,
                    "| {} | {} | {} | {} | {} | {} |",
                    r.level.label(),
                    r.kind.name(),
                    t.lr,
                    value(t.valid_top1),
                    value(t.valid_topk),
                    if t.lr == r.lr { "yes" } else { "" }
                )
                .unwrap();
            }
        }
        report.push('\n');
    }
    writeln!(
        report,
        "## Learning curves\n\nTop-1 of the first seed's run by epoch: on the training batches \
         against the training labels (dark, dashed; the noisy ones with label noise), against \
         the true labels (light, dashed; with label noise only), and on the validation split \
         (solid).\n"
    )
    .unwrap();
    for (level, file) in &curves {
        writeln!(
            report,
            "![{} {}]({file})\n",
            grid.experiment.variable(),
            level.label()
        )
        .unwrap();
    }
    writeln!(report, "## Configuration\n\nEach loss's configuration (the grid sets the level, the seed and the learning rate):\n").unwrap();
    for config in &grid.configs {
        let json = serde_json::to_string_pretty(config)
            .map_err(|e| TrainError::json(&out.join("report.md"), e))?;
        writeln!(report, "```json\n{json}\n```\n").unwrap();
    }
    writeln!(
        report,
        "Levels {:?}, seeds {:?}; every run's files are under `<level>/<loss>/lr-<lr>/seed-<s>/`.",
        grid.levels.iter().map(|l| l.label()).collect::<Vec<_>>(),
        grid.seeds
    )
    .unwrap();
    write_atomic(&out.join("report.md"), report.as_bytes())?;
    write_json(&out.join("table.json"), results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_are_sample_statistics_and_one_seed_has_no_spread() {
        let s = Stat::of(&[1.0, 2.0, 3.0]);
        assert_eq!(s.mean, 2.0);
        assert_eq!(s.std, Some(1.0));
        assert_eq!(s.show(), "2.00 ± 1.00");
        let one = Stat::of(&[4.0]);
        assert_eq!((one.mean, one.std), (4.0, None));
        assert_eq!(one.show(), "4.00");
    }

    fn row(kind: LossKind, noise: f64, topk: &[f64]) -> Row {
        Row {
            level: Level::Noise(noise),
            x: noise,
            loss: kind.name().into(),
            kind,
            lr: 0.1,
            trials: Vec::new(),
            top1: Stat::of(&[20.0, 20.0, 20.0]),
            topk: Stat::of(topk),
            top1_values: vec![20.0; 3],
            topk_values: topk.to_vec(),
            train_top1_last: 0.0,
            train_true_top1_last: 0.0,
            seeds: topk.len(),
            diverged_seeds: Vec::new(),
            first_run: PathBuf::new(),
        }
    }

    #[test]
    fn the_other_losses_are_compared_with_both_baselines() {
        let kinds = [LossKind::Ce, LossKind::Svm, LossKind::Entr];
        let grid = Grid {
            experiment: Experiment::Cifar100Noise,
            protocol: Protocol::CpuNoise,
            levels: vec![Level::Noise(0.0), Level::Noise(0.5)],
            configs: kinds
                .iter()
                .map(|&k| Protocol::CpuNoise.config(crate::DataSource::Synthetic, k))
                .collect(),
            seeds: vec![0, 1, 2],
            lr_grid: Vec::new(),
        };
        let mut rows = Vec::new();
        for noise in [0.0, 0.5] {
            rows.push(row(LossKind::Ce, noise, &[90.0, 91.0, 92.0]));
            rows.push(row(LossKind::Svm, noise, &[94.0, 94.5, 95.0]));
            // entr: clearly above CE at noise 0, level with it at 0.5.
            let entr: &[f64] = if noise == 0.0 {
                &[95.0, 95.5, 96.0]
            } else {
                &[90.0, 91.0, 92.0]
            };
            rows.push(row(LossKind::Entr, noise, entr));
        }
        let results = GridResults {
            grid,
            rows,
            k: 5,
            run_seconds: 0.0,
        };
        let text = other_losses(&results).expect("entr is another loss");
        assert!(text.contains("`entr(k=5)`"), "{text}");
        let line = |base: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("| entr | {base} | top-5 |")))
                .unwrap_or_else(|| panic!("no {base} row in {text}"))
                .to_string()
        };
        // 95.5 - 91 = +4.50, standard error sqrt(0.25/3 + 1/3) = 0.65: clearly higher.
        assert!(line("ce").contains("+4.50 (0.65)*"), "{}", line("ce"));
        assert!(line("ce").contains("+0.00 (0.82) |"), "{}", line("ce"));
        assert!(line("ce").ends_with(" 1 of 2 | 1 / 0 |"), "{}", line("ce"));
        assert!(line("svm").contains("+1.00 (0.41)*"), "{}", line("svm"));
        assert!(line("svm").ends_with("| 1 / 1 |"), "{}", line("svm"));
        // Without other losses there is no section.
        let mut only = results.clone();
        only.rows.retain(|r| r.kind != LossKind::Entr);
        only.grid.configs.truncate(2);
        assert!(other_losses(&only).is_none());
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(45.2), "45 s");
        assert_eq!(duration(720.0), "12 min");
        assert_eq!(duration(3720.0), "1 h 02 min");
    }
}
