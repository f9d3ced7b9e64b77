//! Loss modules for the field's other top-k losses, built like the SVMs' (`Config` validated at
//! `init`, `forward`, `try_forward`, `forward_no_reduction`), on the same backend op: the CPU
//! backends run the numeric core on their buffers, the CubeCL backends on the host copy of the
//! batch (their kernels compute the smooth SVM family only).

use crate::loss::{forward_methods, is_sum, one_line, reduction_name};
use burn::config::Config;
use burn::module::{Content, DisplaySettings, Module, ModuleDisplay};
use burn::nn::loss::Reduction;
use smooth_topk::{
    AnyLoss, NoisedTopkHinge, Top1Mode, TopkCrossEntropy, TopkError, TruncatedTopkEntropy,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Configuration of [`TruncatedTopkEntropyLoss`].
#[derive(Config, Debug)]
pub struct TruncatedTopkEntropyLossConfig {
    /// The k of top-k. Default 5.
    #[config(default = 5)]
    pub k: usize,
    /// `Mean` (default; also for `Auto` and `BatchMean`) or `Sum` over the batch.
    #[config(default = "Reduction::Mean")]
    pub reduction: Reduction,
}

impl TruncatedTopkEntropyLossConfig {
    /// Validates `k >= 1`.
    pub fn init(&self) -> Result<TruncatedTopkEntropyLoss, TopkError> {
        Ok(TruncatedTopkEntropyLoss {
            loss: TruncatedTopkEntropy::new(self.k)?,
            sum: is_sum(&self.reduction),
        })
    }
}

/// The truncated top-k entropy of Lapin, Hein and Schiele (CVPR 2016): per sample of logits `s`
/// and target `y`, `ln(1 + sum_{j in R} exp(s_j - s_y))` with `R` the classes other than `y`
/// without the k - 1 highest-scoring ones (`k = 1`: cross-entropy); exact gradient.
#[derive(Module, Debug)]
#[module(custom_display)]
pub struct TruncatedTopkEntropyLoss {
    #[module(skip)]
    loss: TruncatedTopkEntropy,
    sum: bool,
}

impl TruncatedTopkEntropyLoss {
    fn core(&self) -> AnyLoss {
        self.loss.into()
    }
    /// The k of top-k.
    pub fn k(&self) -> usize {
        self.loss.k()
    }
}
forward_methods!(TruncatedTopkEntropyLoss);

/// Configuration of [`NoisedTopkHingeLoss`].
#[derive(Config, Debug)]
pub struct NoisedTopkHingeLossConfig {
    /// The k of top-k. Default 5.
    #[config(default = 5)]
    pub k: usize,
    /// Standard deviation of the smoothing noise. Default 1 (`pytopk`'s `NoisedTopK`).
    #[config(default = 1.0)]
    pub epsilon: f64,
    /// Noise draws per sample. Default 5 (`pytopk`'s).
    #[config(default = 5)]
    pub n_sample: usize,
    /// Per-class margins for the imbalanced loss (`None`: the balanced loss, margin 1).
    #[config(default = "None")]
    pub margins: Option<Vec<f64>>,
    /// Factor on the imbalanced hinge (the paper's 50 assumes normalised logits). Default 1.
    #[config(default = 1.0)]
    pub scale: f64,
    /// Seed of the noise; each forward call draws from the next step's seed. Default 0.
    #[config(default = 0)]
    pub seed: u64,
    /// `Mean` (default; also for `Auto` and `BatchMean`) or `Sum` over the batch.
    #[config(default = "Reduction::Mean")]
    pub reduction: Reduction,
}

impl NoisedTopkHingeLossConfig {
    /// Validates `k >= 1`, a finite `epsilon >= 0`, `n_sample >= 1`, and for the imbalanced loss
    /// finite margins `>= 0` and a finite `scale > 0`.
    pub fn init(&self) -> Result<NoisedTopkHingeLoss, TopkError> {
        let loss = match &self.margins {
            None => NoisedTopkHinge::balanced(self.k, self.epsilon, self.n_sample)?,
            Some(m) => NoisedTopkHinge::imbalanced(
                self.k,
                self.epsilon,
                self.n_sample,
                m.clone(),
                self.scale,
            )?,
        };
        Ok(NoisedTopkHingeLoss {
            loss: loss.with_seed(self.seed),
            step: Arc::new(AtomicU64::new(0)),
            sum: is_sum(&self.reduction),
        })
    }
}

/// The noised top-k hinge of Garcin et al. (ICML 2022): per sample,
/// `scale * max(0, m_y + mean_d top_{k+1}(s + epsilon Z_d) - s_y)` with Gaussian `Z_d`, and the
/// paper's gradient estimator. Each forward call draws fresh noise, deterministically: call `c`
/// of a module uses the noise of step `c` of its seed (clones share the count).
#[derive(Module, Debug)]
#[module(custom_display)]
pub struct NoisedTopkHingeLoss {
    #[module(skip)]
    loss: NoisedTopkHinge,
    #[module(skip)]
    step: Arc<AtomicU64>,
    sum: bool,
}

impl NoisedTopkHingeLoss {
    fn core(&self) -> AnyLoss {
        let step = self.step.fetch_add(1, Ordering::Relaxed);
        AnyLoss::from(self.loss.clone()).for_step(step)
    }
    /// The configured core loss.
    pub fn loss(&self) -> &NoisedTopkHinge {
        &self.loss
    }
    /// Forward calls so far (the next call's step).
    pub fn steps(&self) -> u64 {
        self.step.load(Ordering::Relaxed)
    }
}
forward_methods!(NoisedTopkHingeLoss);

/// How the top-k cross-entropy scores its top-1 part, as `difftopk` names the modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, burn::serde::Serialize, burn::serde::Deserialize)]
#[serde(crate = "burn::serde", rename_all = "lowercase")]
pub enum Top1 {
    /// The softmax of the scores.
    Sm,
    /// The relaxed permutation, as every other k.
    Sort,
    /// A separate cross-entropy term weighted by `p_1`.
    Smce,
}

/// Configuration of [`TopkCrossEntropyLoss`].
#[derive(Config, Debug)]
pub struct TopkCrossEntropyLossConfig {
    /// The rank distribution `p_1..p_K` (sums to 1). Default `[0.2; 5]`.
    #[config(default = "vec![0.2, 0.2, 0.2, 0.2, 0.2]")]
    pub p_k: Vec<f64>,
    /// NeuralSort temperature (`difftopk`'s `1 / inverse_temperature`). Default 1.
    #[config(default = 1.0)]
    pub tau: f64,
    /// Keep the label and the `m - 1` largest other scores (`None`: all). Default `None`.
    #[config(default = "None")]
    pub m: Option<usize>,
    /// How the top-1 part is scored. Default `Sm`.
    #[config(default = "Top1::Sm")]
    pub top1_mode: Top1,
    /// Floor under the top-k probability. Default 1e-7 (`difftopk`'s).
    #[config(default = 1e-7)]
    pub floor: f64,
    /// `Mean` (default; also for `Auto` and `BatchMean`) or `Sum` over the batch.
    #[config(default = "Reduction::Mean")]
    pub reduction: Reduction,
}

impl TopkCrossEntropyLossConfig {
    /// Validates `p_k`, `tau`, `m` and the floor as [`TopkCrossEntropy`] does.
    pub fn init(&self) -> Result<TopkCrossEntropyLoss, TopkError> {
        let top1 = match self.top1_mode {
            Top1::Sm => Top1Mode::Softmax,
            Top1::Sort => Top1Mode::Sort,
            Top1::Smce => Top1Mode::SoftmaxCe,
        };
        let loss = TopkCrossEntropy::new(&self.p_k, self.tau, self.m)?
            .with_top1(top1)
            .with_floor(self.floor)?;
        Ok(TopkCrossEntropyLoss {
            loss,
            sum: is_sum(&self.reduction),
        })
    }
}

/// The top-k cross-entropy of Petersen et al. (ICML 2022) over NeuralSort: per sample,
/// `-ln(f + (1 - 2f) D)` with `D` the `p_k`-weighted relaxed probability that the label is in
/// the top k; exact gradient.
#[derive(Module, Debug)]
#[module(custom_display)]
pub struct TopkCrossEntropyLoss {
    #[module(skip)]
    loss: TopkCrossEntropy,
    sum: bool,
}

impl TopkCrossEntropyLoss {
    fn core(&self) -> AnyLoss {
        self.loss.clone().into()
    }
    /// The configured core loss.
    pub fn loss(&self) -> &TopkCrossEntropy {
        &self.loss
    }
}
forward_methods!(TopkCrossEntropyLoss);

impl ModuleDisplay for TruncatedTopkEntropyLoss {
    fn custom_settings(&self) -> Option<DisplaySettings> {
        one_line()
    }
    fn custom_content(&self, content: Content) -> Option<Content> {
        content
            .add("k", &self.loss.k())
            .add("reduction", reduction_name(self.sum))
            .optional()
    }
}

impl ModuleDisplay for NoisedTopkHingeLoss {
    fn custom_settings(&self) -> Option<DisplaySettings> {
        one_line()
    }
    fn custom_content(&self, content: Content) -> Option<Content> {
        let kind = if self.loss.margins().is_some() {
            "imbalanced"
        } else {
            "balanced"
        };
        content
            .add("k", &self.loss.k())
            .add("epsilon", &self.loss.epsilon())
            .add("n_sample", &self.loss.n_sample())
            .add("margins", kind)
            .add("scale", &self.loss.scale())
            .add("reduction", reduction_name(self.sum))
            .optional()
    }
}

impl ModuleDisplay for TopkCrossEntropyLoss {
    fn custom_settings(&self) -> Option<DisplaySettings> {
        one_line()
    }
    fn custom_content(&self, content: Content) -> Option<Content> {
        content
            .add("K", &self.loss.k())
            .add("tau", &self.loss.tau())
            .add("m", &format!("{:?}", self.loss.m()))
            .add("reduction", reduction_name(self.sum))
            .optional()
    }
}
