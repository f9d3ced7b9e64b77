//! # smooth-topk
//!
//! Top-k classification losses for Rust, centred on the smooth top-k SVM of Berrada, Zisserman
//! and Kumar, "Smooth Loss Functions for Deep Top-k Classification" (ICLR 2018):
//!
//! * [`SmoothTopkSvm`]: `L_{k,tau}` and its exact gradient for every `1 <= k < n`, in O(nk)
//!   per sample, stable for any finite scores in `f32` or `f64`;
//! * [`HardTopkSvm`]: `l_k = max(0, alpha + (s_\y[k] - s_y) / k)` and a subgradient;
//! * [`CrossEntropy`]: the baseline, computed as carefully;
//! * the field's other top-k losses: [`TruncatedTopkEntropy`] (Lapin et al., CVPR 2016),
//!   [`NoisedTopkHinge`] (Garcin et al., ICML 2022) and [`TopkCrossEntropy`] (Petersen et al.,
//!   ICML 2022, over NeuralSort);
//! * [`log_elementary_symmetric`]: `ln sigma_j(exp(x))` for `j = 0..=k`;
//! * [`topk_accuracy`].
//!
//! Scores are row-major `batch x n` slices; every loss implements [`Loss`], whose methods
//! validate the batch (a typed [`TopkError`] names the bad value) and use all cores.
//!
//! ```
//! use smooth_topk::{Loss, Reduction, SmoothTopkSvm};
//!
//! let loss = SmoothTopkSvm::new(2, 1.0, 1.0)?; // k = 2, tau = 1, alpha = 1
//! let scores = [2.0f32, 0.5, 1.0, -1.0, /* sample 2 */ 0.0, 3.0, 0.1, 0.2];
//! let labels = [0, 2];
//! let (value, grad) = loss.loss_and_grad(&scores, &labels, 4, Reduction::Mean)?;
//! assert!(value > 0.0 && grad.len() == scores.len());
//! # Ok::<(), smooth_topk::TopkError>(())
//! ```

mod any_loss;
mod config;
mod cross_entropy;
mod error;
mod esp;
mod hard_svm;
mod loss;
mod metrics;
mod noised_hinge;
mod number;
mod scalar;
mod simd;
mod smooth_svm;
mod topk_ce;
mod truncated_entropy;

pub use any_loss::AnyLoss;
pub use cross_entropy::CrossEntropy;
pub use error::{Result, TopkError};
pub use esp::log_elementary_symmetric;
pub use hard_svm::HardTopkSvm;
pub use loss::{Loss, Reduction};
pub use metrics::{label_rank, topk_accuracy, topk_correct};
pub use noised_hinge::NoisedTopkHinge;
pub use scalar::Scalar;
pub use smooth_svm::SmoothTopkSvm;
pub use topk_ce::{Top1Mode, TopkCrossEntropy, DIFFTOPK_FLOOR};
pub use truncated_entropy::TruncatedTopkEntropy;

/// The README's Rust example is compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
