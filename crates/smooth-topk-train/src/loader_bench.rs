//! Throughput of the image loader on a folder: decode, resize, random crop, flip and
//! normalise, per number of worker threads. The files are read once before timing, so the
//! numbers are those of the decoding and transforms with the files in the page cache.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;
use smooth_topk_data::{
    file_split, list_image_folder, BatchView, CropSpec, Loader, LoaderConfig, Normalization, Views,
};

use crate::TrainError;

/// What to measure.
#[derive(Clone, Debug)]
pub struct LoaderBench {
    pub dir: PathBuf,
    pub image_size: usize,
    pub crop: usize,
    pub batch_size: usize,
    /// Images read per thread count (a seeded random choice of the training files).
    pub images: usize,
    pub threads: Vec<usize>,
}

/// One thread count's throughput.
#[derive(Clone, Debug, Serialize)]
pub struct LoaderRow {
    pub threads: usize,
    pub images_per_s: f64,
    pub per_thread: f64,
}

pub fn run(bench: &LoaderBench) -> Result<Vec<LoaderRow>, TrainError> {
    if bench.images == 0 || bench.batch_size == 0 || bench.threads.contains(&0) {
        return Err(TrainError::InvalidConfig(
            "images, batch size and thread counts must be positive".into(),
        ));
    }
    let listing = list_image_folder(&bench.dir)?;
    let (mut files, _) = listing.choose(None, 0, 0)?;
    files.shuffle(&mut StdRng::seed_from_u64(0));
    files.truncate(bench.images);
    for (path, _) in &files {
        std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    }
    let count = files.len();
    let split = Arc::new(file_split(files, bench.image_size, listing.classes.len())?);
    let view = BatchView {
        crop: CropSpec {
            crop: bench.crop,
            pad: 0,
        },
        norm: Normalization {
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        },
        views: Views::RandomCropFlip,
    };
    let mut rows = Vec::new();
    for &threads in &bench.threads {
        let loader = Loader::new(&LoaderConfig {
            threads,
            prefetch: 2,
            skip_unreadable: false,
        })?;
        let start = Instant::now();
        let mut seen = 0;
        for batch in loader.stream(
            split.clone(),
            (0..count).collect(),
            bench.batch_size,
            view,
            1,
        ) {
            seen += batch?.len();
        }
        let rate = seen as f64 / start.elapsed().as_secs_f64();
        rows.push(LoaderRow {
            threads,
            images_per_s: rate,
            per_thread: rate / threads as f64,
        });
    }
    Ok(rows)
}
