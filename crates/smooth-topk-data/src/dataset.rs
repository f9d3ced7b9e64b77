//! The in-memory dataset type, validation splits and balanced subsets.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::DataError;

/// Images stored as `u8`, channel-major (C x H x W per image, images back to back).
#[derive(Clone, Debug, PartialEq)]
pub struct ImageDataset {
    /// Pixel bytes, `len() * image_len()` of them.
    pub images: Vec<u8>,
    /// Class index of each image, `< num_classes`.
    pub labels: Vec<u16>,
    /// Super-class of each image when the source has one (CIFAR-100 coarse labels, the group of
    /// a synthetic class).
    pub coarse_labels: Option<Vec<u16>>,
    pub num_classes: usize,
    /// Always 3 (RGB) in this crate.
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

/// Which split of an experiment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SplitName {
    Train,
    Valid,
    Test,
}

impl SplitName {
    pub fn name(self) -> &'static str {
        match self {
            SplitName::Train => "train",
            SplitName::Valid => "valid",
            SplitName::Test => "test",
        }
    }
}

/// The three splits of an experiment.
#[derive(Clone, Debug, PartialEq)]
pub struct Splits {
    pub train: ImageDataset,
    pub valid: ImageDataset,
    pub test: ImageDataset,
}

impl ImageDataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes per image: `channels * height * width`.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The CHW bytes of image `i`.
    ///
    /// # Panics
    ///
    /// If `i >= len()` (or `images` is shorter than [`ImageDataset::validate`] requires).
    pub fn image(&self, i: usize) -> &[u8] {
        let len = self.image_len();
        &self.images[i * len..(i + 1) * len]
    }

    /// Checks the invariants the fields document: buffer lengths and label ranges.
    pub fn validate(&self) -> Result<(), DataError> {
        let expected = self.len() * self.image_len();
        if self.images.len() != expected {
            return Err(DataError::LengthMismatch {
                what: "images",
                got: self.images.len(),
                expected,
            });
        }
        if let Some(coarse) = &self.coarse_labels {
            if coarse.len() != self.len() {
                return Err(DataError::LengthMismatch {
                    what: "coarse_labels",
                    got: coarse.len(),
                    expected: self.len(),
                });
            }
        }
        check_labels(&self.labels, self.num_classes)
    }

    /// The images at `indices`, in that order (repeats allowed).
    ///
    /// # Panics
    ///
    /// If an index is `>= len()`.
    pub fn subset(&self, indices: &[usize]) -> ImageDataset {
        let mut images = Vec::with_capacity(indices.len() * self.image_len());
        for &i in indices {
            images.extend_from_slice(self.image(i));
        }
        ImageDataset {
            images,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            coarse_labels: self
                .coarse_labels
                .as_ref()
                .map(|coarse| indices.iter().map(|&i| coarse[i]).collect()),
            num_classes: self.num_classes,
            channels: self.channels,
            height: self.height,
            width: self.width,
        }
    }

    /// Per-channel mean and standard deviation of pixel values scaled to `[0, 1]`, over all
    /// images.
    ///
    /// Only the first three channels are reported. An empty dataset gives mean 0 and standard
    /// deviation 1, the identity normalisation, so that a caller never divides by zero.
    pub fn channel_stats(&self) -> ([f32; 3], [f32; 3]) {
        let mut sums = PixelSums::default();
        for image in self.images.chunks_exact(self.image_len().max(1)) {
            sums.add_image(image, self.height * self.width);
        }
        sums.stats()
    }
}

/// Exact per-channel sums of pixel values and their squares: integer sums do not depend on the
/// order in which images are added (50k CIFAR images give sums of squares near 2^41).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PixelSums {
    sum: [u64; 3],
    sum_sq: [u64; 3],
    /// Pixels per channel.
    count: u64,
}

impl PixelSums {
    /// Adds the first three channel planes (`plane` bytes each) of a CHW image.
    pub(crate) fn add_image(&mut self, image: &[u8], plane: usize) {
        for (c, channel) in image.chunks_exact(plane.max(1)).take(3).enumerate() {
            for &v in channel {
                self.sum[c] += u64::from(v);
                self.sum_sq[c] += u64::from(v) * u64::from(v);
            }
        }
        self.count += plane as u64;
    }

    pub(crate) fn merge(mut self, other: PixelSums) -> PixelSums {
        for c in 0..3 {
            self.sum[c] += other.sum[c];
            self.sum_sq[c] += other.sum_sq[c];
        }
        self.count += other.count;
        self
    }

    /// Mean and standard deviation of `pixel / 255`; mean 0 and deviation 1 (the identity) when
    /// nothing was added.
    pub(crate) fn stats(&self) -> ([f32; 3], [f32; 3]) {
        if self.count == 0 {
            return ([0.0; 3], [1.0; 3]);
        }
        let count = self.count as f64;
        let mut mean = [0.0f32; 3];
        let mut std = [0.0f32; 3];
        for c in 0..3 {
            let m = self.sum[c] as f64 / count;
            let var = (self.sum_sq[c] as f64 / count - m * m).max(0.0);
            mean[c] = (m / 255.0) as f32;
            std[c] = (var.sqrt() / 255.0) as f32;
        }
        (mean, std)
    }
}

