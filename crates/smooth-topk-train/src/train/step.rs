//! One optimisation step, data-parallel over the run's devices through burn's own multi-device
//! machinery: burn-train's `MultiDevicesTrainStep` runs one worker thread per device, each
//! forks the model onto its device and computes the gradient of its shard of the batch; the
//! gradients are moved to the first device with `GradientsParams::to_device` and summed with
//! `GradientsAccumulator`, and the optimiser steps there (burn's `MultiDevice` strategy with
//! `OptimMainDevice`). One device is the same path with one worker.
//!
//! The batch is split into contiguous shards and each shard's mean loss is weighted by its
//! share of the batch, so that the summed gradient is the gradient of the batch's mean loss,
//! exactly what one device computes, up to floating-point summation order. What does differ
//! with several devices is batch normalisation: each replica normalises with the statistics of
//! its own shard (as PyTorch's DistributedDataParallel does without SyncBatchNorm), and burn
//! averages the replicas' running statistics. Models without batch norm (the MLP) train the
//! same on any number of devices.

use burn::backend::ExecutionError;
use burn::data::dataloader::{DataLoaderIterator, Progress};
use burn::data::dataset::DatasetError;
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn::train::train::MultiDevicesTrainStep;
use burn::train::{InferenceStep, ItemLazy, TrainOutput, TrainStep};
use smooth_topk_burn::{topk_loss_per_sample, HardTopkSvmLossConfig, SmoothTopkSvmLossConfig};
use smooth_topk_data::Batch;

use crate::config::{LossConfig, LossKind};
use crate::data::View;
use crate::models::Classifier;
use crate::train::evaluate::{host_floats, images_tensor};
use crate::TrainError;

/// A worker's part of a batch.
pub struct Shard {
    /// Position of the shard in the batch.
    index: usize,
    images: Vec<f32>,
    labels: Vec<i64>,
    view: View,
    loss: LossConfig,
    /// Which noise a stochastic loss draws for this shard (the step's key and the shard's
    /// position).
    noise_key: u64,
    /// The shard's share of the batch.
    weight: f64,
}

/// What a worker returns besides the gradient.
pub struct ShardOutput {
    index: usize,
    /// The shard's logits, or why there are none.
    logits: Result<Vec<f32>, String>,
    /// The shard's weighted mean loss.
    loss: f64,
}

impl ItemLazy for ShardOutput {
    fn sync(self) -> Result<Self, ExecutionError> {
        Ok(self)
    }
}

/// The loss of a batch through the burn adapter's modules (burn's own cross-entropy); the
/// field's other losses through the adapter's op on the core loss, the stochastic one drawing
/// the noise of `noise_key`.
fn batch_loss(
    loss: &LossConfig,
    noise_key: u64,
    logits: Tensor<2>,
    targets: Tensor<1, Int>,
) -> Result<Tensor<1>, String> {
    let error = |e: smooth_topk::TopkError| e.to_string();
    Ok(match loss.kind {
        LossKind::Entr | LossKind::Noised | LossKind::TopkCe => {
            let core = loss.build().map_err(|e| e.to_string())?.for_step(noise_key);
            topk_loss_per_sample(logits, targets, core)
                .map_err(error)?
                .mean()
        }
        LossKind::Ce => CrossEntropyLossConfig::new()
            .init(&logits.device())
            .forward(logits, targets),
        LossKind::Svm => SmoothTopkSvmLossConfig::new()
            .with_k(loss.k)
            .with_tau(loss.tau)
            .with_alpha(loss.alpha)
            .init()
            .map_err(error)?
            .try_forward(logits, targets)
            .map_err(error)?,
        LossKind::HardSvm => HardTopkSvmLossConfig::new()
            .with_k(loss.k)
            .with_alpha(loss.alpha)
            .init()
            .map_err(error)?
            .try_forward(logits, targets)
            .map_err(error)?,
    })
}

fn shard_device(model: &Classifier) -> Device {
    model
        .devices()
        .into_iter()
        .next()
        .unwrap_or_else(Device::flex)
}

impl TrainStep for Classifier {
    type Input = Shard;
    type Output = ShardOutput;

