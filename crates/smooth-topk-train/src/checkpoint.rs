//! What a run keeps on disk, and how it survives being killed.
//!
//! ```text
//! OUT/config.json               the run's configuration (written once)
//! OUT/checkpoint/               after every epoch: model.bpk, optimizer.bpk, state.json
//! OUT/best-top1/, best-top5/    model.bpk + meta.json (epoch, view, config) of the selections
//! ```
//! The epoch checkpoint is written to `checkpoint.tmp` (its `state.json` last), then swapped in
//! for `checkpoint` through `checkpoint.old`. Whatever instant a kill hits, one of the three
//! holds a complete checkpoint, and [`recover`] finds the newest. The state names the
//! selections the epoch improved; they are copied from the checkpoint to `best-*` only after
//! the swap (each again through a temporary directory), and [`recover`] redoes that copy, so a
//! `best-*` directory never runs ahead of or behind the state that names its epoch.

use std::fs;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::data::View;
use crate::models::Classifier;
use crate::train::EpochMetrics;
use crate::TrainError;

const CONFIG: &str = "config.json";
const CHECKPOINT: &str = "checkpoint";
const MODEL: &str = "model.bpk";
const OPTIMIZER: &str = "optimizer.bpk";
const STATE: &str = "state.json";
const META: &str = "meta.json";

/// A selected epoch and its validation value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Best {
    pub epoch: usize,
    pub value: f64,
}

/// Everything besides the weights that a resumed run needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    pub epochs_done: usize,
    pub history: Vec<EpochMetrics>,
    pub best_top1: Option<Best>,
    pub best_topk: Option<Best>,
    /// Crop and normalisation of the run (checked against the data on resume).
    pub view: View,
    pub classes: usize,
    /// Selections (`top1`, `top5`, ...) that the last epoch improved.
    pub improved: Vec<String>,
    /// Training and per-epoch evaluation time so far, over all sessions.
    pub seconds: f64,
}

impl RunState {
    pub fn new(view: View, classes: usize) -> Self {
        Self {
            epochs_done: 0,
            history: Vec::new(),
            best_top1: None,
            best_topk: None,
            view,
            classes,
            improved: Vec::new(),
            seconds: 0.0,
        }
    }

    /// Appends an epoch and notes which validation accuracies it improved (strictly: the
    /// earliest epoch wins ties; a non-finite value never does).
    pub fn record(&mut self, metrics: &EpochMetrics, k: usize) {
        self.improved.clear();
        let improves = |best: &Option<Best>, value: f64| {
            value.is_finite() && best.as_ref().is_none_or(|b| value > b.value)
        };
        let top1 = metrics.valid.top(1);
        if improves(&self.best_top1, top1) {
            self.improved.push(selection(1));
            self.best_top1 = Some(Best {
                epoch: metrics.epoch,
                value: top1,
            });
        }
        let topk = metrics.valid.top(k);
        if improves(&self.best_topk, topk) {
            self.improved.push(selection(k));
            self.best_topk = Some(Best {
                epoch: metrics.epoch,
                value: topk,
            });
        }
        self.epochs_done = metrics.epoch;
        self.seconds += metrics.seconds;
        self.history.push(metrics.clone());
    }
}

/// Written next to every saved model, so `eval` can rebuild it alone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    pub config: TrainConfig,
    pub view: View,
    pub classes: usize,
    pub epoch: usize,
}

/// Creates `out` and writes `config.json`; refuses a directory that already holds a run.
pub fn prepare_run_dir(out: &Path, config: &TrainConfig) -> Result<(), TrainError> {
    if out.join(CONFIG).exists() {
        return Err(TrainError::InvalidConfig(format!(
            "--out {} already holds a run (use --resume {0} to continue it, or another --out)",
            out.display()
        )));
    }
    create_dir(out)?;
    write_json(&out.join(CONFIG), config)
}

pub fn read_config(out: &Path) -> Result<TrainConfig, TrainError> {
    read_json(&out.join(CONFIG))
}

fn slot(out: &Path, suffix: &str) -> PathBuf {
    out.join(format!("{CHECKPOINT}{suffix}"))
}

/// Brings a killed run's directory back to a consistent state and returns the state of its
/// last finished epoch; `None` if it was killed before its first checkpoint (it then starts
/// over). See the module docs for why one of the three slots is always complete.
pub fn recover(out: &Path, config: &TrainConfig) -> Result<Option<RunState>, TrainError> {
    let dest = slot(out, "");
    if !dest.join(STATE).exists() {
        // Killed inside the swap: the new checkpoint (complete once its state exists) or the
        // previous one is still under its temporary name.
        let found = ["tmp", "old"]
            .map(|s| slot(out, &format!(".{s}")))
            .into_iter()
            .find(|dir| dir.join(STATE).exists());
        match found {
            Some(dir) => {
                if dest.exists() {
                    fs::remove_dir_all(&dest).map_err(|e| TrainError::io(&dest, e))?;
                }
                fs::rename(&dir, &dest).map_err(|e| TrainError::io(&dir, e))?;
            }
            None => return Ok(None),
        }
    }
    let state: RunState = read_json(&dest.join(STATE))?;
    promote(out, config, &state)?;
    Ok(Some(state))
}