/// Errors on the first label `>= num_classes`.
pub(crate) fn check_labels(labels: &[u16], num_classes: usize) -> Result<(), DataError> {
    match labels
        .iter()
        .position(|&label| usize::from(label) >= num_classes)
    {
        Some(index) => Err(DataError::InvalidLabel {
            index,
            label: labels[index],
            num_classes,
        }),
        None => Ok(()),
    }
}

/// Indices of the images of each class, in dataset order.
fn indices_by_class(labels: &[u16], num_classes: usize) -> Result<Vec<Vec<usize>>, DataError> {
    check_labels(labels, num_classes)?;
    let mut by_class = vec![Vec::new(); num_classes];
    for (i, &label) in labels.iter().enumerate() {
        by_class[usize::from(label)].push(i);
    }
    Ok(by_class)
}

/// Split off a validation set of `valid_size` images chosen by a seeded shuffle. Returns
/// `(train, valid)`.
///
/// The split is stratified (`valid_size / num_classes` images of every class) when
/// `valid_size` is a multiple of `num_classes` and every class has more images than that;
/// otherwise it is a plain seeded shuffle of all images. Both parts keep the original image
/// order, so only the choice of images depends on the seed. `valid_size = 0` gives an empty
/// validation set.
///
/// Errors if `valid_size >= len()` or a label is out of range.
pub fn split_validation(
    data: &ImageDataset,
    valid_size: usize,
    seed: u64,
) -> Result<(ImageDataset, ImageDataset), DataError> {
    let (train, valid) =
        split_validation_indices(&data.labels, data.num_classes, valid_size, seed)?;
    Ok((data.subset(&train), data.subset(&valid)))
}

/// [`split_validation`] as index lists into `labels` (`(train, valid)`, each in increasing
/// order), for callers that keep the images where they are.
pub fn split_validation_indices(
    labels: &[u16],
    num_classes: usize,
    valid_size: usize,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>), DataError> {
    if valid_size >= labels.len() {
        return Err(DataError::ValidationTooLarge {
            valid_size,
            len: labels.len(),
        });
    }
    let by_class = indices_by_class(labels, num_classes)?;
    let mut rng = StdRng::seed_from_u64(seed);
    let per_class = valid_size / num_classes.max(1);
    let stratified = valid_size.is_multiple_of(num_classes.max(1))
        && by_class.iter().all(|indices| indices.len() > per_class);

    let mut in_valid = vec![false; labels.len()];
    if stratified {
        for mut indices in by_class {
            indices.shuffle(&mut rng);
            for &i in &indices[..per_class] {
                in_valid[i] = true;
            }
        }
    } else {
        let mut indices: Vec<usize> = (0..labels.len()).collect();
        indices.shuffle(&mut rng);
        for &i in &indices[..valid_size] {
            in_valid[i] = true;
        }
    }
    let (valid, train): (Vec<usize>, Vec<usize>) = (0..labels.len()).partition(|&i| in_valid[i]);
    Ok((train, valid))
}

/// Balanced per-class subset of `per_class` images of every class, chosen by a seeded shuffle
/// (the ImageNet subsets of the paper). The result is ordered by class, and within a class by
/// original position.
///
/// Errors if a class has fewer than `per_class` images, `per_class` is 0, or a label is out of
/// range.
pub fn balanced_subset(
    data: &ImageDataset,
    per_class: usize,
    seed: u64,
) -> Result<ImageDataset, DataError> {
    let chosen = balanced_subset_indices(&data.labels, data.num_classes, per_class, seed)?;
    Ok(data.subset(&chosen))
}

