//! Where the pixels of a split come from, and which images (with which labels) a split holds.
//!
//! A [`Split`] is a list of images of an [`ImageSource`] with their labels; it never copies
//! pixels. In-memory sources (the synthetic set, CIFAR-100, a small folder decoded up front)
//! hand out slices of their buffer; file sources decode an image when a batch asks for it, so
//! that memory is bounded by the batches in flight, not by the dataset.

use std::path::PathBuf;
use std::sync::Arc;

use crate::folder::read_image;
use crate::{DataError, ImageDataset};

/// Image files decoded on demand to `size x size` (shorter side resized, centre cropped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageFiles {
    pub paths: Vec<PathBuf>,
    pub size: usize,
}

/// The pixels behind a split: channel-major `u8` images of one size.
#[derive(Clone, Debug)]
pub enum ImageSource {
    /// Decoded images in memory.
    Memory(Arc<ImageDataset>),
    /// Image files, decoded when read.
    Files(Arc<ImageFiles>),
}

impl ImageSource {
    /// Number of images.
    pub fn len(&self) -> usize {
        match self {
            ImageSource::Memory(data) => data.len(),
            ImageSource::Files(files) => files.paths.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Height and width of every image.
    pub fn image_size(&self) -> (usize, usize) {
        match self {
            ImageSource::Memory(data) => (data.height, data.width),
            ImageSource::Files(files) => (files.size, files.size),
        }
    }

    /// The CHW bytes of image `i`: a slice of the buffer, or the file decoded into `scratch`.
    ///
    /// Errors: `i` out of range; a file that cannot be read or decoded (named in the error).
    pub fn image<'a>(&'a self, i: usize, scratch: &'a mut Vec<u8>) -> Result<&'a [u8], DataError> {
        if i >= self.len() {
            return Err(DataError::IndexOutOfRange {
                index: i,
                len: self.len(),
            });
        }
        match self {
            ImageSource::Memory(data) => Ok(data.image(i)),
            ImageSource::Files(files) => {
                *scratch = read_image(&files.paths[i], files.size)?;
                Ok(scratch)
            }
        }
    }

    /// What to call image `i` in a report: its file, or its index.
    pub fn describe(&self, i: usize) -> String {
        match self {
            ImageSource::Files(files) => files
                .paths
                .get(i)
                .map_or_else(|| format!("image {i}"), |p| p.display().to_string()),
            ImageSource::Memory(_) => format!("image {i}"),
        }
    }
}

/// The images of a split: indices into a source, with their labels.
#[derive(Clone, Debug)]
pub struct Split {
    pub source: ImageSource,
    /// Source index of every image of the split.
    pub items: Vec<usize>,
    /// The labels a model is trained or scored against (after label noise, for a training
    /// split).
    pub labels: Vec<u16>,
    /// The labels before any noise; equal to `labels` for a clean split.
    pub true_labels: Vec<u16>,
    /// Super-class of every image, when the source has them.
    pub coarse_labels: Option<Vec<u16>>,
    pub num_classes: usize,
}

impl Split {
    /// A clean split of `items` of `source` with their `labels`. Errors on mismatched lengths,
    /// an item outside the source or a label `>= num_classes`.
    pub fn new(
        source: ImageSource,
        items: Vec<usize>,
        labels: Vec<u16>,
        coarse_labels: Option<Vec<u16>>,
        num_classes: usize,
    ) -> Result<Self, DataError> {
        if labels.len() != items.len() {
            return Err(DataError::LengthMismatch {
                what: "labels",
                got: labels.len(),
                expected: items.len(),
            });
        }
        if let Some(coarse) = &coarse_labels {
            if coarse.len() != items.len() {
                return Err(DataError::LengthMismatch {
                    what: "coarse_labels",
                    got: coarse.len(),
                    expected: items.len(),
                });
            }
        }
        if let Some(&index) = items.iter().find(|&&i| i >= source.len()) {
            return Err(DataError::IndexOutOfRange {
                index,
                len: source.len(),
            });
        }
        crate::dataset::check_labels(&labels, num_classes)?;
        Ok(Split {
            source,
            items,
            true_labels: labels.clone(),
            labels,
            coarse_labels,
            num_classes,
        })
    }

    /// All images of an in-memory dataset, with its labels.
    pub fn whole(data: Arc<ImageDataset>) -> Result<Self, DataError> {
        let items = (0..data.len()).collect();
        let (labels, coarse, classes) = (
            data.labels.clone(),
            data.coarse_labels.clone(),
            data.num_classes,
        );
        Split::new(ImageSource::Memory(data), items, labels, coarse, classes)
    }

    /// The images at `positions` of this split, in that order, with their labels.
    ///
    /// # Panics
    ///
    /// If a position is `>= len()`.
    pub fn select(&self, positions: &[usize]) -> Split {
        let pick = |v: &[u16]| positions.iter().map(|&p| v[p]).collect::<Vec<u16>>();
        Split {
            source: self.source.clone(),
            items: positions.iter().map(|&p| self.items[p]).collect(),
            labels: pick(&self.labels),
            true_labels: pick(&self.true_labels),
            coarse_labels: self.coarse_labels.as_deref().map(pick),
            num_classes: self.num_classes,
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Training labels that differ from the true ones.
    pub fn changed_labels(&self) -> usize {
        self.labels
            .iter()
            .zip(&self.true_labels)
            .filter(|(a, b)| a != b)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::tests::indexed_dataset;

    #[test]
    fn a_split_selects_images_without_copying_them() {
        let data = Arc::new(indexed_dataset(10, 4));
        let split = Split::whole(data.clone()).unwrap();
        let part = split.select(&[7, 2]);
        assert_eq!(part.items, [7, 2]);
        assert_eq!(part.labels, [3, 2]);
        assert_eq!(part.coarse_labels, Some(vec![1, 1]));
        let mut scratch = Vec::new();
        let image = part.source.image(part.items[0], &mut scratch).unwrap();
        assert_eq!(image, data.image(7));
        assert!(scratch.is_empty());
        assert!(matches!(
            part.source.image(10, &mut scratch),
            Err(DataError::IndexOutOfRange { index: 10, len: 10 })
        ));
    }

    #[test]
    fn inconsistent_splits_are_refused() {
        let source = ImageSource::Memory(Arc::new(indexed_dataset(4, 2)));
        let err = Split::new(source.clone(), vec![0, 1], vec![0], None, 2).unwrap_err();
        assert!(matches!(err, DataError::LengthMismatch { .. }), "{err}");
        let err = Split::new(source.clone(), vec![4], vec![0], None, 2).unwrap_err();
        assert!(matches!(err, DataError::IndexOutOfRange { .. }), "{err}");
        let err = Split::new(source, vec![0], vec![2], None, 2).unwrap_err();
        assert!(matches!(err, DataError::InvalidLabel { .. }), "{err}");
    }
}
