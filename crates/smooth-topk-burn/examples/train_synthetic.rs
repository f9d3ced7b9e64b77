//! Trains a small MLP with burn-train's `Learner` on synthetic data built to be a top-5 problem,
//! with the smooth top-5 SVM of this crate or with cross-entropy.
//!
//! The 100 classes come in 20 groups of 5. A class mean is its group centre plus a small class
//! offset, and the per-sample noise is large next to the offsets but small next to the distance
//! between groups: the group of a sample is easy to find, its class within the group is not. So
//! top-5 accuracy can get high while top-1 stays well below it.
//!
//! Switching to cross-entropy is one line: `USE_SMOOTH_SVM` below (or `--ce`).
//!
//! ```sh
//! cargo run --release -p smooth-topk-burn --example train_synthetic          # smooth top-5 SVM
//! cargo run --release -p smooth-topk-burn --example train_synthetic -- --ce  # cross-entropy
//! ```

use std::collections::HashMap;
use std::time::Instant;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataset::InMemDataset;
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig, Relu};
use burn::optim::AdamConfig;
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn::train::logger::{EvaluationProgressLogger, TrainingProgressLogger};
use burn::train::metric::{
    LossMetric, Metric, MetricDefinition, MetricId, MetricName, NumericEntry, TopKAccuracyMetric,
};
use burn::train::renderer::{
    EvaluationName, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining,
};
use burn::train::{
    ClassificationOutput, InferenceStep, Learner, SupervisedTraining, TrainOutput, TrainStep,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use smooth_topk_burn::{SmoothTopkSvmLoss, SmoothTopkSvmLossConfig};

/// THE switch: `true` trains with the smooth top-5 SVM, `false` with cross-entropy.
/// (`--ce` on the command line also picks cross-entropy.)
const USE_SMOOTH_SVM: bool = true;

const SEED: u64 = 42;
const DIM: usize = 64;
const GROUPS: usize = 20;
const PER_GROUP: usize = 5;
const CLASSES: usize = GROUPS * PER_GROUP;
const TRAIN_PER_CLASS: usize = 200;
const VALID_PER_CLASS: usize = 30;
/// Standard deviations (per input dimension) of the group centres, of the class offsets within
/// a group and of the per-sample noise.
const GROUP_SPREAD: f32 = 1.0;
const CLASS_SPREAD: f32 = 0.5;
const NOISE: f32 = 3.0;

const HIDDEN: usize = 128;
const EPOCHS: usize = 8;
const BATCH: usize = 64;
const LEARNING_RATE: f64 = 2e-3;

#[derive(Clone, Debug)]
struct Sample {
    features: Vec<f32>,
    label: usize,
}

/// Train and validation samples drawn from the same class means.
fn synthetic_data(seed: u64) -> (Vec<Sample>, Vec<Sample>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut gaussian = |scale: f32| -> Vec<f32> {
        (0..DIM)
            .map(|_| scale * rng.sample::<f32, _>(StandardNormal))
            .collect()
    };
    let centres: Vec<Vec<f32>> = (0..GROUPS).map(|_| gaussian(GROUP_SPREAD)).collect();
    let means: Vec<Vec<f32>> = (0..CLASSES)
        .map(|class| {
            let offset = gaussian(CLASS_SPREAD);
            let centre = &centres[class / PER_GROUP];
            centre.iter().zip(offset).map(|(c, o)| c + o).collect()
        })
        .collect();
    let mut draw = |per_class: usize| -> Vec<Sample> {
        (0..CLASSES)
            .flat_map(|label| (0..per_class).map(move |_| label))
            .map(|label| {
                let noise = gaussian(NOISE);
                let features = means[label].iter().zip(noise).map(|(m, e)| m + e).collect();
                Sample { features, label }
            })
            .collect()
    };
    let train = draw(TRAIN_PER_CLASS);
    let valid = draw(VALID_PER_CLASS);
    (train, valid)
}

#[derive(Clone, Debug)]
struct SampleBatch {
    features: Tensor<2>,
    targets: Tensor<1, Int>,
}

#[derive(Clone)]
struct SampleBatcher;

impl Batcher<Sample, SampleBatch> for SampleBatcher {
    fn batch(&self, items: Vec<Sample>, device: &Device) -> SampleBatch {
        let n = items.len();
        let features: Vec<f32> = items.iter().flat_map(|s| s.features.clone()).collect();
        let targets: Vec<i64> = items.iter().map(|s| s.label as i64).collect();
        SampleBatch {
            features: Tensor::from_data(TensorData::new(features, [n, DIM]), device),
            targets: Tensor::from_data(TensorData::new(targets, [n]), device),
        }
    }
}

#[derive(Module, Debug)]
struct Mlp {
    hidden: Linear,
    output: Linear,
    activation: Relu,
    /// `None` trains with cross-entropy.
    svm: Option<SmoothTopkSvmLoss>,
}

impl Mlp {
    fn new(svm: Option<SmoothTopkSvmLoss>, device: &Device) -> Self {
        Self {
            hidden: LinearConfig::new(DIM, HIDDEN).init(device),
            output: LinearConfig::new(HIDDEN, CLASSES).init(device),
            activation: Relu::new(),
            svm,
        }
    }

    fn forward(&self, features: Tensor<2>) -> Tensor<2> {
        self.output
            .forward(self.activation.forward(self.hidden.forward(features)))
    }

    fn classify(&self, batch: SampleBatch) -> ClassificationOutput {
        let logits = self.forward(batch.features);
        let targets = batch.targets;
        let loss = match &self.svm {
            Some(svm) => svm.forward(logits.clone(), targets.clone()),
            None => CrossEntropyLossConfig::new()
                .init(&logits.device())
                .forward(logits.clone(), targets.clone()),
        };
        ClassificationOutput::new(loss, logits, targets)
    }
}

impl TrainStep for Mlp {
    type Input = SampleBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: SampleBatch) -> TrainOutput<ClassificationOutput> {
        let item = self.classify(batch);
        TrainOutput::new(self, item.loss.backward(), item)
    }
}

