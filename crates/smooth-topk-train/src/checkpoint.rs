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
//! `best-*` directory never runs ahead of or behind the state that names its epoch. Every file
//! is flushed to disk (`fsync`) before the rename that publishes it, and the directory after, so
//! that a power loss leaves the same choices as a kill. [`recover`] also rewrites
//! `metrics.csv` and `metrics.json` from the state, which a kill between the swap and their
//! rewrite would leave one epoch behind.
//!
//! One run at a time writes a directory: [`RunLock`] holds an exclusive lock on `OUT/lock` for
//! the whole run, and a second `train` (or `--resume`) on the same directory is refused. Names
//! read back from the state (the selections in `improved`) are checked against the two the run
//! can produce, so a tampered `state.json` cannot make the run touch a path outside `OUT`.

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
const LOCK: &str = "lock";

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
    /// Optimisation steps taken so far.
    #[serde(default)]
    pub steps_done: usize,
    /// The configuration the run was checkpointed with (`config.json` must still say it).
    #[serde(default)]
    pub config: Option<TrainConfig>,
}

impl RunState {
    pub fn new(view: View, classes: usize, config: &TrainConfig) -> Self {
        Self {
            epochs_done: 0,
            history: Vec::new(),
            best_top1: None,
            best_topk: None,
            view,
            classes,
            improved: Vec::new(),
            seconds: 0.0,
            steps_done: 0,
            config: Some(config.clone()),
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
        self.steps_done += metrics.steps;
        self.history.push(metrics.clone());
    }
}

/// An exclusive lock on a run directory, held until dropped.
pub struct RunLock {
    _file: fs::File,
}

impl RunLock {
    /// Creates `out` if needed and locks it; errors if another process holds the lock.
    pub fn acquire(out: &Path) -> Result<Self, TrainError> {
        create_dir(out)?;
        let path = out.join(LOCK);
        let mut file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| TrainError::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&path).unwrap_or_default();
                return Err(TrainError::InvalidConfig(format!(
                    "{} is being written by another run{} (one run per directory)",
                    out.display(),
                    match holder.trim() {
                        "" => String::new(),
                        pid => format!(" (process {pid})"),
                    }
                )));
            }
            Err(fs::TryLockError::Error(e)) => return Err(TrainError::io(&path, e)),
        }
        use std::io::Write;
        file.set_len(0).map_err(|e| TrainError::io(&path, e))?;
        write!(file, "{}", std::process::id()).map_err(|e| TrainError::io(&path, e))?;
        Ok(RunLock { _file: file })
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

/// Writes `config.json` into the locked, empty run directory; refuses one that already holds
/// a run.
pub fn prepare_run_dir(
    out: &Path,
    config: &TrainConfig,
    _lock: &RunLock,
) -> Result<(), TrainError> {
    if out.join(CONFIG).exists() {
        return Err(TrainError::InvalidConfig(format!(
            "--out {} already holds a run (use --resume {0} to continue it, or another --out)",
            out.display()
        )));
    }
    write_json(&out.join(CONFIG), config)
}

/// Rewrites `config.json` (a resumed run with a new learning rate).
pub fn write_config(out: &Path, config: &TrainConfig, _lock: &RunLock) -> Result<(), TrainError> {
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
pub fn recover(
    out: &Path,
    config: &TrainConfig,
    _lock: &RunLock,
) -> Result<Option<RunState>, TrainError> {
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
                sync_dir(out)?;
            }
            None => return Ok(None),
        }
    }
    // Leftovers of an interrupted swap or promotion.
    for leftover in [slot(out, ".tmp"), slot(out, ".old")] {
        if leftover.exists() {
            fs::remove_dir_all(&leftover).map_err(|e| TrainError::io(&leftover, e))?;
        }
    }
    let state: RunState = read_json(&dest.join(STATE))?;
    check_state(out, config, &state)?;
    promote(out, config, &state)?;
    crate::report::write_history(out, config, &state.history)?;
    Ok(Some(state))
}

/// The selections a run of `config` can name (`top1`, `top<k>`).
fn selections(config: &TrainConfig) -> [String; 2] {
    [selection(1), selection(config.report_k)]
}

