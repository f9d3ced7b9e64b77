//! The training loop: SGD with Nesterov momentum and a step schedule, per-epoch evaluation,
//! checkpoints every epoch, best-validation checkpoints, final test of both.
//!
//! Determinism: every random choice of epoch `e` (batch order, crops, flips) comes from a
//! generator seeded by `(seed, e)`, the weights from the device generator seeded by `seed`, and
//! the label noise from `seed`. So the state a resumed run needs is the model, the optimiser and
//! the number of finished epochs; nothing random is carried across an epoch boundary.

use std::path::Path;
use std::time::Instant;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, ModuleOptimizer, SgdConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use smooth_topk::{AnyLoss, Loss, Reduction, TopkError};
use smooth_topk_burn::topk_loss_per_sample;

use crate::checkpoint::{self, Best, RunState};
use crate::config::{BackendKind, TrainConfig};
use crate::data::{self, HostBatch, PreparedData, View};
use crate::models::Classifier;
use crate::report;
use crate::TrainError;

/// Images per forward pass in evaluation (memory, not results, depends on it).
const EVAL_BATCH: usize = 128;

/// Loss and top-1 .. top-k accuracy (in %) of one split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitMetrics {
    pub loss: f64,
    /// `accuracy[j]` is the top-(j+1) accuracy in percent.
    pub accuracy: Vec<f64>,
}

impl SplitMetrics {
    pub fn top(&self, k: usize) -> f64 {
        self.accuracy[k - 1]
    }
}

/// One line of the history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub lr: f64,
    /// On the training batches as trained (augmented, noisy labels), weights moving.
    pub train: SplitMetrics,
    pub valid: SplitMetrics,
    pub test: SplitMetrics,
    pub seconds: f64,
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

/// The device of a backend, with autodiff.
pub fn device(backend: BackendKind) -> Result<Device, TrainError> {
    match backend {
        BackendKind::Cpu => Ok(Device::flex()),
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => Ok(Device::cuda(0)),
        #[allow(unreachable_patterns)]
        other => Err(TrainError::InvalidConfig(format!(
            "backend = {other:?} (not compiled in; rebuild with --features {})",
            format!("{other:?}").to_lowercase()
        ))),
    }
}

/// Trains `config` from scratch into `out`, or with `None` continues the run saved there with
/// its own `config.json`. On the CPU backend a resumed run ends with exactly the results of an
/// uninterrupted one; GPU backends may not be bit-reproducible.
pub fn train(
    config: Option<&TrainConfig>,
    out: &Path,
    observer: &mut dyn Observer,
) -> Result<RunResults, TrainError> {
    let resume = config.is_none();
    let config = match config {
        Some(config) => config.clone(),
        None => checkpoint::read_config(out)?,
    };
    config.validate()?;
    let loss = config.loss.build()?;
    let data = data::load(&config.data, config.seed)?;
    if data.classes < loss.min_classes() || data.classes < config.report_k {
        return Err(TrainError::InvalidConfig(format!(
            "k = {} / report k = {} (the data has {} classes; the SVMs need more than k)",
            config.loss.k, config.report_k, data.classes
        )));
    }
    let device = device(config.backend)?;
    // Only a run that can start gets a directory.
    let state = if resume {
        checkpoint::recover(out, &config)?
    } else {
        checkpoint::prepare_run_dir(out, &config)?;
        None
    };
    device.seed(config.seed);
    let autodiff = device.autodiff();
    let mut model = config.model.init(data.classes, data.view.crop, &autodiff);
    let mut optim = optimizer(&config);
    let mut state = match state {
        Some(state) => {
            if state.view != data.view || state.classes != data.classes {
                return Err(TrainError::InvalidConfig(format!(
                    "the data of {} changed since the run started (other images or classes)",
                    out.display()
                )));
            }
            model = checkpoint::load_model(out, model)?;
            optim = checkpoint::load_optimizer(out, optim)?;
            state
        }
        None => RunState::new(data.view, data.classes),
    };
    observer.started(&config, &data, state.epochs_done);
    let trainer = Trainer {
        config: &config,
        data: &data,
        loss,
        device: &autodiff,
    };

    for epoch in state.epochs_done + 1..=config.epochs {
        let start = Instant::now();
        let lr = config.lr_at(epoch);
        let (next, train_metrics) = trainer.epoch(epoch, lr, model, &mut optim, observer)?;
        model = next;
        let eval = model.valid();
        let valid = evaluate(
            &eval,
            &data.valid,
            &data.view,
            false,
            &loss,
            config.report_k,
        )?;
        let test = evaluate(&eval, &data.test, &data.view, false, &loss, config.report_k)?;
        let metrics = EpochMetrics {
            epoch,
            lr,
            train: train_metrics,
            valid,
            test,
            seconds: start.elapsed().as_secs_f64(),
        };
        state.record(&metrics, config.report_k);
        checkpoint::save(out, &model, &optim, &state)?;
        checkpoint::promote(out, &config, &state)?;
        report::write_history(out, &config, &state.history)?;
        observer.epoch_done(&config, &metrics);
    }

    let results = finish(&config, &data, &state, out, &loss, &autodiff)?;
    observer.finished(&results);
    Ok(results)
}

