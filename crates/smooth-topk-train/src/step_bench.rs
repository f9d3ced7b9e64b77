//! Throughput of whole training steps (forward, loss, backward, SGD update) with
//! cross-entropy and with the smooth top-k SVM, measured in one run so the ratio is fair.

use std::time::Instant;

use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use smooth_topk::AnyLoss;

use crate::config::{BackendKind, LossConfig, LossKind, TrainConfig};
use crate::models::{Classifier, ModelKind, MIN_INPUT_SIDE};
use crate::train::{batch_loss, device, optimizer};
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
}

/// Median step time and images per second of one loss.
#[derive(Clone, Debug, Serialize)]
pub struct StepTiming {
    pub loss: String,
    pub median_ms: f64,
    pub images_per_s: f64,
}

/// Times `steps` steps per loss after `warmup`, alternating the losses step by step so that
/// machine noise hits both alike. Returns CE first, then the SVM (k = 5, tau = 1, alpha = 1).
pub fn run(bench: &StepBench) -> Result<Vec<StepTiming>, TrainError> {
    bench.validate()?;
    let device = device(bench.backend)?.autodiff();
    device.seed(0);
    // The optimiser of a default run (momentum, weight decay); the learning rate is fixed.
    let config = TrainConfig::defaults(crate::DataSource::Synthetic, LossKind::Ce);
    let mut slots = [LossKind::Ce, LossKind::Svm]
        .map(|kind| {
            let loss = LossConfig {
                kind,
                k: 5,
                tau: 1.0,
                alpha: 1.0,
            };
            Ok(Slot {
                label: loss.label(),
                loss: loss.build()?,
                model: Some(bench.model.init(bench.classes, bench.image_side, &device)),
                optim: optimizer(&config),
                times: Vec::new(),
            })
        })
        .into_iter()
        .collect::<Result<Vec<_>, TrainError>>()?;
    let shape = [bench.batch_size, 3, bench.image_side, bench.image_side];
    let images = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
    let mut rng = StdRng::seed_from_u64(0);
    let labels: Vec<i64> = (0..bench.batch_size)
        .map(|_| rng.random_range(0..bench.classes as i64))
        .collect();
    let targets = Tensor::<1, Int>::from_data(TensorData::new(labels, [bench.batch_size]), &device);
    for step in 0..bench.warmup + bench.steps {
        for slot in &mut slots {
            let start = Instant::now();
            let model = slot.model.take().expect("each step puts the model back");
            let logits = model.forward(images.clone());
            let value = batch_loss(slot.loss, logits, targets.clone())?;
            let grads = GradientsParams::from_grads(value.backward(), &model);
            slot.model = Some(slot.optim.step(0.01, model, grads));
            device
                .sync()
                .map_err(|e| TrainError::InvalidConfig(format!("device error: {e:?}")))?;
            if step >= bench.warmup {
                slot.times.push(start.elapsed().as_secs_f64());
            }
        }
    }
    Ok(slots
        .into_iter()
        .map(|mut slot| {
            slot.times.sort_by(f64::total_cmp);
            let median = slot.times[slot.times.len() / 2];
            StepTiming {
                loss: slot.label,
                median_ms: median * 1e3,
                images_per_s: bench.batch_size as f64 / median,
            }
        })
        .collect())
}

/// One loss's model, optimiser and step times.
struct Slot {
    label: String,
    loss: AnyLoss,
    model: Option<Classifier>,
    optim: ModuleOptimizer,
    times: Vec<f64>,
}

impl StepBench {
    /// Rejects settings the models or the top-5 SVM cannot run with.
    pub fn validate(&self) -> Result<(), TrainError> {
        if self.steps == 0 || self.batch_size == 0 {
            return Err(TrainError::InvalidConfig(format!(
                "steps = {}, batch size = {} (both must be >= 1)",
                self.steps, self.batch_size
            )));
        }
        if self.classes < 6 || self.image_side < MIN_INPUT_SIDE {
            return Err(TrainError::InvalidConfig(format!(
                "classes = {}, image size = {} (need at least 6 classes for the top-5 SVM and \
                 {MIN_INPUT_SIDE} pixels)",
                self.classes, self.image_side
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
