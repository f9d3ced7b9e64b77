//! Loss modules in the style of `burn::nn::loss::CrossEntropyLoss`: a `Config` with `init()`,
//! a `Module` with `forward(logits, targets)`.

use crate::backend::TopkLossBackend;
use burn::backend::Dispatch;
use burn::config::Config;
use burn::module::{Content, DisplaySettings, Module, ModuleDisplay};
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
    check_shapes(&logits, &targets, &loss)?;
    Ok(dispatch(logits, targets, loss))
}

/// The op itself, on shapes already checked.
fn dispatch(logits: Tensor<2>, targets: Tensor<1, Int>, loss: AnyLoss) -> Tensor<1> {
    Tensor::from_dispatch(<Dispatch as TopkLossBackend>::topk_loss(
        logits.into_dispatch(),
        targets.into_dispatch(),
        loss,
    ))
}

/// A non-empty batch, enough classes for `loss`, one target per row.
fn check_shapes(
    logits: &Tensor<2>,
    targets: &Tensor<1, Int>,
    loss: &AnyLoss,
) -> Result<(), TopkError> {
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
    loss.check_classes(n)?;
    let [labels] = targets.dims();
    if labels != batch {
        return Err(TopkError::ShapeMismatch {
            what: "targets",
            got: labels,
            expected: batch,
        });
    }
    Ok(())
}

/// Per-sample losses reduced by sum or mean (shape `[1]`), shape errors returned; with
/// `check`, label and finiteness errors too.
pub(crate) fn reduced(
    logits: Tensor<2>,
    targets: Tensor<1, Int>,
    loss: AnyLoss,
    sum: bool,
    check: bool,
) -> Result<Tensor<1>, TopkError> {
    check_shapes(&logits, &targets, &loss)?;
    if check {
        let [_, n] = logits.dims();
        check_values(&logits, &targets, n)?;
    }
    let per_sample = dispatch(logits, targets, loss);
    Ok(if sum {
        per_sample.sum()
    } else {
        per_sample.mean()
    })
}

