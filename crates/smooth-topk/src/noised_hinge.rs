//! The noised (stochastically smoothed) top-k calibrated hinge of Garcin, Servajean, Joly and
//! Salmon, balanced and imbalanced.

use crate::config::check_k;
use crate::loss::{resize, Kernel, Loss, Workspace};
use crate::{Reduction, Result, Scalar, TopkError};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use std::sync::Arc;

/// Largest number of noise values (`n * n_sample`) drawn for one sample: 128 MiB of f64 per
/// thread (e.g. 100k classes and 160 draws).
const MAX_NOISE_PER_SAMPLE: usize = 1 << 24;

/// The margin of each class: one for all (balanced) or one per class (imbalanced).
#[derive(Debug, Clone, PartialEq)]
enum Margins {
    Uniform(f64),
    PerClass(Arc<[f64]>),
}

/// Noised top-k hinge (Garcin et al., "Stochastic smoothing of the top-K calibrated hinge loss
/// for deep imbalanced classification", ICML 2022; their package `pytopk`): for the scores `s`
/// of one sample with label `y`,
///
/// ```text
/// L(s, y) = scale * max(0, m_y + T(s) - s_y),   T(s) = mean_{d = 1..n_sample} top_{k+1}(s + epsilon Z_d)
/// ```
///
/// with `top_{k+1}` the (k+1)-th largest entry (the label's score included) and `Z_d` standard
/// Gaussian vectors: a Monte-Carlo estimate of the Gaussian smoothing of the top-k calibrated
/// hinge `max(0, 1 + s_[k+1] - s_y)`, which it is at `epsilon = 0`. The balanced loss has
/// `m_y = 1` and `scale = 1`; the imbalanced one per-class margins `m_c` (LDAM-style, larger for
/// rarer classes: [`NoisedTopkHinge::ldam_margins`]) and a `scale` (the paper's 50 assumes
/// normalised logits; use 1 otherwise).
///
/// Gradient: the estimator of the paper (a perturbed optimiser): where the hinge is active,
/// `scale * (c_j / n_sample - [j = y])` with `c_j` the number of draws in which class `j` is the
/// (k+1)-th largest; zero where it is not (and at the kink, as PyTorch's `relu`). For the drawn
/// noise this is the exact gradient of the piecewise-linear estimate.
///
/// The noise is seeded: sample `i` of a batch draws its `n x n_sample` values from ChaCha8
/// seeded with [`Self::seed`] on stream `i`, in the layout `Z[j, d]` (class-major), so a batch
/// gives the same result on any number of threads and on any machine. Give each training step
/// its own seed ([`Self::with_seed`]) or the noise is the same every step. The `*_with_noise`
/// methods take the noise from the caller instead (e.g. the `Z` of `pytopk`, `[batch, n,
/// n_sample]`).
#[derive(Debug, Clone, PartialEq)]
pub struct NoisedTopkHinge {
    k: usize,
    epsilon: f64,
    n_sample: usize,
    margins: Margins,
    scale: f64,
    seed: u64,
}

fn check_epsilon(epsilon: f64) -> Result<f64> {
    if epsilon.is_finite() && epsilon >= 0.0 {
        Ok(epsilon)
    } else {
        Err(TopkError::InvalidSetting {
            name: "epsilon",
            value: epsilon,
            need: "a finite epsilon >= 0",
        })
    }
}

fn check_n_sample(n_sample: usize) -> Result<usize> {
    if n_sample == 0 {
        Err(TopkError::InvalidSetting {
            name: "n_sample",
            value: 0.0,
            need: "n_sample >= 1",
        })
    } else {
        Ok(n_sample)
    }
}

impl NoisedTopkHinge {
    /// The balanced loss (`pytopk.BalNoisedTopK`): margin 1, scale 1. Validates `k >= 1`, a
    /// finite `epsilon >= 0` and `n_sample >= 1` (the package's default is 5). Seed 0.
    pub fn balanced(k: usize, epsilon: f64, n_sample: usize) -> Result<Self> {
        Ok(NoisedTopkHinge {
            k: check_k(k)?,
            epsilon: check_epsilon(epsilon)?,
            n_sample: check_n_sample(n_sample)?,
            margins: Margins::Uniform(1.0),
            scale: 1.0,
            seed: 0,
        })
    }

