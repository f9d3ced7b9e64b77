//! Loss and top-k accuracy of a model on a split, streamed through the loader.

use std::sync::Arc;

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use smooth_topk::{AnyLoss, Loss, Reduction};
use smooth_topk_data::{Loader, Split};

use crate::data::View;
use crate::models::Classifier;
use crate::train::tally::{SplitMetrics, Tally};
use crate::TrainError;

/// Images per forward pass in evaluation (memory, not results, depends on it).
const EVAL_BATCH: usize = 128;

/// Loss (computed by the numeric core on the logits) and top-1 .. top-k accuracy of `model` on
/// `split`. With `ten_crop` the logits of the ten crops are averaged.
pub fn evaluate(
    model: &Classifier,
    split: &Arc<Split>,
    view: &View,
    ten_crop: bool,
    loss: &AnyLoss,
    k: usize,
    loader: &Loader,
) -> Result<SplitMetrics, TrainError> {
    let device = model_device(model)?;
    let batch_view = view.evaluation(ten_crop);
    let crops = batch_view.crops();
    let n = split.num_classes;
    let mut tally = Tally::new(k);
    let order: Vec<usize> = (0..split.len()).collect();
    let batch_size = (EVAL_BATCH / crops).max(1);
    for batch in loader.stream(split.clone(), order, batch_size, batch_view, 0) {
        let batch = batch?;
        tally.add_skipped(batch.skipped.len());
        if batch.is_empty() {
            continue;
        }
        let images = images_tensor(batch.images, batch.labels.len() * crops, view, &device);
        let logits = host_floats(model.forward(images))?;
        let scores = average_crops(&logits, crops, n);
        let labels: Vec<usize> = batch.labels.iter().map(|&l| usize::from(l)).collect();
        let losses = loss.loss(&scores, &labels, n, Reduction::Mean)?;
        tally.add_loss(losses, labels.len());
        tally.add_scores(&scores, &labels, &labels, n)?;
    }
    Ok(tally.metrics())
}

/// `count` network inputs as a `[count, 3, crop, crop]` tensor.
pub(crate) fn images_tensor(
    images: Vec<f32>,
    count: usize,
    view: &View,
    device: &Device,
) -> Tensor<4> {
    Tensor::from_data(
        TensorData::new(images, [count, 3, view.crop, view.crop]),
        device,
    )
}

/// A float tensor's values as `f32`.
pub(crate) fn host_floats<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, TrainError> {
    t.into_data()
        .try_into_vec_as::<f32>()
        .map_err(|e| TrainError::Device(format!("cannot read a float tensor: {e:?}")))
}

/// Mean over each run of `crops` consecutive rows of `n` logits.
pub(crate) fn average_crops(logits: &[f32], crops: usize, n: usize) -> Vec<f32> {
    if crops == 1 {
        return logits.to_vec();
    }
    logits
        .chunks(crops * n)
        .flat_map(|group| {
            (0..n).map(move |j| (0..crops).map(|c| group[c * n + j]).sum::<f32>() / crops as f32)
        })
        .collect()
}

fn model_device(model: &Classifier) -> Result<Device, TrainError> {
    model
        .devices()
        .into_iter()
        .next()
        .ok_or_else(|| TrainError::Device("the model has no parameters".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_crop_logits_are_averaged_per_image() {
        // 2 images x 2 crops x 3 classes.
        let logits = [1.0, 2.0, 3.0, 3.0, 2.0, 1.0, 0.0, 0.0, 4.0, 2.0, 2.0, 0.0];
        assert_eq!(
            average_crops(&logits, 2, 3),
            vec![2.0, 2.0, 2.0, 1.0, 1.0, 2.0]
        );
        assert_eq!(average_crops(&logits, 1, 3), logits.to_vec());
    }
}