/// The checks of the `try_` methods beyond shapes: every label in `0..n` and every logit finite.
/// Two reductions on the device and one read of a flag each (a device sync); the values are read
/// back only to name the culprit.
fn check_values(logits: &Tensor<2>, targets: &Tensor<1, Int>, n: usize) -> Result<(), TopkError> {
    let out_of_range = targets
        .clone()
        .lower_elem(0)
        .bool_or(targets.clone().greater_equal_elem(n as i64))
        .any()
        .into_scalar::<bool>();
    if out_of_range {
        let labels = targets.clone().into_data().convert::<i64>();
        let values = labels.as_slice::<i64>().unwrap_or(&[]);
        if let Some((sample, &label)) = values
            .iter()
            .enumerate()
            .find(|&(_, &l)| l < 0 || l as u64 >= n as u64)
        {
            return Err(TopkError::LabelOutOfRange {
                sample,
                label: usize::try_from(label).unwrap_or(usize::MAX),
                n,
            });
        }
    }
    let non_finite = logits
        .clone()
        .is_finite()
        .bool_not()
        .any()
        .into_scalar::<bool>();
    if non_finite {
        let data = logits.clone().into_data().convert::<f64>();
        let values = data.as_slice::<f64>().unwrap_or(&[]);
        if let Some((pos, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(TopkError::NonFiniteScore {
                sample: pos / n,
                index: pos % n,
                value,
            });
        }
    }
    Ok(())
}

/// Raises a shape error like burn's own losses do (they assert on shapes).
pub(crate) fn or_panic(result: Result<Tensor<1>, TopkError>) -> Tensor<1> {
    result.unwrap_or_else(|e| panic!("smooth-topk: {e}"))
}

pub(crate) fn is_sum(reduction: &Reduction) -> bool {
    matches!(reduction, Reduction::Sum)
}

/// The methods every loss module shares, over its `core()` (the configured core loss) and
/// `sum` (the reduction).
macro_rules! forward_methods {
    ($module:ident) => {
        impl $module {
            /// The reduced loss (shape `[1]`) of `logits [batch, n]` against `targets [batch]`.
            ///
            /// # Panics
            /// If `n` is too small for the loss or the shapes disagree (see
            /// [`Self::try_forward`]), or on a label outside `0..n` or a non-finite logit.
            pub fn forward(
                &self,
                logits: burn::tensor::Tensor<2>,
                targets: burn::tensor::Tensor<1, burn::tensor::Int>,
            ) -> burn::tensor::Tensor<1> {
                $crate::loss::or_panic($crate::loss::reduced(
                    logits,
                    targets,
                    self.core(),
                    self.sum,
                    false,
                ))
            }

            /// [`Self::forward`] with every input error returned instead of raised: shapes,
            /// labels outside `0..n`, non-finite logits (the last two cost a device sync;
            /// `forward` skips them).
            pub fn try_forward(
                &self,
                logits: burn::tensor::Tensor<2>,
                targets: burn::tensor::Tensor<1, burn::tensor::Int>,
            ) -> Result<burn::tensor::Tensor<1>, smooth_topk::TopkError> {
                $crate::loss::reduced(logits, targets, self.core(), self.sum, true)
            }

            /// Per-sample losses `[batch]`.
            pub fn forward_per_sample(
                &self,
                logits: burn::tensor::Tensor<2>,
                targets: burn::tensor::Tensor<1, burn::tensor::Int>,
            ) -> burn::tensor::Tensor<1> {
                $crate::loss::or_panic($crate::loss::topk_loss_per_sample(
                    logits,
                    targets,
                    self.core(),
                ))
            }

            /// [`Self::forward_per_sample`] under burn's name for it.
            pub fn forward_no_reduction(
                &self,
                logits: burn::tensor::Tensor<2>,
                targets: burn::tensor::Tensor<1, burn::tensor::Int>,
            ) -> burn::tensor::Tensor<1> {
                self.forward_per_sample(logits, targets)
            }
        }
    };
}

pub(crate) use forward_methods;

forward_methods!(SmoothTopkSvmLoss);
forward_methods!(HardTopkSvmLoss);

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

/// The smooth top-k SVM `L_{k,tau}` of Berrada, Zisserman and Kumar, "Smooth Loss Functions for
/// Deep Top-k Classification" (ICLR 2018), with an exact hand-written backward. For logits
/// `s [batch, n]` and targets `y [batch]`, per sample, with `e_j = exp(s_j / (k tau))` and `e'` the
/// entries other than the label's:
///
/// ```text
/// L = tau * ln(1 + exp(alpha / tau) * sigma_k(e') / (e_y * sigma_{k-1}(e')))
/// ```
///
/// (`sigma_j`: the elementary symmetric polynomial of degree j), reduced by mean or sum. `k = 1`
/// is `tau * logsumexp((s + alpha [j != y] - s_y) / tau)`. Its settings are read through `k()`,
/// `tau()`, `alpha()` and changed only through the validated [`Self::set_tau`] (annealing), so
/// a module always holds a valid loss.
#[derive(Module, Debug)]
#[module(custom_display)]
pub struct SmoothTopkSvmLoss {
    k: usize,
    tau: f64,
    alpha: f64,
    sum: bool,
}

impl SmoothTopkSvmLoss {
    fn core(&self) -> AnyLoss {
        SmoothTopkSvm::new(self.k, self.tau, self.alpha)
            .expect("k, tau and alpha are only set validated")
            .into()
    }

    /// The k of top-k.
    pub fn k(&self) -> usize {
        self.k
    }
    /// The temperature.
    pub fn tau(&self) -> f64 {
        self.tau
    }
    /// The margin.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// Sets the temperature (for annealing schedules): a finite `tau > 0`, or an error and no
    /// change.
    pub fn set_tau(&mut self, tau: f64) -> Result<(), TopkError> {
        SmoothTopkSvm::new(self.k, tau, self.alpha)?;
        self.tau = tau;
        Ok(())
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

/// The hard top-k SVM of the same paper with its subgradient: per sample of logits
/// `s [batch, n]` and target `y`,
///
/// ```text
/// l_k = max(0, alpha + (s_\y[k] - s_y) / k)
/// ```
///
/// with `s_\y[k]` the k-th largest logit other than the label's, reduced by mean or sum (`k = 1`
/// is the multiclass hinge loss). Settings read through `k()` and `alpha()`, fixed at `init`.
#[derive(Module, Debug)]
#[module(custom_display)]
pub struct HardTopkSvmLoss {
    k: usize,
    alpha: f64,
    sum: bool,
}

impl HardTopkSvmLoss {
    fn core(&self) -> AnyLoss {
        HardTopkSvm::new(self.k, self.alpha)
            .expect("k and alpha are only set validated")
            .into()
    }

    /// The k of top-k.
    pub fn k(&self) -> usize {
        self.k
    }
    /// The margin.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }
}

/// The loss modules print on one line, as burn's own losses do.
pub(crate) fn one_line() -> Option<DisplaySettings> {
    DisplaySettings::new()
        .with_new_line_after_attribute(false)
        .optional()
}

pub(crate) fn reduction_name(sum: bool) -> &'static str {
    if sum {
        "Sum"
    } else {
        "Mean"
    }
}

impl ModuleDisplay for SmoothTopkSvmLoss {
    fn custom_settings(&self) -> Option<DisplaySettings> {
        one_line()
    }

    fn custom_content(&self, content: Content) -> Option<Content> {
        content
            .add("k", &self.k)
            .add("tau", &self.tau)
            .add("alpha", &self.alpha)
            .add("reduction", reduction_name(self.sum))
            .optional()
    }
}

impl ModuleDisplay for HardTopkSvmLoss {
    fn custom_settings(&self) -> Option<DisplaySettings> {
        one_line()
    }

    fn custom_content(&self, content: Content) -> Option<Content> {
        content
            .add("k", &self.k)
            .add("alpha", &self.alpha)
            .add("reduction", reduction_name(self.sum))
            .optional()
    }
}
