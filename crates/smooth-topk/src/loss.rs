//! The batch interface shared by every loss: validation once per call, one kernel per sample,
//! all cores through rayon, and reductions.

use crate::esp::{FastScratch, PolyScratch};
use crate::number::ExtFloat;
use crate::{Result, Scalar, TopkError};
use rayon::prelude::*;

/// How per-sample losses are combined into one number (and the gradient scaled to match).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reduction {
    /// Average over the batch (the default, as in the paper and in PyTorch).
    #[default]
    Mean,
    /// Sum over the batch.
    Sum,
}

/// The per-sample kernels, kept out of the public API: a kernel trusts its input (shapes,
/// labels and finite scores checked by the caller) and indexes without checks, so it is only
/// reached through the validating methods of [`Loss`]. The module is private: outside the
/// crate the trait can be neither named, called nor implemented.
mod kernel {
    use super::*;

    /// Loss (and gradient) of one validated sample.
    pub trait Kernel {
        /// `scores.len() >= min_classes`, `label < scores.len()`, scores finite; `grad`, when
        /// given, as long as `scores`. `sample` is the row's index in its batch (the seeded
        /// stochastic losses draw their noise from it, so a batch gives the same result on any
        /// number of threads).
        fn sample_loss<T: Scalar>(
            &self,
            sample: usize,
            scores: &[T],
            label: usize,
            grad: Option<&mut [T]>,
            ws: &mut Workspace,
        ) -> f64;
    }

    /// Per-thread scratch memory for the per-sample kernels: O(n + k sqrt(n)) numbers, reused
    /// across samples so the hot loop allocates nothing.
    #[derive(Debug, Default, Clone)]
    pub struct Workspace {
        pub(crate) lin: FastScratch,
        pub(crate) ext: PolyScratch<ExtFloat>,
        pub(crate) values: Vec<f64>,
        pub(crate) more: Vec<f64>,
        pub(crate) index: Vec<usize>,
    }
}
pub(crate) use kernel::{Kernel, Workspace};

/// One sample's scores, label, loss slot and gradient row, as zipped iterators yield them.
type RowWithGrad<'a, T> = (usize, (((&'a [T], &'a usize), &'a mut T), &'a mut [T]));
/// One sample's index, scores, label and loss slot.
type Row<'a, T> = (usize, ((&'a [T], &'a usize), &'a mut T));

/// Below this many scores a batch runs on the calling thread: rayon's hand-off costs more.
const PARALLEL_MIN_SCORES: usize = 1 << 12;

/// Checks a batch before anything is written: shapes, labels and finiteness of every score.
pub(crate) fn validate_batch<T: Scalar>(
    scores: &[T],
    labels: &[usize],
    n: usize,
    min_classes: usize,
) -> Result<()> {
    if labels.is_empty() {
        return Err(TopkError::EmptyBatch);
    }
    if n < min_classes {
        return Err(TopkError::TooFewClasses {
            n,
            min: min_classes,
        });
    }
    let expected = labels
        .len()
        .checked_mul(n)
        .ok_or(TopkError::ShapeMismatch {
            what: "scores",
            got: scores.len(),
            expected: usize::MAX,
        })?;
    if scores.len() != expected {
        return Err(TopkError::ShapeMismatch {
            what: "scores",
            got: scores.len(),
            expected,
        });
    }
    if let Some((sample, &label)) = labels.iter().enumerate().find(|(_, &l)| l >= n) {
        return Err(TopkError::LabelOutOfRange { sample, label, n });
    }
    // One branch-free pass; locate the culprit only when there is one.
    let all_finite = scores
        .iter()
        .fold(true, |ok, v| ok & v.to_f64().is_finite());
    if !all_finite {
        let (pos, value) = scores
            .iter()
            .enumerate()
            .find(|(_, v)| !v.to_f64().is_finite())
            .map(|(i, v)| (i, v.to_f64()))
            .expect("a non-finite score exists");
        return Err(TopkError::NonFiniteScore {
            sample: pos / n,
            index: pos % n,
            value,
        });
    }
    Ok(())
}

/// A non-finite loss from finite inputs: an overflow of the output type or of the extended
/// range (see [`TopkError::NotRepresentable`]).
fn check_representable<T: Scalar>(losses: &[T]) -> Result<()> {
    match losses.iter().position(|v| !v.to_f64().is_finite()) {
        Some(sample) => Err(TopkError::NotRepresentable { sample }),
        None => Ok(()),
    }
}

fn check_len(what: &'static str, got: usize, expected: usize) -> Result<()> {
    if got == expected {
        Ok(())
    } else {
        Err(TopkError::ShapeMismatch {
            what,
            got,
            expected,
        })
    }
}

