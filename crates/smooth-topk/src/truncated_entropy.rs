//! The truncated top-k entropy loss of Lapin, Hein and Schiele: softmax cross-entropy with the
//! k - 1 largest competing scores left out of the partition function.

use crate::config::check_k;
use crate::hard_svm::kth_largest_excluding;
use crate::loss::{resize, sigmoid, softplus, Kernel, Loss, Workspace};
use crate::{CrossEntropy, Result, Scalar};

/// Truncated top-k entropy (Lapin, Hein and Schiele, "Loss functions for top-k error: analysis
/// and insights", CVPR 2016): for the scores `s` of one sample with label `y`,
///
/// ```text
/// L_k(s, y) = ln(1 + sum_{j in R} exp(s_j - s_y))
/// ```
///
/// where `R` holds the classes other than `y` except the `k - 1` highest-scoring ones: a
/// sample is not penalised for `k - 1` classes ranked above its label, the top-k error's
/// tolerance. `k = 1` is softmax cross-entropy. The loss is not convex in `s` for `k > 1`.
///
/// Gradient: with `r = ln sum_{j in R} exp(s_j - s_y)`, `dL/ds_j = sigmoid(r) softmax_R(s)_j` on
/// `R`, `-sigmoid(r)` on `y`, zero on the `k - 1` left-out classes. Where competitors tie with
/// the (k-1)-th largest, the left-out share is split evenly between them (the mean of the
/// gradients of every way to break the tie; the loss itself does not depend on it). Evaluated as
/// `softplus(r)`, so tiny losses keep their relative precision, for any finite scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TruncatedTopkEntropy {
    k: usize,
}

impl TruncatedTopkEntropy {
    /// Validates `k >= 1` (`k < n` is checked per batch).
    pub fn new(k: usize) -> Result<Self> {
        Ok(TruncatedTopkEntropy { k: check_k(k)? })
    }
    /// The `k` of top-k.
    pub fn k(&self) -> usize {
        self.k
    }
}

impl Loss for TruncatedTopkEntropy {
    fn min_classes(&self) -> usize {
        // At least one competitor stays in the sum.
        self.k.saturating_add(1)
    }
}

impl Kernel for TruncatedTopkEntropy {
    fn sample_loss<T: Scalar>(
        &self,
        sample: usize,
        scores: &[T],
        label: usize,
        grad: Option<&mut [T]>,
        ws: &mut Workspace,
    ) -> f64 {
        if self.k == 1 {
            return CrossEntropy.sample_loss(sample, scores, label, grad, ws);
        }
        let drop = self.k - 1;
        // The (k-1)-th largest competitor: the ones above it are left out, and of those equal to
        // it, as many as make up k - 1.
        let t = kth_largest_excluding(scores, label, drop, &mut ws.values);
        let (mut above, mut tied) = (0usize, 0usize);
        let mut below_max = f64::NEG_INFINITY;
        for (j, v) in scores.iter().enumerate() {
            let v = v.to_f64();
            if j == label {
                continue;
            }
            if v > t {
                above += 1;
            } else if v == t {
                tied += 1;
            } else if v > below_max {
                below_max = v;
            }
        }
        let kept_ties = tied - (drop - above);
        let tie_share = kept_ties as f64 / tied as f64;
        // The largest score left in R shifts the exponentials (R is never empty: n > k).
        let shift = if kept_ties > 0 { t } else { below_max };
        let e = &mut ws.more;
        resize(e, scores.len());
        for (o, v) in e.iter_mut().zip(scores) {
            let v = v.to_f64();
            *o = if v < t {
                (v - shift).exp()
            } else if v == t && kept_ties > 0 {
                // shift = t here
                tie_share
            } else {
                0.0
            };
        }
        e[label] = 0.0;
        let total: f64 = e.iter().sum();
        let s_y = scores[label].to_f64();
        let r = (shift - s_y) + total.ln();
        if let Some(g) = grad {
            let p_other = sigmoid(r);
            let scale = p_other / total;
            for (gi, &ei) in g.iter_mut().zip(e.iter()) {
                *gi = T::from_f64(scale * ei);
            }
            g[label] = T::from_f64(-p_other);
        }
        softplus(r)
    }
}