/// Refuses a state that `config` cannot have produced: a selection name it does not make (a
/// path such as `x/../../victim` among them), an epoch beyond the configured ones, accuracies
/// of another k, or a configuration other than the checkpointed one.
fn check_state(out: &Path, config: &TrainConfig, state: &RunState) -> Result<(), TrainError> {
    if let Some(saved) = &state.config {
        // A new rate given on resuming is written to config.json before the next checkpoint.
        let (mut a, mut b) = (saved.clone(), config.clone());
        a.lr_restarts.clear();
        b.lr_restarts.clear();
        let differing = differing_fields(&a, &b);
        if !differing.is_empty() {
            return Err(TrainError::InvalidConfig(format!(
                "{} differs from the configuration the run was checkpointed with ({}): a run \
                 continues with its own settings (only --lr may change on resuming)",
                out.join(CONFIG).display(),
                differing.join(", ")
            )));
        }
    }
    let path = slot(out, "").join(STATE);
    let known = selections(config);
    if let Some(bad) = state.improved.iter().find(|w| !known.contains(w)) {
        return Err(TrainError::record(
            &path,
            format!(
                "unknown selection {bad:?} (expected {} or {})",
                known[0], known[1]
            ),
        ));
    }
    if state.epochs_done > config.epochs || state.history.len() != state.epochs_done {
        return Err(TrainError::record(
            &path,
            format!(
                "{} epochs done with {} in the history, of {} configured",
                state.epochs_done,
                state.history.len(),
                config.epochs
            ),
        ));
    }
    if let Some(m) = state
        .history
        .iter()
        .find(|m| m.valid.accuracy.len() != config.report_k)
    {
        return Err(TrainError::record(
            &path,
            format!(
                "epoch {} reports top-1..top-{}, the configuration top-1..top-{}",
                m.epoch,
                m.valid.accuracy.len(),
                config.report_k
            ),
        ));
    }
    Ok(())
}

/// Names of the settings (`data.noise`, `loss.k`, ...) in which two configurations differ.
pub fn differing_fields(a: &TrainConfig, b: &TrainConfig) -> Vec<String> {
    fn walk(prefix: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
        match (a, b) {
            (serde_json::Value::Object(x), serde_json::Value::Object(y)) => {
                let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
                keys.sort();
                keys.dedup();
                for key in keys {
                    let name = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    let null = serde_json::Value::Null;
                    walk(
                        &name,
                        x.get(key).unwrap_or(&null),
                        y.get(key).unwrap_or(&null),
                        out,
                    );
                }
            }
            _ if a != b => out.push(prefix.to_string()),
            _ => {}
        }
    }
    let (Ok(x), Ok(y)) = (serde_json::to_value(a), serde_json::to_value(b)) else {
        return vec!["(unserialisable)".into()];
    };
    let mut out = Vec::new();
    walk("", &x, &y, &mut out);
    out
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
    sync_tree(&tmp)?;
    replace_dir(&tmp, &slot(out, ""), &slot(out, ".old"))?;
    sync_dir(out)
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
    let known = selections(config);
    for which in &state.improved {
        if !known.contains(which) {
            return Err(TrainError::InvalidConfig(format!(
                "unknown selection {which:?} in the state of {}",
                out.display()
            )));
        }
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
        sync_tree(&tmp)?;
        replace_dir(&tmp, &dest, &dest.with_extension("old"))?;
        sync_dir(out)?;
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

/// Writes `bytes` to `path` through a temporary file that is flushed to disk before the rename,
/// then flushes the directory: readers see the old file or the new one, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    use std::io::Write;
    // A name of this process and call: two writers (which the locks exclude) still could not
    // mix their bytes in one temporary file.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.{call}.tmp", std::process::id()));
    let tmp = path.with_file_name(name);
    let mut file = fs::File::create(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| TrainError::io(&tmp, e))?;
    drop(file);
    fs::rename(&tmp, path).map_err(|e| TrainError::io(path, e))?;
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => sync_dir(dir),
        _ => Ok(()),
    }
}

