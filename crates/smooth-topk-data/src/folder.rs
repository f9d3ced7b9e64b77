//! Image-folder datasets in the ImageNet layout.
//!
//! ```text
//! root/train/<class>/*.{jpg,jpeg,png}
//! root/val/<class>/*.{jpg,jpeg,png}     (or root/test/<class>/...): the test set
//! ```
//!
//! Classes are the sorted names of the subdirectories of `train/`; the test directory must use
//! the same names (it may hold fewer classes). A test split is required: without `val/` or
//! `test/` the loader errors rather than silently carving one out of the training images.
//! Files are selected by extension (case-insensitive), others are ignored, and every listing is
//! sorted so that the result depends only on the files and the seed.
//!
//! Images are stored square: the shorter side is resized to `image_size` and the centre is
//! cropped, so that random crops of a smaller size can be taken at training time.

use std::path::{Path, PathBuf};

use image::imageops::{self, FilterType};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;

use crate::{DataError, ImageDataset, Splits};

/// How to load an image folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderConfig {
    /// Side of the stored square images.
    pub image_size: usize,
    /// Training images kept per class (a balanced subset, as the paper's ImageNet subsets);
    /// `None` keeps all that remain after the validation images.
    pub train_per_class: Option<usize>,
    /// Images per class held out from `train/` as the validation set.
    pub valid_per_class: usize,
    /// Seeds the choice of validation and training images.
    pub seed: u64,
}

/// Labels are `u16`.
const MAX_CLASSES: usize = 1 << 16;

const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// Loads `root` (see the module documentation); returns the splits and the class names, where
/// label `i` is `names[i]`.
///
/// Per class, the training files are shuffled with the seed; the first `valid_per_class` form
/// the validation set and the next `train_per_class` (or all the rest) the training set. Only
/// the chosen files are decoded (in parallel), so a small subset of a large folder is cheap.
/// Within a split images are ordered by class, then by file name.
///
/// Errors: `root`, `root/train` or the test directory missing; no class directory; a class
/// directory without images; a class with too few images for the requested counts; a test
/// class unknown to `train/`; a file that fails to decode.
pub fn load_image_folder(
    root: &Path,
    config: &FolderConfig,
) -> Result<(Splits, Vec<String>), DataError> {
    if config.image_size == 0 {
        return Err(DataError::InvalidConfig {
            name: "image_size",
            value: 0,
            reason: "must be positive",
        });
    }
    if config.train_per_class == Some(0) {
        return Err(DataError::InvalidConfig {
            name: "train_per_class",
            value: 0,
            reason: "must be positive",
        });
    }
    if !root.is_dir() {
        return Err(DataError::MissingFile { path: root.into() });
    }
    let train_classes = list_classes(&root.join("train"))?;
    let test_dir = ["val", "test"]
        .iter()
        .map(|name| root.join(name))
        .find(|dir| dir.is_dir())
        .ok_or_else(|| DataError::MissingTestSplit { path: root.into() })?;
    let test_classes = list_classes(&test_dir)?;
    let names: Vec<String> = train_classes.iter().map(|(name, _)| name.clone()).collect();
    if names.len() > MAX_CLASSES {
        return Err(DataError::InvalidConfig {
            name: "number of classes",
            value: names.len(),
            reason: "labels are u16",
        });
    }

    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut train_files = Vec::new();
    let mut valid_files = Vec::new();
    for (label, (name, mut files)) in train_classes.into_iter().enumerate() {
        // Without a training count, at least one training image must remain.
        let requested = config.valid_per_class + config.train_per_class.unwrap_or(1);
        if files.len() < requested {
            return Err(DataError::NotEnoughImages {
                class: name,
                available: files.len(),
                requested,
            });
        }
        files.shuffle(&mut rng);
        let train_end = match config.train_per_class {
            Some(count) => config.valid_per_class + count,
            None => files.len(),
        };
        let mut valid = files[..config.valid_per_class].to_vec();
        let mut train = files[config.valid_per_class..train_end].to_vec();
        valid.sort();
        train.sort();
        valid_files.extend(valid.into_iter().map(|file| (file, label)));
        train_files.extend(train.into_iter().map(|file| (file, label)));
    }

    let mut test_files = Vec::new();
    for (name, files) in test_classes {
        let label = names
            .iter()
            .position(|known| *known == name)
            .ok_or_else(|| DataError::UnknownClass {
                path: test_dir.join(&name),
                class: name,
            })?;
        test_files.extend(files.into_iter().map(|file| (file, label)));
    }

    let size = config.image_size;
    let classes = names.len();
    let splits = Splits {
        train: decode_all(&train_files, size, classes)?,
        valid: decode_all(&valid_files, size, classes)?,
        test: decode_all(&test_files, size, classes)?,
    };
    Ok((splits, names))
}

/// The class names of an image folder (the sorted subdirectories of `root/train`), listed
/// without decoding anything: callers sizing per-class subsets need the count first.
pub fn folder_class_names(root: &Path) -> Result<Vec<String>, DataError> {
    if !root.is_dir() {
        return Err(DataError::MissingFile { path: root.into() });
    }
    Ok(list_classes(&root.join("train"))?
        .into_iter()
        .map(|(name, _)| name)
        .collect())
}

