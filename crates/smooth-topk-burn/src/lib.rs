//! # smooth-topk-burn
//!
//! The smooth top-k SVM of Berrada et al. (ICLR 2018) for [burn](https://burn.dev) 0.22, with
//! the exact gradient of the `smooth-topk` numeric core as a hand-written backward.
//!
//! Switching a classifier from cross-entropy is one line:
//!
//! ```
//! use burn::tensor::{Device, Int, Tensor, TensorData};
//! use smooth_topk_burn::SmoothTopkSvmLossConfig;
//!
//! let device = Device::flex().autodiff();
//! let logits = Tensor::<2>::from_floats([[2.0, 0.5, 1.0, -1.0], [0.0, 3.0, 0.1, 0.2]], &device)
//!     .require_grad();
//! let targets = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 2], [2]), &device);
//! // was: CrossEntropyLossConfig::new().init(&device).forward(logits.clone(), targets)
//! let loss = SmoothTopkSvmLossConfig::new().with_k(2).init()?.forward(logits.clone(), targets);
//! let grads = loss.backward();
//! assert_eq!(logits.grad(&grads).unwrap().dims(), [2, 4]);
//! # Ok::<(), smooth_topk::TopkError>(())
//! ```
//!
//! The field's other top-k losses have modules of the same shape: [`TruncatedTopkEntropyLoss`]
//! (Lapin et al.), [`NoisedTopkHingeLoss`] (Garcin et al.), [`TopkCrossEntropyLoss`] (Petersen
//! et al., over NeuralSort); on the CubeCL backends they run on the host copy of the batch.
//!
//! Backends: Flex and NdArray (feature `ndarray`, default) run the numeric core on the host
//! buffers; with feature `wgpu` or `cuda` the CubeCL backends run one fused kernel per batch on
//! the device; `Autodiff` over any of them gets the exact backward. Metrics: burn-train's
//! `TopKAccuracyMetric` and `LossMetric` work as they are with `ClassificationOutput`.

mod backend;
#[cfg(feature = "cube")]
mod gpu;
#[cfg(feature = "cube")]
mod kernel;
mod loss;
mod other;

pub use backend::TopkLossBackend;
#[cfg(feature = "cube")]
pub use gpu::{pinned_plan_fallbacks, set_kernel_plan, KernelPlan};
pub use loss::{
    topk_loss_per_sample, HardTopkSvmLoss, HardTopkSvmLossConfig, SmoothTopkSvmLoss,
    SmoothTopkSvmLossConfig,
};
pub use other::{
    NoisedTopkHingeLoss, NoisedTopkHingeLossConfig, Top1, TopkCrossEntropyLoss,
    TopkCrossEntropyLossConfig, TruncatedTopkEntropyLoss, TruncatedTopkEntropyLossConfig,
};
pub use smooth_topk::{AnyLoss, TopkError};
