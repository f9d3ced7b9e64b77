//! The training loop: SGD with Nesterov momentum and a step schedule, data-parallel over the
//! configured devices, per-epoch evaluation, checkpoints every epoch, best-validation
//! checkpoints, final test of both.
//!
//! Determinism: every random choice of epoch `e` (batch order, crops, flips) comes from
//! generators seeded by `(seed, e)` (a sample's crop by its position in the epoch, so it does
//! not depend on the loader's threads), the weights from the device generator seeded by
//! `seed`, and the label noise from `seed`. So the state a resumed run needs is the model, the
//! optimiser and the number of finished epochs; nothing random is carried across an epoch
//! boundary.
//!
//! Divergence: the logits of every batch are checked before the loss, and a non-finite logit or
//! loss stops the run with [`TrainError::Diverged`], before anything of that epoch is written:
//! the checkpoint of the last finished epoch stays as it was, and `--resume` with a lower
//! learning rate continues from it.

pub mod device;
pub mod evaluate;
pub(crate) mod step;
pub mod tally;

use std::path::Path;
use std::time::Instant;

use burn::module::Module;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{ModuleOptimizer, SgdConfig};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use smooth_topk::{AnyLoss, Loss};
use smooth_topk_data::{mix_seed, Loader};

use crate::checkpoint::{self, Best, RunLock, RunState};
use crate::config::{LrRestart, TrainConfig};
use crate::data::{self, DataCache, PreparedData};
use crate::models::Classifier;
use crate::report;
use crate::TrainError;

pub use device::{device, device_at, training_devices};
pub use evaluate::evaluate;
use step::{Replicas, Stepped};
pub use tally::SplitMetrics;
use tally::Tally;

/// One line of the history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub lr: f64,
    /// On the training batches as trained (augmented, weights moving), against the training
    /// labels (noisy ones with label noise).
    pub train: SplitMetrics,
    /// Top-1 .. top-k of the same batches against the true labels: with label noise, a model
    /// that memorises the noise scores far higher against the noisy labels than against these.
    #[serde(default)]
    pub train_true_accuracy: Vec<f64>,
    pub valid: SplitMetrics,
    /// The test split, when evaluated every epoch.
    pub test: Option<SplitMetrics>,
    pub seconds: f64,
    /// Optimisation steps of the epoch.
    #[serde(default)]
    pub steps: usize,
    /// Training images skipped as unreadable in the epoch.
    #[serde(default)]
    pub skipped: usize,
}

/// Test metrics of a selected checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SelectedResult {
    /// Which validation metric selected it (`top1` or `top5`, ...).
    pub selected_by: String,
    pub epoch: usize,
    /// The validation accuracy (centre crop, %) that selected it.
    pub selected_value: f64,
    pub valid: SplitMetrics,
    pub test: SplitMetrics,
}

/// What `results.json` holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunResults {
    pub config: TrainConfig,
    pub best_top1: SelectedResult,
    pub best_topk: SelectedResult,
    pub epochs_trained: usize,
    /// Training plus per-epoch evaluation time, over all sessions of the run.
    pub seconds: f64,
    pub noisy_labels: usize,
    /// Images of the training split.
    #[serde(default)]
    pub train_images: usize,
    #[serde(default)]
    pub steps: usize,
}

/// Receives progress; the CLI prints it, tests ignore it.
pub trait Observer {
    fn started(&mut self, _config: &TrainConfig, _data: &PreparedData, _resumed_at: usize) {}
    fn epoch_started(&mut self, _epoch: usize, _batches: usize) {}
    fn batch_done(&mut self, _loss: f64) {}
    fn epoch_done(&mut self, _config: &TrainConfig, _metrics: &EpochMetrics) {}
    fn finished(&mut self, _results: &RunResults) {}
}

/// An observer that reports nothing.
pub struct Silent;
impl Observer for Silent {}

/// How a run begins.
#[derive(Clone, Copy, Debug)]
pub enum Start<'a> {
    /// A new run of this configuration in an empty (or absent) directory.
    New(&'a TrainConfig),
    /// Continue the run saved in the directory with its own `config.json`; `lr` sets a new
    /// base learning rate from the next epoch on (recorded in the configuration).
    Resume { lr: Option<f64> },
}

