//! Throughput of whole training steps (forward, loss, backward, SGD update) with
//! cross-entropy and with the smooth top-k SVM, measured in one run so the ratio is fair.

use std::time::Instant;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::config::{BackendKind, LossConfig, LossKind, TrainConfig};
use crate::models::ModelKind;
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
    if bench.steps == 0 || bench.batch_size == 0 {
        return Err(TrainError::InvalidConfig(
            "steps and batch size must be >= 1".into(),
        ));
    }
    let device = device(bench.backend)?.autodiff();
    device.seed(0);
    let losses = [LossKind::Ce, LossKind::Svm].map(|kind| LossConfig {
        kind,
        k: 5,
        tau: 1.0,
        alpha: 1.0,
    });
    let mut models: Vec<_> = losses
        .iter()
        .map(|_| bench.model.init(bench.classes, bench.image_side, &device))
        .collect();
    let config = TrainConfig::defaults(crate::DataSource::Synthetic, LossKind::Ce);
    let mut optims: Vec<_> = losses.iter().map(|_| optimizer(&config)).collect();
    let shape = [bench.batch_size, 3, bench.image_side, bench.image_side];
    let images = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
    let mut rng = StdRng::seed_from_u64(0);
    let labels: Vec<i64> = (0..bench.batch_size)
        .map(|_| rng.random_range(0..bench.classes as i64))
        .collect();
    let targets = Tensor::<1, Int>::from_data(TensorData::new(labels, [bench.batch_size]), &device);
    let mut times = vec![Vec::new(); losses.len()];
    for step in 0..bench.warmup + bench.steps {
        for (i, loss) in losses.iter().enumerate() {
            let core = loss.build()?;
            let start = Instant::now();
            let model = models.remove(i);
            let logits = model.forward(images.clone());
            let value = batch_loss(core, logits, targets.clone())?;
            let grads = GradientsParams::from_grads(value.backward(), &model);
            let model = optims[i].step(0.01, model, grads);
            device
                .sync()
                .map_err(|e| TrainError::InvalidConfig(format!("device error: {e:?}")))?;
            if step >= bench.warmup {
                times[i].push(start.elapsed().as_secs_f64());
            }
            models.insert(i, model);
        }
    }
    Ok(losses
        .iter()
        .zip(times)
        .map(|(loss, mut t)| {
            t.sort_by(f64::total_cmp);
            let median = t[t.len() / 2];
            StepTiming {
                loss: loss.label(),
                median_ms: median * 1e3,
                images_per_s: bench.batch_size as f64 / median,
            }
        })
        .collect())
}

/// Parameters of a model, for reports.
pub fn parameter_count(model: ModelKind, classes: usize, image_side: usize) -> usize {
    let device = burn::tensor::Device::flex();
    model.init(classes, image_side, &device).num_params()
}
