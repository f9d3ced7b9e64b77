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
//! Images are read square: the shorter side is resized to `image_size` and the centre is
//! cropped, so that random crops of a smaller size can be taken at training time. Large folders
//! are listed once ([`list_image_folder`]) and read through [`file_split`], which decodes each
//! image when a batch needs it; [`load_image_folder`] decodes a small folder into memory.
//! Either way the same [`read_image`] makes the pixels, so both give the same batches.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::imageops::{self, FilterType};
use image::{ImageError, Limits};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;

use crate::{DataError, ImageDataset, ImageFiles, ImageSource, Split, Splits};

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

/// Largest side of a stored image (a 4096x4096 RGB image is 48 MB).
pub const MAX_IMAGE_SIZE: usize = 4096;

/// Largest width and height of an image file, checked from its header before anything is
/// decoded, and the most bytes its decoder may allocate (ImageNet's largest photographs are
/// about 5000 x 4000, 60 MB decoded). With the RGB copy of its centre square, an image in flight
/// holds at most about four times `MAX_DECODED_BYTES`.
pub const MAX_FILE_SIDE: u32 = 16384;
pub const MAX_DECODED_BYTES: u64 = 128 << 20;

const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// A file and its label.
pub type LabelledFile = (PathBuf, u16);

/// The classes and training files of an image folder, listed once and reusable (a grid over
/// subset sizes chooses from the same listing). Nothing is decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderListing {
    pub root: PathBuf,
    /// Class names: the sorted subdirectories of `train/`; label `i` is `classes[i]`.
    pub classes: Vec<String>,
    /// The sorted image files of each class in `train/`.
    pub train: Vec<Vec<PathBuf>>,
}

/// Lists `root/train` (see the module documentation).
///
/// Errors: `root` or `root/train` missing; no class directory; a class directory without
/// images; two class names that become equal once converted to UTF-8; more than 65536 classes.
pub fn list_image_folder(root: &Path) -> Result<FolderListing, DataError> {
    let dirs = class_dirs(root)?;
    let mut classes = Vec::with_capacity(dirs.len());
    let mut train = Vec::with_capacity(dirs.len());
    for (name, dir) in dirs {
        train.push(image_files(&dir)?);
        classes.push(name);
    }
    Ok(FolderListing {
        root: root.to_path_buf(),
        classes,
        train,
    })
}

/// The class names of an image folder (the sorted subdirectories of `root/train`), listed
/// without reading any class directory.
pub fn folder_class_names(root: &Path) -> Result<Vec<String>, DataError> {
    Ok(class_dirs(root)?
        .into_iter()
        .map(|(name, _)| name)
        .collect())
}

/// The test images (`root/val/<class>/...`, or `root/test/...` without `val/`), labelled by
/// their position in `classes`, ordered by class directory then file name.
///
/// Errors: no test directory; a test class that is not in `classes`; an empty test class.
pub fn list_test_files(root: &Path, classes: &[String]) -> Result<Vec<LabelledFile>, DataError> {
    let test_dir = ["val", "test"]
        .iter()
        .map(|name| root.join(name))
        .find(|dir| dir.is_dir())
        .ok_or_else(|| DataError::MissingTestSplit { path: root.into() })?;
    let index: HashMap<&str, u16> = classes
        .iter()
        .enumerate()
        .map(|(i, name)| (name.as_str(), i as u16))
        .collect();
    let mut files = Vec::new();
    for (name, dir) in named_dirs(&test_dir)? {
        let label = *index
            .get(name.as_str())
            .ok_or_else(|| DataError::UnknownClass {
                path: dir.clone(),
                class: name.clone(),
            })?;
        files.extend(image_files(&dir)?.into_iter().map(|file| (file, label)));
    }
    Ok(files)
}