    /// Forward, checks the logits, loss, backward. Non-finite logits or loss give no gradient
    /// and an explanation instead (the caller stops the run).
    fn step(&self, shard: Shard) -> TrainOutput<ShardOutput> {
        let device = shard_device(self);
        let count = shard.labels.len();
        let none = |index, why: String| TrainOutput {
            grads: GradientsParams::new(),
            item: ShardOutput {
                index,
                logits: Err(why),
                loss: f64::NAN,
            },
        };
        let images = images_tensor(shard.images, count, &shard.view, &device);
        let logits = self.forward(images);
        let host = match host_floats(logits.clone()) {
            Ok(host) => host,
            Err(e) => return none(shard.index, e.to_string()),
        };
        if let Some(bad) = host.iter().position(|v| !v.is_finite()) {
            let n = host.len() / count.max(1);
            return none(
                shard.index,
                format!(
                    "logit {} of sample {} is {}",
                    bad % n.max(1),
                    bad / n.max(1),
                    host[bad]
                ),
            );
        }
        let targets = Tensor::<1, Int>::from_data(TensorData::new(shard.labels, [count]), &device);
        let loss = match batch_loss(&shard.loss, shard.noise_key, logits, targets) {
            Ok(loss) => loss.mul_scalar(shard.weight),
            Err(e) => return none(shard.index, e),
        };
        let value = match host_floats(loss.clone()) {
            Ok(v) => f64::from(v[0]),
            Err(e) => return none(shard.index, e.to_string()),
        };
        if !value.is_finite() {
            return none(shard.index, format!("the loss is {value}"));
        }
        TrainOutput::new(
            self,
            loss.backward(),
            ShardOutput {
                index: shard.index,
                logits: Ok(host),
                loss: value,
            },
        )
    }
}

impl InferenceStep for Classifier {
    type Input = Shard;
    type Output = ShardOutput;

    /// The shard's logits.
    fn step(&self, shard: Shard) -> ShardOutput {
        let device = shard_device(self);
        let count = shard.labels.len();
        let images = images_tensor(shard.images, count, &shard.view, &device);
        ShardOutput {
            index: shard.index,
            logits: host_floats(self.forward(images)).map_err(|e| e.to_string()),
            loss: f64::NAN,
        }
    }
}

/// A data loader of one item: the shard a worker takes this step.
struct OneShard(Option<Shard>);

impl Iterator for OneShard {
    type Item = Result<Shard, DatasetError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.take().map(Ok)
    }
}

impl DataLoaderIterator<Shard> for OneShard {
    fn progress(&self) -> Progress {
        Progress::new(usize::from(self.0.is_none()), 1, None)
    }
}

/// The outcome of a step.
pub(crate) enum Stepped {
    /// The updated model, the batch's mean loss and its logits (batch order).
    Done {
        model: Classifier,
        loss: f64,
        logits: Vec<f32>,
    },
    /// Non-finite logits or loss: the reason, and the model as it was.
    Diverged { model: Classifier, why: String },
}

/// The run's devices and their workers.
pub(crate) struct Replicas {
    workers: MultiDevicesTrainStep<Classifier>,
    main: Device,
    count: usize,
}

impl Replicas {
    /// Workers on `devices` (autodiff devices; the first is the main one).
    pub(crate) fn new(devices: &[Device]) -> Result<Self, TrainError> {
        let main = devices
            .first()
            .cloned()
            .ok_or_else(|| TrainError::InvalidConfig("no device".into()))?;
        Ok(Replicas {
            workers: MultiDevicesTrainStep::new(devices),
            main,
            count: devices.len(),
        })
    }

