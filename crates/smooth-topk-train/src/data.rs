//! From a [`DataConfig`] to the splits of a run: loading (or listing), validation split,
//! subsets, label noise and the normalisation. The datasets and the loader live in
//! `smooth-topk-data`.
//!
//! Nothing here holds more than the dataset's own storage: the built-in data and CIFAR-100
//! are in memory once (splits are index lists into them), image folders are file lists decoded
//! batch by batch. A [`DataCache`] keeps what a grid's cells share (the generated or read
//! images, a folder's listing) so that a grid loads its data once.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use smooth_topk_data::{
    balanced_subset_indices, cifar100_test, cifar100_train_valid, file_split, folder_class_names,
    generate, generate_split, list_image_folder, list_test_files, noisy_labels, BatchView,
    CropSpec, FolderListing, Loader, NoiseGrouping, Normalization, Split, SplitName,
    SyntheticConfig, Views,
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
/// Training images the per-channel statistics are computed from (all of them when there are
/// fewer): enough for three decimals, bounded for folders of millions of images.
pub const STATS_IMAGES: usize = 5000;
/// A channel whose standard deviation is below one grey level (a constant channel) is
/// normalised by this instead, so that its inputs stay finite.
const MIN_STD: f32 = 1.0 / 255.0;

/// The three splits of a run, ready for batching.
pub struct PreparedData {
    /// Training split; its `labels` carry the label noise, `true_labels` the clean labels.
    pub train: Arc<Split>,
    pub valid: Arc<Split>,
    pub test: Arc<Split>,
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

    /// Training views: random crops and flips with `augment`, the centre crop otherwise.
    pub fn training(&self, augment: bool) -> BatchView {
        self.batch_view(if augment {
            Views::RandomCropFlip
        } else {
            Views::Center
        })
    }

    /// Evaluation views: the centre crop, or the ten crops.
    pub fn evaluation(&self, ten_crop: bool) -> BatchView {
        self.batch_view(if ten_crop {
            Views::TenCrop
        } else {
            Views::Center
        })
    }

    fn batch_view(&self, views: Views) -> BatchView {
        BatchView {
            crop: self.spec(),
            norm: self.normalization(),
            views,
        }
    }
}

/// Train, valid and test.
type ThreeSplits = (Split, Split, Split);

/// What a grid's cells can share: the data of a source before sizes, noise and seeds pick from
/// it. Keyed by everything that decides it.
#[derive(Default)]
pub struct DataCache {
    synthetic: HashMap<(usize, usize, usize, u64), ThreeSplits>,
    cifar: HashMap<(PathBuf, usize, u64), ThreeSplits>,
    folders: HashMap<PathBuf, Arc<FolderListing>>,
    /// Channel statistics per training split (source, size, seeds).
    stats: HashMap<String, ([f32; 3], [f32; 3])>,
}

/// Loads the splits of `config`, applies label noise (seeded by `seed`) to the training split
/// and computes the normalisation from a sample of its images.
pub fn load(
    config: &DataConfig,
    seed: u64,
    loader: &Loader,
    cache: &mut DataCache,
) -> Result<PreparedData, TrainError> {
    let (mut train, valid, test) = clean_splits(config, cache)?;
    let classes = train.num_classes;
    if config.noise > 0.0 {
        let grouping = match config.noise_grouping {
            Grouping::Consecutive => NoiseGrouping::Consecutive,
            Grouping::Coarse => NoiseGrouping::Coarse,
        };
        train.labels = noisy_labels(
            &train.true_labels,
            train.coarse_labels.as_deref(),
            classes,
            config.noise,
            grouping,
            5,
            seed,
        )?;
    }
    let noisy = train.changed_labels();
    for (name, split) in [("train", &train), ("valid", &valid), ("test", &test)] {
        if split.is_empty() {
            return Err(TrainError::InvalidConfig(format!(
                "the {name} split is empty"
            )));
        }
    }
    let (height, width) = train.source.image_size();
    if config.crop > height || config.crop > width {
        return Err(TrainError::InvalidConfig(format!(
            "crop = {} (the images are {height}x{width})",
            config.crop
        )));
    }
    // The statistics depend on the training images only, not on the noise or the seed.
    let key = format!(
        "{:?}/{:?}/{:?}/{}/{}",
        config.source, config.train_size, config.valid_size, config.image_size, config.data_seed
    );
    let (mean, std) = match cache.stats.get(&key) {
        Some(&stats) => stats,
        None => {
            let stats = loader.channel_stats(&train, STATS_IMAGES, config.data_seed)?;
            cache.stats.insert(key, stats);
            stats
        }
    };
    // Images no larger than the input get CIFAR's padded crops; larger ones are cropped inside.
    let pad = if config.crop == height {
        SMALL_IMAGE_PAD
    } else {
        0
    };
    let view = View {
        image_size: height,
        crop: config.crop,
        pad,
        mean,
        std: std.map(|s| s.max(MIN_STD)),
    };
    Ok(PreparedData {
        train: Arc::new(train),
        valid: Arc::new(valid),
        test: Arc::new(test),
        classes,
        view,
        noisy_labels: noisy,
    })
}

