//! Writes an ImageNet-like image folder of generated JPEGs, for measuring the streaming loader
//! and training at ImageNet's file counts without ImageNet:
//!
//! ```text
//! OUT/train/c0000/000000.jpg ... (classes x train-per-class)
//! OUT/val/c0000/000000.jpg ...   (classes x val-per-class)
//! ```
//!
//! Each class has its own colour and low-frequency pattern; each image adds a random shift,
//! contrast and pixel noise, so files are about the size of real photographs of the same
//! pixel count. Files that already exist are kept, so an interrupted run can be started again.
//!
//! ```sh
//! cargo run --release -p smooth-topk-data --example make_image_folder -- \
//!     --out /data/fake-imagenet --classes 1000 --train-per-class 200 --val-per-class 10
//! ```

use std::f32::consts::TAU;
use std::path::{Path, PathBuf};
use std::time::Instant;

use image::codecs::jpeg::JpegEncoder;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use smooth_topk_data::mix_seed;

struct Options {
    out: PathBuf,
    classes: usize,
    train_per_class: usize,
    val_per_class: usize,
    size: usize,
    quality: u8,
    seed: u64,
}

fn parse() -> Result<Options, String> {
    let mut o = Options {
        out: PathBuf::new(),
        classes: 1000,
        train_per_class: 200,
        val_per_class: 10,
        size: 256,
        quality: 85,
        seed: 0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<usize>()
                .map_err(|_| format!("{flag}: {value:?} is not a count"))
        };
        match flag.as_str() {
            "--out" => o.out = PathBuf::from(&value),
            "--classes" => o.classes = number()?,
            "--train-per-class" => o.train_per_class = number()?,
            "--val-per-class" => o.val_per_class = number()?,
            "--size" => o.size = number()?,
            "--quality" => {
                o.quality = u8::try_from(number()?)
                    .ok()
                    .filter(|q| (1..=100).contains(q))
                    .ok_or("--quality must be in 1..=100")?
            }
            "--seed" => o.seed = number()? as u64,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if o.out.as_os_str().is_empty() {
        return Err("--out DIR is required".into());
    }
    if o.classes == 0 || o.classes > 65_536 || !(8..=4096).contains(&o.size) {
        return Err("--classes must be in 1..=65536 and --size in 8..=4096".into());
    }
    Ok(o)
}

/// A class's look: a base colour and three low-frequency waves with colours.
struct Look {
    base: [f32; 3],
    waves: Vec<(f32, f32, f32, [f32; 3])>,
}

impl Look {
    fn new(seed: u64, class: usize) -> Self {
        let mut rng = StdRng::seed_from_u64(mix_seed(&[seed, 1, class as u64]));
        let base = std::array::from_fn(|_| rng.random_range(60.0..196.0));
        let waves = (0..3)
            .map(|_| {
                (
                    rng.random_range(0.5f32..3.0),
                    rng.random_range(-3.0f32..3.0),
                    rng.random_range(0.0..TAU),
                    std::array::from_fn(|_| rng.random_range(-50.0..50.0)),
                )
            })
            .collect();
        Look { base, waves }
    }

    /// An RGB image of the class, drawn from `rng`.
    fn draw(&self, size: usize, rng: &mut StdRng) -> Vec<u8> {
        let (dy, dx) = (rng.random_range(0.0..1.0f32), rng.random_range(0.0..1.0f32));
        let contrast = rng.random_range(0.7f32..1.3);
        let mut pixels = vec![0u8; size * size * 3];
        for y in 0..size {
            for x in 0..size {
                let (fy, fx) = (y as f32 / size as f32 + dy, x as f32 / size as f32 + dx);
                for c in 0..3 {
                    let mut v = self.base[c];
                    for &(wy, wx, phase, colour) in &self.waves {
                        v += colour[c] * (TAU * (wy * fy + wx * fx) + phase).cos();
                    }
                    let noise: f32 = rng.random_range(-24.0..24.0);
                    let v = 128.0 + contrast * (v - 128.0) + noise;
                    pixels[(y * size + x) * 3 + c] = v.round().clamp(0.0, 255.0) as u8;
                }
            }
        }
        pixels
    }
}

fn write_jpeg(path: &Path, pixels: &[u8], size: usize, quality: u8) -> Result<(), String> {
    let mut bytes = Vec::new();
    JpegEncoder::new_with_quality(&mut bytes, quality)
        .encode(
            pixels,
            size as u32,
            size as u32,
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn main() {
    if let Err(e) = run() {
        eprintln!("make_image_folder: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let o = parse()?;
    let started = Instant::now();
    for (split, tag, per_class) in [
        ("train", 0u64, o.train_per_class),
        ("val", 1, o.val_per_class),
    ] {
        for class in 0..o.classes {
            let dir = o.out.join(split).join(format!("c{class:04}"));
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let jobs = o.classes * per_class;
        (0..jobs).into_par_iter().try_for_each(|job| {
            let (class, i) = (job / per_class.max(1), job % per_class.max(1));
            let path = o
                .out
                .join(split)
                .join(format!("c{class:04}"))
                .join(format!("{i:06}.jpg"));
            if path.exists() {
                return Ok(());
            }
            let look = Look::new(o.seed, class);
            let mut rng =
                StdRng::seed_from_u64(mix_seed(&[o.seed, 2, tag, class as u64, i as u64]));
            write_jpeg(&path, &look.draw(o.size, &mut rng), o.size, o.quality)
        })?;
        println!(
            "{split}: {jobs} images in {} ({:.0} s so far)",
            o.out.join(split).display(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
