//! # smooth-topk-train
//!
//! The paper's experiments on burn: train a classifier with cross-entropy or a top-k SVM
//! ([`train::train`]), evaluate a saved model ([`eval::evaluate_checkpoint`]) and run the grids
//! of Tables 1 and 2 ([`reproduce`]). The `smooth-topk` CLI's `train`, `eval` and `reproduce`
//! subcommands are thin wrappers over this crate.
//!
//! Data comes from `smooth-topk-data` (built-in synthetic set, CIFAR-100 binaries, image
//! folders); models are in [`models`] (small convnet, DenseNet 40-40, ResNet-18).

use std::path::{Path, PathBuf};

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod eval;
pub mod loader_bench;
pub mod models;
pub mod progress;
pub mod protocol;
pub mod report;
pub mod reproduce;
pub mod step_bench;
pub mod train;

pub use config::{
    BackendKind, DataConfig, DataSource, Grouping, LossConfig, LossKind, LrRestart, TrainConfig,
};
pub use data::DataCache;
pub use models::ModelKind;
pub use protocol::Protocol;
pub use train::{
    train, EpochMetrics, Observer, RunResults, SelectedResult, Silent, SplitMetrics, Start,
};

/// Everything that can stop a run, each naming the value or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("invalid setting: {0}")]
    InvalidConfig(String),
    #[error(transparent)]
    Data(#[from] smooth_topk_data::DataError),
    #[error("loss: {0}")]
    Loss(#[from] smooth_topk::TopkError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: {message}")]
    Record { path: PathBuf, message: String },
    #[error("{path}: cannot draw the plot: {message}")]
    Plot { path: PathBuf, message: String },
    #[error(
        "training diverged at epoch {epoch}, step {step}; lr {lr} ({why}); the checkpoint of \
         epoch {last_good} in {} is intact: continue with a lower base rate, e.g. `smooth-topk \
         train --resume {} --lr {}`",
        dir.display(),
        dir.display(),
        base_lr / 10.0
    )]
    Diverged {
        epoch: usize,
        step: usize,
        /// The learning rate of the epoch, and its base rate before the schedule's decays.
        lr: f64,
        base_lr: f64,
        why: String,
        dir: PathBuf,
        /// The last finished (and checkpointed) epoch; 0 when none.
        last_good: usize,
    },
    #[error("device: {0}")]
    Device(String),
}

impl TrainError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn json(path: &Path, source: serde_json::Error) -> Self {
        TrainError::Json {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn record(path: &Path, error: impl std::fmt::Display) -> Self {
        TrainError::Record {
            path: path.to_path_buf(),
            message: error.to_string(),
        }
    }
}
