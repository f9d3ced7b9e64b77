//! Batches of network inputs from a [`Split`], assembled on worker threads ahead of the
//! training step.
//!
//! A batch is a list of positions of the split. Each image is read from its source (a slice of
//! memory, or a file decoded there and then), cropped, flipped and normalised into the batch's
//! `f32` buffer, in parallel on the loader's own thread pool. The random choices of the sample
//! at epoch position `p` come from a generator seeded by `(seed, p)`, so a batch does not depend
//! on the number of threads, on scheduling, or on whether the images come from memory or from
//! files: an in-memory source and a file source holding the same images give identical batches.
//!
//! [`Loader::stream`] runs the batches of an epoch on a background thread, `prefetch` batches
//! ahead of the consumer. Memory is bounded by the batches in flight (at most `prefetch + 2`:
//! the ones waiting, the one being assembled and the one being used) and the decoded images of
//! the batch being assembled, whatever the size of the dataset.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use rand::rngs::StdRng;
use rand::SeedableRng;
use rayon::prelude::*;

use crate::augment::{center_crop, random_crop_flip, ten_crops, CropSpec, Normalization};
use crate::dataset::PixelSums;
use crate::{mix_seed, DataError, Split};

/// How to run a [`Loader`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoaderConfig {
    /// Worker threads that read and transform images; 0 means one per available core.
    pub threads: usize,
    /// Batches assembled ahead of the one being consumed.
    pub prefetch: usize,
    /// Leave out (and report) images that cannot be read instead of stopping.
    pub skip_unreadable: bool,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            threads: 0,
            prefetch: 2,
            skip_unreadable: false,
        }
    }
}

/// Which views of each image a batch holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Views {
    /// One random crop (of the image zero-padded by the spec's padding), mirrored with
    /// probability 1/2: training with augmentation.
    RandomCropFlip,
    /// The centre crop: evaluation, or training without augmentation.
    Center,
    /// The ten standard crops, one after another.
    TenCrop,
}

/// Crop geometry, normalisation and views of a batch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchView {
    pub crop: CropSpec,
    pub norm: Normalization,
    pub views: Views,
}

impl BatchView {
    /// Views per image.
    pub fn crops(&self) -> usize {
        match self.views {
            Views::TenCrop => 10,
            _ => 1,
        }
    }

    /// Floats per view.
    pub fn view_len(&self) -> usize {
        3 * self.crop.crop * self.crop.crop
    }

    /// Errors unless the crop fits `height x width` images as these views need it.
    pub fn check(&self, height: usize, width: usize) -> Result<(), DataError> {
        let (fits_h, fits_w) = match self.views {
            Views::Center => (self.crop.crop <= height, self.crop.crop <= width),
            _ => (
                self.crop.crop <= height.saturating_add(self.crop.pad.saturating_mul(2)),
                self.crop.crop <= width.saturating_add(self.crop.pad.saturating_mul(2)),
            ),
        };
        if self.crop.crop == 0 || !fits_h || !fits_w {
            return Err(DataError::InvalidConfig {
                name: "crop",
                value: self.crop.crop,
                reason: "must be positive and fit the images (with their padding)",
            });
        }
        Ok(())
    }
}

/// Network inputs of one batch.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// `len() * crops` views of `3 x crop x crop` floats, CHW, image after image.
    pub images: Vec<f32>,
    /// The split's labels of the images (noisy ones for a noisy training split).
    pub labels: Vec<u16>,
    /// The labels before noise.
    pub true_labels: Vec<u16>,
    /// Images left out because they could not be read (only with `skip_unreadable`), with the
    /// reason.
    pub skipped: Vec<String>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// Reads and transforms images on its own thread pool.
#[derive(Clone)]
pub struct Loader {
    pool: Arc<rayon::ThreadPool>,
    prefetch: usize,
    skip_unreadable: bool,
}

/// Most loader threads, and most batches prepared ahead.
pub const MAX_LOADER_THREADS: usize = 1024;
pub const MAX_PREFETCH: usize = 64;

