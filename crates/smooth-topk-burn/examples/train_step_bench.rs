//! Cost of one training step (forward, backward, SGD update) of a small convnet on the Flex CPU
//! backend (or, built with `--features wgpu` and run with `--wgpu`, on the default GPU), with
//! cross-entropy against the smooth top-5 SVM, and of the loss op alone.
//!
//! The CE and SVM steps alternate, and which of the two goes first alternates too, so that drift
//! in machine load (other processes, frequency scaling) hits both alike. Each loss trains its own
//! copy of the same initial network, so neither sees weights the other has updated.
//!
//! ```sh
//! cargo run --release -p smooth-topk-burn --example train_step_bench
//! ```

use std::time::{Duration, Instant};

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d, Relu};
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, ModuleOptimizer, SgdConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use smooth_topk_burn::{SmoothTopkSvmLoss, SmoothTopkSvmLossConfig};

const SEED: u64 = 7;
const BATCH: usize = 64;
const CLASSES: usize = 100;
const SIDE: usize = 32;
const BATCHES: usize = 4;
const WARMUP_STEPS: usize = 4;
const STEPS: usize = 41;
/// The loss op alone takes microseconds: many more repetitions for a stable median.
const LOSS_REPS: usize = 301;
const LEARNING_RATE: f64 = 0.01;

#[derive(Module, Debug)]
struct ConvNet {
    conv1: Conv2d,
    conv2: Conv2d,
    pool: MaxPool2d,
    activation: Relu,
    linear: Linear,
}

impl ConvNet {
    fn new(device: &Device) -> Self {
        let conv = |channels| {
            Conv2dConfig::new(channels, [3, 3])
                .with_padding(PaddingConfig2d::Same)
                .init(device)
        };
        Self {
            conv1: conv([3, 16]),
            conv2: conv([16, 32]),
            pool: MaxPool2dConfig::new([2, 2]).init(),
            activation: Relu::new(),
            linear: LinearConfig::new(32 * 8 * 8, CLASSES).init(device),
        }
    }

    /// `[batch, 3, 32, 32]` images to `[batch, 100]` logits.
    fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let x = self
            .pool
            .forward(self.activation.forward(self.conv1.forward(images)));
        let x = self
            .pool
            .forward(self.activation.forward(self.conv2.forward(x)));
        let [batch, ..] = x.dims();
        self.linear.forward(x.reshape([batch, 32 * 8 * 8]))
    }
}

#[derive(Clone, Copy)]
enum Which {
    CrossEntropy,
    SmoothSvm,
}

impl Which {
    fn loss(
        self,
        svm: &SmoothTopkSvmLoss,
        logits: Tensor<2>,
        targets: Tensor<1, Int>,
    ) -> Tensor<1> {
        match self {
            Which::CrossEntropy => CrossEntropyLossConfig::new()
                .init(&logits.device())
                .forward(logits, targets),
            Which::SmoothSvm => svm.forward(logits, targets),
        }
    }
}

/// A labelled batch of images.
struct Batch {
    images: Tensor<4>,
    targets: Tensor<1, Int>,
}

/// One network with its optimizer state, trained with one loss.
struct Trainer {
    which: Which,
    model: Option<ConvNet>,
    optim: ModuleOptimizer,
}

impl Trainer {
    fn new(which: Which, device: &Device) -> Self {
        // Same seed for both trainers: both start from the same weights.
        device.seed(SEED);
        Self {
            which,
            model: Some(ConvNet::new(device)),
            optim: SgdConfig::new()
                .with_momentum(Some(MomentumConfig::new().with_dampening(0.0)))
                .init(),
        }
    }

    fn step(&mut self, svm: &SmoothTopkSvmLoss, batch: &Batch) -> Duration {
        let model = self
            .model
            .take()
            .expect("model is put back after each step");
        let start = Instant::now();
        let logits = model.forward(batch.images.clone());
        let grads = self
            .which
            .loss(svm, logits, batch.targets.clone())
            .backward();
        let grads = GradientsParams::from_grads(grads, &model);
        let model = self.optim.step(LEARNING_RATE, model, grads);
        batch.images.device().sync().expect("device sync");
        let elapsed = start.elapsed();
        self.model = Some(model);
        elapsed
    }
}

/// Forward and backward of the loss alone on fixed `[batch, classes]` logits.
fn loss_op(
    svm: &SmoothTopkSvmLoss,
    which: Which,
    logits: &Tensor<2>,
    targets: &Tensor<1, Int>,
) -> Duration {
    let start = Instant::now();
    let grads = which.loss(svm, logits.clone(), targets.clone()).backward();
    let grad = logits.grad(&grads).expect("logits track gradients");
    grad.device().sync().expect("device sync");
    start.elapsed()
}

/// Times of `reps` runs of each loss, run in pairs.
struct Timings {
    ce: Vec<Duration>,
    svm: Vec<Duration>,
}

impl Timings {
    /// Runs `run(CrossEntropy, rep)` and `run(SmoothSvm, rep)` for each `rep`, alternating
    /// which of the two goes first.
    fn interleaved(reps: usize, mut run: impl FnMut(Which, usize) -> Duration) -> Self {
        let (mut ce, mut svm) = (Vec::with_capacity(reps), Vec::with_capacity(reps));
        for rep in 0..reps {
            if rep % 2 == 0 {
                ce.push(run(Which::CrossEntropy, rep));
                svm.push(run(Which::SmoothSvm, rep));
            } else {
                svm.push(run(Which::SmoothSvm, rep));
                ce.push(run(Which::CrossEntropy, rep));
            }
        }
        Self { ce, svm }
    }

