//! From a [`DataConfig`] to normalised `f32` batches: loading, splitting, label noise,
//! augmentation. The datasets themselves live in `smooth-topk-data`.

use rand::Rng;
use serde::{Deserialize, Serialize};
use smooth_topk_data::{
    apply_label_noise, balanced_subset, center_crop, folder_class_names, generate, load_cifar100,
    load_image_folder, random_crop_flip, ten_crops, CropSpec, FolderConfig, ImageDataset,
    NoiseGrouping, Normalization, SyntheticConfig,
};

use crate::config::{DataConfig, DataSource, Grouping};
use crate::TrainError;

/// Default validation split sizes: images (synthetic, CIFAR-100 as in the paper), and images
/// per class of an image folder (the paper's 50).
const SYNTHETIC_VALID: usize = 1000;
const CIFAR_VALID: usize = 5000;
const FOLDER_VALID_PER_CLASS: usize = 50;
/// Zero padding of the random crops of images as small as the network input (CIFAR's 4).
const SMALL_IMAGE_PAD: usize = 4;

/// The three splits of a run, ready for batching.
pub struct PreparedData {
    /// Training split, labels after label noise.
    pub train: ImageDataset,
    pub valid: ImageDataset,
    pub test: ImageDataset,
    pub classes: usize,
    pub view: View,
    /// Training labels changed by the noise (the draw may keep a label).
    pub noisy_labels: usize,
}

/// How images become network inputs: crop geometry and normalisation. Saved with every
/// checkpoint so that evaluation sees exactly what training saw.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct View {
    pub image_size: usize,
    pub crop: usize,
    pub pad: usize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl View {
    fn normalization(&self) -> Normalization {
        Normalization {
            mean: self.mean,
            std: self.std,
        }
    }

    fn spec(&self) -> CropSpec {
        CropSpec {
            crop: self.crop,
            pad: self.pad,
        }
    }

    /// Floats per network input image.
    pub fn input_len(&self) -> usize {
        3 * self.crop * self.crop
    }
}

/// Loads the splits of `config`, applies label noise (seeded by `seed`) to the training split.
pub fn load(config: &DataConfig, seed: u64) -> Result<PreparedData, TrainError> {
    let (train, valid, test) = match &config.source {
        DataSource::Synthetic => {
            let shape = SyntheticConfig::default();
            let n = shape.groups * shape.classes_per_group;
            let valid = config.valid_size.unwrap_or(SYNTHETIC_VALID);
            let splits = generate(&SyntheticConfig {
                train_per_class: per_class(config.train_size.unwrap_or(10_000), n, "train size")?,
                valid_per_class: per_class(valid, n, "valid size")?,
                test_per_class: per_class(config.test_size, n, "test size")?,
                seed: config.data_seed,
                ..shape
            })?;
            (splits.train, splits.valid, splits.test)
        }
        DataSource::Cifar100 { dir } => {
            let splits = load_cifar100(
                dir,
                config.valid_size.unwrap_or(CIFAR_VALID),
                config.data_seed,
            )?;
            let train = match config.train_size {
                Some(size) => {
                    let per = per_class(size, splits.train.num_classes, "train size")?;
                    balanced_subset(&splits.train, per, config.data_seed)?
                }
                None => splits.train,
            };
            (train, splits.valid, splits.test)
        }
        DataSource::Folder { dir } => {
            // Sizes are given in images but the loader takes them per class.
            let n = folder_class_names(dir)?.len();
            let valid_per_class = match config.valid_size {
                None => FOLDER_VALID_PER_CLASS,
                Some(size) => per_class(size, n, "valid size")?,
            };
            let train_per_class = config
                .train_size
                .map(|s| per_class(s, n, "train size"))
                .transpose()?;
            let (splits, _names) = load_image_folder(
                dir,
                &FolderConfig {
                    image_size: config.image_size,
                    train_per_class,
                    valid_per_class,
                    seed: config.data_seed,
                },
            )?;
            (splits.train, splits.valid, splits.test)
        }
    };
    let classes = train.num_classes;
    let mut train = train;
    let mut noisy_labels = 0;
    if config.noise > 0.0 {
        let grouping = match config.noise_grouping {
            Grouping::Consecutive => NoiseGrouping::Consecutive,
            Grouping::Coarse => NoiseGrouping::Coarse,
        };
        let labels = apply_label_noise(&train, config.noise, grouping, 5, seed)?;
        noisy_labels = labels
            .iter()
            .zip(&train.labels)
            .filter(|(a, b)| a != b)
            .count();
        train.labels = labels;
    }
    for (name, split) in [("train", &train), ("valid", &valid), ("test", &test)] {
        if split.is_empty() {
            return Err(TrainError::InvalidConfig(format!(
                "the {name} split is empty"
            )));
        }
    }
    if config.crop > train.height || config.crop > train.width {
        return Err(TrainError::InvalidConfig(format!(
            "crop = {} (the images are {}x{})",
            config.crop, train.height, train.width
        )));
    }
    let (mean, std) = train.channel_stats();
    // Images no larger than the input get CIFAR's padded crops; larger ones are cropped inside.
    let pad = if config.crop == train.height {
        SMALL_IMAGE_PAD
    } else {
        0
    };
    let view = View {
        image_size: train.height,
        crop: config.crop,
        pad,
        mean,
        std,
    };
    Ok(PreparedData {
        train,
        valid,
        test,
        classes,
        view,
        noisy_labels,
    })
}

fn per_class(total: usize, classes: usize, what: &str) -> Result<usize, TrainError> {
    if total < classes {
        return Err(TrainError::InvalidConfig(format!(
            "{what} = {total} (at least one image per class: >= {classes})"
        )));
    }
    Ok(total / classes)
}

/// One batch of network inputs: `images` is `len x 3 x crop x crop`, row-major.
pub struct HostBatch {
    pub images: Vec<f32>,
    pub labels: Vec<usize>,
}

impl HostBatch {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// A training batch: random crop and flip per image when `augment`, centre crop otherwise.
pub fn training_batch(
    data: &ImageDataset,
    indices: &[usize],
    view: &View,
    augment: bool,
    rng: &mut impl Rng,
) -> HostBatch {
    let len = view.input_len();
    let mut images = vec![0f32; indices.len() * len];
    let norm = view.normalization();
    for (&i, out) in indices.iter().zip(images.chunks_mut(len)) {
        let image = data.image(i);
        if augment {
            random_crop_flip(image, data.height, data.width, view.spec(), &norm, rng, out);
        } else {
            center_crop(image, data.height, data.width, view.crop, &norm, out);
        }
    }
    HostBatch {
        images,
        labels: indices.iter().map(|&i| data.labels[i] as usize).collect(),
    }
}

/// An evaluation batch: the centre crop, or the ten crops of every image one after another
/// (`10 x len` inputs) when `ten_crop`.
pub fn evaluation_batch(
    data: &ImageDataset,
    indices: &[usize],
    view: &View,
    ten_crop: bool,
) -> HostBatch {
    let len = view.input_len();
    let crops = if ten_crop { 10 } else { 1 };
    let mut images = vec![0f32; indices.len() * crops * len];
    let norm = view.normalization();
    for (&i, out) in indices.iter().zip(images.chunks_mut(crops * len)) {
        let image = data.image(i);
        if ten_crop {
            ten_crops(image, data.height, data.width, view.spec(), &norm, out);
        } else {
            center_crop(image, data.height, data.width, view.crop, &norm, out);
        }
    }
    HostBatch {
        images,
        labels: indices.iter().map(|&i| data.labels[i] as usize).collect(),
    }
}
