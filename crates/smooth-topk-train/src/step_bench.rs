//! Throughput of whole training steps (forward, loss, backward, SGD update) with
//! cross-entropy and with the smooth top-k SVM, measured in one run so the ratio is fair, and
//! the step-time estimate `reproduce` prints before a grid starts.
//!
//! Both time the training loop's own step (the data-parallel step of `train`, on random
//! inputs), so the numbers are those of a real run minus the data loading.

use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Device, Distribution, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use smooth_topk_data::Batch;

use crate::config::{BackendKind, LossConfig, LossKind, TrainConfig};
use crate::data::View;
use crate::models::{Classifier, ModelKind, MIN_INPUT_SIDE};
use crate::train::step::{Replicas, Stepped};
use crate::train::{optimizer, training_devices};
use crate::TrainError;

/// What to time.
#[derive(Clone, Debug)]
pub struct StepBench {
    pub model: ModelKind,
    pub batch_size: usize,
    pub classes: usize,
    pub image_side: usize,
    pub warmup: usize,
    pub steps: usize,
    pub backend: BackendKind,
    pub devices: Vec<usize>,
    /// The losses timed, each with its default settings (the first is the baseline).
    pub losses: Vec<LossKind>,
}

/// Median step time and images per second of one loss.
#[derive(Clone, Debug, Serialize)]
pub struct StepTiming {
    pub loss: String,
    pub median_ms: f64,
    pub images_per_s: f64,
}

/// The largest side `train-bench` accepts (a 4096x4096 input is 200 MB per image).
pub const MAX_SIDE: usize = 4096;

/// One model, optimiser and its step times.
struct Slot {
    label: String,
    loss: LossConfig,
    model: Option<Classifier>,
    optim: burn::optim::ModuleOptimizer,
    times: Vec<f64>,
}

/// A batch of random inputs and labels.
pub(crate) fn random_batch(size: usize, side: usize, classes: usize, seed: u64) -> Batch {
    let mut rng = StdRng::seed_from_u64(seed);
    let labels: Vec<u16> = (0..size)
        .map(|_| rng.random_range(0..classes) as u16)
        .collect();
    Batch {
        images: (0..size * 3 * side * side)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect(),
        true_labels: labels.clone(),
        labels,
        skipped: Vec::new(),
    }
}

/// Inputs used as they are (no crop, no normalisation).
pub(crate) fn bench_view(side: usize) -> View {
    View {
        image_size: side,
        crop: side,
        pad: 0,
        mean: [0.0; 3],
        std: [1.0; 3],
    }
}

/// Times `steps` steps per loss after `warmup`, alternating the losses step by step so that
/// machine noise hits both alike. Returns CE first, then the SVM (k = 5, tau = 1, alpha = 1).
pub fn run(bench: &StepBench) -> Result<Vec<StepTiming>, TrainError> {
    bench.validate()?;
    let devices = training_devices(bench.backend, &bench.devices)?;
    devices[0].seed(0);
    let replicas = Replicas::new(&devices)?;
    // The optimiser of a default run (momentum, weight decay); the learning rate is fixed.
    let config = TrainConfig::defaults(crate::DataSource::Synthetic, LossKind::Ce);
    if bench.losses.is_empty() {
        return Err(TrainError::InvalidConfig(
            "train-bench: no loss to time".into(),
        ));
    }
    let mut slots: Vec<Slot> = bench
        .losses
        .iter()
        .map(|&kind| {
            let loss = LossConfig::new(kind);
            Slot {
                label: loss.label(),
                loss,
                model: Some(
                    bench
                        .model
                        .init(bench.classes, bench.image_side, &devices[0]),
                ),
                optim: optimizer(&config),
                times: Vec::new(),
            }
        })
        .collect();
    let view = bench_view(bench.image_side);
    for step in 0..bench.warmup + bench.steps {
        for slot in &mut slots {
            let batch = random_batch(
                bench.batch_size,
                bench.image_side,
                bench.classes,
                step as u64,
            );
            let model = slot
                .model
                .take()
                .ok_or_else(|| TrainError::Device("lost the model".into()))?;
            let start = Instant::now();
            let model = match replicas.step(
                model,
                &mut slot.optim,
                0.01,
                batch,
                &view,
                &slot.loss,
                step as u64,
            )? {
                Stepped::Done { model, .. } => model,
                Stepped::Diverged { why, .. } => {
                    return Err(TrainError::Device(format!("the benchmark diverged: {why}")))
                }
            };
            sync(&devices[0])?;
            if step >= bench.warmup {
                slot.times.push(start.elapsed().as_secs_f64());
            }
            slot.model = Some(model);
        }
    }
    Ok(slots
        .into_iter()
        .map(|mut slot| {
            let median = median(&mut slot.times);
            StepTiming {
                loss: slot.label,
                median_ms: median * 1e3,
                images_per_s: bench.batch_size as f64 / median,
            }
        })
        .collect())
}

