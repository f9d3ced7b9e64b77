//! One type for "any of the losses", for callers that pick the loss at run time (a CLI flag, a
//! framework adapter's op argument).

use crate::loss::{Kernel, Workspace};
use crate::{
    CrossEntropy, HardTopkSvm, Loss, NoisedTopkHinge, Result, Scalar, SmoothTopkSvm,
    TopkCrossEntropy, TruncatedTopkEntropy,
};

/// A configured loss of any kind; implements [`Loss`] by forwarding to the variant.
#[derive(Debug, Clone, PartialEq)]
pub enum AnyLoss {
    /// Smooth top-k SVM.
    Smooth(SmoothTopkSvm),
    /// Hard top-k SVM.
    Hard(HardTopkSvm),
    /// Softmax cross-entropy.
    CrossEntropy(CrossEntropy),
    /// Truncated top-k entropy.
    TruncatedEntropy(TruncatedTopkEntropy),
    /// Noised top-k hinge, balanced or imbalanced.
    NoisedHinge(NoisedTopkHinge),
    /// Top-k cross-entropy over NeuralSort.
    TopkCrossEntropy(TopkCrossEntropy),
}

impl AnyLoss {
    /// The loss for training step `step`: the stochastic losses draw fresh noise (their seed
    /// mixed with the step), the others are returned as they are.
    pub fn for_step(&self, step: u64) -> AnyLoss {
        match self {
            AnyLoss::NoisedHinge(l) => {
                AnyLoss::NoisedHinge(l.clone().with_seed(mix(l.seed(), step)))
            }
            other => other.clone(),
        }
    }
}

/// SplitMix64 of `seed + step`: distinct steps give unrelated seeds.
fn mix(seed: u64, step: u64) -> u64 {
    let mut z = seed.wrapping_add(step.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

macro_rules! any_loss_from {
    ($($ty:ident => $variant:ident),*) => {$(
        impl From<$ty> for AnyLoss {
            fn from(l: $ty) -> Self {
                AnyLoss::$variant(l)
            }
        }
    )*};
}
any_loss_from!(
    SmoothTopkSvm => Smooth,
    HardTopkSvm => Hard,
    CrossEntropy => CrossEntropy,
    TruncatedTopkEntropy => TruncatedEntropy,
    NoisedTopkHinge => NoisedHinge,
    TopkCrossEntropy => TopkCrossEntropy
);

/// `$body` with `$l` bound to the variant's loss.
macro_rules! each {
    ($self:expr, $l:ident => $body:expr) => {
        match $self {
            AnyLoss::Smooth($l) => $body,
            AnyLoss::Hard($l) => $body,
            AnyLoss::CrossEntropy($l) => $body,
            AnyLoss::TruncatedEntropy($l) => $body,
            AnyLoss::NoisedHinge($l) => $body,
            AnyLoss::TopkCrossEntropy($l) => $body,
        }
    };
}

impl Loss for AnyLoss {
    fn min_classes(&self) -> usize {
        each!(self, l => l.min_classes())
    }
    fn check_classes(&self, n: usize) -> Result<()> {
        each!(self, l => l.check_classes(n))
    }
}

impl Kernel for AnyLoss {
    fn sample_loss<T: Scalar>(
        &self,
        sample: usize,
        scores: &[T],
        label: usize,
        grad: Option<&mut [T]>,
        ws: &mut Workspace,
    ) -> f64 {
        each!(self, l => l.sample_loss(sample, scores, label, grad, ws))
    }
}