impl InferenceStep for Mlp {
    type Input = SampleBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: SampleBatch) -> ClassificationOutput {
        self.classify(batch)
    }
}

/// Prints one line per epoch with the epoch values of loss, top-1 and top-5 on both splits.
///
/// burn-train's `CliMetricsRenderer` (used whenever stdout is not a terminal) prints a progress
/// line per batch and never a metric value, and the TUI needs a terminal; this renderer is the
/// readable middle ground. The metrics are burn's own: it only reads their end-of-split values.
struct EpochPrinter {
    /// Names of the loss, top-1 and top-5 metrics, in print order.
    watched: [MetricName; 3],
    ids: HashMap<MetricId, usize>,
    split: String,
    epoch: usize,
    /// Epoch values of the watched metrics, per split (train, then valid).
    values: [[f64; 3]; 2],
}

impl EpochPrinter {
    fn new(watched: [MetricName; 3]) -> Self {
        Self {
            watched,
            ids: HashMap::new(),
            split: String::new(),
            epoch: 0,
            values: [[f64::NAN; 3]; 2],
        }
    }

    fn record(&mut self, split: usize, state: MetricState) {
        // Per-batch updates are `Aggregated`; the epoch value arrives once, as `Final`.
        if let MetricState::Numeric(entry, Some(NumericEntry::Final(value))) = state {
            if let Some(&slot) = self.ids.get(&entry.metric_id) {
                self.values[split][slot] = value;
            }
        }
    }
}

impl MetricsRendererTraining for EpochPrinter {
    fn update_train(&mut self, state: MetricState) {
        self.record(0, state);
    }

    fn update_valid(&mut self, state: MetricState) {
        self.record(1, state);
    }
}

impl TrainingProgressLogger for EpochPrinter {
    fn start(&mut self, epochs: usize, _: usize, _: Option<usize>, _: Option<&str>) {
        println!("training for {epochs} epochs");
    }

    fn update_epoch(&mut self, _: usize) {}

    fn start_split(&mut self, split: &str, _: usize) {
        if split == "train" {
            self.epoch += 1;
            // A metric that fails to compute shows as NaN rather than as last epoch's value.
            self.values = [[f64::NAN; 3]; 2];
        }
        self.split = split.to_string();
    }

    fn update_split(&mut self, _: usize) {}