/// Trains into `out` (see [`Start`]), reading images through `loader`, sharing what it can
/// with other runs through `cache`. On the CPU backend a resumed run ends with exactly the
/// results of an uninterrupted one; GPU backends may not be bit-reproducible.
pub fn train(
    start: Start,
    out: &Path,
    loader: &Loader,
    cache: &mut DataCache,
    observer: &mut dyn Observer,
) -> Result<RunResults, TrainError> {
    // Everything that can be checked is checked before a new run creates its directory.
    let (mut config, lock) = match start {
        Start::New(config) => {
            config.validate()?;
            (config.clone(), None)
        }
        Start::Resume { .. } => {
            let lock = RunLock::acquire(out)?;
            (checkpoint::read_config(out)?, Some(lock))
        }
    };
    config.validate()?;
    let loss = config.loss.build()?;
    let data = data::load(&config.data, config.seed, loader, cache)?;
    if data.classes < loss.min_classes() || data.classes < config.report_k {
        return Err(TrainError::InvalidConfig(format!(
            "k = {} / report k = {} (the data has {} classes; the SVMs need more than k)",
            config.loss.k, config.report_k, data.classes
        )));
    }
    let devices = training_devices(config.backend, &config.devices)?;
    let lock = match lock {
        Some(lock) => lock,
        None => {
            let lock = RunLock::acquire(out)?;
            checkpoint::prepare_run_dir(out, &config, &lock)?;
            lock
        }
    };
    let saved = match start {
        Start::New(_) => None,
        Start::Resume { .. } => checkpoint::recover(out, &config, &lock)?,
    };
    if let Start::Resume { lr: Some(lr) } = start {
        let from_epoch = saved.as_ref().map_or(0, |s| s.epochs_done) + 1;
        let steps_done = saved.as_ref().map_or(0, |s| s.steps_done);
        if config.max_steps.is_some_and(|m| steps_done >= m) {
            return Err(TrainError::InvalidConfig(format!(
                "--lr {lr}: the run in {} has taken all its {steps_done} steps (--max-steps)",
                out.display()
            )));
        }
        if from_epoch > config.epochs {
            return Err(TrainError::InvalidConfig(format!(
                "--lr {lr}: the run in {} has finished all {} epochs",
                out.display(),
                config.epochs
            )));
        }
        config.lr_restarts.retain(|r| r.from_epoch < from_epoch);
        config.lr_restarts.push(LrRestart { from_epoch, lr });
        config.validate()?;
        checkpoint::write_config(out, &config, &lock)?;
    }

    let main = devices[0].clone();
    main.seed(config.seed);
    let mut model = config.model.init(data.classes, data.view.crop, &main);
    let mut optim = optimizer(&config);
    let mut state = match saved {
        Some(mut state) => {
            if state.view != data.view || state.classes != data.classes {
                return Err(TrainError::InvalidConfig(format!(
                    "the data of {} changed since the run started (other images or classes)",
                    out.display()
                )));
            }
            model = checkpoint::load_model(out, model)?;
            optim = checkpoint::load_optimizer(out, optim)?;
            state.config = Some(config.clone());
            state
        }
        None => RunState::new(data.view, data.classes, &config),
    };
    observer.started(&config, &data, state.epochs_done);
    let replicas = Replicas::new(&devices)?;
    let trainer = Trainer {
        config: &config,
        data: &data,
        loader,
        replicas: &replicas,
    };

    let steps_left = |state: &RunState| {
        config
            .max_steps
            .map_or(usize::MAX, |max| max.saturating_sub(state.steps_done))
    };
    for epoch in state.epochs_done + 1..=config.epochs {
        if steps_left(&state) == 0 {
            break;
        }
        let start = Instant::now();
        let lr = config.lr_at(epoch);
        let trained = trainer.epoch(epoch, lr, model, &mut optim, steps_left(&state), observer)?;
        let done = match trained {
            Epoch::Done(done) => done,
            Epoch::Diverged { step, why } => {
                return Err(TrainError::Diverged {
                    epoch,
                    step,
                    lr,
                    base_lr: config.base_lr_at(epoch),
                    why,
                    dir: out.to_path_buf(),
                    last_good: state.epochs_done,
                })
            }
        };
        model = done.model;
        let eval = model.valid();
        let k = config.report_k;
        let valid = evaluate(&eval, &data.valid, &data.view, false, &loss, k, loader)?;
        let test = if config.test_every_epoch {
            Some(evaluate(
                &eval, &data.test, &data.view, false, &loss, k, loader,
            )?)
        } else {
            None
        };
        let metrics = EpochMetrics {
            epoch,
            lr,
            train: done.train,
            train_true_accuracy: done.train_true,
            valid,
            test,
            seconds: start.elapsed().as_secs_f64(),
            steps: done.steps,
            skipped: done.skipped,
        };
        state.record(&metrics, k);
        checkpoint::save(out, &model, &optim, &state)?;
        checkpoint::promote(out, &config, &state)?;
        report::write_history(out, &config, &state.history)?;
        observer.epoch_done(&config, &metrics);
    }

    let results = finish(&config, &data, &state, out, &loss, &main, loader)?;
    observer.finished(&results);
    drop(lock);
    Ok(results)
}

