//! Everything that defines a training run, saved as `config.json` next to its results so a run
//! is reported with the exact configuration that produced it (and `--resume` continues it).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use smooth_topk::{
    AnyLoss, CrossEntropy, HardTopkSvm, NoisedTopkHinge, SmoothTopkSvm, TopkCrossEntropy,
    TruncatedTopkEntropy,
};

use crate::models::{ModelKind, MIN_INPUT_SIDE};
use crate::protocol::Protocol;
use crate::TrainError;

/// Where the images come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum DataSource {
    /// The built-in generated dataset: 32x32, 100 classes in 20 groups of 5 (no download).
    Synthetic,
    /// CIFAR-100 binary files (`train.bin`, `test.bin`) in `dir`.
    Cifar100 { dir: PathBuf },
    /// An image folder (`train/<class>/...`, `val/<class>/...`) in `dir`.
    Folder { dir: PathBuf },
}

impl DataSource {
    /// Short name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            DataSource::Synthetic => "synthetic",
            DataSource::Cifar100 { .. } => "cifar100",
            DataSource::Folder { .. } => "folder",
        }
    }
}

/// Label grouping for the label noise (see `smooth_topk_data::NoiseGrouping`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Grouping {
    /// Consecutive label indices, `y - y % 5 + U{0..4}` (the reference implementation).
    Consecutive,
    /// The dataset's coarse labels (CIFAR-100 super-classes; the synthetic groups).
    Coarse,
}

/// The data of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataConfig {
    pub source: DataSource,
    /// Training images (balanced per class); `None` keeps all.
    pub train_size: Option<usize>,
    /// Validation images held out of the training set (clean labels); `None` takes the
    /// source's default: 1000 (synthetic), 5000 (CIFAR-100), 50 per class (folders).
    pub valid_size: Option<usize>,
    /// Test images of the synthetic dataset (the others have their own test split).
    pub test_size: usize,
    /// Side of the stored square images of an image folder (decoded and resized once).
    pub image_size: usize,
    /// Side of the network input; random crops of it in training, centre (or ten) crops in
    /// evaluation. For 32x32 data it equals the image side and crops come from a 4-pixel
    /// zero padding, as in the paper.
    pub crop: usize,
    /// Seed of the data itself (synthetic images, validation split, subsets); fixed across the
    /// seeds of a reproduction so that only training randomness varies.
    pub data_seed: u64,
    /// Label noise probability on the training split.
    pub noise: f64,
    pub noise_grouping: Grouping,
    /// Random crop and flip while training.
    pub augment: bool,
    /// Evaluate the final checkpoints on the ten standard crops.
    pub ten_crop: bool,
    /// Leave out (and count) images that cannot be read instead of stopping the run.
    #[serde(default)]
    pub skip_unreadable: bool,
}

/// Which loss trains the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum LossKind {
    /// Softmax cross-entropy.
    Ce,
    /// Smooth top-k SVM (Berrada et al.).
    Svm,
    /// Hard top-k SVM.
    HardSvm,
    /// Truncated top-k entropy (Lapin et al.).
    Entr,
    /// Noised top-k hinge, balanced (Garcin et al.).
    Noised,
    /// Top-k cross-entropy over NeuralSort (Petersen et al.).
    TopkCe,
}

impl LossKind {
    /// Every loss, in the order reports list them.
    pub const ALL: [LossKind; 6] = [
        LossKind::Ce,
        LossKind::Svm,
        LossKind::HardSvm,
        LossKind::Entr,
        LossKind::Noised,
        LossKind::TopkCe,
    ];

    pub fn name(self) -> &'static str {
        match self {
            LossKind::Ce => "ce",
            LossKind::Svm => "svm",
            LossKind::HardSvm => "hard-svm",
            LossKind::Entr => "entr",
            LossKind::Noised => "noised",
            LossKind::TopkCe => "topk-ce",
        }
    }

    /// The loss named `name` (as [`Self::name`] spells it).
    pub fn parse(name: &str) -> Option<LossKind> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// A margin loss (the SVMs and the noised hinge), whose gradients do not shrink as the
    /// scores grow: the protocols give them the SVM's learning rates; the others (entropies)
    /// get cross-entropy's.
    pub fn is_hinge(self) -> bool {
        matches!(self, LossKind::Svm | LossKind::HardSvm | LossKind::Noised)
    }
}

