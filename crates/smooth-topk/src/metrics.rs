//! Top-k accuracy.

use std::cmp::Ordering;

use crate::loss::validate_batch;
use crate::{Result, Scalar, TopkError};

/// Rank of the label in one row: the number of other classes not scoring below it.
/// Ties count against the label, so a constant (untrained) classifier scores 0, not 100%;
/// so do NaNs, so a diverged model never looks accurate.
pub fn label_rank<T: Scalar>(scores: &[T], label: usize) -> usize {
    let s_y = scores[label].to_f64();
    scores
        .iter()
        .enumerate()
        .filter(|&(i, v)| i != label && v.to_f64().partial_cmp(&s_y) != Some(Ordering::Less))
        .count()
}

/// For each `k` in `1..=max_k`, the number of samples whose label is among the top k scores
/// (ties counted against the label). Scores are row-major `labels.len() x n`.
pub fn topk_correct<T: Scalar>(
    scores: &[T],
    labels: &[usize],
    n: usize,
    max_k: usize,
) -> Result<Vec<usize>> {
    if max_k == 0 {
        return Err(TopkError::ZeroK);
    }
    validate_batch(scores, labels, n, 1)?;
    let mut correct = vec![0usize; max_k];
    for (row, &label) in scores.chunks(n).zip(labels) {
        let rank = label_rank(row, label);
        // Correct at every k > rank.
        for c in correct.iter_mut().skip(rank) {
            *c += 1;
        }
    }
    Ok(correct)
}

/// Top-1 .. top-`max_k` accuracy in [0, 1] (see [`topk_correct`]).
pub fn topk_accuracy<T: Scalar>(
    scores: &[T],
    labels: &[usize],
    n: usize,
    max_k: usize,
) -> Result<Vec<f64>> {
    let correct = topk_correct(scores, labels, n, max_k)?;
    Ok(correct
        .iter()
        .map(|&c| c as f64 / labels.len() as f64)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_ranks_with_pessimistic_ties() {
        let scores = [0.1f32, 0.9, 0.5, 0.0, /* row 2 */ 1.0, 1.0, 1.0, 1.0];
        let labels = [2, 0];
        assert_eq!(
            topk_correct(&scores, &labels, 4, 4).unwrap(),
            vec![0, 1, 1, 2]
        );
        let acc = topk_accuracy(&scores, &labels, 4, 2).unwrap();
        assert_eq!(acc, vec![0.0, 0.5]);
        assert_eq!(
            topk_correct(&scores, &[4, 0], 4, 1),
            Err(TopkError::LabelOutOfRange {
                sample: 0,
                label: 4,
                n: 4
            })
        );
        assert_eq!(topk_correct(&scores, &labels, 4, 0), Err(TopkError::ZeroK));
        // A NaN anywhere in the row never makes the label correct.
        let nan = [0.5f32, f32::NAN, 0.1, /* row 2 */ f32::NAN, 0.2, 0.3];
        assert_eq!(label_rank(&nan[..3], 0), 1);
        assert_eq!(label_rank(&nan[3..], 0), 2);
    }
}