impl FolderListing {
    /// The training and validation files: per class, the files are shuffled with `seed`; the
    /// first `valid_per_class` are the validation set and the next `train_per_class` (or all the
    /// rest) the training set. Each list is ordered by class, then by file name.
    ///
    /// Errors: `train_per_class == Some(0)`; a class with too few images (without a training
    /// count, at least one training image must remain).
    pub fn choose(
        &self,
        train_per_class: Option<usize>,
        valid_per_class: usize,
        seed: u64,
    ) -> Result<(Vec<LabelledFile>, Vec<LabelledFile>), DataError> {
        if train_per_class == Some(0) {
            return Err(DataError::InvalidConfig {
                name: "train_per_class",
                value: 0,
                reason: "must be positive",
            });
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let mut train_files = Vec::new();
        let mut valid_files = Vec::new();
        for (label, (name, files)) in self.classes.iter().zip(&self.train).enumerate() {
            let requested = valid_per_class.saturating_add(train_per_class.unwrap_or(1));
            if files.len() < requested {
                return Err(DataError::NotEnoughImages {
                    class: name.clone(),
                    available: files.len(),
                    requested,
                });
            }
            let mut files = files.clone();
            files.shuffle(&mut rng);
            let train_end = match train_per_class {
                Some(count) => valid_per_class + count,
                None => files.len(),
            };
            let mut valid = files[..valid_per_class].to_vec();
            let mut train = files[valid_per_class..train_end].to_vec();
            valid.sort();
            train.sort();
            let label = label as u16;
            valid_files.extend(valid.into_iter().map(|file| (file, label)));
            train_files.extend(train.into_iter().map(|file| (file, label)));
        }
        Ok((train_files, valid_files))
    }
}

/// A split of image files decoded on demand at `image_size` (see [`read_image`]).
pub fn file_split(
    files: Vec<LabelledFile>,
    image_size: usize,
    num_classes: usize,
) -> Result<Split, DataError> {
    check_image_size(image_size)?;
    let (paths, labels): (Vec<PathBuf>, Vec<u16>) = files.into_iter().unzip();
    let items = (0..paths.len()).collect();
    let source = ImageSource::Files(Arc::new(ImageFiles {
        paths,
        size: image_size,
    }));
    Split::new(source, items, labels, None, num_classes)
}

/// Loads `root` into memory, decoding every chosen image (see the module documentation);
/// returns the splits and the class names, where label `i` is `names[i]`. For folders larger
/// than memory, list them with [`list_image_folder`] and read them through [`file_split`].
///
/// Per class, the training files are shuffled with the seed; the first `valid_per_class` form
/// the validation set and the next `train_per_class` (or all the rest) the training set. Only
/// the chosen files are decoded (in parallel). Within a split images are ordered by class, then
/// by file name.
///
/// Errors: `root`, `root/train` or the test directory missing; no class directory; a class
/// directory without images; a class with too few images for the requested counts; a test
/// class unknown to `train/`; a file that fails to decode.
pub fn load_image_folder(
    root: &Path,
    config: &FolderConfig,
) -> Result<(Splits, Vec<String>), DataError> {
    check_image_size(config.image_size)?;
    let listing = list_image_folder(root)?;
    let (train_files, valid_files) =
        listing.choose(config.train_per_class, config.valid_per_class, config.seed)?;
    let test_files = list_test_files(root, &listing.classes)?;
    let size = config.image_size;
    let classes = listing.classes.len();
    let splits = Splits {
        train: decode_image_files(&train_files, size, classes)?,
        valid: decode_image_files(&valid_files, size, classes)?,
        test: decode_image_files(&test_files, size, classes)?,
    };
    Ok((splits, listing.classes))
}

/// Errors unless `size` is a usable stored image side (1..=[`MAX_IMAGE_SIZE`]).
pub fn check_image_size(size: usize) -> Result<(), DataError> {
    if size == 0 || size > MAX_IMAGE_SIZE {
        return Err(DataError::InvalidConfig {
            name: "image size",
            value: size,
            reason: "must be in 1..=4096",
        });
    }
    Ok(())
}

/// The sorted subdirectories of `root/train` with their class names.
fn class_dirs(root: &Path) -> Result<Vec<(String, PathBuf)>, DataError> {
    if !root.is_dir() {
        return Err(DataError::MissingFile { path: root.into() });
    }
    let train = root.join("train");
    let dirs = named_dirs(&train)?;
    if dirs.is_empty() {
        return Err(DataError::NoClasses { path: train });
    }
    if dirs.len() > MAX_CLASSES {
        return Err(DataError::InvalidConfig {
            name: "number of classes",
            value: dirs.len(),
            reason: "labels are u16 (at most 65536 classes)",
        });
    }
    Ok(dirs)
}

/// The sorted subdirectories of `dir`, named by their file name as UTF-8 (lossily); two names
/// that become equal that way are refused, as they would share a label.
fn named_dirs(dir: &Path) -> Result<Vec<(String, PathBuf)>, DataError> {
    let mut seen: HashMap<String, OsString> = HashMap::new();
    let mut dirs = Vec::new();
    for path in read_dir_sorted(dir)?
        .into_iter()
        .filter(|path| path.is_dir())
    {
        let raw = path.file_name().map(OsString::from).unwrap_or_default();
        let name = raw.to_string_lossy().into_owned();
        if let Some(first) = seen.insert(name.clone(), raw.clone()) {
            return Err(DataError::DuplicateClassName {
                path: dir.into(),
                first,
                second: raw,
                name,
            });
        }
        dirs.push((name, path));
    }
    Ok(dirs)
}

/// The sorted image files of a class directory; errors when there is none.
fn image_files(class_dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let entries = std::fs::read_dir(class_dir).map_err(|e| DataError::io(class_dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| DataError::io(class_dir, e))?;
        let path = entry.path();
        if !has_image_extension(&path) {
            continue;
        }
        // The entry's own type needs no extra system call; links are followed.
        let is_file = match entry.file_type() {
            Ok(kind) if kind.is_symlink() => path.is_file(),
            Ok(kind) => kind.is_file(),
            Err(e) => return Err(DataError::io(&path, e)),
        };
        if is_file {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(DataError::EmptyClass {
            path: class_dir.into(),
        });
    }
    files.sort();
    Ok(files)
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

/// Decodes `files` in parallel into one in-memory dataset; the error reported is that of the
/// first bad file in list order, whatever the thread scheduling.
pub fn decode_image_files(
    files: &[LabelledFile],
    size: usize,
    num_classes: usize,
) -> Result<ImageDataset, DataError> {
    check_image_size(size)?;
    let image_len = 3 * size * size;
    let total = image_len
        .checked_mul(files.len())
        .ok_or(DataError::InvalidConfig {
            name: "images",
            value: files.len(),
            reason: "they do not fit in memory",
        })?;
    let mut images = vec![0u8; total];
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
    let data = ImageDataset {
        images,
        labels: files.iter().map(|&(_, label)| label).collect(),
        coarse_labels: None,
        num_classes,
        channels: 3,
        height: size,
        width: size,
    };
    data.validate()?;
    Ok(data)
}

/// Decodes an image file (format sniffed from its content), takes its centre square, converts
/// it to RGB8 and resizes it to `size x size` (triangle filter); returns CHW bytes. (This is
/// the centre crop of the image with its shorter side resized to `size`.)
///
/// The file's header is checked before anything is allocated: an image wider or taller than
/// [`MAX_FILE_SIDE`], or whose decoding needs more than [`MAX_DECODED_BYTES`], is refused with
/// [`DataError::ImageTooLarge`] (no decompression bomb gets through).
pub fn read_image(path: &Path, size: usize) -> Result<Vec<u8>, DataError> {
    check_image_size(size)?;
    let decode_error = |message: String| DataError::Decode {
        path: path.into(),
        message,
    };
    let bytes = read_bounded(path)?;
    if bytes.starts_with(&[0xFF, 0xD8]) && !jpeg_is_complete(&bytes) {
        return Err(decode_error(
            "truncated JPEG: no end-of-image marker after the last scan".into(),
        ));
    }
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| DataError::io(path, e))?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_FILE_SIDE);
    limits.max_image_height = Some(MAX_FILE_SIDE);
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    reader.limits(limits);
    let decoded = match reader.decode() {
        Ok(decoded) => decoded,
        Err(ImageError::Limits(_)) => return Err(too_large(path)),
        Err(e) => return Err(decode_error(e.to_string())),
    };
    let (width, height) = (decoded.width(), decoded.height());
    if width == 0 || height == 0 {
        return Err(decode_error(format!("image is {width}x{height}")));
    }
    // The centre square first (in the image's own pixels), then the resize: a long, thin image
    // never becomes a huge one, and the RGB conversion touches the square only.
    let side = width.min(height);
    let square = decoded
        .crop_imm((width - side) / 2, (height - side) / 2, side, side)
        .into_rgb8();
    drop(decoded);
    let resized = if side as usize == size {
        square
    } else {
        imageops::resize(&square, size as u32, size as u32, FilterType::Triangle)
    };
    let mut chw = vec![0u8; 3 * size * size];
    let raw = resized.as_raw();
    for (c, plane) in chw.chunks_exact_mut(size * size).enumerate() {
        for (value, pixel) in plane.iter_mut().zip(raw.chunks_exact(3)) {
            *value = pixel[c];
        }
    }
    Ok(chw)
}

/// Largest image file read, checked before reading it.
pub const MAX_FILE_BYTES: u64 = 256 << 20;

/// The bytes of `path`, refusing a file larger than [`MAX_FILE_BYTES`] before reading it.
fn read_bounded(path: &Path) -> Result<Vec<u8>, DataError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let len = file.metadata().map_err(|e| DataError::io(path, e))?.len();
    if len > MAX_FILE_BYTES {
        return Err(DataError::Decode {
            path: path.into(),
            message: format!("the file is {len} bytes, more than the {MAX_FILE_BYTES} accepted"),
        });
    }
    let mut bytes = Vec::with_capacity(len as usize);
    // `take` also bounds a file that grows while it is read.
    file.take(MAX_FILE_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| DataError::io(path, e))?;
    Ok(bytes)
}

