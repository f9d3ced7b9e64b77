//! # smooth-topk-data
//!
//! Image datasets for top-k classification experiments, without any deep-learning framework:
//!
//! * [`ImageDataset`]: `u8` images, channel-major, with fine and optional coarse labels;
//!   [`split_validation`] and [`balanced_subset`] carve it up reproducibly;
//! * [`generate`]: the built-in synthetic dataset of 20 groups of 5 confusable classes;
//! * [`load_cifar100`]: CIFAR-100 from its official binary files;
//! * [`load_image_folder`]: ImageNet-style `train/<class>/*.jpg` folders;
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
mod noise;
mod synthetic;

pub use augment::{center_crop, random_crop_flip, ten_crops, CropSpec, Normalization};
pub use cifar::{load_cifar100, read_cifar100_file, CIFAR100_RECORD_LEN};
pub use dataset::{balanced_subset, split_validation, ImageDataset, Splits};
pub use error::DataError;
pub use folder::{folder_class_names, load_image_folder, read_image, FolderConfig};
pub use noise::{apply_label_noise, NoiseGrouping};
pub use synthetic::{generate, SyntheticConfig, SYNTHETIC_SIZE};
