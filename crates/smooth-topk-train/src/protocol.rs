//! The experiments' protocols: everything a run needs besides its data (model, schedule,
//! optimiser, loss settings per loss), as named presets.
//!
//! A protocol belongs to an experiment, not to a data source: `reproduce cifar100-noise` trains
//! with Table 1's protocol whatever data it is given, and each flag overrides one setting. Only
//! the image geometry follows the data (32x32 sources are cropped with 4-pixel padding; image
//! folders are read at the protocol's stored size and cropped inside it).
//!
//! The paper's protocols (Berrada, Zisserman and Kumar, ICLR 2018, section 5; `docs/paper.md`):
//!
//! | | Table 1: CIFAR-100 with noise | Table 2: ImageNet subsets |
//! |---|---|---|
//! | model | DenseNet 40-40 | ResNet-18 |
//! | epochs, batch | 300, 64 | 120, 256 |
//! | learning rate | 0.1, x0.1 at 151 and 226 | CE 0.1, SVM 1; x0.1 at 31, 61, 91 |
//! | weight decay | 1e-4 | CE 1e-4, SVM 2.5e-5 |
//! | SVM | k 5, tau 1, alpha 1 | k 5, tau 0.1, alpha 1 |
//! | optimiser | SGD, Nesterov momentum 0.9 | same |
//!
//! The CPU-scale protocols put the same question to the built-in data in minutes: a small
//! training set (20 images per class) and long training, so that cross-entropy has time to fit
//! the noisy labels, which is the regime where the paper reports the SVM's advantage.

use serde::{Deserialize, Serialize};

use crate::config::{
    BackendKind, DataConfig, DataSource, Grouping, LossConfig, LossKind, TrainConfig,
};
use crate::models::ModelKind;

/// A named protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Protocol {
    /// `train`'s default: the small convnet on the built-in data, a few minutes on 2 cores.
    Quick,
    /// The paper's Table 1: DenseNet 40-40, 300 epochs (made for CIFAR-100).
    Cifar100Noise,
    /// The paper's Table 2: ResNet-18, 120 epochs (made for ImageNet folders).
    ImagenetSubsets,
    /// Table 1's question at CPU scale on the built-in data: an MLP, 2000 training images,
    /// 60 epochs, learning rate chosen per loss.
    CpuNoise,
    /// Table 2's question at CPU scale: as `cpu-noise` without noise, over training-set sizes.
    CpuSize,
}

/// Image geometry of a protocol on a folder: stored side, crop, ten-crop test.
struct FolderGeometry {
    image_size: usize,
    crop: usize,
    ten_crop: bool,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Quick => "quick",
            Protocol::Cifar100Noise => "cifar100-noise",
            Protocol::ImagenetSubsets => "imagenet-subsets",
            Protocol::CpuNoise => "cpu-noise",
            Protocol::CpuSize => "cpu-size",
        }
    }

    /// The protocol a single `train` run of a data source gets unless told otherwise: the
    /// paper's own for CIFAR-100 (Table 1) and image folders (Table 2), the quick one for the
    /// built-in data.
    pub fn for_source(source: &DataSource) -> Protocol {
        match source {
            DataSource::Synthetic => Protocol::Quick,
            DataSource::Cifar100 { .. } => Protocol::Cifar100Noise,
            DataSource::Folder { .. } => Protocol::ImagenetSubsets,
        }
    }

    /// The data source the protocol was made for, when it needs no files.
    pub fn builtin_data(self) -> Option<DataSource> {
        match self {
            Protocol::Quick | Protocol::CpuNoise | Protocol::CpuSize => Some(DataSource::Synthetic),
            Protocol::Cifar100Noise | Protocol::ImagenetSubsets => None,
        }
    }

    /// Whether this is one of the paper's own protocols.
    pub fn is_paper(self) -> bool {
        matches!(self, Protocol::Cifar100Noise | Protocol::ImagenetSubsets)
    }

    /// The learning rates tried per loss (on the clean validation split) by `reproduce`
    /// unless `--lr-grid` says otherwise; empty for the paper's protocols, which keep the
    /// paper's rates.
    pub fn lr_grid(self) -> Vec<f64> {
        match self {
            Protocol::CpuNoise | Protocol::CpuSize => vec![0.003, 0.01, 0.03, 0.1, 0.3],
            _ => Vec::new(),
        }
    }

    fn folder_geometry(self) -> FolderGeometry {
        match self {
            Protocol::ImagenetSubsets => FolderGeometry {
                image_size: 256,
                crop: 224,
                ten_crop: true,
            },
            _ => FolderGeometry {
                image_size: 32,
                crop: 32,
                ten_crop: false,
            },
        }
    }

    /// The full configuration of a run with `loss` on `source`.
    pub fn config(self, source: DataSource, loss: LossKind) -> TrainConfig {
        let svm = loss.is_hinge();
        let geometry = match source {
            DataSource::Folder { .. } => self.folder_geometry(),
            _ => FolderGeometry {
                image_size: 32,
                crop: 32,
                ten_crop: self.folder_geometry().ten_crop,
            },
        };
        let synthetic = source == DataSource::Synthetic;
        let mut config = TrainConfig {
            protocol: Some(self),
            data: DataConfig {
                source,
                train_size: None,
                valid_size: None,
                test_size: 2000,
                image_size: geometry.image_size,
                crop: geometry.crop,
                data_seed: 0,
                noise: 0.0,
                noise_grouping: Grouping::Consecutive,
                augment: true,
                ten_crop: geometry.ten_crop,
                skip_unreadable: false,
            },
            model: ModelKind::Convnet,
            loss: LossConfig::new(loss),
            report_k: 5,
            epochs: 10,
            batch_size: 64,
            lr: 0.1,
            lr_milestones: vec![7, 9],
            lr_decay: 0.1,
            lr_restarts: Vec::new(),
            momentum: 0.9,
            weight_decay: 1e-4,
            seed: 0,
            backend: BackendKind::Cpu,
            devices: vec![0],
            max_steps: None,
            test_every_epoch: true,
        };
        match self {
            Protocol::Quick => {
                if synthetic {
                    config.data.train_size = Some(10_000);
                }
                // The best validation top-5 of 0.1, 0.3 (both losses) and 1 (the SVM)
                // (BENCHMARKS.md, training).
                config.lr = QUICK_LR;
            }
            Protocol::Cifar100Noise => {
                config.model = ModelKind::Densenet40;
                config.epochs = 300;
                config.lr_milestones = vec![151, 226];
            }
            Protocol::ImagenetSubsets => {
                config.model = ModelKind::Resnet18;
                config.epochs = 120;
                config.batch_size = 256;
                config.lr = if svm { 1.0 } else { 0.1 };
                config.lr_milestones = vec![31, 61, 91];
                config.weight_decay = if svm { 2.5e-5 } else { 1e-4 };
                config.loss.tau = 0.1;
                // The test split (ImageNet's 50k validation images) only for the selected
                // checkpoints: per epoch it would add a fifth to the training time.
                config.test_every_epoch = false;
            }
            Protocol::CpuNoise | Protocol::CpuSize => {
                config.model = ModelKind::Mlp;
                if synthetic {
                    config.data.train_size = Some(CPU_TRAIN_SIZE);
                    config.data.valid_size = Some(1000);
                }
                config.epochs = 60;
                // Without a grid search: the rates the grid picks most often (BENCHMARKS.md).
                config.lr = if svm { 0.1 } else { 0.01 };
                config.lr_milestones = vec![40, 50];
                config.test_every_epoch = false;
            }
        }
        config
    }
}

