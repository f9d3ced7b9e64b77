//! The smooth top-k SVM `L_{k,tau}` of Berrada, Zisserman and Kumar (ICLR 2018).
//!
//! With `x_j = s_j / (k tau)` and `e'` the weights `exp(x_j)` of the non-label classes,
//!
//! ```text
//! L = tau * ln(1 + r),   r = exp(alpha / tau) * sigma_k(e') / (exp(x_y) * sigma_{k-1}(e'))
//! dL/ds_y = -sigmoid(ln r) / k
//! dL/ds_i = sigmoid(ln r) * (P_k(i) - P_{k-1}(i)) / k      (i != y)
//! ```
//!
//! where `P_j(i)` is the probability that `i` belongs to a j-subset of the non-label classes drawn
//! with weight `prod e'` (see [`crate::esp`]). Writing the loss as a `log1p` of a ratio keeps
//! losses far below `eps * max|s|` exact, and the gradient is a scaled difference of two
//! probabilities, so every entry is within [-1/k, 1/k] and each row sums to zero by construction.

use crate::config::{check_alpha, check_k, check_tau};
use crate::esp::linear_pass_ok;
use crate::hard_svm::HardTopkSvm;
use crate::loss::{resize, sigmoid, softplus, Kernel, Loss, Workspace};
use crate::number::{ExtFloat, PolyNum};
use crate::simd::{exp_excluding, max_excluding, write_excluding};
use crate::{Result, Scalar};

/// Smooth top-k multiclass SVM `L_{k,tau}` with temperature `tau` and margin `alpha`
/// (Berrada, Zisserman and Kumar, "Smooth Loss Functions for Deep Top-k Classification", ICLR
/// 2018). For the scores `s` of one sample (a row of `n`) and its label `y`, with
/// `x_j = s_j / (k tau)` and `e'` the weights `exp(x_j)` of the classes other than `y`:
///
/// ```text
/// L = tau * ln(1 + r),   r = exp(alpha / tau) * sigma_k(e') / (exp(x_y) * sigma_{k-1}(e'))
/// dL/ds_y = -sigmoid(ln r) / k,   dL/ds_i = sigmoid(ln r) * (P_k(i) - P_{k-1}(i)) / k
/// ```
///
/// where `sigma_j` is the elementary symmetric polynomial of degree j and `P_j(i)` the
/// probability that class i is in a j-subset of the other classes drawn with weight `prod e'`.
/// Batches are row-major `[batch, n]` slices (see [`Loss`]).
///
/// Exact for every `1 <= k < n` (the loss and its gradient, no series approximation), stable for
/// any finite scores: scaled `f64` arithmetic when the weights fit, an extended-exponent fallback
/// when they do not. `k = 1` gives `tau * logsumexp((s + alpha [j != y] - s_y) / tau)`, which is
/// cross-entropy for `alpha = 0, tau = 1`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SmoothTopkSvm {
    k: usize,
    tau: f64,
    alpha: f64,
    reference_switch: bool,
}

impl SmoothTopkSvm {
    /// Validates `k >= 1`, finite `tau > 0` and finite `alpha >= 0` (`k < n` is checked per
    /// batch). The paper's CIFAR-100 setting is `new(5, 1.0, 1.0)`.
    pub fn new(k: usize, tau: f64, alpha: f64) -> Result<Self> {
        Ok(SmoothTopkSvm {
            k: check_k(k)?,
            tau: check_tau(tau)?,
            alpha: check_alpha(alpha)?,
            reference_switch: false,
        })
    }

    /// The smooth top-1 SVM.
    pub fn top1(tau: f64, alpha: f64) -> Result<Self> {
        Self::new(1, tau, alpha)
    }

    /// Parity with the PyTorch reference: evaluate a sample with the hard loss when
    /// `s_[k] - s_[k+1] >= k tau ln(1000)` (sorted scores including the label's). Off by default:
    /// this implementation is stable without it, and the switch shifts the loss by up to
    /// `2.2 tau` when k scores tie at the top.
    pub fn with_reference_hard_switch(mut self, on: bool) -> Self {
        self.reference_switch = on;
        self
    }

    /// The `k` of top-k.
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
    /// Whether the reference's hard/smooth switch is on.
    pub fn reference_hard_switch(&self) -> bool {
        self.reference_switch
    }

    /// The reference's criterion for switching a sample to the hard loss.
    fn reference_switches_to_hard<T: Scalar>(&self, scores: &[T], buf: &mut Vec<f64>) -> bool {
        let k = self.k;
        buf.clear();
        buf.extend(scores.iter().map(|v| v.to_f64()));
        buf.select_nth_unstable_by(k, |a, b| b.total_cmp(a));
        let kplus1 = buf[k];
        let kth = buf[..k].iter().copied().fold(f64::INFINITY, f64::min);
        kth - kplus1 >= k as f64 * self.tau * 1000f64.ln()
    }
}

