//! Everything that defines a training run, saved as `config.json` next to its results so a run
//! is reported with the exact configuration that produced it (and `--resume` continues it).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use smooth_topk::{AnyLoss, CrossEntropy, HardTopkSvm, SmoothTopkSvm};

use crate::models::{ModelKind, MIN_INPUT_SIDE};
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
}

/// Which loss trains the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossKind {
    Ce,
    Svm,
    HardSvm,
}

impl LossKind {
    pub fn name(self) -> &'static str {
        match self {
            LossKind::Ce => "ce",
            LossKind::Svm => "svm",
            LossKind::HardSvm => "hard-svm",
        }
    }
}

/// The loss and its parameters (k, tau, alpha are ignored by cross-entropy).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LossConfig {
    pub kind: LossKind,
    pub k: usize,
    pub tau: f64,
    pub alpha: f64,
}

impl LossConfig {
    /// The core loss (validated: k >= 1, tau > 0, alpha >= 0).
    pub fn build(&self) -> Result<AnyLoss, TrainError> {
        Ok(match self.kind {
            LossKind::Ce => CrossEntropy.into(),
            LossKind::Svm => SmoothTopkSvm::new(self.k, self.tau, self.alpha)?.into(),
            LossKind::HardSvm => HardTopkSvm::new(self.k, self.alpha)?.into(),
        })
    }

    /// A short label such as `ce` or `svm(k=5,tau=1,alpha=1)`.
    pub fn label(&self) -> String {
        match self.kind {
            LossKind::Ce => "ce".into(),
            LossKind::Svm => format!("svm(k={},tau={},alpha={})", self.k, self.tau, self.alpha),
            LossKind::HardSvm => format!("hard-svm(k={},alpha={})", self.k, self.alpha),
        }
    }
}

/// Compute backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// burn's Flex CPU backend.
    Cpu,
    /// wgpu (Vulkan, Metal, DX12); needs the `wgpu` feature.
    Wgpu,
    /// CUDA; needs the `cuda` feature.
    Cuda,
}

/// A whole training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
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
    /// Nesterov momentum (no dampening, as PyTorch's SGD).
    pub momentum: f64,
    pub weight_decay: f64,
    /// Seed of the weights, the batch order, the augmentation and the label noise.
    pub seed: u64,
    pub backend: BackendKind,
}

impl TrainConfig {
    /// The paper's settings for a data source and loss (SPEC section 3), and quick settings
    /// for the built-in dataset: CIFAR-100 gets DenseNet 40-40, 300 epochs of batch 64, learning
    /// rate 0.1 divided by 10 at epochs 151 and 226, weight decay 1e-4 and L_{5,1}; image folders
    /// get ResNet-18, 120 epochs of batch 256, 0.1 (CE) or 1 (SVM) divided by 10 at 31, 61 and
    /// 91, weight decay 1e-4 (CE) or 2.5e-5 (SVM) and tau 0.1; the synthetic data gets the small
    /// convnet for 12 epochs.
    pub fn defaults(source: DataSource, loss: LossKind) -> Self {
        let svm = loss != LossKind::Ce;
        let mut config = TrainConfig {
            data: DataConfig {
                source: source.clone(),
                train_size: None,
                valid_size: None,
                test_size: 2000,
                image_size: 32,
                crop: 32,
                data_seed: 0,
                noise: 0.0,
                noise_grouping: Grouping::Consecutive,
                augment: true,
                ten_crop: false,
            },
            model: ModelKind::Convnet,
            loss: LossConfig {
                kind: loss,
                k: 5,
                tau: 1.0,
                alpha: 1.0,
            },
            report_k: 5,
            epochs: 12,
            batch_size: 64,
            lr: 0.1,
            lr_milestones: vec![8, 11],
            lr_decay: 0.1,
            momentum: 0.9,
            weight_decay: 1e-4,
            seed: 0,
            backend: BackendKind::Cpu,
        };
        match source {
            DataSource::Synthetic => config.data.train_size = Some(10_000),
            DataSource::Cifar100 { .. } => {
                config.model = ModelKind::Densenet40;
                config.epochs = 300;
                config.lr_milestones = vec![151, 226];
            }
            DataSource::Folder { .. } => {
                config.data.image_size = 256;
                config.data.crop = 224;
                config.data.ten_crop = true;
                config.model = ModelKind::Resnet18;
                config.epochs = 120;
                config.batch_size = 256;
                config.lr = if svm { 1.0 } else { 0.1 };
                config.lr_milestones = vec![31, 61, 91];
                config.weight_decay = if svm { 2.5e-5 } else { 1e-4 };
                config.loss.tau = 0.1;
            }
        }
        config
    }

    /// Learning rate of a 1-based epoch, rounded to 12 significant digits so that 0.1 x 0.1
    /// prints as 0.01.
    pub fn lr_at(&self, epoch: usize) -> f64 {
        let decays = self.lr_milestones.iter().filter(|&&m| epoch >= m).count();
        let lr = self.lr * self.lr_decay.powi(decays as i32);
        format!("{lr:.11e}").parse().unwrap_or(lr)
    }

    /// Checks what the data and loss loaders cannot: counts, rates, sizes.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad =
            |what: &str, value: String| Err(TrainError::InvalidConfig(format!("{what} = {value}")));
        if self.epochs == 0 {
            return bad("epochs", "0 (must be at least 1)".into());
        }
        if self.batch_size == 0 {
            return bad("batch size", "0 (must be at least 1)".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("learning rate", format!("{} (must be > 0)", self.lr));
        }
        if !(self.lr_decay.is_finite() && self.lr_decay > 0.0) {
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
        if self.data.crop < MIN_INPUT_SIDE {
            return bad(
                "crop",
                format!("{} (must be at least {MIN_INPUT_SIDE})", self.data.crop),
            );
        }
        if self.data.valid_size == Some(0) {
            return bad(
                "valid size",
                "0 (model selection needs a validation split)".into(),
            );
        }
        self.loss.build().map(|_| ())
    }
}