/// The learning rate of the quick protocol.
const QUICK_LR: f64 = 0.3;

/// Training images of the CPU-scale protocols (20 per class of the built-in data).
pub const CPU_TRAIN_SIZE: usize = 2000;

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn the_papers_protocols_follow_the_experiment_not_the_data() {
        let folder = DataSource::Folder {
            dir: PathBuf::from("d"),
        };
        let cifar = DataSource::Cifar100 {
            dir: PathBuf::from("c"),
        };
        // Table 1 on a folder: DenseNet, 300 epochs, L_{5,1} with lr 0.1 and weight decay 1e-4.
        let c = Protocol::Cifar100Noise.config(folder.clone(), LossKind::Svm);
        assert_eq!(
            (c.model, c.epochs, c.lr, c.weight_decay),
            (ModelKind::Densenet40, 300, 0.1, 1e-4)
        );
        assert_eq!((c.loss.k, c.loss.tau, c.loss.alpha), (5, 1.0, 1.0));
        assert_eq!((c.data.image_size, c.data.crop), (32, 32));
        // Table 2 on CIFAR: ResNet-18, the SVM with lr 1, weight decay 2.5e-5, tau 0.1.
        let c = Protocol::ImagenetSubsets.config(cifar.clone(), LossKind::Svm);
        assert_eq!(
            (c.model, c.epochs, c.batch_size),
            (ModelKind::Resnet18, 120, 256)
        );
        assert_eq!((c.lr, c.weight_decay, c.loss.tau), (1.0, 2.5e-5, 0.1));
        assert_eq!((c.data.image_size, c.data.crop), (32, 32));
        let c = Protocol::ImagenetSubsets.config(folder, LossKind::Ce);
        assert_eq!(
            (c.lr, c.weight_decay, c.data.image_size, c.data.crop),
            (0.1, 1e-4, 256, 224)
        );
        assert!(c.data.ten_crop);
        assert_eq!(Protocol::for_source(&cifar), Protocol::Cifar100Noise);
        for p in [
            Protocol::Quick,
            Protocol::Cifar100Noise,
            Protocol::ImagenetSubsets,
            Protocol::CpuNoise,
            Protocol::CpuSize,
        ] {
            for loss in [LossKind::Ce, LossKind::Svm, LossKind::HardSvm] {
                let c = p.config(DataSource::Synthetic, loss);
                c.validate().unwrap();
                assert_eq!(c.protocol, Some(p));
            }
        }
    }
}