/// A scalar gradient writer for the test reference path: `-scale` on the label and
/// `scale * (P_k(i) - P_{k-1}(i))` on each non-label class `i` (indexed without the label).
#[cfg(test)]
fn gradient_sink<T: Scalar>(
    g: &mut [T],
    label: usize,
    scale: f64,
) -> impl FnMut(usize, f64, f64) + '_ {
    g[label] = T::from_f64(-scale);
    move |i, p_k, p_k1| g[i + usize::from(i >= label)] = T::from_f64(scale * (p_k - p_k1))
}

impl Loss for SmoothTopkSvm {
    fn min_classes(&self) -> usize {
        // Saturating: a k no batch can satisfy is refused by the batch check, not wrapped.
        self.k.saturating_add(1)
    }
}

impl Kernel for SmoothTopkSvm {
    fn sample_loss<T: Scalar>(
        &self,
        sample: usize,
        scores: &[T],
        label: usize,
        grad: Option<&mut [T]>,
        ws: &mut Workspace,
    ) -> f64 {
        if self.reference_switch && self.reference_switches_to_hard(scores, &mut ws.values) {
            let hard = HardTopkSvm {
                k: self.k,
                alpha: self.alpha,
            };
            return hard.sample_loss(sample, scores, label, grad, ws);
        }
        let k = self.k;
        let ktau = k as f64 * self.tau;
        let inv_ktau = 1.0 / ktau;
        let s_y = scores[label].to_f64();
        let others = || {
            scores[..label]
                .iter()
                .chain(&scores[label + 1..])
                .map(|v| v.to_f64())
        };
        let margin = self.alpha / self.tau;

        // Fast path: weights exp((s_i - max) / (k tau)) in (0, 1].
        let m = max_excluding(scores, label);
        let lin = &mut ws.lin;
        resize(&mut lin.weights, scores.len() - 1);
        exp_excluding(scores, label, m, inv_ktau, &mut lin.weights);
        lin.forward(k);
        let log_r;
        if linear_pass_ok(&lin.full, &[k - 1, k]) {
            log_r = margin + (m - s_y) / ktau + (lin.full[k] / lin.full[k - 1]).ln();
            if let Some(g) = grad {
                lin.inclusion_into(k);
                let scale = sigmoid(log_r) / k as f64;
                write_excluding(g, label, -scale, scale, &lin.p_k, Some(&lin.p_k1));
            }
        } else {
            // Products of k weights left the f64 range: redo in extended range, scaled by the
            // label's score so that ln r needs no separate (and cancelling) offset term.
            // The binary exponent of a product of k weights is a sum of k exponents of about
            // 1.44 u each, held in an f64: exact (to the rounding the inputs already carry)
            // only while below 2^53. Within `limit` every such sum is; beyond, a ratio of two
            // products could lose the small difference it depends on, so the result is not
            // computed: NaN, which the batch methods turn into an error. (A clamp would make
            // unequal scores tie and return a wrong loss.)
            let limit = 3e15 / k as f64;
            let ext = &mut ws.ext;
            ext.weights.clear();
            let mut in_range = true;
            ext.weights.extend(others().map(|v| {
                let u = (v - s_y) / ktau;
                in_range &= u.abs() <= limit;
                ExtFloat::exp(u)
            }));
            if !in_range {
                return f64::NAN;
            }
            ext.forward(k);
            log_r = margin + ext.full[k].ln_ratio(ext.full[k - 1]);
            if let Some(g) = grad {
                // Into the fast path's probability rows, then the same gradient writer.
                let (p_k, p_k1) = (&mut lin.p_k, &mut lin.p_k1);
                resize(p_k, scores.len() - 1);
                resize(p_k1, scores.len() - 1);
                ext.inclusion(k, |i, a, b| {
                    p_k[i] = a;
                    p_k1[i] = b;
                });
                let scale = sigmoid(log_r) / k as f64;
                write_excluding(g, label, -scale, scale, p_k, Some(p_k1));
            }
        }
        self.tau * softplus(log_r)
    }
}

