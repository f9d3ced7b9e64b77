//! Loss modules in the style of `burn::nn::loss::CrossEntropyLoss`: a `Config` with `init()`,
//! a `Module` with `forward(logits, targets)`.

use crate::backend::TopkLossBackend;
use burn::backend::Dispatch;
use burn::config::Config;
use burn::module::Module;
use burn::nn::loss::Reduction;
use burn::tensor::{Int, Tensor};
use smooth_topk::{AnyLoss, HardTopkSvm, Loss, SmoothTopkSvm, TopkError};

/// Per-sample losses `[batch]` of any core loss, on any backend implementing
/// [`TopkLossBackend`] (panics on backends without it). Checks the shapes first.
pub fn topk_loss_per_sample(
    logits: Tensor<2>,
    targets: Tensor<1, Int>,
    loss: AnyLoss,
) -> Result<Tensor<1>, TopkError> {
    let [batch, n] = logits.dims();
    if batch == 0 {
        return Err(TopkError::EmptyBatch);
    }
    if n < loss.min_classes() {
        return Err(TopkError::TooFewClasses {
            n,
            min: loss.min_classes(),
        });
    }
    let [labels] = targets.dims();
    if labels != batch {
        return Err(TopkError::ShapeMismatch {
            what: "targets",
            got: labels,
            expected: batch,
        });
    }
    Ok(Tensor::from_dispatch(
        <Dispatch as TopkLossBackend>::topk_loss(
            logits.into_dispatch(),
            targets.into_dispatch(),
            loss,
        ),
    ))
}

/// Per-sample losses reduced by sum or mean (shape `[1]`), shape errors returned.
fn reduced(
    logits: Tensor<2>,
    targets: Tensor<1, Int>,
    loss: AnyLoss,
    sum: bool,
) -> Result<Tensor<1>, TopkError> {
    let per_sample = topk_loss_per_sample(logits, targets, loss)?;
    Ok(if sum {
        per_sample.sum()
    } else {
        per_sample.mean()
    })
}

/// Raises a shape error like burn's own losses do (they assert on shapes).
fn or_panic(result: Result<Tensor<1>, TopkError>) -> Tensor<1> {
    result.unwrap_or_else(|e| panic!("smooth-topk: {e}"))
}

fn is_sum(reduction: &Reduction) -> bool {
    matches!(reduction, Reduction::Sum)
}

/// Configuration of [`SmoothTopkSvmLoss`], the smooth top-k SVM `L_{k,tau}`.
#[derive(Config, Debug)]
pub struct SmoothTopkSvmLossConfig {
    /// The k of top-k. Default 5.
    #[config(default = 5)]
    pub k: usize,
    /// Temperature. Default 1 (the paper's CIFAR-100 setting; 0.1 for ImageNet).
    #[config(default = 1.0)]
    pub tau: f64,
    /// Margin. Default 1.
    #[config(default = 1.0)]
    pub alpha: f64,
    /// `Mean` (default; also for `Auto` and `BatchMean`) or `Sum` over the batch.
    #[config(default = "Reduction::Mean")]
    pub reduction: Reduction,
}

impl SmoothTopkSvmLossConfig {
    /// Validates `k >= 1`, finite `tau > 0`, finite `alpha >= 0`.
    pub fn init(&self) -> Result<SmoothTopkSvmLoss, TopkError> {
        SmoothTopkSvm::new(self.k, self.tau, self.alpha)?;
        Ok(SmoothTopkSvmLoss {
            k: self.k,
            tau: self.tau,
            alpha: self.alpha,
            sum: is_sum(&self.reduction),
        })
    }
}

/// The smooth top-k SVM of Berrada et al. with an exact hand-written backward.
#[derive(Module, Debug)]
pub struct SmoothTopkSvmLoss {
    /// The k of top-k.
    pub k: usize,
    /// Temperature.
    pub tau: f64,
    /// Margin.
    pub alpha: f64,
    sum: bool,
}

impl SmoothTopkSvmLoss {
    fn core(&self) -> AnyLoss {
        SmoothTopkSvm::new(self.k, self.tau, self.alpha)
            .expect("validated by init")
            .into()
    }

    /// The reduced loss (shape `[1]`) of `logits [batch, n]` against `targets [batch]`.
    ///
    /// # Panics
    /// If `n <= k` or the shapes disagree (see [`Self::try_forward`]), or on a label outside
    /// `0..n` or a non-finite logit.
    pub fn forward(&self, logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
        or_panic(self.try_forward(logits, targets))
    }

    /// [`Self::forward`] with the shape errors returned instead of raised.
    pub fn try_forward(
        &self,
        logits: Tensor<2>,
        targets: Tensor<1, Int>,
    ) -> Result<Tensor<1>, TopkError> {
        reduced(logits, targets, self.core(), self.sum)
    }

    /// Per-sample losses `[batch]`.
    pub fn forward_per_sample(&self, logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
        or_panic(topk_loss_per_sample(logits, targets, self.core()))
    }
}

/// Configuration of [`HardTopkSvmLoss`], the hard top-k SVM `l_k`.
#[derive(Config, Debug)]
pub struct HardTopkSvmLossConfig {
    /// The k of top-k. Default 5.
    #[config(default = 5)]
    pub k: usize,
    /// Margin. Default 1.
    #[config(default = 1.0)]
    pub alpha: f64,
    /// `Mean` (default; also for `Auto` and `BatchMean`) or `Sum` over the batch.
    #[config(default = "Reduction::Mean")]
    pub reduction: Reduction,
}

impl HardTopkSvmLossConfig {
    /// Validates `k >= 1` and finite `alpha >= 0`.
    pub fn init(&self) -> Result<HardTopkSvmLoss, TopkError> {
        HardTopkSvm::new(self.k, self.alpha)?;
        Ok(HardTopkSvmLoss {
            k: self.k,
            alpha: self.alpha,
            sum: is_sum(&self.reduction),
        })
    }
}

/// The hard top-k SVM `max(0, alpha + (s_\y[k] - s_y) / k)` with its subgradient.
#[derive(Module, Debug)]
pub struct HardTopkSvmLoss {
    /// The k of top-k.
    pub k: usize,
    /// Margin.
    pub alpha: f64,
    sum: bool,
}

impl HardTopkSvmLoss {
    fn core(&self) -> AnyLoss {
        HardTopkSvm::new(self.k, self.alpha)
            .expect("validated by init")
            .into()
    }

    /// The reduced loss (shape `[1]`); panics like [`SmoothTopkSvmLoss::forward`].
    pub fn forward(&self, logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
        or_panic(self.try_forward(logits, targets))
    }

    /// [`Self::forward`] with the shape errors returned instead of raised.
    pub fn try_forward(
        &self,
        logits: Tensor<2>,
        targets: Tensor<1, Int>,
    ) -> Result<Tensor<1>, TopkError> {
        reduced(logits, targets, self.core(), self.sum)
    }

    /// Per-sample losses `[batch]`.
    pub fn forward_per_sample(&self, logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
        or_panic(topk_loss_per_sample(logits, targets, self.core()))
    }
}
