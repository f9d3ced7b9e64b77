//! The crate's error type: every variant names the file, record, class or value at fault.

use std::path::PathBuf;

use thiserror::Error;

/// Everything that can go wrong while loading, generating or transforming a dataset.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DataError {
    #[error("{}: not found", path.display())]
    MissingFile { path: PathBuf },

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: empty file", path.display())]
    EmptyFile { path: PathBuf },

    #[error(
        "{}: truncated: {len} bytes, last record at offset {offset} is incomplete \
         (records are {record_len} bytes)",
        path.display()
    )]
    Truncated {
        path: PathBuf,
        len: usize,
        offset: usize,
        record_len: usize,
    },

    #[error(
        "{}: record {record} (byte offset {offset}): {kind} label {value} is out of range, \
         expected 0..={max}",
        path.display()
    )]
    LabelOutOfRange {
        path: PathBuf,
        record: usize,
        offset: usize,
        kind: &'static str,
        value: u8,
        max: u8,
    },

    #[error("{}: cannot decode image: {message}", path.display())]
    Decode { path: PathBuf, message: String },

    #[error(
        "{}: the image is {width}x{height}, larger than the {max}x{max} pixels (and {max_mb} MB \
         decoded) this loader accepts",
        path.display()
    )]
    ImageTooLarge {
        path: PathBuf,
        width: u64,
        height: u64,
        max: u32,
        max_mb: u64,
    },

    #[error("{}: no class subdirectories", path.display())]
    NoClasses { path: PathBuf },

    #[error("{}: class directory holds no .jpg, .jpeg or .png file", path.display())]
    EmptyClass { path: PathBuf },

    #[error(
        "{}: class directories {first:?} and {second:?} have the same name once converted to \
         UTF-8 ({name:?}); rename one",
        path.display()
    )]
    DuplicateClassName {
        path: PathBuf,
        first: std::ffi::OsString,
        second: std::ffi::OsString,
        name: String,
    },

    #[error("{}: class {class:?} does not exist in the training set", path.display())]
    UnknownClass { path: PathBuf, class: String },

    #[error("{}: no val/ or test/ directory next to train/", path.display())]
    MissingTestSplit { path: PathBuf },

    #[error("class {class} has {available} images, {requested} are needed")]
    NotEnoughImages {
        class: String,
        available: usize,
        requested: usize,
    },

    #[error("validation size {valid_size} must be smaller than the dataset size {len}")]
    ValidationTooLarge { valid_size: usize, len: usize },

    #[error("noise probability {0} must lie in [0, 1]")]
    InvalidProbability(f64),

    #[error("coarse label noise needs coarse labels, the dataset has none")]
    MissingCoarseLabels,

    #[error("fine class {class} appears with coarse labels {first} and {second}")]
    InconsistentCoarseLabel { class: u16, first: u16, second: u16 },

    #[error("{num_classes} classes cannot be split into groups of {group_size}")]
    GroupSizeMismatch {
        num_classes: usize,
        group_size: usize,
    },

    #[error("image {index}: label {label} is out of range for {num_classes} classes")]
    InvalidLabel {
        index: usize,
        label: u16,
        num_classes: usize,
    },

    #[error("index {index} is out of range for {len} images")]
    IndexOutOfRange { index: usize, len: usize },

    #[error("cannot start the loader's threads: {0}")]
    Threads(String),

    #[error("{what} has length {got}, expected {expected}")]
    LengthMismatch {
        what: &'static str,
        got: usize,
        expected: usize,
    },

    #[error("{name} = {value} is invalid: {reason}")]
    InvalidConfig {
        name: &'static str,
        value: usize,
        reason: &'static str,
    },
}

impl DataError {
    /// Maps an I/O error on `path`, turning "not found" into [`DataError::MissingFile`].
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::NotFound {
            DataError::MissingFile { path }
        } else {
            DataError::Io { path, source }
        }
    }
}
