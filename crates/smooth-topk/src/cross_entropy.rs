//! Softmax cross-entropy, written as carefully as the top-k losses it is compared with.

use crate::loss::{resize, sigmoid, softplus, Kernel, Loss, Workspace};
use crate::simd::{exp_excluding, max_excluding, sum, write_excluding};
use crate::Scalar;

/// Softmax cross-entropy `ln(sum_j exp(s_j)) - s_y`.
///
/// Evaluated as `softplus(r)` with `r = ln sum_{j != y} exp(s_j - s_y)`, so a confident correct
/// prediction gives its true tiny loss (e.g. 1e-30) instead of the 0 or rounding noise that
/// `logsumexp(s) - s_y` produces. The gradient is `softmax(s) - onehot(y)`, with the label entry
/// formed as `-sigmoid(r)` rather than `p_y - 1`, which also avoids cancellation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CrossEntropy;

impl Loss for CrossEntropy {
    fn min_classes(&self) -> usize {
        1
    }
}

impl Kernel for CrossEntropy {
    fn sample_loss<T: Scalar>(
        &self,
        _sample: usize,
        scores: &[T],
        label: usize,
        grad: Option<&mut [T]>,
        ws: &mut Workspace,
    ) -> f64 {
        let s_y = scores[label].to_f64();
        let m = max_excluding(scores, label);
        if m == f64::NEG_INFINITY {
            // A single class: nothing competes with the label.
            if let Some(g) = grad {
                g[label] = T::from_f64(0.0);
            }
            return 0.0;
        }
        // exp(s_j - m) of the other classes; their sum is >= 1 (the largest is exp(0)).
        let exps = &mut ws.values;
        resize(exps, scores.len() - 1);
        exp_excluding(scores, label, m, 1.0, exps);
        let total = sum(exps);
        let r = (m - s_y) + total.ln();
        if let Some(g) = grad {
            let p_other = sigmoid(r);
            write_excluding(g, label, -p_other, p_other / total, exps, None);
        }
        softplus(r)
    }
}
