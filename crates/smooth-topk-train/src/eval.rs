//! `eval`: top-1 .. top-k of a saved model on a split of its data (or of other data).

use std::path::Path;
use std::sync::Arc;

use burn::module::Module;
use serde::{Deserialize, Serialize};
use smooth_topk_data::{Loader, SplitName};

use crate::checkpoint;
use crate::config::{BackendKind, DataSource};
use crate::data::{self, DataCache};
use crate::train::{device, evaluate, SplitMetrics};
use crate::TrainError;

/// Which split to evaluate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Split {
    Train,
    Valid,
    Test,
}

impl Split {
    fn name(self) -> SplitName {
        match self {
            Split::Train => SplitName::Train,
            Split::Valid => SplitName::Valid,
            Split::Test => SplitName::Test,
        }
    }
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
/// the normalisation and crop it was trained with. Only the requested split is read; training
/// labels are taken without noise.
pub fn evaluate_checkpoint(
    dir: &Path,
    request: &EvalRequest,
    loader: &Loader,
) -> Result<EvalResult, TrainError> {
    let meta = checkpoint::read_meta(dir)?;
    // Everything read from meta.json is checked before anything is built from it.
    meta.config.validate()?;
    let view = &meta.view;
    let bad_meta = |what: String| TrainError::record(&dir.join("meta.json"), what);
    if view.crop != meta.config.data.crop
        || view.pad > view.crop
        || view.image_size > smooth_topk_data::MAX_IMAGE_SIZE
    {
        return Err(bad_meta(format!(
            "view {view:?} does not match the configuration's crop {}",
            meta.config.data.crop
        )));
    }
    if !(2..=1 << 16).contains(&meta.classes) {
        return Err(bad_meta(format!(
            "{} classes (2 to 65536 expected)",
            meta.classes
        )));
    }
    let mut config = meta.config.clone();
    if let Some(source) = &request.source {
        config.data.source = source.clone();
    }
    config.data.noise = 0.0;
    if request.k == 0 || request.k > meta.classes {
        return Err(TrainError::InvalidConfig(format!(
            "k = {} (must be in 1..={})",
            request.k, meta.classes
        )));
    }
    let loss = config.loss.build()?;
    let split = data::load_split(
        &config.data,
        request.split.name(),
        &mut DataCache::default(),
    )?;
    if split.num_classes != meta.classes {
        return Err(TrainError::InvalidConfig(format!(
            "data has {} classes, the model in {} was trained on {}",
            split.num_classes,
            dir.display(),
            meta.classes
        )));
    }
    let device = device(request.backend)?;
    let model = config.model.init(meta.classes, meta.view.crop, &device);
    let model = checkpoint::load_model_dir(dir, model)?.valid();
    let images = split.len();
    let metrics = evaluate(
        &model,
        &Arc::new(split),
        &meta.view,
        request.ten_crop,
        &loss,
        request.k,
        loader,
    )?;
    Ok(EvalResult {
        checkpoint: dir.display().to_string(),
        epoch: meta.epoch,
        split: request.split,
        images,
        ten_crop: request.ten_crop,
        metrics,
    })
}
