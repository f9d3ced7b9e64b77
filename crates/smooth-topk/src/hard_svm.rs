//! The hard top-k SVM `l_k(s, y) = max(0, alpha + (s_\y[k] - s_y) / k)` and its subgradient.

use crate::config::{check_alpha, check_k};
use crate::loss::{Loss, Workspace};
use crate::{Result, Scalar};

/// Hard top-k multiclass SVM (the `tau -> 0` limit of [`crate::SmoothTopkSvm`]).
///
/// The subgradient, where the loss is positive, is `-1/k` on the label and `+1/(k t)` on each of
/// the `t` non-label scores tied with the k-th largest one: the limit of the smooth gradient, and
/// a valid subgradient at ties.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HardTopkSvm {
    pub(crate) k: usize,
    pub(crate) alpha: f64,
}

impl HardTopkSvm {
    /// Validates `k >= 1` and a finite `alpha >= 0`.
    pub fn new(k: usize, alpha: f64) -> Result<Self> {
        Ok(HardTopkSvm {
            k: check_k(k)?,
            alpha: check_alpha(alpha)?,
        })
    }
    /// The top-1 (Crammer-Singer) SVM with margin `alpha`.
    pub fn top1(alpha: f64) -> Result<Self> {
        Self::new(1, alpha)
    }
    /// The `k` of top-k.
    pub fn k(&self) -> usize {
        self.k
    }
    /// The margin.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }
}

/// k-th largest (1-based) of the scores other than the label's, using `buf` as scratch.
pub(crate) fn kth_largest_excluding<T: Scalar>(
    scores: &[T],
    label: usize,
    k: usize,
    buf: &mut Vec<f64>,
) -> f64 {
    buf.clear();
    buf.extend(
        scores[..label]
            .iter()
            .chain(&scores[label + 1..])
            .map(|v| v.to_f64()),
    );
    let (_, kth, _) = buf.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    *kth
}

impl Loss for HardTopkSvm {
    fn min_classes(&self) -> usize {
        self.k + 1
    }

    fn sample_loss<T: Scalar>(
        &self,
        scores: &[T],
        label: usize,
        grad: Option<&mut [T]>,
        ws: &mut Workspace,
    ) -> f64 {
        let k = self.k;
        let s_y = scores[label].to_f64();
        let kth = kth_largest_excluding(scores, label, k, &mut ws.values);
        let loss = (self.alpha + (kth - s_y) / k as f64).max(0.0);
        if let Some(g) = grad {
            g.iter_mut().for_each(|v| *v = T::from_f64(0.0));
            if loss > 0.0 {
                let ties = scores
                    .iter()
                    .enumerate()
                    .filter(|&(i, v)| i != label && v.to_f64() == kth)
                    .count();
                let share = T::from_f64(1.0 / (k * ties) as f64);
                for (i, v) in scores.iter().enumerate() {
                    if i != label && v.to_f64() == kth {
                        g[i] = share;
                    }
                }
                g[label] = T::from_f64(-1.0 / k as f64);
            }
        }
        loss
    }
}
