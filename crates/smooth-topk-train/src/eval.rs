//! `eval`: top-1 .. top-k of a saved model on a split of its data (or of other data).

use std::path::Path;

use burn::module::Module;
use serde::{Deserialize, Serialize};

use crate::checkpoint;
use crate::config::{BackendKind, DataSource};
use crate::data;
use crate::train::{device, evaluate, SplitMetrics};
use crate::TrainError;

/// Which split to evaluate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Split {
    Train,
    Valid,
    Test,
}

/// What to evaluate and how.
#[derive(Clone, Debug)]
pub struct EvalRequest {
    /// Replaces the data source saved with the model (same classes and image format).
    pub source: Option<DataSource>,
    pub split: Split,
    pub k: usize,
    pub ten_crop: bool,
    pub backend: BackendKind,
}

/// The outcome, as printed and written by the CLI.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalResult {
    pub checkpoint: String,
    pub epoch: usize,
    pub split: Split,
    pub images: usize,
    pub ten_crop: bool,
    pub metrics: SplitMetrics,
}

/// Evaluates the model saved in `dir` (a `best-top1` / `best-top5` directory of a run), with
/// the normalisation and crop it was trained with. Training labels are taken without noise.
pub fn evaluate_checkpoint(dir: &Path, request: &EvalRequest) -> Result<EvalResult, TrainError> {
    let meta = checkpoint::read_meta(dir)?;
    let mut config = meta.config.clone();
    if let Some(source) = &request.source {
        config.data.source = source.clone();
    }
    config.data.noise = 0.0;
    let loss = config.loss.build()?;
    let prepared = data::load(&config.data, config.seed)?;
    if prepared.classes != meta.classes {
        return Err(TrainError::InvalidConfig(format!(
            "data has {} classes, the model in {} was trained on {}",
            prepared.classes,
            dir.display(),
            meta.classes
        )));
    }
    if request.k == 0 || request.k > meta.classes {
        return Err(TrainError::InvalidConfig(format!(
            "k = {} (must be in 1..={})",
            request.k, meta.classes
        )));
    }
    let device = device(request.backend)?;
    let model = config.model.init(meta.classes, meta.view.crop, &device);
    let model = checkpoint::load_model_dir(dir, model)?.valid();
    let images = match request.split {
        Split::Train => &prepared.train,
        Split::Valid => &prepared.valid,
        Split::Test => &prepared.test,
    };
    let metrics = evaluate(
        &model,
        images,
        &meta.view,
        request.ten_crop,
        &loss,
        request.k,
    )?;
    Ok(EvalResult {
        checkpoint: dir.display().to_string(),
        epoch: meta.epoch,
        split: request.split,
        images: images.len(),
        ten_crop: request.ten_crop,
        metrics,
    })
}