fn default_epsilon() -> f64 {
    1.0
}
fn default_n_sample() -> usize {
    5
}
fn default_m() -> Option<usize> {
    Some(16)
}
fn default_p_top1() -> f64 {
    0.5
}

/// The loss and its parameters (each loss reads those that apply to it).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LossConfig {
    pub kind: LossKind,
    /// The k of top-k (all but cross-entropy).
    pub k: usize,
    /// Temperature of the smooth SVM.
    pub tau: f64,
    /// Margin of the SVMs.
    pub alpha: f64,
    /// Noise standard deviation of the noised hinge.
    #[serde(default = "default_epsilon")]
    pub epsilon: f64,
    /// Noise draws per sample of the noised hinge.
    #[serde(default = "default_n_sample")]
    pub n_sample: usize,
    /// Scores the top-k cross-entropy keeps (`None`: all).
    #[serde(default = "default_m")]
    pub m: Option<usize>,
    /// NeuralSort temperature of the top-k cross-entropy.
    #[serde(default = "default_tau")]
    pub sort_tau: f64,
    /// The top-k cross-entropy's `p_k`: `p_top1` on k = 1, the rest on k.
    #[serde(default = "default_p_top1")]
    pub p_top1: f64,
}

fn default_tau() -> f64 {
    1.0
}

/// Largest k of the top-k cross-entropy (its `p_k` has k entries).
const MAX_TOPK_CE_K: usize = 1 << 16;

impl LossConfig {
    /// `kind` with the defaults: k = 5, tau = 1, alpha = 1 (the paper's CIFAR-100 SVM);
    /// epsilon = 1, 5 draws (`pytopk`'s defaults); m = 16, NeuralSort tau = 1,
    /// `p_k = [0.5, 0, 0, 0, 0.5]`.
    pub fn new(kind: LossKind) -> Self {
        LossConfig {
            kind,
            k: 5,
            tau: 1.0,
            alpha: 1.0,
            epsilon: default_epsilon(),
            n_sample: default_n_sample(),
            m: default_m(),
            sort_tau: default_tau(),
            p_top1: default_p_top1(),
        }
    }

    /// The top-k cross-entropy's rank distribution.
    fn p_k(&self) -> Vec<f64> {
        let mut p = vec![0.0; self.k.max(1)];
        p[0] += self.p_top1;
        *p.last_mut().expect("k >= 1") += 1.0 - self.p_top1;
        p
    }

    /// The core loss (validated).
    pub fn build(&self) -> Result<AnyLoss, TrainError> {
        Ok(match self.kind {
            LossKind::Ce => CrossEntropy.into(),
            LossKind::Svm => SmoothTopkSvm::new(self.k, self.tau, self.alpha)?.into(),
            LossKind::HardSvm => HardTopkSvm::new(self.k, self.alpha)?.into(),
            LossKind::Entr => TruncatedTopkEntropy::new(self.k)?.into(),
            LossKind::Noised => {
                NoisedTopkHinge::balanced(self.k, self.epsilon, self.n_sample)?.into()
            }
            LossKind::TopkCe => {
                // p_k has k entries: a k no dataset could have is refused before allocating.
                if self.k > MAX_TOPK_CE_K {
                    return Err(TrainError::InvalidConfig(format!(
                        "k = {} is too large for the top-k cross-entropy (at most {MAX_TOPK_CE_K})",
                        self.k
                    )));
                }
                if !(0.0..=1.0).contains(&self.p_top1) {
                    return Err(TrainError::InvalidConfig(format!(
                        "p_top1 = {} is invalid: need 0 <= p_top1 <= 1",
                        self.p_top1
                    )));
                }
                TopkCrossEntropy::new(&self.p_k(), self.sort_tau, self.m)?.into()
            }
        })
    }