    /// Median CE and SVM times in milliseconds.
    fn medians_ms(&self) -> (f64, f64) {
        let ms = |d: &Duration| d.as_secs_f64() * 1e3;
        (
            median(self.ce.iter().map(ms).collect()),
            median(self.svm.iter().map(ms).collect()),
        )
    }

    /// Median over the pairs of SVM time / CE time: each pair ran back to back, so a load
    /// change that spans a pair cancels out.
    fn paired_ratio(&self) -> f64 {
        let ratios = self.svm.iter().zip(&self.ce);
        median(
            ratios
                .map(|(s, c)| s.as_secs_f64() / c.as_secs_f64())
                .collect(),
        )
    }

    fn print_row(&self, what: &str) {
        let (ce, svm) = self.medians_ms();
        println!(
            "{what:<38} {ce:>9.3} {svm:>9.3} {:>8.3} {:>9.3} {:>10.3}",
            svm / ce,
            self.paired_ratio(),
            svm - ce
        );
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_unstable_by(f64::total_cmp);
    values[values.len() / 2]
}

fn gaussian(rng: &mut StdRng, len: usize) -> Vec<f32> {
    (0..len)
        .map(|_| rng.sample::<f32, _>(StandardNormal))
        .collect()
}

fn random_labels(rng: &mut StdRng, device: &Device) -> Tensor<1, Int> {
    let labels: Vec<i64> = (0..BATCH)
        .map(|_| rng.random_range(0..CLASSES as i64))
        .collect();
    Tensor::from_data(TensorData::new(labels, [BATCH]), device)
}

/// Flex, or the default wgpu adapter when asked for with `--wgpu`, or the first CUDA device
/// with `--cuda` (each when compiled in).
fn device() -> (Device, &'static str) {
    #[cfg(feature = "cuda")]
    if std::env::args().any(|a| a == "--cuda") {
        return (Device::cuda(0).autodiff(), "CUDA (device 0)");
    }
    #[cfg(feature = "wgpu")]
    if std::env::args().any(|a| a == "--wgpu") {
        let gpu = Device::wgpu(burn::tensor::DeviceKind::DefaultDevice);
        return (gpu.autodiff(), "wgpu (default adapter)");
    }
    (Device::flex().autodiff(), "Flex CPU")
}

fn main() {
    let (device, backend) = device();
    let mut rng = StdRng::seed_from_u64(SEED);
    // A few distinct batches, as in training: repeating one batch lets the network memorise it,
    // and near-zero losses would make the gradients (and the timings) atypical.
    let batches: Vec<Batch> = (0..BATCHES)
        .map(|_| Batch {
            images: Tensor::from_data(
                TensorData::new(
                    gaussian(&mut rng, BATCH * 3 * SIDE * SIDE),
                    [BATCH, 3, SIDE, SIDE],
                ),
                &device,
            ),
            targets: random_labels(&mut rng, &device),
        })
        .collect();
    let logits = Tensor::<2>::from_data(
        TensorData::new(gaussian(&mut rng, BATCH * CLASSES), [BATCH, CLASSES]),
        &device,
    )
    .require_grad();
    let targets = random_labels(&mut rng, &device);
    let svm = SmoothTopkSvmLossConfig::new()
        .with_k(5)
        .init()
        .expect("k = 5, tau = 1, alpha = 1 are valid");

    let mut ce_trainer = Trainer::new(Which::CrossEntropy, &device);
    let mut svm_trainer = Trainer::new(Which::SmoothSvm, &device);
    let mut train = |which, rep: usize| {
        let batch = &batches[rep % BATCHES];
        match which {
            Which::CrossEntropy => ce_trainer.step(&svm, batch),
            Which::SmoothSvm => svm_trainer.step(&svm, batch),
        }
    };
    Timings::interleaved(WARMUP_STEPS, &mut train);
    let steps = Timings::interleaved(STEPS, &mut train);
    let mut loss_alone = |which, _| loss_op(&svm, which, &logits, &targets);
    Timings::interleaved(LOSS_REPS / 10, &mut loss_alone);
    let ops = Timings::interleaved(LOSS_REPS, &mut loss_alone);

    println!(
        "{backend} backend, batch {BATCH}, {CLASSES} classes, {SIDE}x{SIDE}x3 inputs: smooth \
         top-5 SVM (tau 1, alpha 1) vs cross-entropy, interleaved, medians"
    );
    println!(
        "{:<38} {:>9} {:>9} {:>8} {:>9} {:>10}",
        "", "CE ms", "SVM ms", "SVM/CE", "paired", "SVM-CE ms"
    );
    steps.print_row(&format!("train step (fwd+bwd+SGD), {STEPS} each"));
    ops.print_row(&format!("loss op alone (fwd+bwd), {LOSS_REPS} each"));
    let (ce_step, _) = steps.medians_ms();
    let (ce_op, svm_op) = ops.medians_ms();
    println!(
        "the SVM's extra loss-op time is {:.2}% of a CE step (target: SVM step <= 5% slower)",
        100.0 * (svm_op - ce_op) / ce_step
    );
}
