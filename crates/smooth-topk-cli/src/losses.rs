//! The loss selected on the command line, dispatched to the library's types.

use clap::{Args, ValueEnum};
use smooth_topk::{
    AnyLoss, CrossEntropy, HardTopkSvm, NoisedTopkHinge, SmoothTopkSvm, Top1Mode, TopkCrossEntropy,
    TopkError, TruncatedTopkEntropy,
};

/// Which loss to evaluate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LossName {
    /// Smooth top-k SVM L_{k,tau} (`train --loss svm` spells it the same way).
    #[value(alias = "smooth-svm")]
    Svm,
    /// Hard top-k SVM l_k.
    HardSvm,
    /// Softmax cross-entropy.
    Ce,
    /// Truncated top-k entropy (Lapin et al.).
    Entr,
    /// Noised top-k hinge (Garcin et al.), balanced, or imbalanced with --margins.
    Noised,
    /// Top-k cross-entropy over NeuralSort (Petersen et al.); temperature --tau.
    TopkCe,
}

impl LossName {
    pub fn as_str(self) -> &'static str {
        match self {
            LossName::Svm => "svm",
            LossName::HardSvm => "hard-svm",
            LossName::Ce => "ce",
            LossName::Entr => "entr",
            LossName::Noised => "noised",
            LossName::TopkCe => "topk-ce",
        }
    }
}

/// Top-1 scoring of the top-k cross-entropy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Top1 {
    /// The softmax (difftopk's "sm").
    Sm,
    /// The relaxed permutation (difftopk's "sort").
    Sort,
    /// p_1 cross-entropy plus the rest's weight times the k >= 2 part (difftopk's "smce").
    Smce,
}

/// Settings of the field's other losses.
#[derive(Args, Debug, Clone)]
pub struct OtherArgs {
    /// Noised hinge: standard deviation of the smoothing noise.
    #[arg(long, default_value_t = 1.0)]
    pub epsilon: f64,
    /// Noised hinge: noise draws per sample.
    #[arg(long, default_value_t = 5)]
    pub n_sample: usize,
    /// Noised hinge: seed of the noise (sample i of the input draws from stream i).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Imbalanced noised hinge: one margin per class, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub margins: Option<Vec<f64>>,
    /// Imbalanced noised hinge: factor on the hinge.
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Top-k cross-entropy: p_1..p_K, comma-separated (default: 0.5 on top-1, 0.5 on top-k).
    #[arg(long, value_delimiter = ',')]
    pub p_k: Option<Vec<f64>>,
    /// Top-k cross-entropy: keep the label's and the m - 1 largest other scores (default all).
    #[arg(long)]
    pub m: Option<usize>,
    /// Top-k cross-entropy: how top-1 is scored.
    #[arg(long, value_enum, default_value = "sm")]
    pub top1: Top1,
    /// Top-k cross-entropy: floor under the top-k probability.
    #[arg(long, default_value_t = 1e-7)]
    pub floor: f64,
}

impl Default for OtherArgs {
    fn default() -> Self {
        OtherArgs {
            epsilon: 1.0,
            n_sample: 5,
            seed: 0,
            margins: None,
            scale: 1.0,
            p_k: None,
            m: None,
            top1: Top1::Sm,
            floor: 1e-7,
        }
    }
}

/// `[0.5, 0, .., 0, 0.5]` of length k (`[1]` for k = 1).
pub fn default_p_k(k: usize) -> Result<Vec<f64>, TopkError> {
    if k == 0 {
        return Err(TopkError::ZeroK);
    }
    // p_k has k entries: refuse a k no class count reaches before allocating.
    if k > 1 << 20 {
        return Err(TopkError::TooLarge {
            what: "k",
            value: k,
        });
    }
    let mut p = vec![0.0; k];
    p[0] += 0.5;
    p[k - 1] += 0.5;
    Ok(p)
}

/// Builds and validates the named loss (settings that do not apply to it are ignored).
pub fn build(
    name: LossName,
    k: usize,
    tau: f64,
    alpha: f64,
    reference_switch: bool,
    other: &OtherArgs,
) -> Result<AnyLoss, TopkError> {
    Ok(match name {
        LossName::Svm => SmoothTopkSvm::new(k, tau, alpha)?
            .with_reference_hard_switch(reference_switch)
            .into(),
        LossName::HardSvm => HardTopkSvm::new(k, alpha)?.into(),
        LossName::Ce => CrossEntropy.into(),
        LossName::Entr => TruncatedTopkEntropy::new(k)?.into(),
        LossName::Noised => match &other.margins {
            None => NoisedTopkHinge::balanced(k, other.epsilon, other.n_sample)?,
            Some(m) => NoisedTopkHinge::imbalanced(
                k,
                other.epsilon,
                other.n_sample,
                m.clone(),
                other.scale,
            )?,
        }
        .with_seed(other.seed)
        .into(),
        LossName::TopkCe => {
            let p_k = match &other.p_k {
                Some(p) => p.clone(),
                None => default_p_k(k)?,
            };
            let top1 = match other.top1 {
                Top1::Sm => Top1Mode::Softmax,
                Top1::Sort => Top1Mode::Sort,
                Top1::Smce => Top1Mode::SoftmaxCe,
            };
            TopkCrossEntropy::new(&p_k, tau, other.m)?
                .with_top1(top1)
                .with_floor(other.floor)?
                .into()
        }
    })
}