#[cfg(test)]
impl SmoothTopkSvm {
    /// The loss and gradient of one f64 sample through the extended-range path only.
    pub(crate) fn sample_extended(&self, scores: &[f64], label: usize, grad: &mut [f64]) -> f64 {
        let ktau = self.k as f64 * self.tau;
        let s_y = scores[label];
        let mut ext = crate::esp::PolyScratch::<ExtFloat>::default();
        ext.weights.extend(
            scores
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != label)
                .map(|(_, &v)| ExtFloat::exp((v - s_y) / ktau)),
        );
        ext.forward(self.k);
        let log_r = self.alpha / self.tau + ext.full[self.k].ln_ratio(ext.full[self.k - 1]);
        ext.inclusion(
            self.k,
            gradient_sink(grad, label, sigmoid(log_r) / self.k as f64),
        );
        self.tau * softplus(log_r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two number systems must agree wherever both apply: the linear path on random rows
    /// against the extended-range path forced on the same rows.
    #[test]
    fn linear_and_extended_paths_agree() {
        let mut state = 12345u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        };
        for &(n, k, tau, alpha, scale) in &[
            (5usize, 1usize, 1.0, 0.0, 1.0),
            (40, 3, 0.5, 1.0, 4.0),
            (100, 5, 1.0, 1.0, 10.0),
            (300, 10, 0.1, 2.0, 1.0),
            (64, 63, 1.0, 1.0, 2.0),
        ] {
            let s: Vec<f64> = (0..n).map(|_| scale * next()).collect();
            let y = n / 3;
            let loss = SmoothTopkSvm::new(k, tau, alpha).unwrap();
            let mut g_lin = vec![0.0; n];
            let mut g_ext = vec![0.0; n];
            let mut ws = Workspace::default();
            let l_lin = loss.sample_loss(0, &s, y, Some(&mut g_lin), &mut ws);
            let l_ext = loss.sample_extended(&s, y, &mut g_ext);
            assert!((l_lin - l_ext).abs() <= 1e-12 * l_ext.abs(), "n={n} k={k}");
            let gmax = g_ext.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            for (a, b) in g_lin.iter().zip(&g_ext) {
                assert!((a - b).abs() <= 1e-12 * gmax, "n={n} k={k}: {a} vs {b}");
            }
        }
    }

    proptest::proptest! {
        /// The whole vectorised fast path (exponentials, forward pass, recursion, gradient
        /// rows) against the scalar extended-range path with the C library's `exp`, over rows
        /// of many sizes and scales, ties included.
        #[test]
        fn vectorised_sample_matches_the_scalar_path(
            n in 2usize..400,
            k in 1usize..12,
            log_tau in -2.0f64..1.0,
            log_scale in -3.0f64..2.0,
            ties in 0usize..3,
            seed in proptest::prelude::any::<u64>(),
        ) {
            let k = k.min(n - 1);
            let tau = 10f64.powf(log_tau);
            let scale = 10f64.powf(log_scale);
            let mut state = seed | 1;
            let s: Vec<f64> = (0..n)
                .map(|i| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let u = (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
                    // `ties` groups of equal scores at the top.
                    if i % 5 < ties { scale } else { scale * u }
                })
                .collect();
            let y = (seed % n as u64) as usize;
            let loss = SmoothTopkSvm::new(k, tau, 1.0).unwrap();
            let mut g_fast = vec![0.0; n];
            let mut g_scalar = vec![0.0; n];
            let l_fast = loss.sample_loss(0, &s, y, Some(&mut g_fast), &mut Workspace::default());
            let l_scalar = loss.sample_extended(&s, y, &mut g_scalar);
            proptest::prop_assert!((l_fast - l_scalar).abs() <= 1e-11 * l_scalar.abs() + 1e-300);
            let gmax = g_scalar.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            for (a, b) in g_fast.iter().zip(&g_scalar) {
                proptest::prop_assert!((a - b).abs() <= 1e-11 * gmax, "{} vs {}", a, b);
            }
        }
    }

    #[test]
    fn reference_switch_uses_the_hard_loss_only_past_its_threshold() {
        let loss = SmoothTopkSvm::new(2, 1.0, 1.0)
            .unwrap()
            .with_reference_hard_switch(true);
        let hard = HardTopkSvm::new(2, 1.0).unwrap();
        let mut ws = Workspace::default();
        // s_[2] - s_[3] = 20 >= 2 ln 1000: hard.
        let wide = [30.0, 25.0, 5.0, 4.0];
        let got = loss.sample_loss::<f64>(0, &wide, 2, None, &mut ws);
        assert_eq!(got, hard.sample_loss::<f64>(0, &wide, 2, None, &mut ws));
        // A narrow gap stays smooth (strictly above the hard value).
        let narrow = [3.0, 2.5, 2.0, 1.0];
        let smooth = loss.sample_loss::<f64>(0, &narrow, 2, None, &mut ws);
        assert!(smooth > hard.sample_loss::<f64>(0, &narrow, 2, None, &mut ws));
        let default = SmoothTopkSvm::new(2, 1.0, 1.0).unwrap();
        assert!(!default.reference_hard_switch());
        // Without the switch the exact smooth value differs from the hard one.
        assert_ne!(default.sample_loss::<f64>(0, &wide, 2, None, &mut ws), got);
    }
}