/// Whether a JPEG stream has an end-of-image marker (FF D9) after its last start-of-scan
/// marker (FF DA). The decoder fills a cut-off scan with grey and reports success, so this is
/// how a truncated file is caught. Neither marker can occur inside entropy-coded data (an FF
/// byte there is followed by 00 or a restart marker), and data appended after the image (a
/// second picture, a camera's trailer) ends with its own scan and end marker.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last_scan = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    match last_scan {
        Some(scan) => bytes[scan..].windows(2).any(|w| w == [0xFF, 0xD9]),
        None => false,
    }
}

/// The error for an image refused by the decoder's limits, with its size read from the header.
fn too_large(path: &Path) -> DataError {
    // Reading the header alone allocates nothing the header asks for.
    let (width, height) = image::ImageReader::open(path)
        .ok()
        .and_then(|r| r.with_guessed_format().ok())
        .and_then(|mut r| {
            r.no_limits();
            r.into_dimensions().ok()
        })
        .map_or((0, 0), |(w, h)| (u64::from(w), u64::from(h)));
    DataError::ImageTooLarge {
        path: path.into(),
        width,
        height,
        max: MAX_FILE_SIDE,
        max_mb: MAX_DECODED_BYTES >> 20,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_are_matched_case_insensitively() {
        assert!(has_image_extension(Path::new("a/b.JPEG")));
        assert!(has_image_extension(Path::new("b.Png")));
        assert!(!has_image_extension(Path::new("b.txt")));
        assert!(!has_image_extension(Path::new("jpg")));
    }
}
