//! # smooth-topk-data
//!
//! Image datasets for top-k classification experiments, without any deep-learning framework:
//!
//! * [`ImageDataset`]: `u8` images, channel-major, with fine and optional coarse labels;
//!   [`split_validation`] and [`balanced_subset`] carve it up reproducibly;
//! * [`Split`]: the images of a split as indices into an [`ImageSource`] (memory, or files
//!   decoded on demand), with training and true labels;
//! * [`Loader`]: batches of cropped, flipped, normalised `f32` views assembled on worker
//!   threads ahead of the training step, with memory bounded by the batches in flight;
//! * [`generate`]: the built-in synthetic dataset of 20 groups of 5 confusable classes;
//! * [`load_cifar100`]: CIFAR-100 from its official binary files;
//! * [`list_image_folder`] and [`file_split`]: ImageNet-style `train/<class>/*.jpg` folders
//!   streamed from disk ([`load_image_folder`] decodes a small one into memory);
//! * [`apply_label_noise`]: within-group label noise for the training split;
//! * [`random_crop_flip`], [`center_crop`], [`ten_crops`]: views normalised to `f32`.
//!
//! Loading never panics on bad input: a [`DataError`] names the file, the record or byte
//! offset, the class or the value at fault. Everything random takes a seed.
//!
//! ```
//! use smooth_topk_data::{generate, SyntheticConfig};
//!
//! let config = SyntheticConfig {
//!     train_per_class: 4,
//!     valid_per_class: 1,
//!     test_per_class: 2,
//!     ..Default::default()
//! };
//! let splits = generate(&config)?;
//! assert_eq!((splits.train.len(), splits.train.num_classes), (400, 100));
//! assert_eq!(splits.train.image(0).len(), 3 * 32 * 32);
//! # Ok::<(), smooth_topk_data::DataError>(())
//! ```

mod augment;
mod cifar;
mod dataset;
mod error;
mod folder;
mod loader;
mod noise;
mod seed;
mod source;
mod synthetic;

pub use augment::{center_crop, random_crop_flip, ten_crops, CropSpec, Normalization};
pub use cifar::{
    cifar100_test, cifar100_train_valid, load_cifar100, read_cifar100_file, CIFAR100_RECORD_LEN,
};
pub use dataset::{
    balanced_subset, balanced_subset_indices, split_validation, split_validation_indices,
    ImageDataset, SplitName, Splits,
};
pub use error::DataError;
pub use folder::{
    check_image_size, decode_image_files, file_split, folder_class_names, list_image_folder,
    list_test_files, load_image_folder, read_image, FolderConfig, FolderListing, LabelledFile,
    MAX_DECODED_BYTES, MAX_FILE_BYTES, MAX_FILE_SIDE, MAX_IMAGE_SIZE,
};
pub use loader::{
    Batch, BatchStream, BatchView, Loader, LoaderConfig, Views, MAX_LOADER_THREADS, MAX_PREFETCH,
};
pub use noise::{apply_label_noise, noisy_labels, NoiseGrouping};
pub use seed::mix_seed;
pub use source::{ImageFiles, ImageSource, Split};
pub use synthetic::{generate, generate_split, SyntheticConfig, SYNTHETIC_SIZE};
