//! The hard top-k SVM `l_k(s, y) = max(0, alpha + (s_\y[k] - s_y) / k)` and its subgradient.

use crate::config::{check_alpha, check_k};
use crate::loss::{Kernel, Loss, Workspace};
use crate::simd::simd_targets;
use crate::{Result, Scalar};

/// Hard top-k multiclass SVM (Berrada, Zisserman and Kumar, ICLR 2018; the `tau -> 0` limit of
/// [`crate::SmoothTopkSvm`]): for the scores `s` of one sample and its label `y`,
///
/// ```text
/// l_k(s, y) = max(0, alpha + (s_\y[k] - s_y) / k)
/// ```
///
/// with `s_\y[k]` the k-th largest score of the classes other than `y`; `k = 1` is the
/// multiclass hinge loss. Batches are row-major `[batch, n]` slices (see [`Loss`]).
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

/// Above this k, or on rows shorter than `SCAN_MIN_ROW_PER_K * k`, the k-th largest comes from a
/// selection over a copy of the row; otherwise from one scan that keeps the k largest so far
/// (on short rows most blocks would still be inserting).
const SCAN_MAX_K: usize = 64;
const SCAN_MIN_ROW_PER_K: usize = 40;

simd_targets! {
/// k-th largest (1-based) of the scores other than the label's, using `buf` as scratch.
///
/// For small k: one pass over the row in blocks of eight; a block whose largest score does not
/// beat the current k-th largest (almost every block, after the first few) costs one vectorised
/// max, and the others insert their scores into the sorted list of the k largest. For larger
/// k: `select_nth_unstable` on a copy, O(n) either way.
pub(crate) fn kth_largest_excluding<T: Scalar>(
    scores: &[T],
    label: usize,
    k: usize,
    buf: &mut Vec<f64>,
) -> f64 {
    buf.clear();
    let others = || scores[..label].iter().chain(&scores[label + 1..]);
    if k > SCAN_MAX_K || scores.len() < SCAN_MIN_ROW_PER_K * k {
        buf.extend(others().map(|v| v.to_f64()));
        let (_, kth, _) = buf.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
        return *kth;
    }
    // `buf`: the largest scores so far, in decreasing order, at most k of them.
    let insert = |buf: &mut Vec<f64>, v: f64| {
        if buf.len() == k {
            if v <= buf[k - 1] {
                return;
            }
            buf.pop();
        }
        let at = buf.partition_point(|&b| b >= v);
        buf.insert(at, v);
    };
    for part in [&scores[..label], &scores[label + 1..]] {
        let chunks = part.chunks_exact(8);
        for &v in chunks.remainder() {
            insert(buf, v.to_f64());
        }
        for chunk in chunks {
            let top = chunk.iter().fold(f64::NEG_INFINITY, |m, v| {
                let v = v.to_f64();
                if v > m {
                    v
                } else {
                    m
                }
            });
            if buf.len() < k || top > buf[k - 1] {
                for &v in chunk {
                    insert(buf, v.to_f64());
                }
            }
        }
    }
    buf[k - 1]
}
}

simd_targets! {
/// The subgradient of a violated margin: `-1/k` on the label, `1 / (k t)` on each of the `t`
/// other classes tied at the k-th largest score, zero elsewhere.
fn write_subgradient<T: Scalar>(g: &mut [T], scores: &[T], label: usize, kth: f64, k: usize) {
    let is_kth = |i: usize, v: &T| i != label && v.to_f64() == kth;
    let ties = scores
        .iter()
        .enumerate()
        .map(|(i, v)| usize::from(is_kth(i, v)))
        .sum::<usize>();
    let share = 1.0 / (k * ties) as f64;
    for (gi, v) in g.iter_mut().zip(scores) {
        *gi = T::from_f64(if v.to_f64() == kth { share } else { 0.0 });
    }
    g[label] = T::from_f64(-1.0 / k as f64);
}
}

/// `alpha + (kth - s_y) / k`, rounded once: the subtraction, division and addition each leave a
/// rounding error that is recovered exactly (two-sum, and an fma for the division remainder) and
/// added back, so a result that nearly cancels (`alpha` against `(kth - s_y) / k`) keeps full
/// relative precision instead of inheriting the rounding of the larger terms.
fn margin_violation(alpha: f64, kth: f64, s_y: f64, k: f64) -> f64 {
    let two_sum = |a: f64, b: f64| {
        let s = a + b;
        let bb = s - a;
        (s, (a - (s - bb)) + (b - bb))
    };
    let (d, d_err) = two_sum(kth, -s_y);
    let q = d / k;
    // d = q k + rem exactly; (rem + d_err) / k is the part of (kth - s_y) / k that q misses.
    let rem = (-q).mul_add(k, d);
    let q_err = (rem + d_err) / k;
    let (s, s_err) = two_sum(alpha, q);
    s + (s_err + q_err)
}

impl Loss for HardTopkSvm {
    fn min_classes(&self) -> usize {
        // Saturating: a k no batch can satisfy is refused by the batch check, not wrapped.
        self.k.saturating_add(1)
    }
}

impl Kernel for HardTopkSvm {
    fn sample_loss<T: Scalar>(
        &self,
        _sample: usize,
        scores: &[T],
        label: usize,
        grad: Option<&mut [T]>,
        ws: &mut Workspace,
    ) -> f64 {
        let k = self.k;
        let s_y = scores[label].to_f64();
        let kth = kth_largest_excluding(scores, label, k, &mut ws.values);
        let loss = margin_violation(self.alpha, kth, s_y, k as f64).max(0.0);
        if let Some(g) = grad {
            if loss > 0.0 {
                write_subgradient(g, scores, label, kth, k);
            } else {
                g.iter_mut().for_each(|v| *v = T::from_f64(0.0));
            }
        }
        loss
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Both ways of finding the k-th largest (the scan for small k on long rows, the
        /// selection otherwise) against sorting, on rows with many ties.
        #[test]
        fn kth_largest_matches_sorting(
            row in proptest::collection::vec(-20i32..20, 2..3000),
            k in 1usize..100,
            label in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let row: Vec<f64> = row.iter().map(|&v| f64::from(v) * 0.25).collect();
            let label = label.index(row.len());
            let k = k.min(row.len() - 1);
            let mut sorted: Vec<f64> = row
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != label)
                .map(|(_, &v)| v)
                .collect();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let got = kth_largest_excluding(&row, label, k, &mut Vec::new());
            proptest::prop_assert_eq!(got, sorted[k - 1]);
        }
    }

    #[test]
    fn margin_violation_is_correctly_rounded_when_terms_cancel() {
        // alpha + (kth - s_y) / 3 with alpha ~ -(kth - s_y)/3: exact value from integers.
        let (alpha, kth, s_y) = (0.7268623777801726f64, 0.1, 2.2);
        let got = margin_violation(alpha, kth, s_y, 3.0);
        // Reference in exact rational arithmetic on the binary values, via i128 scaling by 2^60.
        let scale = (1u128 << 60) as f64;
        let to_int = |v: f64| (v * scale) as i128; // exact: these values have < 60 fraction bits
        let num = 3 * to_int(alpha) + to_int(kth) - to_int(s_y);
        let want = num as f64 / (3.0 * scale);
        assert!(
            (got - want).abs() <= f64::EPSILON * want.abs(),
            "{got} vs {want}"
        );
        assert_eq!(margin_violation(1.0, 0.5, 0.5, 2.0), 1.0);
    }
}