    /// The imbalanced loss (`pytopk.ImbalNoisedTopK`): one margin per class (finite, `>= 0`;
    /// batches must then have exactly `margins.len()` classes) and a finite `scale > 0`.
    pub fn imbalanced(
        k: usize,
        epsilon: f64,
        n_sample: usize,
        margins: Vec<f64>,
        scale: f64,
    ) -> Result<Self> {
        if let Some(&bad) = margins.iter().find(|m| !(m.is_finite() && **m >= 0.0)) {
            return Err(TopkError::InvalidSetting {
                name: "margin",
                value: bad,
                need: "finite margins >= 0",
            });
        }
        if margins.is_empty() {
            return Err(TopkError::InvalidSetting {
                name: "number of margins",
                value: 0.0,
                need: "one margin per class",
            });
        }
        if !(scale.is_finite() && scale > 0.0) {
            return Err(TopkError::InvalidSetting {
                name: "scale",
                value: scale,
                need: "a finite scale > 0",
            });
        }
        Ok(NoisedTopkHinge {
            margins: Margins::PerClass(margins.into()),
            scale,
            ..Self::balanced(k, epsilon, n_sample)?
        })
    }

    /// The per-class margins of Cao et al. (LDAM, NeurIPS 2019) that `pytopk` uses:
    /// `max_m * c^(-1/4) / max_c' c'^(-1/4)` for training-set class counts `c` (each `>= 1`), so the
    /// rarest class gets `max_m` (finite, `>= 0`). `pytopk` rounds them to float32; these are not.
    pub fn ldam_margins(class_counts: &[u64], max_m: f64) -> Result<Vec<f64>> {
        if let Some(&bad) = class_counts.iter().find(|&&c| c == 0) {
            return Err(TopkError::InvalidSetting {
                name: "class count",
                value: bad as f64,
                need: "every class count >= 1",
            });
        }
        if !(max_m.is_finite() && max_m >= 0.0) {
            return Err(TopkError::InvalidSetting {
                name: "max_m",
                value: max_m,
                need: "a finite max_m >= 0",
            });
        }
        let raw: Vec<f64> = class_counts
            .iter()
            .map(|&c| (c as f64).powf(-0.25))
            .collect();
        let top = raw.iter().copied().fold(0.0, f64::max);
        Ok(raw.iter().map(|r| r * (max_m / top)).collect())
    }

    /// The same loss drawing its noise from another seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The `k` of top-k.
    pub fn k(&self) -> usize {
        self.k
    }
    /// The standard deviation of the smoothing noise.
    pub fn epsilon(&self) -> f64 {
        self.epsilon
    }
    /// Noise draws per sample.
    pub fn n_sample(&self) -> usize {
        self.n_sample
    }
    /// The per-class margins (`None` for the balanced loss, whose margin is 1).
    pub fn margins(&self) -> Option<&[f64]> {
        match &self.margins {
            Margins::Uniform(_) => None,
            Margins::PerClass(m) => Some(m),
        }
    }
    /// The factor applied to the hinge.
    pub fn scale(&self) -> f64 {
        self.scale
    }
    /// The seed of the noise.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    fn margin(&self, label: usize) -> f64 {
        match &self.margins {
            Margins::Uniform(m) => *m,
            Margins::PerClass(m) => m[label],
        }
    }

    /// Noise values one sample needs, checked.
    fn per_sample(&self, n: usize) -> Result<usize> {
        n.checked_mul(self.n_sample)
            .filter(|&v| v <= MAX_NOISE_PER_SAMPLE)
            .ok_or(TopkError::TooLarge {
                what: "n * n_sample",
                value: n.saturating_mul(self.n_sample),
            })
    }

    /// The loss of one sample under the noise `z` (`n * n_sample` values, `z[j * n_sample + d]`).
    fn evaluate<T: Scalar>(
        &self,
        scores: &[T],
        label: usize,
        grad: Option<&mut [T]>,
        z: &[f64],
        index: &mut Vec<usize>,
        noised: &mut Vec<f64>,
    ) -> f64 {
        let (n, draws, k) = (scores.len(), self.n_sample, self.k);
        resize(noised, n);
        index.clear();
        index.extend(0..n);
        // The (k+1)-th largest of each draw and which class it was; winners kept after the n
        // indices the selection permutes.
        let mut total = 0.0;
        for d in 0..draws {
            for (j, (o, s)) in noised.iter_mut().zip(scores).enumerate() {
                *o = s.to_f64() + self.epsilon * z[j * draws + d];
            }
            let (_, &mut winner, _) =
                index[..n].select_nth_unstable_by(k, |&a, &b| noised[b].total_cmp(&noised[a]));
            total += noised[winner];
            index.push(winner);
        }
        let smoothed = total / draws as f64;
        let hinge = self.margin(label) + smoothed - scores[label].to_f64();
        let active = hinge > 0.0;
        if let Some(g) = grad {
            g.iter_mut().for_each(|v| *v = T::from_f64(0.0));
            if active {
                // Counts accumulated in f64 per class, then scaled once.
                let share = self.scale / draws as f64;
                let mut counts = std::mem::take(noised);
                counts.iter_mut().for_each(|c| *c = 0.0);
                for &w in &index[n..] {
                    counts[w] += 1.0;
                }
                counts[label] -= draws as f64;
                for (gi, c) in g.iter_mut().zip(&counts) {
                    *gi = T::from_f64(share * c);
                }
                *noised = counts;
            }
        }
        if active {
            self.scale * hinge
        } else {
            0.0
        }
    }

    /// Per-sample losses under noise the caller gives: `noise` holds `batch * n * n_sample`
    /// finite values, `[batch, n, n_sample]` row-major (the layout of `pytopk`'s `Z`).
    pub fn loss_per_sample_with_noise<T: Scalar>(
        &self,
        scores: &[T],
        labels: &[usize],
        n: usize,
        noise: &[f64],
        losses: &mut [T],
    ) -> Result<()> {
        self.given(noise, labels.len(), n)?
            .loss_per_sample(scores, labels, n, losses)
    }

    /// Per-sample losses and gradients under noise the caller gives (see
    /// [`Self::loss_per_sample_with_noise`]).
    pub fn loss_and_grad_per_sample_with_noise<T: Scalar>(
        &self,
        scores: &[T],
        labels: &[usize],
        n: usize,
        noise: &[f64],
        losses: &mut [T],
        grad: &mut [T],
    ) -> Result<()> {
        self.given(noise, labels.len(), n)?
            .loss_and_grad_per_sample(scores, labels, n, losses, grad)
    }

    /// The reduced loss and its gradient under noise the caller gives.
    pub fn loss_and_grad_with_noise<T: Scalar>(
        &self,
        scores: &[T],
        labels: &[usize],
        n: usize,
        noise: &[f64],
        reduction: Reduction,
    ) -> Result<(f64, Vec<T>)> {
        self.given(noise, labels.len(), n)?
            .loss_and_grad(scores, labels, n, reduction)
    }

    fn given<'a>(&'a self, noise: &'a [f64], batch: usize, n: usize) -> Result<GivenNoise<'a>> {
        let per_sample = self.per_sample(n)?;
        let expected = per_sample.checked_mul(batch).ok_or(TopkError::TooLarge {
            what: "batch * n * n_sample",
            value: usize::MAX,
        })?;
        if noise.len() != expected {
            return Err(TopkError::ShapeMismatch {
                what: "noise",
                got: noise.len(),
                expected,
            });
        }
        if let Some(pos) = noise.iter().position(|v| !v.is_finite()) {
            return Err(TopkError::InvalidSetting {
                name: "noise value",
                value: noise[pos],
                need: "finite noise",
            });
        }
        Ok(GivenNoise {
            loss: self,
            noise,
            per_sample,
        })
    }
}