/// Loads both selected checkpoints, evaluates them on the test split (ten crops if asked) and
/// writes `results.json` and the plots.
fn finish(
    config: &TrainConfig,
    data: &PreparedData,
    state: &RunState,
    out: &Path,
    loss: &AnyLoss,
    device: &Device,
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
            Ok((
                evaluate(&model, &data.valid, &data.view, ten, loss, config.report_k)?,
                evaluate(&model, &data.test, &data.view, ten, loss, config.report_k)?,
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
    };
    report::write_results(out, &results, &state.history)?;
    Ok(results)
}

/// Mean loss of a batch: burn's cross-entropy for CE (the baseline as users run it), the
/// smooth or hard top-k SVM op of `smooth-topk-burn` otherwise.
pub(crate) fn batch_loss(
    loss: AnyLoss,
    logits: Tensor<2>,
    targets: Tensor<1, Int>,
) -> Result<Tensor<1>, TrainError> {
    Ok(match loss {
        AnyLoss::CrossEntropy(_) => CrossEntropyLossConfig::new()
            .init(&logits.device())
            .forward(logits, targets),
        svm => topk_loss_per_sample(logits, targets, svm)?.mean(),
    })
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
    loss: AnyLoss,
    device: &'a Device,
}

impl Trainer<'_> {
    /// One epoch of SGD; returns the model and the metrics of the training batches.
    fn epoch(
        &self,
        epoch: usize,
        lr: f64,
        mut model: Classifier,
        optim: &mut ModuleOptimizer,
        observer: &mut dyn Observer,
    ) -> Result<(Classifier, SplitMetrics), TrainError> {
        let mut rng = epoch_rng(self.config.seed, epoch);
        let mut order: Vec<usize> = (0..self.data.train.len()).collect();
        order.shuffle(&mut rng);
        let batches = order.chunks(self.config.batch_size);
        observer.epoch_started(epoch, batches.len());
        let mut tally = Tally::new(self.config.report_k);
        for indices in batches {
            let batch = data::training_batch(
                &self.data.train,
                indices,
                &self.data.view,
                self.config.data.augment,
                &mut rng,
            );
            let (images, targets) = to_device(&batch, &self.data.view, 1, self.device);
            let logits = model.forward(images);
            let loss = batch_loss(self.loss, logits.clone(), targets)?;
            let loss_value = scalar(loss.clone());
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(lr, model, grads);
            let scores = host_floats(logits.detach());
            tally.add_scores(&scores, &batch.labels, self.data.classes)?;
            tally.add_loss(loss_value, batch.len());
            observer.batch_done(loss_value);
            if !loss_value.is_finite() {
                return Err(TrainError::Diverged {
                    epoch,
                    loss: loss_value,
                });
            }
        }
        Ok((model, tally.metrics()))
    }
}

/// The generator of all random choices of one epoch.
fn epoch_rng(seed: u64, epoch: usize) -> StdRng {
    // Distinct, well-mixed seeds per (seed, epoch): splitmix64 of the pair.
    let mut z = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(epoch as u64)
        .wrapping_add(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    StdRng::seed_from_u64(z ^ (z >> 31))
}

fn to_device(
    batch: &HostBatch,
    view: &View,
    crops: usize,
    device: &Device,
) -> (Tensor<4>, Tensor<1, Int>) {
    let n = batch.len() * crops;
    let images = Tensor::from_data(
        TensorData::new(batch.images.clone(), [n, 3, view.crop, view.crop]),
        device,
    );
    let labels: Vec<i64> = batch.labels.iter().map(|&l| l as i64).collect();
    let targets = Tensor::from_data(TensorData::new(labels, [batch.len()]), device);
    (images, targets)
}

fn host_floats<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .try_into_vec_as::<f32>()
        .expect("float tensors convert to f32")
}