/// Writes the epoch checkpoint atomically (see the module docs).
pub fn save(
    out: &Path,
    model: &Classifier,
    optim: &ModuleOptimizer,
    state: &RunState,
) -> Result<(), TrainError> {
    let tmp = slot(out, ".tmp");
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    }
    create_dir(&tmp)?;
    save_model(&tmp.join(MODEL), model)?;
    let path = tmp.join(OPTIMIZER);
    optim
        .save(&path)
        .map_err(|e| TrainError::record(&path, e))?;
    write_json(&tmp.join(STATE), state)?;
    replace_dir(&tmp, &slot(out, ""), &slot(out, ".old"))
}

/// Moves the complete directory `new` to `dest`, keeping the previous `dest` under `old` until
/// the move is done.
fn replace_dir(new: &Path, dest: &Path, old: &Path) -> Result<(), TrainError> {
    if old.exists() {
        fs::remove_dir_all(old).map_err(|e| TrainError::io(old, e))?;
    }
    if dest.exists() {
        fs::rename(dest, old).map_err(|e| TrainError::io(dest, e))?;
    }
    fs::rename(new, dest).map_err(|e| TrainError::io(new, e))?;
    if old.exists() {
        fs::remove_dir_all(old).map_err(|e| TrainError::io(old, e))?;
    }
    Ok(())
}

/// Copies the checkpoint's model to each `best-*` directory the last epoch improved.
pub fn promote(out: &Path, config: &TrainConfig, state: &RunState) -> Result<(), TrainError> {
    for which in &state.improved {
        let dest = best_dir(out, which);
        let tmp = dest.with_extension("tmp");
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
        }
        create_dir(&tmp)?;
        let model = slot(out, "").join(MODEL);
        fs::copy(&model, tmp.join(MODEL)).map_err(|e| TrainError::io(&model, e))?;
        let meta = ModelMeta {
            config: config.clone(),
            view: state.view,
            classes: state.classes,
            epoch: state.epochs_done,
        };
        write_json(&tmp.join(META), &meta)?;
        replace_dir(&tmp, &dest, &dest.with_extension("old"))?;
    }
    Ok(())
}

/// Restores the model of the last checkpoint into `model` (same architecture).
pub fn load_model(out: &Path, model: Classifier) -> Result<Classifier, TrainError> {
    load_model_file(&slot(out, "").join(MODEL), model)
}

pub fn load_optimizer(out: &Path, optim: ModuleOptimizer) -> Result<ModuleOptimizer, TrainError> {
    let path = slot(out, "").join(OPTIMIZER);
    optim.load(&path).map_err(|e| TrainError::record(&path, e))
}

/// Name of the selection by validation top-`k` accuracy (`top1`, `top5`, ...): recorded in the
/// state, part of the `best-*` directory name and of `results.json`.
pub fn selection(k: usize) -> String {
    format!("top{k}")
}

/// Directory of a selected model: `best-top1`, `best-top5`, ...
pub fn best_dir(out: &Path, which: &str) -> PathBuf {
    out.join(format!("best-{which}"))
}

/// Loads the model selected by `which`, checking it is the one of `epoch`.
pub fn load_best(
    out: &Path,
    which: &str,
    epoch: usize,
    model: Classifier,
) -> Result<Classifier, TrainError> {
    let dir = best_dir(out, which);
    let meta = read_meta(&dir)?;
    if meta.epoch != epoch {
        return Err(TrainError::InvalidConfig(format!(
            "{} holds epoch {}, the run state selected epoch {epoch}",
            dir.display(),
            meta.epoch
        )));
    }
    load_model_dir(&dir, model)
}

/// Reads `meta.json` of a saved model directory (a `best-*` directory).
pub fn read_meta(dir: &Path) -> Result<ModelMeta, TrainError> {
    read_json(&dir.join(META))
}

/// Loads a saved model directory's weights into `model`.
pub fn load_model_dir(dir: &Path, model: Classifier) -> Result<Classifier, TrainError> {
    load_model_file(&dir.join(MODEL), model)
}

fn save_model(path: &Path, model: &Classifier) -> Result<(), TrainError> {
    model
        .clone()
        .save_file(path)
        .map_err(|e| TrainError::record(path, e))
}

fn load_model_file(path: &Path, model: Classifier) -> Result<Classifier, TrainError> {
    if !path.exists() {
        return Err(TrainError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        ));
    }
    model
        .try_load_file(path)
        .map_err(|e| TrainError::record(path, e))
}

pub fn create_dir(dir: &Path) -> Result<(), TrainError> {
    fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))
}

/// Writes JSON through a temporary file and a rename, so readers never see half a file.
pub fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<(), TrainError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| TrainError::json(path, e))?;
    write_atomic(path, text.as_bytes())
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    fs::write(&tmp, bytes).map_err(|e| TrainError::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| TrainError::io(path, e))
}

pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, TrainError> {
    let text = fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| TrainError::json(path, e))
}