/// Flushes a directory's entries (a rename in it) to disk.
pub fn sync_dir(dir: &Path) -> Result<(), TrainError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| TrainError::io(dir, e))
}

/// Flushes every file of a directory (one level) and the directory itself.
fn sync_tree(dir: &Path) -> Result<(), TrainError> {
    for entry in fs::read_dir(dir).map_err(|e| TrainError::io(dir, e))? {
        let path = entry.map_err(|e| TrainError::io(dir, e))?.path();
        if path.is_file() {
            fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| TrainError::io(&path, e))?;
        }
    }
    sync_dir(dir)
}

pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, TrainError> {
    let text = fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| TrainError::json(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DataSource, LossKind};

    fn setup(name: &str) -> (PathBuf, TrainConfig, RunLock) {
        let out =
            std::env::temp_dir().join(format!("smooth-topk-ckpt-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&out);
        let config = TrainConfig::defaults(DataSource::Synthetic, LossKind::Svm);
        let lock = RunLock::acquire(&out).unwrap();
        prepare_run_dir(&out, &config, &lock).unwrap();
        (out, config, lock)
    }

    fn state(config: &TrainConfig, epochs: usize) -> RunState {
        let view = View {
            image_size: 32,
            crop: 32,
            pad: 4,
            mean: [0.5; 3],
            std: [0.25; 3],
        };
        let mut state = RunState::new(view, 100, config);
        state.epochs_done = epochs;
        state
    }

    /// A checkpoint directory as `save` leaves it (the model file's content does not matter to
    /// recovery), complete when it holds the state.
    fn slot_with(out: &Path, suffix: &str, state: Option<&RunState>) {
        let dir = slot(out, suffix);
        create_dir(&dir).unwrap();
        fs::write(dir.join(MODEL), b"model").unwrap();
        if let Some(state) = state {
            write_json(&dir.join(STATE), state).unwrap();
        }
    }

    #[test]
    fn every_leftover_of_a_killed_swap_recovers_to_the_newest_complete_checkpoint() {
        // Killed after the new checkpoint was complete, before the swap began.
        let (out, config, lock) = setup("tmp");
        slot_with(&out, "", Some(&state(&config, 0)));
        fs::remove_file(slot(&out, "").join(STATE)).unwrap();
        slot_with(&out, ".tmp", Some(&state(&config, 0)));
        let recovered = recover(&out, &config, &lock).unwrap().unwrap();
        assert_eq!(recovered.epochs_done, 0);
        assert!(!slot(&out, ".tmp").exists());
        // Killed between the two renames: only the old checkpoint is left.
        fs::rename(slot(&out, ""), slot(&out, ".old")).unwrap();
        assert!(recover(&out, &config, &lock).unwrap().is_some());
        assert!(slot(&out, "").join(STATE).exists() && !slot(&out, ".old").exists());
        // Killed while writing a new checkpoint: the incomplete one is dropped.
        slot_with(&out, ".tmp", None);
        let recovered = recover(&out, &config, &lock).unwrap().unwrap();
        assert_eq!(recovered.epochs_done, 0);
        assert!(!slot(&out, ".tmp").exists());
        // Killed before the first checkpoint: nothing to recover, the run starts over.
        fs::remove_dir_all(slot(&out, "")).unwrap();
        slot_with(&out, ".tmp", None);
        assert!(recover(&out, &config, &lock).unwrap().is_none());
        drop(lock);
        let _ = fs::remove_dir_all(&out);
    }

    #[test]
    fn a_second_lock_on_a_run_is_refused_until_the_first_is_dropped() {
        let (out, _, lock) = setup("lock");
        let err = RunLock::acquire(&out).err().unwrap().to_string();
        assert!(err.contains("is being written by another run"), "{err}");
        drop(lock);
        assert!(RunLock::acquire(&out).is_ok());
        let _ = fs::remove_dir_all(&out);
    }

    #[test]
    fn atomic_writes_leave_no_temporary_file() {
        let dir = std::env::temp_dir().join(format!("smooth-topk-atomic-{}", std::process::id()));
        create_dir(&dir).unwrap();
        let path = dir.join("a.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        let _ = fs::remove_dir_all(&dir);
    }
}
