//! Top-k accuracy.

use std::cmp::Ordering;

use crate::loss::validate_batch;
use crate::{Result, Scalar, TopkError};

/// Rank of the label in one row: the number of other classes not scoring below it.
/// Ties count against the label, so a constant (untrained) classifier scores 0, not 100%;
/// so do NaNs, so a diverged model never looks accurate. A label outside the row is an error.
pub fn label_rank<T: Scalar>(scores: &[T], label: usize) -> Result<usize> {
    if label >= scores.len() {
        return Err(TopkError::LabelOutOfRange {
            sample: 0,
            label,
            n: scores.len(),
        });
    }
    Ok(rank_of(scores, label))
}

/// [`label_rank`] for a label known to be in range.
fn rank_of<T: Scalar>(scores: &[T], label: usize) -> usize {
    let s_y = scores[label].to_f64();
    scores
        .iter()
        .enumerate()
        .filter(|&(i, v)| i != label && v.to_f64().partial_cmp(&s_y) != Some(Ordering::Less))
        .count()
}

/// For each `k` in `1..=max_k`, the number of samples whose label is among the top k scores
/// (ties counted against the label). Scores are row-major `labels.len() x n`. Every label is
/// among the top n, so the counts for `k >= n` are all the batch; the work is O(batch n + max_k)
/// whatever `max_k`, and an output too large to allocate is an error, not an abort.
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
    // How many samples have each rank (0..n), then the running sum: correct at k is the
    // number of ranks below k.
    let mut at_rank = vec![0usize; n.min(max_k)];
    for (row, &label) in scores.chunks(n).zip(labels) {
        if let Some(count) = at_rank.get_mut(rank_of(row, label)) {
            *count += 1;
        }
    }
    let mut correct = Vec::new();
    correct
        .try_reserve_exact(max_k)
        .map_err(|_| TopkError::TooLarge {
            what: "max_k",
            value: max_k,
        })?;
    let mut running = 0;
    correct.extend(at_rank.iter().map(|&c| {
        running += c;
        running
    }));
    correct.resize(max_k, labels.len());
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
        assert_eq!(label_rank(&nan[..3], 0), Ok(1));
        assert_eq!(label_rank(&nan[3..], 0), Ok(2));
    }
}