    /// A short label such as `ce` or `svm(k=5,tau=1,alpha=1)`.
    pub fn label(&self) -> String {
        match self.kind {
            LossKind::Ce => "ce".into(),
            LossKind::Svm => format!("svm(k={},tau={},alpha={})", self.k, self.tau, self.alpha),
            LossKind::HardSvm => format!("hard-svm(k={},alpha={})", self.k, self.alpha),
            LossKind::Entr => format!("entr(k={})", self.k),
            LossKind::Noised => format!(
                "noised(k={},epsilon={},n_sample={})",
                self.k, self.epsilon, self.n_sample
            ),
            LossKind::TopkCe => format!(
                "topk-ce(k={},p_top1={},tau={},m={})",
                self.k,
                self.p_top1,
                self.sort_tau,
                self.m.map_or("all".to_string(), |m| m.to_string())
            ),
        }
    }
}

/// Compute backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum BackendKind {
    /// burn's Flex CPU backend.
    Cpu,
    /// wgpu (Vulkan, Metal, DX12); needs the `wgpu` feature.
    Wgpu,
    /// CUDA; needs the `cuda` feature.
    Cuda,
}

/// A new base learning rate from an epoch on, set when a run is resumed with another rate
/// (after a divergence, say). The schedule's decays still apply on top of it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrRestart {
    /// First (1-based) epoch trained with `lr`.
    pub from_epoch: usize,
    pub lr: f64,
}

/// A whole training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The protocol this configuration started from (its presets), for reports.
    #[serde(default)]
    pub protocol: Option<Protocol>,
    pub data: DataConfig,
    pub model: ModelKind,
    pub loss: LossConfig,
    /// Accuracies reported: top-1 .. top-`report_k`.
    pub report_k: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    /// 1-based epochs from which the learning rate is multiplied by `lr_decay` once more.
    pub lr_milestones: Vec<usize>,
    pub lr_decay: f64,
    /// Base learning rates set on resuming (in increasing `from_epoch`).
    #[serde(default)]
    pub lr_restarts: Vec<LrRestart>,
    /// Nesterov momentum (no dampening, as PyTorch's SGD).
    pub momentum: f64,
    pub weight_decay: f64,
    /// Seed of the weights, the batch order, the augmentation and the label noise.
    pub seed: u64,
    pub backend: BackendKind,
    /// Indices of the backend's devices that train data-parallel (each batch is split among
    /// them); the first also evaluates. The CPU backend has one device: several indices there
    /// run several workers on it.
    #[serde(default = "one_device")]
    pub devices: Vec<usize>,
    /// Stop after this many optimisation steps (benchmarks and smoke tests); the epoch in
    /// progress then ends early and the run finishes as usual.
    #[serde(default)]
    pub max_steps: Option<usize>,
    /// Evaluate the test split after every epoch (for the learning curves) rather than only
    /// with the selected checkpoints at the end.
    #[serde(default = "yes")]
    pub test_every_epoch: bool,
}

fn one_device() -> Vec<usize> {
    vec![0]
}

fn yes() -> bool {
    true
}

/// Most devices of one run (a sanity bound on `--devices`).
pub const MAX_DEVICES: usize = 64;

impl TrainConfig {
    /// The preset of the data source's own protocol (see [`Protocol::for_source`]).
    pub fn defaults(source: DataSource, loss: LossKind) -> Self {
        Protocol::for_source(&source).config(source, loss)
    }

    /// Learning rate of a 1-based epoch: the base rate (the last restart at or before the
    /// epoch, else `lr`) times `lr_decay` per milestone reached, rounded to 12 significant
    /// digits so that 0.1 x 0.1 prints as 0.01.
    pub fn lr_at(&self, epoch: usize) -> f64 {
        let base = self.base_lr_at(epoch);
        let decays = self.lr_milestones.iter().filter(|&&m| epoch >= m).count();
        let lr = base * self.lr_decay.powi(decays.min(i32::MAX as usize) as i32);
        format!("{lr:.11e}").parse().unwrap_or(lr)
    }