impl Loader {
    /// Errors on more than [`MAX_LOADER_THREADS`] threads or [`MAX_PREFETCH`] batches ahead.
    pub fn new(config: &LoaderConfig) -> Result<Self, DataError> {
        if config.threads > MAX_LOADER_THREADS {
            return Err(DataError::InvalidConfig {
                name: "loader threads",
                value: config.threads,
                reason: "at most 1024",
            });
        }
        if config.prefetch > MAX_PREFETCH {
            return Err(DataError::InvalidConfig {
                name: "prefetch",
                value: config.prefetch,
                reason: "at most 64 batches ahead",
            });
        }
        let threads = match config.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("smooth-topk-loader-{i}"))
            .build()
            .map_err(|e| DataError::Threads(e.to_string()))?;
        Ok(Loader {
            pool: Arc::new(pool),
            prefetch: config.prefetch,
            skip_unreadable: config.skip_unreadable,
        })
    }

    /// Worker threads.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// The batch of the split's images at `positions`; `first` is the epoch position of
    /// `positions[0]` (the others follow), which seeds the random views with `seed`.
    ///
    /// Errors: a position outside the split, a crop that does not fit, an unreadable image (the
    /// first one in batch order). With `skip_unreadable`, unreadable images are left out and
    /// named in [`Batch::skipped`]; the batch may then be empty.
    pub fn batch(
        &self,
        split: &Split,
        positions: &[usize],
        first: usize,
        view: &BatchView,
        seed: u64,
    ) -> Result<Batch, DataError> {
        let (height, width) = split.source.image_size();
        view.check(height, width)?;
        if let Some(&p) = positions.iter().find(|&&p| p >= split.len()) {
            return Err(DataError::IndexOutOfRange {
                index: p,
                len: split.len(),
            });
        }
        let stride = view
            .view_len()
            .checked_mul(view.crops())
            .ok_or(DataError::InvalidConfig {
                name: "crop",
                value: view.crop.crop,
                reason: "the views do not fit in memory",
            })?;
        let total = stride
            .checked_mul(positions.len())
            .ok_or(DataError::InvalidConfig {
                name: "batch size",
                value: positions.len(),
                reason: "the batch does not fit in memory",
            })?;
        let mut images = vec![0f32; total];
        let outcomes: Vec<Result<(), DataError>> = self.pool.install(|| {
            images
                .par_chunks_mut(stride.max(1))
                .zip(positions.par_iter())
                .enumerate()
                .map_init(Vec::new, |scratch, (j, (out, &position))| {
                    let item = split.items[position];
                    let image = split.source.image(item, scratch)?;
                    write_views(image, height, width, view, seed, first + j, out);
                    Ok(())
                })
                .collect()
        });
        let mut batch = Batch {
            images,
            labels: Vec::with_capacity(positions.len()),
            true_labels: Vec::with_capacity(positions.len()),
            skipped: Vec::new(),
        };
        let mut kept = 0;
        for (j, outcome) in outcomes.into_iter().enumerate() {
            let position = positions[j];
            match outcome {
                Ok(()) => {
                    if kept != j {
                        batch
                            .images
                            .copy_within(j * stride..(j + 1) * stride, kept * stride);
                    }
                    kept += 1;
                    batch.labels.push(split.labels[position]);
                    batch.true_labels.push(split.true_labels[position]);
                }
                Err(e) if self.skip_unreadable && unreadable(&e) => {
                    batch.skipped.push(e.to_string())
                }
                Err(e) => return Err(e),
            }
        }
        batch.images.truncate(kept * stride);
        Ok(batch)
    }

    /// The batches of `order` (positions of the split) in chunks of `batch_size`, assembled on
    /// a background thread `prefetch` batches ahead. The sample at index `p` of `order` draws
    /// its views from `(seed, p)`. The stream ends after the last batch or after the first
    /// error; dropping it stops the background thread.
    pub fn stream(
        &self,
        split: Arc<Split>,
        order: Vec<usize>,
        batch_size: usize,
        view: BatchView,
        seed: u64,
    ) -> BatchStream {
        let batch_size = batch_size.max(1);
        let batches = order.len().div_ceil(batch_size);
        let (sender, receiver) = sync_channel(self.prefetch);
        let loader = self.clone();
        let worker = std::thread::Builder::new()
            .name("smooth-topk-batches".into())
            .spawn(move || {
                for (k, chunk) in order.chunks(batch_size).enumerate() {
                    let batch = loader.batch(&split, chunk, k * batch_size, &view, seed);
                    let failed = batch.is_err();
                    if sender.send(batch).is_err() || failed {
                        return;
                    }
                }
            });
        match worker {
            Ok(worker) => BatchStream {
                receiver: Some(receiver),
                worker: Some(worker),
                batches,
                failure: None,
            },
            Err(e) => BatchStream {
                receiver: None,
                worker: None,
                batches,
                failure: Some(DataError::Threads(e.to_string())),
            },
        }
    }

    /// Per-channel mean and standard deviation of `pixel / 255` over at most `max_images`
    /// images of the split, chosen by a shuffle seeded with `seed` (all of them when the split
    /// is no larger). The sums are exact integers, so the result does not depend on the
    /// threads. Unreadable images are skipped with `skip_unreadable`, errors otherwise.
    pub fn channel_stats(
        &self,
        split: &Split,
        max_images: usize,
        seed: u64,
    ) -> Result<([f32; 3], [f32; 3]), DataError> {
        let positions: Vec<usize> = if split.len() <= max_images {
            (0..split.len()).collect()
        } else {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut chosen = rand::seq::index::sample(&mut rng, split.len(), max_images).into_vec();
            chosen.sort_unstable();
            chosen
        };
        let (height, width) = split.source.image_size();
        let plane = height * width;
        let sums: Vec<Result<PixelSums, DataError>> = self.pool.install(|| {
            positions
                .par_iter()
                .map_init(Vec::new, |scratch, &position| {
                    let image = split.source.image(split.items[position], scratch)?;
                    let mut sums = PixelSums::default();
                    sums.add_image(image, plane);
                    Ok(sums)
                })
                .collect()
        });
        let mut total = PixelSums::default();
        for sums in sums {
            match sums {
                Ok(sums) => total = total.merge(sums),
                Err(e) if self.skip_unreadable && unreadable(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(total.stats())
    }
}

/// Errors that belong to one image file (and so may be skipped).
fn unreadable(e: &DataError) -> bool {
    matches!(
        e,
        DataError::Decode { .. }
            | DataError::Io { .. }
            | DataError::MissingFile { .. }
            | DataError::ImageTooLarge { .. }
    )
}

/// Writes the views of one CHW image into `out`; random views draw from `(seed, position)`.
fn write_views(
    image: &[u8],
    height: usize,
    width: usize,
    view: &BatchView,
    seed: u64,
    position: usize,
    out: &mut [f32],
) {
    match view.views {
        Views::RandomCropFlip => {
            let mut rng = StdRng::seed_from_u64(mix_seed(&[seed, position as u64]));
            random_crop_flip(image, height, width, view.crop, &view.norm, &mut rng, out);
        }
        Views::Center => center_crop(image, height, width, view.crop.crop, &view.norm, out),
        Views::TenCrop => ten_crops(image, height, width, view.crop, &view.norm, out),
    }
}

/// The batches of an epoch, as [`Loader::stream`] assembles them.
pub struct BatchStream {
    receiver: Option<Receiver<Result<Batch, DataError>>>,
    worker: Option<JoinHandle<()>>,
    batches: usize,
    /// The background thread could not be started.
    failure: Option<DataError>,
}

impl BatchStream {
    /// Number of batches the stream yields when nothing fails.
    pub fn batches(&self) -> usize {
        self.batches
    }
}

impl Iterator for BatchStream {
    type Item = Result<Batch, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.failure.take() {
            return Some(Err(e));
        }
        self.receiver.as_ref()?.recv().ok()
    }
}

impl Drop for BatchStream {
    fn drop(&mut self) {
        // Closing the channel makes the worker's next send fail, so it stops after the batch
        // in hand.
        self.receiver.take();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::tests::indexed_dataset;

    fn view(views: Views) -> BatchView {
        BatchView {
            crop: CropSpec { crop: 2, pad: 1 },
            norm: Normalization {
                mean: [0.0; 3],
                std: [1.0 / 255.0; 3],
            },
            views,
        }
    }

    fn split(n: usize) -> Split {
        Split::whole(Arc::new(indexed_dataset(n, 4))).unwrap()
    }

    fn loader(threads: usize) -> Loader {
        Loader::new(&LoaderConfig {
            threads,
            prefetch: 1,
            skip_unreadable: false,
        })
        .unwrap()
    }

    #[test]
    fn batches_do_not_depend_on_threads_or_batching() {
        let split = Arc::new(split(37));
        let order: Vec<usize> = (0..37).rev().collect();
        let v = view(Views::RandomCropFlip);
        let collect = |threads, batch_size| -> Vec<Batch> {
            loader(threads)
                .stream(split.clone(), order.clone(), batch_size, v, 9)
                .collect::<Result<_, _>>()
                .unwrap()
        };
        let one = collect(1, 37);
        assert_eq!(one.len(), 1);
        let flat = |batches: Vec<Batch>| {
            let images: Vec<f32> = batches.iter().flat_map(|b| b.images.clone()).collect();
            let labels: Vec<u16> = batches.iter().flat_map(|b| b.labels.clone()).collect();
            (images, labels)
        };
        let reference = flat(one);
        let chunked = collect(3, 5);
        assert_eq!(chunked.len(), 8);
        assert_eq!(flat(chunked), reference);
        assert_eq!(
            reference.1,
            order.iter().map(|&i| (i % 4) as u16).collect::<Vec<_>>()
        );
        // Another seed moves the crops.
        let other: Vec<Batch> = loader(2)
            .stream(split, order, 37, v, 10)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_ne!(flat(other).0, reference.0);
    }

    #[test]
    fn ten_crops_and_bad_requests() {
        let split = split(3);
        let l = loader(2);
        let batch = l
            .batch(&split, &[2, 0], 0, &view(Views::TenCrop), 0)
            .unwrap();
        assert_eq!(batch.images.len(), 2 * 10 * 12);
        assert_eq!(batch.labels, [2, 0]);
        let err = l
            .batch(&split, &[3], 0, &view(Views::Center), 0)
            .unwrap_err();
        assert!(matches!(err, DataError::IndexOutOfRange { .. }), "{err}");
        let mut too_big = view(Views::Center);
        too_big.crop.crop = 3;
        assert!(l.batch(&split, &[0], 0, &too_big, 0).is_err());
        // Padding lets a random crop be larger than the image.
        too_big.views = Views::RandomCropFlip;
        assert!(l.batch(&split, &[0], 0, &too_big, 0).is_ok());
    }

    #[test]
    fn dropping_a_stream_stops_its_worker() {
        let split = Arc::new(split(50));
        let mut stream = loader(1).stream(split, (0..50).collect(), 1, view(Views::Center), 0);
        assert_eq!(stream.batches(), 50);
        assert!(stream.next().unwrap().is_ok());
        drop(stream); // joins the worker, which was blocked on a full channel
    }

    #[test]
    fn channel_stats_of_a_sample_and_of_everything() {
        let data = Arc::new(indexed_dataset(300, 3));
        let split = Split::whole(data.clone()).unwrap();
        let l = loader(2);
        assert_eq!(
            l.channel_stats(&split, 1000, 0).unwrap(),
            data.channel_stats()
        );
        let sample = l.channel_stats(&split, 50, 1).unwrap();
        assert_eq!(sample, l.channel_stats(&split, 50, 1).unwrap());
        assert_ne!(sample, data.channel_stats());
        let empty = split.select(&[]);
        assert_eq!(
            l.channel_stats(&empty, 10, 0).unwrap(),
            ([0.0; 3], [1.0; 3])
        );
    }
}
