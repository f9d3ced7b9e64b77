//! One type for "any of the losses", for callers that pick the loss at run time (a CLI flag, a
//! framework adapter's op argument).

use crate::loss::{Kernel, Workspace};
use crate::{CrossEntropy, HardTopkSvm, Loss, Scalar, SmoothTopkSvm};

/// A configured loss of any kind; implements [`Loss`] by forwarding to the variant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AnyLoss {
    /// Smooth top-k SVM.
    Smooth(SmoothTopkSvm),
    /// Hard top-k SVM.
    Hard(HardTopkSvm),
    /// Softmax cross-entropy.
    CrossEntropy(CrossEntropy),
}

impl From<SmoothTopkSvm> for AnyLoss {
    fn from(l: SmoothTopkSvm) -> Self {
        AnyLoss::Smooth(l)
    }
}

impl From<HardTopkSvm> for AnyLoss {
    fn from(l: HardTopkSvm) -> Self {
        AnyLoss::Hard(l)
    }
}

impl From<CrossEntropy> for AnyLoss {
    fn from(l: CrossEntropy) -> Self {
        AnyLoss::CrossEntropy(l)
    }
}

impl Loss for AnyLoss {
    fn min_classes(&self) -> usize {
        match self {
            AnyLoss::Smooth(l) => l.min_classes(),
            AnyLoss::Hard(l) => l.min_classes(),
            AnyLoss::CrossEntropy(l) => l.min_classes(),
        }
    }
}

impl Kernel for AnyLoss {
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