    /// The base learning rate of an epoch before the schedule's decays: the last restart at or
    /// before it, else `lr`.
    pub fn base_lr_at(&self, epoch: usize) -> f64 {
        self.lr_restarts
            .iter()
            .rev()
            .find(|r| r.from_epoch <= epoch)
            .map_or(self.lr, |r| r.lr)
    }

    /// Checks what the data and loss loaders cannot: counts, rates, sizes.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad =
            |what: &str, value: String| Err(TrainError::InvalidConfig(format!("{what} = {value}")));
        let positive_rate = |r: f64| r.is_finite() && r > 0.0;
        if self.epochs == 0 || self.epochs > MAX_EPOCHS {
            return bad(
                "epochs",
                format!("{} (must be in 1..={MAX_EPOCHS})", self.epochs),
            );
        }
        if self.batch_size == 0 {
            return bad("batch size", "0 (must be at least 1)".into());
        }
        if self.batch_size > MAX_BATCH {
            return bad(
                "batch size",
                format!("{} (at most {MAX_BATCH})", self.batch_size),
            );
        }
        if !positive_rate(self.lr) {
            return bad("learning rate", format!("{} (must be > 0)", self.lr));
        }
        if let Some(r) = self.lr_restarts.iter().find(|r| !positive_rate(r.lr)) {
            return bad("learning rate", format!("{} (must be > 0)", r.lr));
        }
        let epochs: Vec<usize> = self.lr_restarts.iter().map(|r| r.from_epoch).collect();
        if epochs.windows(2).any(|w| w[0] >= w[1]) || epochs.first() == Some(&0) {
            return bad(
                "lr_restarts",
                format!("{epochs:?} (first epochs must be increasing, from 1)"),
            );
        }
        if !positive_rate(self.lr_decay) {
            return bad(
                "learning-rate decay",
                format!("{} (must be > 0)", self.lr_decay),
            );
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return bad("momentum", format!("{} (must be in [0, 1))", self.momentum));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(
                "weight decay",
                format!("{} (must be >= 0)", self.weight_decay),
            );
        }
        if !(0.0..=1.0).contains(&self.data.noise) {
            return bad("noise", format!("{} (must be in [0, 1])", self.data.noise));
        }
        if self.report_k == 0 {
            return bad("report k", "0 (must be at least 1)".into());
        }
        // Every model pools its input by 8 at least; the crop is checked against the real
        // image side when the data is loaded.
        if self.data.crop < MIN_INPUT_SIDE || self.data.crop > smooth_topk_data::MAX_IMAGE_SIZE {
            return bad(
                "crop",
                format!(
                    "{} (must be in {MIN_INPUT_SIDE}..={})",
                    self.data.crop,
                    smooth_topk_data::MAX_IMAGE_SIZE
                ),
            );
        }
        smooth_topk_data::check_image_size(self.data.image_size)
            .map_err(|e| TrainError::InvalidConfig(e.to_string()))?;
        if self.data.valid_size == Some(0) {
            return bad(
                "valid size",
                "0 (model selection needs a validation split)".into(),
            );
        }
        if self.devices.is_empty() || self.devices.len() > MAX_DEVICES {
            return bad(
                "devices",
                format!("{:?} (one to {MAX_DEVICES} device indices)", self.devices),
            );
        }
        if self.max_steps == Some(0) {
            return bad("max steps", "0 (must be at least 1)".into());
        }
        self.loss.build().map(|_| ())
    }
}

/// Most epochs of a run (a sanity bound).
pub const MAX_EPOCHS: usize = 100_000;

/// Largest batch (a sanity bound: 65536 ImageNet crops are 39 GB of floats).
pub const MAX_BATCH: usize = 65_536;