impl Loss for NoisedTopkHinge {
    fn min_classes(&self) -> usize {
        // The (k+1)-th largest needs k + 1 scores.
        self.k.saturating_add(1)
    }

    fn check_classes(&self, n: usize) -> Result<()> {
        self.per_sample(n)?;
        match &self.margins {
            Margins::PerClass(m) if m.len() != n => Err(TopkError::ShapeMismatch {
                what: "margins (one per class)",
                got: m.len(),
                expected: n,
            }),
            _ => Ok(()),
        }
    }
}

impl Kernel for NoisedTopkHinge {
    fn sample_loss<T: Scalar>(
        &self,
        sample: usize,
        scores: &[T],
        label: usize,
        grad: Option<&mut [T]>,
        ws: &mut Workspace,
    ) -> f64 {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(sample as u64);
        let z = &mut ws.more;
        resize(z, scores.len() * self.n_sample);
        for v in z.iter_mut() {
            *v = StandardNormal.sample(&mut rng);
        }
        self.evaluate(scores, label, grad, z, &mut ws.index, &mut ws.values)
    }
}

/// The loss with the caller's noise, sample `i` reading its slice of it.
struct GivenNoise<'a> {
    loss: &'a NoisedTopkHinge,
    noise: &'a [f64],
    per_sample: usize,
}

impl Loss for GivenNoise<'_> {
    fn min_classes(&self) -> usize {
        self.loss.min_classes()
    }
    fn check_classes(&self, n: usize) -> Result<()> {
        self.loss.check_classes(n)
    }
}

impl Kernel for GivenNoise<'_> {
    fn sample_loss<T: Scalar>(
        &self,
        sample: usize,
        scores: &[T],
        label: usize,
        grad: Option<&mut [T]>,
        ws: &mut Workspace,
    ) -> f64 {
        let z = &self.noise[sample * self.per_sample..(sample + 1) * self.per_sample];
        self.loss
            .evaluate(scores, label, grad, z, &mut ws.index, &mut ws.values)
    }
}
