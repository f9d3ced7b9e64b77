//! The loss selected on the command line, dispatched to the library's types.

use clap::ValueEnum;
use smooth_topk::{AnyLoss, CrossEntropy, HardTopkSvm, SmoothTopkSvm, TopkError};

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
}

impl LossName {
    pub fn as_str(self) -> &'static str {
        match self {
            LossName::Svm => "svm",
            LossName::HardSvm => "hard-svm",
            LossName::Ce => "ce",
        }
    }
}

/// Builds and validates the named loss (`k`, `tau`, `alpha` are ignored where they do not apply).
pub fn build(
    name: LossName,
    k: usize,
    tau: f64,
    alpha: f64,
    reference_switch: bool,
) -> Result<AnyLoss, TopkError> {
    Ok(match name {
        LossName::Svm => SmoothTopkSvm::new(k, tau, alpha)?
            .with_reference_hard_switch(reference_switch)
            .into(),
        LossName::HardSvm => HardTopkSvm::new(k, alpha)?.into(),
        LossName::Ce => CrossEntropy.into(),
    })
}
