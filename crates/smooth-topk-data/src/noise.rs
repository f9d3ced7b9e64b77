//! Label noise for the training split (the paper's noisy CIFAR-100 experiments).
//!
//! A noisy label is drawn uniformly from the classes of the true label's group, so noise
//! confuses a class only with its neighbours: top-5 information survives while top-1 suffers.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::dataset::check_labels;
use crate::{DataError, ImageDataset};

/// Which classes a label may be replaced by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoiseGrouping {
    /// Groups of `group_size` consecutive class indices: the reference implementation's
    /// `y - y % 5 + U{0..4}` for group size 5.
    Consecutive,
    /// The classes sharing the label's coarse label (CIFAR-100 super-classes, synthetic groups).
    Coarse,
}

/// With probability `p`, replaces each label by one drawn uniformly from its group; returns the
/// new labels (the caller replaces `data.labels`).
///
/// The draw may return the true label, so the effective flip rate is `(1 - 1/group_size) p`.
/// `group_size` is used by [`NoiseGrouping::Consecutive`] only; [`NoiseGrouping::Coarse`]
/// groups are the sets of fine classes seen with each coarse label in `data`.
///
/// Every label consumes the same random draws whatever `p` is, so for a fixed seed the labels
/// corrupted at a lower `p` are a subset of those corrupted at a higher `p`.
///
/// Errors: `p` outside [0, 1] or NaN; `Coarse` without coarse labels, or with a fine class seen
/// under two coarse labels; `Consecutive` with `group_size` 0 or not dividing `num_classes`; a
/// label `>= num_classes`.
pub fn apply_label_noise(
    data: &ImageDataset,
    p: f64,
    grouping: NoiseGrouping,
    group_size: usize,
    seed: u64,
) -> Result<Vec<u16>, DataError> {
    noisy_labels(
        &data.labels,
        data.coarse_labels.as_deref(),
        data.num_classes,
        p,
        grouping,
        group_size,
        seed,
    )
}

/// [`apply_label_noise`] on labels alone (with the coarse labels when the grouping needs them).
pub fn noisy_labels(
    labels: &[u16],
    coarse_labels: Option<&[u16]>,
    num_classes: usize,
    p: f64,
    grouping: NoiseGrouping,
    group_size: usize,
    seed: u64,
) -> Result<Vec<u16>, DataError> {
    if !(0.0..=1.0).contains(&p) {
        return Err(DataError::InvalidProbability(p));
    }
    check_labels(labels, num_classes)?;
    let groups = match grouping {
        NoiseGrouping::Consecutive => consecutive_groups(num_classes, group_size)?,
        NoiseGrouping::Coarse => coarse_groups(labels, coarse_labels, num_classes)?,
    };
    let mut rng = StdRng::seed_from_u64(seed);
    Ok(labels
        .iter()
        .map(|&label| {
            let group = &groups[usize::from(label)];
            let corrupt = rng.random::<f64>() < p;
            let replacement = group[rng.random_range(0..group.len())];
            if corrupt {
                replacement
            } else {
                label
            }
        })
        .collect())
}

/// The group (list of classes) of every class: `y - y % size .. y - y % size + size`.
fn consecutive_groups(num_classes: usize, group_size: usize) -> Result<Vec<Vec<u16>>, DataError> {
    if group_size == 0 || !num_classes.is_multiple_of(group_size) {
        return Err(DataError::GroupSizeMismatch {
            num_classes,
            group_size,
        });
    }
    Ok((0..num_classes)
        .map(|class| {
            let start = class - class % group_size;
            (start..start + group_size).map(|c| c as u16).collect()
        })
        .collect())
}