/// Loads both selected checkpoints, evaluates them on the validation and test splits (ten
/// crops if asked) and writes the plots, then `results.json` (last: it marks a finished run).
fn finish(
    config: &TrainConfig,
    data: &PreparedData,
    state: &RunState,
    out: &Path,
    loss: &AnyLoss,
    device: &burn::tensor::Device,
    loader: &Loader,
) -> Result<RunResults, TrainError> {
    let missing = || TrainError::InvalidConfig("no epoch finished, nothing to select".into());
    let best_top1 = state.best_top1.as_ref().ok_or_else(missing)?;
    let best_topk = state.best_topk.as_ref().ok_or_else(missing)?;
    // Loads and evaluates a selected model; both selections often name the same epoch, and
    // then the model is evaluated once.
    let evaluate_best =
        |which: &str, best: &Best| -> Result<(SplitMetrics, SplitMetrics), TrainError> {
            let model = config
                .model
                .init(data.classes, data.view.crop, &device.clone().inner());
            let model = checkpoint::load_best(out, which, best.epoch, model)?.valid();
            let ten = config.data.ten_crop;
            let k = config.report_k;
            Ok((
                evaluate(&model, &data.valid, &data.view, ten, loss, k, loader)?,
                evaluate(&model, &data.test, &data.view, ten, loss, k, loader)?,
            ))
        };
    let topk_name = checkpoint::selection(config.report_k);
    let top1_metrics = evaluate_best(&checkpoint::selection(1), best_top1)?;
    let topk_metrics = if best_topk.epoch == best_top1.epoch {
        top1_metrics.clone()
    } else {
        evaluate_best(&topk_name, best_topk)?
    };
    let selected =
        |which: String, best: &Best, (valid, test): (SplitMetrics, SplitMetrics)| SelectedResult {
            selected_by: which,
            epoch: best.epoch,
            selected_value: best.value,
            valid,
            test,
        };
    let results = RunResults {
        config: config.clone(),
        best_top1: selected(checkpoint::selection(1), best_top1, top1_metrics),
        best_topk: selected(topk_name, best_topk, topk_metrics),
        epochs_trained: state.epochs_done,
        seconds: state.seconds,
        noisy_labels: data.noisy_labels,
        train_images: data.train.len(),
        steps: state.steps_done,
    };
    report::write_results(out, &results, &state.history)?;
    Ok(results)
}

/// SGD with Nesterov momentum and no dampening (PyTorch's SGD), weight decay as L2 on the
/// gradient.
pub(crate) fn optimizer(config: &TrainConfig) -> ModuleOptimizer {
    SgdConfig::new()
        .with_weight_decay(
            (config.weight_decay > 0.0).then(|| WeightDecayConfig::new(config.weight_decay as f32)),
        )
        .with_momentum((config.momentum > 0.0).then(|| {
            MomentumConfig::new()
                .with_momentum(config.momentum)
                .with_dampening(0.0)
                .with_nesterov(true)
        }))
        .init()
}

struct Trainer<'a> {
    config: &'a TrainConfig,
    data: &'a PreparedData,
    loader: &'a Loader,
    replicas: &'a Replicas,
}

/// A finished epoch of training.
struct TrainedEpoch {
    model: Classifier,
    train: SplitMetrics,
    train_true: Vec<f64>,
    steps: usize,
    skipped: usize,
}