/// A classification loss evaluated sample by sample on row-major `batch x n` scores.
///
/// Implementors provide the per-sample kernel; the provided methods validate the whole batch
/// first (so an error never leaves a buffer half written) and spread samples over rayon's
/// current thread pool (`ThreadPool::install` picks the number of threads).
pub trait Loss: Kernel + Sync {
    /// Smallest number of classes this configuration accepts (k + 1 for the top-k SVMs).
    fn min_classes(&self) -> usize;

    /// Checks a number of classes beyond [`Self::min_classes`]: a loss with one setting per
    /// class (the imbalanced noised hinge's margins) needs exactly that many.
    fn check_classes(&self, n: usize) -> Result<()> {
        let _ = n;
        Ok(())
    }

    /// Per-sample losses of a batch, written to `losses` (length `batch`).
    fn loss_per_sample<T: Scalar>(
        &self,
        scores: &[T],
        labels: &[usize],
        n: usize,
        losses: &mut [T],
    ) -> Result<()> {
        validate_batch(scores, labels, n, self.min_classes())?;
        self.check_classes(n)?;
        check_len("losses", losses.len(), labels.len())?;
        let work = |ws: &mut Workspace, (i, ((row, &label), out)): Row<'_, T>| {
            *out = T::from_f64(self.sample_loss(i, row, label, None, ws));
        };
        if scores.len() < PARALLEL_MIN_SCORES {
            let mut ws = Workspace::default();
            scores
                .chunks(n)
                .zip(labels)
                .zip(losses.iter_mut())
                .enumerate()
                .for_each(|x| work(&mut ws, x));
        } else {
            scores
                .par_chunks(n)
                .zip(labels.par_iter())
                .zip(losses.par_iter_mut())
                .enumerate()
                .for_each_init(Workspace::default, work);
        }
        check_representable(losses)
    }

    /// Per-sample losses and, in `grad` (same shape as `scores`), the gradient of each sample's
    /// own loss with respect to its scores.
    fn loss_and_grad_per_sample<T: Scalar>(
        &self,
        scores: &[T],
        labels: &[usize],
        n: usize,
        losses: &mut [T],
        grad: &mut [T],
    ) -> Result<()> {
        validate_batch(scores, labels, n, self.min_classes())?;
        self.check_classes(n)?;
        check_len("losses", losses.len(), labels.len())?;
        check_len("grad", grad.len(), scores.len())?;
        let work = |ws: &mut Workspace, (i, (((row, &label), out), g)): RowWithGrad<'_, T>| {
            *out = T::from_f64(self.sample_loss(i, row, label, Some(g), ws));
        };
        if scores.len() < PARALLEL_MIN_SCORES {
            let mut ws = Workspace::default();
            scores
                .chunks(n)
                .zip(labels)
                .zip(losses.iter_mut())
                .zip(grad.chunks_mut(n))
                .enumerate()
                .for_each(|x| work(&mut ws, x));
        } else {
            scores
                .par_chunks(n)
                .zip(labels.par_iter())
                .zip(losses.par_iter_mut())
                .zip(grad.par_chunks_mut(n))
                .enumerate()
                .for_each_init(Workspace::default, work);
        }
        check_representable(losses)
    }

    /// The reduced loss (accumulated in `f64`) and its gradient, allocated.
    fn loss_and_grad<T: Scalar>(
        &self,
        scores: &[T],
        labels: &[usize],
        n: usize,
        reduction: Reduction,
    ) -> Result<(f64, Vec<T>)> {
        let mut losses = vec![T::from_f64(0.0); labels.len()];
        let mut grad = vec![T::from_f64(0.0); scores.len()];
        self.loss_and_grad_per_sample(scores, labels, n, &mut losses, &mut grad)?;
        let total: f64 = losses.iter().map(|v| v.to_f64()).sum();
        Ok(match reduction {
            Reduction::Sum => (total, grad),
            Reduction::Mean => {
                let inv = 1.0 / labels.len() as f64;
                grad.iter_mut()
                    .for_each(|g| *g = T::from_f64(g.to_f64() * inv));
                (total * inv, grad)
            }
        })
    }

    /// The reduced loss alone, allocated.
    fn loss<T: Scalar>(
        &self,
        scores: &[T],
        labels: &[usize],
        n: usize,
        reduction: Reduction,
    ) -> Result<f64> {
        let mut losses = vec![T::from_f64(0.0); labels.len()];
        self.loss_per_sample(scores, labels, n, &mut losses)?;
        let total: f64 = losses.iter().map(|v| v.to_f64()).sum();
        Ok(match reduction {
            Reduction::Sum => total,
            Reduction::Mean => total / labels.len() as f64,
        })
    }
}

/// `ln(1 + exp(x))` without overflow and without losing small values.
#[inline]
pub(crate) fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// `1 / (1 + exp(-x))` without overflow.
#[inline]
pub(crate) fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Sets `v` to length `len` without clearing it when it already has that length: every caller
/// overwrites all entries.
#[inline]
pub(crate) fn resize(v: &mut Vec<f64>, len: usize) {
    if v.len() != len {
        v.clear();
        v.resize(len, 0.0);
    }
}