/// The group of every class seen in `labels`: all fine classes with the same coarse label.
fn coarse_groups(
    labels: &[u16],
    coarse: Option<&[u16]>,
    num_classes: usize,
) -> Result<Vec<Vec<u16>>, DataError> {
    let coarse = coarse.ok_or(DataError::MissingCoarseLabels)?;
    if coarse.len() != labels.len() {
        return Err(DataError::LengthMismatch {
            what: "coarse_labels",
            got: coarse.len(),
            expected: labels.len(),
        });
    }
    let mut coarse_of_class: Vec<Option<u16>> = vec![None; num_classes];
    for (&fine, &coarse) in labels.iter().zip(coarse) {
        match coarse_of_class[usize::from(fine)] {
            None => coarse_of_class[usize::from(fine)] = Some(coarse),
            Some(first) if first != coarse => {
                return Err(DataError::InconsistentCoarseLabel {
                    class: fine,
                    first,
                    second: coarse,
                })
            }
            Some(_) => {}
        }
    }
    // Classes come out in increasing order, so the draw does not depend on image order.
    Ok(coarse_of_class
        .iter()
        .map(|&own| {
            (0..num_classes)
                .filter(|&c| own.is_some() && coarse_of_class[c] == own)
                .map(|c| c as u16)
                .collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` images without pixels, labels cycling through 100 classes, coarse label
    /// `label % 20`, so that coarse groups (of 5) are not consecutive runs.
    fn labelled(n: usize) -> ImageDataset {
        let labels: Vec<u16> = (0..n).map(|i| ((i * 37) % 100) as u16).collect();
        let coarse = labels.iter().map(|&l| l % 20).collect();
        ImageDataset {
            images: Vec::new(),
            labels,
            coarse_labels: Some(coarse),
            num_classes: 100,
            channels: 3,
            height: 0,
            width: 0,
        }
    }

    #[test]
    fn zero_probability_is_the_identity() {
        let data = labelled(1000);
        for grouping in [NoiseGrouping::Consecutive, NoiseGrouping::Coarse] {
            assert_eq!(
                apply_label_noise(&data, 0.0, grouping, 5, 3).unwrap(),
                data.labels
            );
        }
    }

    #[test]
    fn full_noise_stays_in_the_consecutive_group_and_changes_four_fifths() {
        let data = labelled(20_000);
        let noisy = apply_label_noise(&data, 1.0, NoiseGrouping::Consecutive, 5, 11).unwrap();
        assert!(noisy
            .iter()
            .zip(&data.labels)
            .all(|(&n, &y)| n / 5 == y / 5));
        let changed = noisy
            .iter()
            .zip(&data.labels)
            .filter(|(n, y)| n != y)
            .count();
        // Binomial(20000, 0.8): standard deviation ~57, so +-400 is a 7-sigma bound.
        assert!((15_600..=16_400).contains(&changed), "{changed} changed");
        // Every member of a group is reachable.
        for class in 0..5 {
            assert!(noisy
                .iter()
                .zip(&data.labels)
                .any(|(&n, &y)| y == 0 && n == class));
        }
    }

    #[test]
    fn coarse_noise_stays_in_the_coarse_group() {
        let data = labelled(20_000);
        let coarse = data.coarse_labels.as_ref().unwrap();
        let coarse_of = |class: u16| coarse[data.labels.iter().position(|&l| l == class).unwrap()];
        let noisy = apply_label_noise(&data, 1.0, NoiseGrouping::Coarse, 0, 5).unwrap();
        assert!(noisy.iter().zip(coarse).all(|(&n, &c)| coarse_of(n) == c));
        let changed = noisy
            .iter()
            .zip(&data.labels)
            .filter(|(n, y)| n != y)
            .count();
        assert!((15_600..=16_400).contains(&changed), "{changed} changed");
    }

    #[test]
    fn noise_is_deterministic_and_nested_in_p() {
        let data = labelled(5000);
        let at =
            |p, seed| apply_label_noise(&data, p, NoiseGrouping::Consecutive, 5, seed).unwrap();
        assert_eq!(at(0.4, 9), at(0.4, 9));
        assert_ne!(at(0.4, 9), at(0.4, 10));
        let (low, high) = (at(0.2, 9), at(0.6, 9));
        for i in 0..data.len() {
            if low[i] != data.labels[i] {
                assert_eq!(
                    low[i], high[i],
                    "label {i} corrupted at p = 0.2 but not the same at 0.6"
                );
            }
        }
        let rate = |noisy: &[u16]| {
            noisy
                .iter()
                .zip(&data.labels)
                .filter(|(n, y)| n != y)
                .count()
        };
        assert!(rate(&low) < rate(&high));
    }

    #[test]
    fn invalid_arguments_are_rejected() {
        let mut data = labelled(10);
        for p in [-0.1, 1.5, f64::NAN] {
            let err = apply_label_noise(&data, p, NoiseGrouping::Consecutive, 5, 0).unwrap_err();
            assert!(matches!(err, DataError::InvalidProbability(_)), "{err}");
        }
        let err = apply_label_noise(&data, 0.5, NoiseGrouping::Consecutive, 3, 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "100 classes cannot be split into groups of 3"
        );
        assert!(apply_label_noise(&data, 0.5, NoiseGrouping::Consecutive, 0, 0).is_err());

        // Image 1 gets class 0 (as image 0) under another coarse label.
        data.labels[1] = data.labels[0];
        data.coarse_labels.as_mut().unwrap()[1] = data.coarse_labels.as_ref().unwrap()[0] + 1;
        let err = apply_label_noise(&data, 0.5, NoiseGrouping::Coarse, 5, 0).unwrap_err();
        assert!(
            matches!(err, DataError::InconsistentCoarseLabel { class: 0, .. }),
            "{err}"
        );
        data.coarse_labels = None;
        let err = apply_label_noise(&data, 0.5, NoiseGrouping::Coarse, 5, 0).unwrap_err();
        assert!(matches!(err, DataError::MissingCoarseLabels));
    }
}
