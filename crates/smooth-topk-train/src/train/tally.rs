//! Running sums of a split's loss and top-k hits, against the labels it is scored with and
//! against the true labels (for a training split with label noise they differ).

use serde::{Deserialize, Serialize};
use smooth_topk::TopkError;

/// Loss and top-1 .. top-k accuracy (in %) of one split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitMetrics {
    pub loss: f64,
    /// `accuracy[j]` is the top-(j+1) accuracy in percent.
    pub accuracy: Vec<f64>,
    /// Images left out as unreadable (with `--skip-unreadable`); the metrics are of the rest.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl SplitMetrics {
    /// The top-`k` accuracy, `NaN` when `k` was not measured.
    pub fn top(&self, k: usize) -> f64 {
        k.checked_sub(1)
            .and_then(|i| self.accuracy.get(i))
            .copied()
            .unwrap_or(f64::NAN)
    }
}

pub(crate) struct Tally {
    loss_sum: f64,
    correct: Vec<usize>,
    correct_true: Vec<usize>,
    seen: usize,
    skipped: usize,
}

impl Tally {
    pub(crate) fn new(k: usize) -> Self {
        Self {
            loss_sum: 0.0,
            correct: vec![0; k],
            correct_true: vec![0; k],
            seen: 0,
            skipped: 0,
        }
    }

    /// Adds a batch of scores (`labels.len() x n`) scored against `labels` and `true_labels`.
    pub(crate) fn add_scores(
        &mut self,
        scores: &[f32],
        labels: &[usize],
        true_labels: &[usize],
        n: usize,
    ) -> Result<(), TopkError> {
        let k = self.correct.len();
        let counts = smooth_topk::topk_correct(scores, labels, n, k)?;
        let true_counts = if true_labels == labels {
            counts.clone()
        } else {
            smooth_topk::topk_correct(scores, true_labels, n, k)?
        };
        for (sum, add) in self.correct.iter_mut().zip(counts) {
            *sum += add;
        }
        for (sum, add) in self.correct_true.iter_mut().zip(true_counts) {
            *sum += add;
        }
        self.seen += labels.len();
        Ok(())
    }

    /// Counts images left out of the split's batches.
    pub(crate) fn add_skipped(&mut self, count: usize) {
        self.skipped += count;
    }

    /// Adds a batch's mean loss.
    pub(crate) fn add_loss(&mut self, mean: f64, count: usize) {
        self.loss_sum += mean * count as f64;
    }

    fn percent(&self, counts: &[usize]) -> Vec<f64> {
        let seen = self.seen.max(1) as f64;
        counts.iter().map(|&c| 100.0 * c as f64 / seen).collect()
    }

    /// Against the labels the split is scored with.
    pub(crate) fn metrics(&self) -> SplitMetrics {
        SplitMetrics {
            loss: self.loss_sum / self.seen.max(1) as f64,
            accuracy: self.percent(&self.correct),
            skipped: self.skipped,
        }
    }

    /// Top-1 .. top-k accuracy against the true labels.
    pub(crate) fn true_accuracy(&self) -> Vec<f64> {
        self.percent(&self.correct_true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_are_counted_against_both_label_sets() {
        let mut tally = Tally::new(2);
        // Two samples of 3 classes: sample 0 ranks 2 > 1 > 0, sample 1 ranks 0 > 2 > 1.
        let scores = [0.0, 1.0, 2.0, 5.0, 3.0, 4.0];
        tally.add_scores(&scores, &[2, 2], &[1, 1], 3).unwrap();
        tally.add_loss(0.5, 2);
        let m = tally.metrics();
        assert_eq!(m.accuracy, vec![50.0, 100.0]);
        assert_eq!(m.loss, 0.5);
        assert_eq!(tally.true_accuracy(), vec![0.0, 50.0]);
        assert_eq!(m.top(2), 100.0);
        assert!(m.top(3).is_nan() && m.top(0).is_nan());
    }
}