fn scalar(t: Tensor<1>) -> f64 {
    host_floats(t)[0] as f64
}

/// Running sums of loss and top-k hits over batches.
struct Tally {
    loss_sum: f64,
    correct: Vec<usize>,
    seen: usize,
}

impl Tally {
    fn new(k: usize) -> Self {
        Self {
            loss_sum: 0.0,
            correct: vec![0; k],
            seen: 0,
        }
    }

    fn add_scores(&mut self, scores: &[f32], labels: &[usize], n: usize) -> Result<(), TopkError> {
        let correct = smooth_topk::topk_correct(scores, labels, n, self.correct.len())?;
        for (c, add) in self.correct.iter_mut().zip(correct) {
            *c += add;
        }
        self.seen += labels.len();
        Ok(())
    }

    fn add_loss(&mut self, mean: f64, count: usize) {
        self.loss_sum += mean * count as f64;
    }

    fn metrics(&self) -> SplitMetrics {
        let seen = self.seen.max(1) as f64;
        SplitMetrics {
            loss: self.loss_sum / seen,
            accuracy: self
                .correct
                .iter()
                .map(|&c| 100.0 * c as f64 / seen)
                .collect(),
        }
    }
}

/// Loss (computed by the numeric core on the logits) and top-1 .. top-k accuracy of `model` on
/// a split. With `ten_crop` the logits of the ten crops are averaged.
pub fn evaluate(
    model: &Classifier,
    data: &smooth_topk_data::ImageDataset,
    view: &View,
    ten_crop: bool,
    loss: &AnyLoss,
    k: usize,
) -> Result<SplitMetrics, TrainError> {
    let device = model_device(model);
    let crops = if ten_crop { 10 } else { 1 };
    let n = data.num_classes;
    let mut tally = Tally::new(k);
    let indices: Vec<usize> = (0..data.len()).collect();
    for chunk in indices.chunks((EVAL_BATCH / crops).max(1)) {
        let batch = data::evaluation_batch(data, chunk, view, ten_crop);
        let (images, _) = to_device(&batch, view, crops, &device);
        let logits = host_floats(model.forward(images));
        let scores = average_crops(&logits, crops, n);
        let losses = loss.loss(&scores, &batch.labels, n, Reduction::Mean)?;
        tally.add_loss(losses, batch.len());
        tally.add_scores(&scores, &batch.labels, n)?;
    }
    Ok(tally.metrics())
}

/// Mean over each run of `crops` consecutive rows of `n` logits.
fn average_crops(logits: &[f32], crops: usize, n: usize) -> Vec<f32> {
    if crops == 1 {
        return logits.to_vec();
    }
    logits
        .chunks(crops * n)
        .flat_map(|group| {
            (0..n).map(move |j| (0..crops).map(|c| group[c * n + j]).sum::<f32>() / crops as f32)
        })
        .collect()
}

fn model_device(model: &Classifier) -> Device {
    model
        .devices()
        .into_iter()
        .next()
        .expect("a classifier has parameters")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DataSource, LossKind};

    #[test]
    fn learning_rate_steps_down_from_each_milestone() {
        let mut config = TrainConfig::defaults(DataSource::Synthetic, LossKind::Svm);
        config.lr = 0.1;
        config.lr_milestones = vec![151, 226];
        let lr = |e| config.lr_at(e);
        assert_eq!(lr(1), 0.1);
        assert_eq!(lr(150), 0.1);
        assert_eq!((lr(151), lr(225)), (0.01, 0.01));
        assert_eq!((lr(226), lr(300)), (0.001, 0.001));
    }

    #[test]
    fn ten_crop_logits_are_averaged_per_image() {
        // 2 images x 2 crops x 3 classes.
        let logits = [1.0, 2.0, 3.0, 3.0, 2.0, 1.0, 0.0, 0.0, 4.0, 2.0, 2.0, 0.0];
        assert_eq!(
            average_crops(&logits, 2, 3),
            vec![2.0, 2.0, 2.0, 1.0, 1.0, 2.0]
        );
        assert_eq!(average_crops(&logits, 1, 3), logits.to_vec());
    }

    #[test]
    fn epoch_generators_differ_and_repeat() {
        use rand::Rng;
        let draw = |seed, epoch| epoch_rng(seed, epoch).random::<u64>();
        assert_eq!(draw(3, 7), draw(3, 7));
        assert_ne!(draw(3, 7), draw(3, 8));
        assert_ne!(draw(3, 7), draw(4, 7));
    }
}