    fn end_split(&mut self) {
        if self.split != "valid" {
            return;
        }
        let [[train_loss, train_top1, train_top5], [valid_loss, valid_top1, valid_top5]] =
            self.values;
        println!(
            "epoch {}: valid top-1 {valid_top1:.1}%, top-5 {valid_top5:.1}%, loss {valid_loss:.4}   \
             (train top-1 {train_top1:.1}%, top-5 {train_top5:.1}%, loss {train_loss:.4})",
            self.epoch
        );
    }

    fn end(&mut self) {}

    fn log_event_training(&mut self, _: String) {}
}

/// Required by `MetricsRenderer`; this example runs no separate evaluation.
impl MetricsRendererEvaluation for EpochPrinter {
    fn update_test(&mut self, _: EvaluationName, _: MetricState) {}
}

impl EvaluationProgressLogger for EpochPrinter {
    fn start_global_progress(&mut self, _: usize) {}
    fn start_test(&mut self, _: &str, _: usize) {}
    fn update_test_progress(&mut self, _: usize) {}
    fn end_test(&mut self) {}
    fn end_global_progress(&mut self) {}
    fn log_event_evaluation(&mut self, _: String) {}
}

impl MetricsRenderer for EpochPrinter {
    fn manual_close(&mut self) {}

    fn register_metric(&mut self, definition: MetricDefinition) {
        if let Some(slot) = self.watched.iter().position(|n| *n == definition.name) {
            self.ids.insert(definition.metric_id, slot);
        }
    }
}

fn main() {
    let use_svm = USE_SMOOTH_SVM && !std::env::args().any(|arg| arg == "--ce");
    let svm = use_svm.then(|| {
        SmoothTopkSvmLossConfig::new()
            .with_k(5)
            .init()
            .expect("k = 5, tau = 1, alpha = 1 are valid")
    });
    println!(
        "loss: {}",
        if use_svm {
            "smooth top-5 SVM (tau 1, alpha 1)"
        } else {
            "cross-entropy"
        }
    );

    let started = Instant::now();
    let (train, valid) = synthetic_data(SEED);
    let loader = |samples: Vec<Sample>| {
        DataLoaderBuilder::new(SampleBatcher)
            .batch_size(BATCH)
            .shuffle(SEED)
            .build(InMemDataset::new(samples))
    };
    let (train_loader, valid_loader) = (loader(train), loader(valid.clone()));

    let device = Device::flex();
    device.seed(SEED);
    let model = Mlp::new(svm, &device.autodiff());

    let (loss, top1, top5) = (
        LossMetric::new(),
        TopKAccuracyMetric::new(1),
        TopKAccuracyMetric::new(5),
    );
    let printer = EpochPrinter::new([loss.name(), top1.name(), top5.name()]);
    let artifacts = std::env::temp_dir().join("smooth-topk-train-synthetic");
    // Stale metric logs of an earlier run would otherwise be mixed into the summary.
    let _ = std::fs::remove_dir_all(&artifacts);
    let result = SupervisedTraining::new(&artifacts, train_loader, valid_loader)
        .metrics((loss, top1, top5))
        .num_epochs(EPOCHS)
        .renderer(Box::new(printer))
        .summary()
        .launch(Learner::new(model, AdamConfig::new().init(), LEARNING_RATE));

    // Cross-check of the last epoch with the numeric core's metric (exact tie handling).
    let model = result.model;
    let device = model.devices()[0].clone();
    let features: Vec<f32> = valid.iter().flat_map(|s| s.features.clone()).collect();
    let labels: Vec<usize> = valid.iter().map(|s| s.label).collect();
    let logits = model
        .forward(Tensor::from_data(
            TensorData::new(features, [valid.len(), DIM]),
            &device,
        ))
        .into_data()
        .try_into_vec_as::<f32>()
        .expect("f32 logits");
    let accuracy = smooth_topk::topk_accuracy(&logits, &labels, CLASSES, 5).expect("valid input");
    println!(
        "final valid accuracy (smooth_topk::topk_accuracy): top-1 {:.1}%, top-5 {:.1}%",
        100.0 * accuracy[0],
        100.0 * accuracy[4]
    );
    println!(
        "wall time {:.1} s; artifacts in {}",
        started.elapsed().as_secs_f64(),
        artifacts.display()
    );
}