/// [`balanced_subset`] as an index list into `labels`.
pub fn balanced_subset_indices(
    labels: &[u16],
    num_classes: usize,
    per_class: usize,
    seed: u64,
) -> Result<Vec<usize>, DataError> {
    if per_class == 0 {
        return Err(DataError::InvalidConfig {
            name: "per_class",
            value: 0,
            reason: "must be positive",
        });
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut chosen = Vec::with_capacity(per_class.saturating_mul(num_classes).min(labels.len()));
    for (class, mut indices) in indices_by_class(labels, num_classes)?
        .into_iter()
        .enumerate()
    {
        if indices.len() < per_class {
            return Err(DataError::NotEnoughImages {
                class: class.to_string(),
                available: indices.len(),
                requested: per_class,
            });
        }
        indices.shuffle(&mut rng);
        let mut picked = indices[..per_class].to_vec();
        picked.sort_unstable();
        chosen.extend(picked);
    }
    Ok(chosen)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `n` 3x2x2 images whose first two bytes hold the image index (little endian), with label
    /// `i % num_classes` and coarse label `label / 2`.
    pub(crate) fn indexed_dataset(n: usize, num_classes: usize) -> ImageDataset {
        let image_len = 3 * 2 * 2;
        let mut images = vec![0u8; n * image_len];
        for i in 0..n {
            images[i * image_len] = i as u8;
            images[i * image_len + 1] = (i >> 8) as u8;
        }
        ImageDataset {
            images,
            labels: (0..n).map(|i| (i % num_classes) as u16).collect(),
            coarse_labels: Some((0..n).map(|i| (i % num_classes / 2) as u16).collect()),
            num_classes,
            channels: 3,
            height: 2,
            width: 2,
        }
    }

    fn ids(data: &ImageDataset) -> Vec<usize> {
        (0..data.len())
            .map(|i| usize::from(data.image(i)[0]) + 256 * usize::from(data.image(i)[1]))
            .collect()
    }

    #[test]
    fn subset_copies_images_and_both_label_kinds() {
        let data = indexed_dataset(10, 4);
        let sub = data.subset(&[7, 2, 7]);
        assert_eq!(ids(&sub), vec![7, 2, 7]);
        assert_eq!(sub.labels, vec![3, 2, 3]);
        assert_eq!(sub.coarse_labels, Some(vec![1, 1, 1]));
        assert_eq!(sub.image(1), data.image(2));
        sub.validate().unwrap();
    }

    #[test]
    fn channel_stats_match_a_hand_computation() {
        let data = ImageDataset {
            // One 3x1x2 image: red (0, 255), green (51, 51), blue (0, 102).
            images: vec![0, 255, 51, 51, 0, 102],
            labels: vec![0],
            coarse_labels: None,
            num_classes: 1,
            channels: 3,
            height: 1,
            width: 2,
        };
        let (mean, std) = data.channel_stats();
        let expected_mean = [0.5, 0.2, 0.2];
        let expected_std = [0.5, 0.0, 0.2];
        for c in 0..3 {
            assert!((mean[c] - expected_mean[c]).abs() < 1e-6, "{mean:?}");
            assert!((std[c] - expected_std[c]).abs() < 1e-6, "{std:?}");
        }
        let empty = data.subset(&[]);
        assert_eq!(empty.channel_stats(), ([0.0; 3], [1.0; 3]));
    }

    #[test]
    fn validate_reports_bad_lengths_and_labels() {
        let mut data = indexed_dataset(4, 2);
        data.labels[3] = 2;
        let err = data.validate().unwrap_err().to_string();
        assert!(err.contains("image 3: label 2"), "{err}");
        data.labels[3] = 1;
        data.images.pop();
        assert!(matches!(
            data.validate(),
            Err(DataError::LengthMismatch {
                what: "images",
                got: 47,
                expected: 48
            })
        ));
    }

    #[test]
    fn stratified_split_takes_equal_counts_per_class_without_overlap() {
        let data = indexed_dataset(100, 5);
        let (train, valid) = split_validation(&data, 10, 7).unwrap();
        assert_eq!((train.len(), valid.len()), (90, 10));
        for class in 0..5 {
            assert_eq!(valid.labels.iter().filter(|&&l| l == class).count(), 2);
        }
        let mut all = ids(&train);
        all.extend(ids(&valid));
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        // Same seed, same split; another seed, another split.
        assert_eq!(split_validation(&data, 10, 7).unwrap().1, valid);
        assert_ne!(ids(&split_validation(&data, 10, 8).unwrap().1), ids(&valid));
    }

    #[test]
    fn indivisible_split_is_a_plain_shuffle() {
        let data = indexed_dataset(50, 5);
        let (train, valid) = split_validation(&data, 7, 1).unwrap();
        assert_eq!((train.len(), valid.len()), (43, 7));
        let valid_ids = ids(&valid);
        assert!(ids(&train).iter().all(|id| !valid_ids.contains(id)));
        let (train0, valid0) = split_validation(&data, 0, 1).unwrap();
        assert_eq!((train0, valid0.len()), (data.clone(), 0));
    }

    #[test]
    fn split_rejects_a_validation_set_as_large_as_the_data() {
        let data = indexed_dataset(10, 2);
        let err = split_validation(&data, 10, 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "validation size 10 must be smaller than the dataset size 10"
        );
    }

    #[test]
    fn balanced_subset_picks_per_class_images_deterministically() {
        let data = indexed_dataset(60, 3);
        let sub = balanced_subset(&data, 4, 3).unwrap();
        assert_eq!(sub.labels, vec![0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]);
        assert!(ids(&sub)
            .iter()
            .zip(&sub.labels)
            .all(|(&id, &label)| id % 3 == usize::from(label)));
        assert_eq!(balanced_subset(&data, 4, 3).unwrap(), sub);
        assert_ne!(balanced_subset(&data, 4, 4).unwrap(), sub);
        let err = balanced_subset(&data, 21, 3).unwrap_err().to_string();
        assert_eq!(err, "class 0 has 20 images, 21 are needed");
        assert!(balanced_subset(&data, 0, 3).is_err());
    }
}