/// One clean split of `config`'s data, reading only what that split needs (the test split of
/// CIFAR-100 reads `test.bin` alone; of a folder, its `val/` directory and the class names).
pub fn load_split(
    config: &DataConfig,
    split: SplitName,
    cache: &mut DataCache,
) -> Result<Split, TrainError> {
    Ok(match (&config.source, split) {
        (DataSource::Synthetic, SplitName::Test) => {
            let shape = synthetic_shape(config)?;
            Split::whole(Arc::new(generate_split(&shape, SplitName::Test)?))?
        }
        (DataSource::Cifar100 { dir }, SplitName::Test) => cifar100_test(dir)?,
        (DataSource::Folder { dir }, SplitName::Test) => {
            let classes = folder_class_names(dir)?;
            file_split(
                list_test_files(dir, &classes)?,
                config.image_size,
                classes.len(),
            )?
        }
        _ => {
            let (train, valid, test) = clean_splits(config, cache)?;
            match split {
                SplitName::Train => train,
                SplitName::Valid => valid,
                SplitName::Test => test,
            }
        }
    })
}

/// The train, valid and test splits before label noise.
fn clean_splits(config: &DataConfig, cache: &mut DataCache) -> Result<ThreeSplits, TrainError> {
    match &config.source {
        DataSource::Synthetic => {
            let shape = synthetic_shape(config)?;
            let key = (
                shape.train_per_class,
                shape.valid_per_class,
                shape.test_per_class,
                shape.seed,
            );
            if let Some(splits) = cache.synthetic.get(&key) {
                return Ok(splits.clone());
            }
            let generated = generate(&shape)?;
            let whole = |data| Split::whole(Arc::new(data));
            let splits = (
                whole(generated.train)?,
                whole(generated.valid)?,
                whole(generated.test)?,
            );
            cache.synthetic.insert(key, splits.clone());
            Ok(splits)
        }
        DataSource::Cifar100 { dir } => {
            let valid_size = config.valid_size.unwrap_or(CIFAR_VALID);
            let key = (dir.clone(), valid_size, config.data_seed);
            let (train, valid, test) = match cache.cifar.get(&key) {
                Some(splits) => splits.clone(),
                None => {
                    let (train, valid) = cifar100_train_valid(dir, valid_size, config.data_seed)?;
                    let splits = (train, valid, cifar100_test(dir)?);
                    cache.cifar.insert(key, splits.clone());
                    splits
                }
            };
            let train = match config.train_size {
                Some(size) => {
                    let per = per_class(size, train.num_classes, "train size")?;
                    let chosen = balanced_subset_indices(
                        &train.labels,
                        train.num_classes,
                        per,
                        config.data_seed,
                    )?;
                    train.select(&chosen)
                }
                None => train,
            };
            Ok((train, valid, test))
        }
        DataSource::Folder { dir } => {
            let listing = match cache.folders.get(dir) {
                Some(listing) => listing.clone(),
                None => {
                    let listing = Arc::new(list_image_folder(dir)?);
                    cache.folders.insert(dir.clone(), listing.clone());
                    listing
                }
            };
            // Sizes are given in images but chosen per class.
            let n = listing.classes.len();
            let valid_per_class = match config.valid_size {
                None => FOLDER_VALID_PER_CLASS,
                Some(size) => per_class(size, n, "valid size")?,
            };
            let train_per_class = config
                .train_size
                .map(|s| per_class(s, n, "train size"))
                .transpose()?;
            let (train, valid) =
                listing.choose(train_per_class, valid_per_class, config.data_seed)?;
            let test = list_test_files(dir, &listing.classes)?;
            let size = config.image_size;
            Ok((
                file_split(train, size, n)?,
                file_split(valid, size, n)?,
                file_split(test, size, n)?,
            ))
        }
    }
}

fn synthetic_shape(config: &DataConfig) -> Result<SyntheticConfig, TrainError> {
    let shape = SyntheticConfig::default();
    let n = shape.groups * shape.classes_per_group;
    let valid = config.valid_size.unwrap_or(SYNTHETIC_VALID);
    Ok(SyntheticConfig {
        train_per_class: per_class(config.train_size.unwrap_or(10_000), n, "train size")?,
        valid_per_class: per_class(valid, n, "valid size")?,
        test_per_class: per_class(config.test_size, n, "test size")?,
        seed: config.data_seed,
        ..shape
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
