//! Softmax cross-entropy, written as carefully as the top-k losses it is compared with.

use crate::loss::{max_excluding, sigmoid, softplus, Loss, Workspace};
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

    fn sample_loss<T: Scalar>(
        &self,
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
        let exps = &mut ws.values;
        exps.clear();
        exps.extend(scores.iter().map(|v| (v.to_f64() - m).exp()));
        exps[label] = 0.0;
        let sum: f64 = exps.iter().sum();
        let r = (m - s_y) + sum.ln();
        if let Some(g) = grad {
            let p_other = sigmoid(r);
            let scale = p_other / sum;
            for (gi, &e) in g.iter_mut().zip(exps.iter()) {
                *gi = T::from_f64(e * scale);
            }
            g[label] = T::from_f64(-p_other);
        }
        softplus(r)
    }
}