    /// One SGD step of `model` on `batch` at learning rate `lr`; `step_key` names the step (a
    /// stochastic loss draws its noise from it).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn step(
        &self,
        model: Classifier,
        optim: &mut ModuleOptimizer,
        lr: f64,
        batch: Batch,
        view: &View,
        loss: &LossConfig,
        step_key: u64,
    ) -> Result<Stepped, TrainError> {
        let len = batch.len();
        let shards = self.shards(batch, view, loss, step_key);
        // burn's step asks every worker's loader for an item: the workers without a shard
        // (a batch smaller than the number of devices) get an empty one.
        let mut shards = shards.into_iter();
        let mut loaders: Vec<Box<dyn DataLoaderIterator<Shard>>> = (0..self.count)
            .map(|_| Box::new(OneShard(shards.next())) as Box<dyn DataLoaderIterator<Shard>>)
            .collect();
        let (outputs, _) = self
            .workers
            .step(&mut loaders, &model)
            .map_err(|e| TrainError::Device(e.to_string()))?;
        // Workers answer in the order they finish; sum in shard order, so that the result does
        // not depend on timing.
        let mut outputs: Vec<_> = outputs.into_iter().map(|o| o.output).collect();
        outputs.sort_by_key(|o| o.item.index);
        let mut accumulator = GradientsAccumulator::new();
        let mut logits = Vec::with_capacity(len);
        let mut total = 0.0;
        for output in outputs {
            match output.item.logits {
                Ok(part) => logits.extend(part),
                Err(why) => return Ok(Stepped::Diverged { model, why }),
            }
            total += output.item.loss;
            accumulator.accumulate(&model, output.grads.to_device(&self.main, &model));
        }
        let model = optim.step(lr, model, accumulator.grads());
        Ok(Stepped::Done {
            model,
            loss: total,
            logits,
        })
    }

    /// Contiguous shards of nearly equal size, one per device (fewer when the batch has fewer
    /// images than there are devices).
    fn shards(&self, batch: Batch, view: &View, loss: &LossConfig, step_key: u64) -> Vec<Shard> {
        let len = batch.len();
        let per_image = batch.images.len() / len.max(1);
        let parts = self.count.min(len).max(1);
        let mut images = batch.images;
        let mut labels: Vec<i64> = batch.labels.iter().map(|&l| i64::from(l)).collect();
        // Shard i holds len / parts images, the first len % parts one more; cut from the end.
        let mut shards = Vec::with_capacity(parts);
        for index in (0..parts).rev() {
            let size = len / parts + usize::from(index < len % parts);
            let start = labels.len() - size;
            shards.push(Shard {
                index,
                images: images.split_off(start * per_image),
                labels: labels.split_off(start),
                view: *view,
                loss: *loss,
                // Shards are told apart by position: the core's noise streams are per row of
                // a call, and each shard is its own call.
                noise_key: step_key.wrapping_mul(1 << 16).wrapping_add(index as u64),
                weight: size as f64 / len as f64,
            });
        }
        shards.reverse();
        shards
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LossKind;
    use crate::models::ModelKind;
    use crate::step_bench::{bench_view, random_batch};
    use crate::train::optimizer;
    use burn::module::Module;

    fn params(model: &Classifier) -> Vec<f32> {
        let mut all = Vec::new();
        struct Collect<'a>(&'a mut Vec<f32>);
        impl burn::module::ModuleVisitor for Collect<'_> {
            fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
                self.0
                    .extend(param.val().into_data().try_into_vec_as::<f32>().unwrap());
            }
        }
        model.visit(&mut Collect(&mut all));
        all
    }

    /// Two or three workers on the CPU device (one device, several replicas) take the same step
    /// as one: the shard gradients, weighted by their share of the batch, sum to the batch's.
    #[test]
    fn sharded_steps_match_one_device_up_to_rounding() {
        let side = 8;
        let view = bench_view(side);
        for kind in [LossKind::Ce, LossKind::Svm] {
            let loss = LossConfig {
                k: 3,
                tau: 0.5,
                ..LossConfig::new(kind)
            };
            let config = crate::TrainConfig::defaults(crate::DataSource::Synthetic, kind);
            // One initial model for every worker count (the device generator is shared by the
            // tests running in parallel, so each count must not draw its own).
            let initial_model = ModelKind::Mlp.init(10, side, &Device::flex().autodiff());
            let step_with = |workers: usize| {
                let devices = vec![Device::flex().autodiff(); workers];
                let replicas = Replicas::new(&devices).unwrap();
                let mut model = initial_model.clone();
                let initial = params(&model);
                let mut optim = optimizer(&config);
                let mut losses = Vec::new();
                for _ in 0..3 {
                    match replicas
                        .step(
                            model,
                            &mut optim,
                            0.1,
                            random_batch(13, side, 10, 4),
                            &view,
                            &loss,
                            0,
                        )
                        .unwrap()
                    {
                        Stepped::Done {
                            model: next,
                            loss,
                            logits,
                        } => {
                            assert_eq!(logits.len(), 13 * 10);
                            losses.push(loss);
                            model = next;
                        }
                        Stepped::Diverged { why, .. } => panic!("{why}"),
                    }
                }
                let trained = params(&model);
                // The steps moved the weights: the comparison is not of untouched models.
                assert_ne!(trained, initial);
                (trained, losses)
            };
            let (one, one_losses) = step_with(1);
            // Three workers for 13 images, and 16 workers: more than the batch has images.
            for workers in [2, 3, 16] {
                let (many, many_losses) = step_with(workers);
                let worst = one
                    .iter()
                    .zip(&many)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(
                    worst < 1e-5,
                    "{kind:?}, {workers} workers: parameters differ by {worst}"
                );
                for (a, b) in one_losses.iter().zip(&many_losses) {
                    assert!((a - b).abs() < 1e-5 * a.abs().max(1.0), "{a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn a_non_finite_logit_stops_the_step_without_touching_the_model() {
        let side = 8;
        let view = bench_view(side);
        let device = Device::flex().autodiff();
        let replicas = Replicas::new(std::slice::from_ref(&device)).unwrap();
        let model = ModelKind::Mlp.init(10, side, &device);
        let before = params(&model);
        let mut optim = optimizer(&crate::TrainConfig::defaults(
            crate::DataSource::Synthetic,
            LossKind::Svm,
        ));
        let mut bad = random_batch(4, side, 10, 4);
        bad.images[5] = f32::NAN;
        let loss = LossConfig::new(LossKind::Svm);
        match replicas
            .step(model, &mut optim, 0.1, bad, &view, &loss, 0)
            .unwrap()
        {
            Stepped::Diverged { model, why } => {
                assert!(why.contains("is NaN"), "{why}");
                assert_eq!(params(&model), before);
            }
            Stepped::Done { .. } => panic!("a NaN input trained"),
        }
    }
}