fn median(times: &mut [f64]) -> f64 {
    times.sort_by(f64::total_cmp);
    times.get(times.len() / 2).copied().unwrap_or(f64::NAN)
}

fn sync(device: &Device) -> Result<(), TrainError> {
    device
        .sync()
        .map_err(|e| TrainError::Device(format!("{e:?}")))
}

impl StepBench {
    /// Rejects settings the models or the top-5 SVM cannot run with.
    pub fn validate(&self) -> Result<(), TrainError> {
        if self.steps == 0 || self.batch_size == 0 || self.batch_size > crate::config::MAX_BATCH {
            return Err(TrainError::InvalidConfig(format!(
                "steps = {}, batch size = {} (both must be >= 1, the batch at most {})",
                self.steps,
                self.batch_size,
                crate::config::MAX_BATCH
            )));
        }
        if self.classes < 6 || self.classes > 1 << 16 {
            return Err(TrainError::InvalidConfig(format!(
                "classes = {} (need 6 to 65536 for the top-5 SVM)",
                self.classes
            )));
        }
        if !(MIN_INPUT_SIDE..=MAX_SIDE).contains(&self.image_side) {
            return Err(TrainError::InvalidConfig(format!(
                "image size = {} (must be in {MIN_INPUT_SIDE}..={MAX_SIDE})",
                self.image_side
            )));
        }
        let floats = self
            .batch_size
            .checked_mul(3 * self.image_side * self.image_side);
        if floats.is_none_or(|f| f > 1 << 33) {
            return Err(TrainError::InvalidConfig(format!(
                "batch size {} of {}x{} images (more than 32 GB of inputs)",
                self.batch_size, self.image_side, self.image_side
            )));
        }
        if self.devices.is_empty() || self.devices.len() > crate::config::MAX_DEVICES {
            return Err(TrainError::InvalidConfig(format!(
                "devices = {:?}",
                self.devices
            )));
        }
        Ok(())
    }
}

/// Parameters of a model, for reports.
pub fn parameter_count(model: ModelKind, classes: usize, image_side: usize) -> usize {
    let device = burn::tensor::Device::flex();
    model.init(classes, image_side, &device).num_params()
}

/// Measured costs of a configuration on this machine.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct StepCost {
    /// Seconds per training step (one batch).
    pub train_step: f64,
    /// Seconds per evaluated image (forward pass only).
    pub eval_image: f64,
}

/// Times a few training steps and evaluation batches of `config` with `classes` classes, on
/// random inputs (so data loading is not included).
pub fn measure(config: &TrainConfig, classes: usize, steps: usize) -> Result<StepCost, TrainError> {
    let side = config.data.crop;
    let bench = StepBench {
        model: config.model,
        batch_size: config.batch_size,
        classes,
        image_side: side,
        warmup: 1,
        steps: steps.max(1),
        backend: config.backend,
        devices: config.devices.clone(),
        losses: vec![config.loss.kind],
    };
    bench.validate()?;
    let devices = training_devices(config.backend, &config.devices)?;
    let replicas = Replicas::new(&devices)?;
    let mut model = Some(config.model.init(classes, side, &devices[0]));
    let mut optim = optimizer(config);
    let view = bench_view(side);
    let mut times = Vec::new();
    for step in 0..=bench.steps {
        let batch = random_batch(config.batch_size, side, classes, step as u64);
        let m = model
            .take()
            .ok_or_else(|| TrainError::Device("lost the model".into()))?;
        let start = Instant::now();
        let next =
            match replicas.step(m, &mut optim, 1e-4, batch, &view, &config.loss, step as u64)? {
                Stepped::Done { model, .. } | Stepped::Diverged { model, .. } => model,
            };
        sync(&devices[0])?;
        if step > 0 {
            times.push(start.elapsed().as_secs_f64());
        }
        model = Some(next);
    }
    let train_step = median(&mut times);
    let eval_model = model
        .ok_or_else(|| TrainError::Device("lost the model".into()))?
        .valid();
    let eval_device = devices[0].clone().inner();
    let batch = 128usize.min(config.batch_size.max(1) * 2);
    let mut eval_times = Vec::new();
    for _ in 0..3 {
        let images = Tensor::<4>::random(
            [batch, 3, side, side],
            Distribution::Normal(0.0, 1.0),
            &eval_device,
        );
        let start = Instant::now();
        let _ = crate::train::evaluate::host_floats(eval_model.forward(images))?;
        eval_times.push(start.elapsed().as_secs_f64() / batch as f64);
    }
    Ok(StepCost {
        train_step,
        eval_image: median(&mut eval_times),
    })
}
