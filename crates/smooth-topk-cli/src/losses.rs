//! The loss selected on the command line, dispatched to the library's types.

use clap::ValueEnum;
use smooth_topk::{CrossEntropy, HardTopkSvm, Loss, Scalar, SmoothTopkSvm, TopkError, Workspace};

/// Which loss to evaluate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LossName {
    /// Smooth top-k SVM L_{k,tau}.
    SmoothSvm,
    /// Hard top-k SVM l_k.
    HardSvm,
    /// Softmax cross-entropy.
    Ce,
}

impl LossName {
    pub fn as_str(self) -> &'static str {
        match self {
            LossName::SmoothSvm => "smooth-svm",
            LossName::HardSvm => "hard-svm",
            LossName::Ce => "ce",
        }
    }
}

/// A configured loss of any kind.
#[derive(Debug, Clone, Copy)]
pub enum AnyLoss {
    Smooth(SmoothTopkSvm),
    Hard(HardTopkSvm),
    CrossEntropy(CrossEntropy),
}

impl AnyLoss {
    /// Builds and validates the loss (`k`, `tau`, `alpha` are ignored where they do not apply).
    pub fn new(
        name: LossName,
        k: usize,
        tau: f64,
        alpha: f64,
        reference_switch: bool,
    ) -> Result<Self, TopkError> {
        Ok(match name {
            LossName::SmoothSvm => AnyLoss::Smooth(
                SmoothTopkSvm::new(k, tau, alpha)?.with_reference_hard_switch(reference_switch),
            ),
            LossName::HardSvm => AnyLoss::Hard(HardTopkSvm::new(k, alpha)?),
            LossName::Ce => AnyLoss::CrossEntropy(CrossEntropy),
        })
    }
}

/// Forwards every [`Loss`] method to the variant.
impl Loss for AnyLoss {
    fn min_classes(&self) -> usize {
        match self {
            AnyLoss::Smooth(l) => l.min_classes(),
            AnyLoss::Hard(l) => l.min_classes(),
            AnyLoss::CrossEntropy(l) => l.min_classes(),
        }
    }

    fn sample_loss<T: Scalar>(
        &self,
        scores: &[T],
        label: usize,
        grad: Option<&mut [T]>,
        ws: &mut Workspace,
    ) -> f64 {
        match self {
            AnyLoss::Smooth(l) => l.sample_loss(scores, label, grad, ws),
            AnyLoss::Hard(l) => l.sample_loss(scores, label, grad, ws),
            AnyLoss::CrossEntropy(l) => l.sample_loss(scores, label, grad, ws),
        }
    }
}