enum Epoch {
    Done(Box<TrainedEpoch>),
    /// Stopped at `step` (1-based) for a non-finite logit or loss.
    Diverged {
        step: usize,
        why: String,
    },
}

impl Trainer<'_> {
    /// One epoch of SGD (at most `max_steps` steps).
    fn epoch(
        &self,
        epoch: usize,
        lr: f64,
        mut model: Classifier,
        optim: &mut ModuleOptimizer,
        max_steps: usize,
        observer: &mut dyn Observer,
    ) -> Result<Epoch, TrainError> {
        let config = self.config;
        let mut rng = epoch_rng(config.seed, epoch);
        let mut order: Vec<usize> = (0..self.data.train.len()).collect();
        order.shuffle(&mut rng);
        let views_seed = rng.random::<u64>();
        let view = self.data.view.training(config.data.augment);
        let stream = self.loader.stream(
            self.data.train.clone(),
            order,
            config.batch_size,
            view,
            views_seed,
        );
        observer.epoch_started(epoch, stream.batches().min(max_steps));
        let n = self.data.classes;
        let mut tally = Tally::new(config.report_k);
        let (mut steps, mut skipped) = (0, 0);
        for batch in stream {
            if steps == max_steps {
                break;
            }
            let batch = batch?;
            skipped += batch.skipped.len();
            if batch.is_empty() {
                continue;
            }
            let labels: Vec<usize> = batch.labels.iter().map(|&l| usize::from(l)).collect();
            let true_labels: Vec<usize> =
                batch.true_labels.iter().map(|&l| usize::from(l)).collect();
            steps += 1;
            // The run's seed, epoch and step: a stochastic loss draws new noise every step,
            // the same on a rerun or a resume.
            let step_key = config
                .seed
                .wrapping_mul(1 << 40)
                .wrapping_add((epoch as u64) << 24)
                .wrapping_add(steps as u64);
            let stepped = self.replicas.step(
                model,
                optim,
                lr,
                batch,
                &self.data.view,
                &config.loss,
                step_key,
            )?;
            let (next, loss, logits) = match stepped {
                Stepped::Done {
                    model,
                    loss,
                    logits,
                } => (model, loss, logits),
                Stepped::Diverged { why, .. } => return Ok(Epoch::Diverged { step: steps, why }),
            };
            model = next;
            tally.add_scores(&logits, &labels, &true_labels, n)?;
            tally.add_loss(loss, labels.len());
            observer.batch_done(loss);
        }
        Ok(Epoch::Done(Box::new(TrainedEpoch {
            model,
            train: tally.metrics(),
            train_true: tally.true_accuracy(),
            steps,
            skipped,
        })))
    }
}

/// The generator of the random choices of one epoch (batch order, then the seed of the views).
fn epoch_rng(seed: u64, epoch: usize) -> StdRng {
    StdRng::seed_from_u64(mix_seed(&[seed, epoch as u64]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DataSource, LossKind};

    #[test]
    fn learning_rate_steps_down_from_each_milestone_and_restarts() {
        let mut config = TrainConfig::defaults(DataSource::Synthetic, LossKind::Svm);
        config.lr = 0.1;
        config.lr_milestones = vec![151, 226];
        let lr = |c: &TrainConfig, e| c.lr_at(e);
        assert_eq!(lr(&config, 1), 0.1);
        assert_eq!(lr(&config, 150), 0.1);
        assert_eq!((lr(&config, 151), lr(&config, 225)), (0.01, 0.01));
        assert_eq!((lr(&config, 226), lr(&config, 300)), (0.001, 0.001));
        config.lr_restarts = vec![LrRestart {
            from_epoch: 100,
            lr: 0.05,
        }];
        assert_eq!((lr(&config, 99), lr(&config, 100)), (0.1, 0.05));
        assert_eq!(lr(&config, 200), 0.005);
    }

    #[test]
    fn epoch_generators_differ_and_repeat() {
        let draw = |seed, epoch| epoch_rng(seed, epoch).random::<u64>();
        assert_eq!(draw(3, 7), draw(3, 7));
        assert_ne!(draw(3, 7), draw(3, 8));
        assert_ne!(draw(3, 7), draw(4, 7));
    }
}