/// The sorted class subdirectories of `dir` with their sorted image files.
fn list_classes(dir: &Path) -> Result<Vec<(String, Vec<PathBuf>)>, DataError> {
    let class_dirs: Vec<PathBuf> = read_dir_sorted(dir)?
        .into_iter()
        .filter(|path| path.is_dir())
        .collect();
    if class_dirs.is_empty() {
        return Err(DataError::NoClasses { path: dir.into() });
    }
    class_dirs
        .into_iter()
        .map(|class_dir| {
            let files: Vec<PathBuf> = read_dir_sorted(&class_dir)?
                .into_iter()
                .filter(|path| path.is_file() && has_image_extension(path))
                .collect();
            if files.is_empty() {
                return Err(DataError::EmptyClass { path: class_dir });
            }
            let name = class_dir
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            Ok((name, files))
        })
        .collect()
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let entries = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    let mut paths = entries
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| DataError::io(dir, e))?;
    paths.sort();
    Ok(paths)
}

fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|ext| ext.to_str())
        .is_some_and(|ext| {
            IMAGE_EXTENSIONS
                .iter()
                .any(|known| ext.eq_ignore_ascii_case(known))
        })
}

/// Decodes `files` in parallel into one dataset; the error reported is that of the first bad
/// file in list order, whatever the thread scheduling.
fn decode_all(
    files: &[(PathBuf, usize)],
    size: usize,
    num_classes: usize,
) -> Result<ImageDataset, DataError> {
    let image_len = 3 * size * size;
    let mut images = vec![0u8; files.len() * image_len];
    let errors: Vec<Option<DataError>> = images
        .par_chunks_exact_mut(image_len)
        .zip(files)
        .map(|(out, (path, _))| {
            read_image(path, size)
                .map(|chw| out.copy_from_slice(&chw))
                .err()
        })
        .collect();
    if let Some(error) = errors.into_iter().flatten().next() {
        return Err(error);
    }
    Ok(ImageDataset {
        images,
        labels: files.iter().map(|&(_, label)| label as u16).collect(),
        coarse_labels: None,
        num_classes,
        channels: 3,
        height: size,
        width: size,
    })
}

/// Decodes an image file (format sniffed from its content), converts it to RGB8, resizes the
/// shorter side to `size` (triangle filter) and crops the centre `size x size`; returns CHW
/// bytes.
pub fn read_image(path: &Path, size: usize) -> Result<Vec<u8>, DataError> {
    if size == 0 {
        return Err(DataError::InvalidConfig {
            name: "size",
            value: 0,
            reason: "must be positive",
        });
    }
    let decode_error = |message: String| DataError::Decode {
        path: path.into(),
        message,
    };
    let reader = image::ImageReader::open(path)
        .map_err(|e| DataError::io(path, e))?
        .with_guessed_format()
        .map_err(|e| DataError::io(path, e))?;
    let rgb = reader
        .decode()
        .map_err(|e| decode_error(e.to_string()))?
        .into_rgb8();
    let (width, height) = (rgb.width() as usize, rgb.height() as usize);
    if width == 0 || height == 0 {
        return Err(decode_error(format!("image is {width}x{height}")));
    }
    let (resized_w, resized_h) = shorter_side_to(width, height, size);
    let resized = if (resized_w, resized_h) == (width, height) {
        rgb
    } else {
        imageops::resize(
            &rgb,
            resized_w as u32,
            resized_h as u32,
            FilterType::Triangle,
        )
    };
    let (left, top) = ((resized_w - size) / 2, (resized_h - size) / 2);
    let mut chw = vec![0u8; 3 * size * size];
    for (c, plane) in chw.chunks_exact_mut(size * size).enumerate() {
        for (y, row) in plane.chunks_exact_mut(size).enumerate() {
            for (x, value) in row.iter_mut().enumerate() {
                *value = resized.get_pixel((left + x) as u32, (top + y) as u32)[c];
            }
        }
    }
    Ok(chw)
}

/// Dimensions with the shorter side scaled to `size`, the longer side in proportion (rounded,
/// never below `size`).
fn shorter_side_to(width: usize, height: usize, size: usize) -> (usize, usize) {
    let scale = |long: usize, short: usize| {
        ((long as f64 * size as f64 / short as f64).round() as usize).max(size)
    };
    if width <= height {
        (size, scale(height, width))
    } else {
        (scale(width, height), size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorter_side_scaling_keeps_the_aspect_ratio() {
        assert_eq!(shorter_side_to(40, 30, 16), (21, 16));
        assert_eq!(shorter_side_to(20, 50, 16), (16, 40));
        assert_eq!(shorter_side_to(16, 16, 16), (16, 16));
        assert_eq!(shorter_side_to(1000, 999, 10), (10, 10));
    }

    #[test]
    fn extensions_are_matched_case_insensitively() {
        assert!(has_image_extension(Path::new("a/b.JPEG")));
        assert!(has_image_extension(Path::new("b.Png")));
        assert!(!has_image_extension(Path::new("b.txt")));
        assert!(!has_image_extension(Path::new("jpg")));
    }
}
