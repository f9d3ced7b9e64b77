//! A built-in 32x32 RGB dataset of confusable classes, generated from a seed (no download).
//!
//! Classes come in groups (by default 20 groups of 5 classes, 100 classes, like CIFAR-100's
//! super-classes), built so that the group of an image is fairly easy to recognise and its
//! class within the group is hard, which is where top-5 accuracy exceeds top-1:
//!
//! * **Group template**: a base colour near mid-grey plus 3 low-frequency 2-D sinusoids (at
//!   most 2 cycles per image on each axis), each with its own colour. Frequencies are whole
//!   cycles per image, so every pattern is periodic and wraps seamlessly.
//! * **Class detail**: 3 higher-frequency sinusoids (3 to 6.5 cycles per image: textures) of
//!   about half the template's amplitude, with random colours, orientations and frequencies.
//! * **Per image**: the template plus the class detail at a random strength in [0.5, 1) plus
//!   the detail of another class of the same group at strength [0, 0.6), so that classes
//!   bleed into their neighbours; a random cyclic translation by up to 2 pixels; 3 random
//!   low-frequency "clutter" sinusoids, as strong as the template's, which can make one group
//!   look like another; a colour cast, contrast and brightness jitter, Gaussian pixel noise
//!   (standard deviation 20), then rounding and clamping to `u8`.
//!
//! The group templates and class details depend only on the seed and the group sizes. Every
//! image has its own random stream derived from (seed, split, class, index), so train, valid
//! and test images are distinct draws from the same class distributions, generation is
//! parallel yet deterministic, and growing a split keeps its first images.
//!
//! Calibration of the defaults (seed 0, 100 train and 20 test images per class; chance is 1%
//! top-1, 5% top-5):
//!
//! | classifier                                      | top-1 | top-5 | group |
//! |-------------------------------------------------|-------|-------|-------|
//! | nearest class mean on raw pixels (`tests/`)     | 32%   | 97%   | 98%   |
//! | small convnet, 12 epochs (one-off NumPy run)    | 38%   | 93%   | 92%   |
//!
//! The convnet: 3x3 convolutions of 32, 64 and 128 channels with ReLU, 2x2 max-pooling after
//! the first two, global average pooling, a linear layer; Adam (lr 2e-3, cosine decay, weight
//! decay 5e-4), batch 64, pad-4 random crops and flips. Its accuracy moves steeply with the
//! clutter amplitude: in a NumPy port of this generator, 35 gave 42% / 95% and 42 gave
//! 28% / 87% (top-1 / top-5).

use std::f32::consts::TAU;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use rayon::prelude::*;

use crate::{mix_seed, DataError, ImageDataset, SplitName, Splits};

/// Side of the square images.
pub const SYNTHETIC_SIZE: usize = 32;
const PLANE: usize = SYNTHETIC_SIZE * SYNTHETIC_SIZE;
const IMAGE_LEN: usize = 3 * PLANE;

/// Shape and seed of the synthetic dataset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntheticConfig {
    pub groups: usize,
    pub classes_per_group: usize,
    pub train_per_class: usize,
    pub valid_per_class: usize,
    pub test_per_class: usize,
    pub seed: u64,
}

impl Default for SyntheticConfig {
    /// 20 groups of 5 classes; 100 train, 10 valid and 20 test images per class; seed 0.
    fn default() -> Self {
        SyntheticConfig {
            groups: 20,
            classes_per_group: 5,
            train_per_class: 100,
            valid_per_class: 10,
            test_per_class: 20,
            seed: 0,
        }
    }
}

/// Group templates: base colour range (per channel, around mid-grey), sinusoids per group and
/// their amplitude per colour channel.
const BASE_COLOUR_SPREAD: f32 = 25.0;
const GROUP_WAVES: usize = 3;
const GROUP_AMPLITUDE: f32 = 35.0;
/// Largest frequency (cycles per image, per axis) of the group templates and the clutter.
const LOW_FREQUENCY: i32 = 2;
/// Class details: sinusoids per class and their amplitude per colour channel.
const CLASS_WAVES: usize = 3;
const CLASS_AMPLITUDE: f32 = 18.0;
/// Radius range of class detail frequencies (cycles per image).
const CLASS_FREQUENCY: (f32, f32) = (3.0, 6.5);
/// Strength of the own class detail, and of the other class's detail, in an image.
const OWN_STRENGTH: (f32, f32) = (0.5, 1.0);
const OTHER_STRENGTH: (f32, f32) = (0.0, 0.6);
/// Per-image clutter: random low-frequency sinusoids that compete with the group template.
const CLUTTER_WAVES: usize = 3;
const CLUTTER_AMPLITUDE: f32 = 38.0;
/// Per-image colour cast, per channel.
const COLOUR_JITTER: f32 = 15.0;
/// Largest translation in pixels, each axis.
const MAX_SHIFT: i32 = 2;
/// Contrast factor range around mid-grey, and brightness offset range.
const CONTRAST: (f32, f32) = (0.8, 1.2);
const BRIGHTNESS: f32 = 20.0;
/// Standard deviation of the pixel noise.
const NOISE: f32 = 20.0;

/// Generates the train, valid and test splits: `groups * classes_per_group` classes, class
/// `g * classes_per_group + k` being class `k` of group `g`, coarse label `g`. Each split is
/// ordered by class.
///
/// Errors if a size is zero or the number of classes does not fit the `u16` labels.
pub fn generate(config: &SyntheticConfig) -> Result<Splits, DataError> {
    check(config)?;
    let patterns = Patterns::new(config);
    let split = |name| patterns.draw_split(config, name);
    Ok(Splits {
        train: split(SplitName::Train),
        valid: split(SplitName::Valid),
        test: split(SplitName::Test),
    })
}

/// One split of [`generate`]'s output, generated alone (its images are the same as there: every
/// image has its own random stream).
pub fn generate_split(
    config: &SyntheticConfig,
    split: SplitName,
) -> Result<ImageDataset, DataError> {
    check(config)?;
    Ok(Patterns::new(config).draw_split(config, split))
}

/// Images of one synthetic split at most (a guard against sizes that cannot be meant: 5M
/// images are 15 GB).
const MAX_SPLIT_IMAGES: usize = 5_000_000;

fn check(config: &SyntheticConfig) -> Result<(), DataError> {
    let sizes = [
        ("groups", config.groups),
        ("classes_per_group", config.classes_per_group),
        ("train_per_class", config.train_per_class),
        ("valid_per_class", config.valid_per_class),
        ("test_per_class", config.test_per_class),
    ];
    for (name, value) in sizes {
        if value == 0 {
            return Err(DataError::InvalidConfig {
                name,
                value,
                reason: "must be positive",
            });
        }
    }
    let num_classes = config.groups.saturating_mul(config.classes_per_group);
    if num_classes > 1 << 16 {
        return Err(DataError::InvalidConfig {
            name: "groups * classes_per_group",
            value: num_classes,
            reason: "labels are u16",
        });
    }
    let largest_split = config
        .train_per_class
        .max(config.valid_per_class)
        .max(config.test_per_class);
    let images = num_classes.saturating_mul(largest_split);
    if images > MAX_SPLIT_IMAGES {
        return Err(DataError::InvalidConfig {
            name: "images per split",
            value: images,
            reason: "the synthetic generator makes at most 5000000 images per split (15 GB)",
        });
    }
    Ok(())
}

/// A colour sinusoid: `colour[c] * cos(2 pi (fy y + fx x) / 32 + phase)` in channel `c`.
struct Wave {
    fy: i32,
    fx: i32,
    phase: f32,
    colour: [f32; 3],
}

impl Wave {
    /// Frequency drawn by `frequency`, random phase, colour uniform in `[-amplitude, amplitude]^3`.
    fn random(frequency: (i32, i32), amplitude: f32, rng: &mut StdRng) -> Self {
        Wave {
            fy: frequency.0,
            fx: frequency.1,
            phase: rng.random_range(0.0..TAU),
            colour: std::array::from_fn(|_| amplitude * rng.random_range(-1.0..1.0)),
        }
    }

    /// Adds the wave to a 3x32x32 pattern. `cos(a + b) = cos a cos b - sin a sin b` separates
    /// rows from columns, so only 4 x 32 trigonometric calls are needed.
    fn add_to(&self, pattern: &mut [f32]) {
        let step = TAU / SYNTHETIC_SIZE as f32;
        let row: Vec<(f32, f32)> = (0..SYNTHETIC_SIZE)
            .map(|y| (step * (self.fy * y as i32) as f32 + self.phase).sin_cos())
            .collect();
        let column: Vec<(f32, f32)> = (0..SYNTHETIC_SIZE)
            .map(|x| (step * (self.fx * x as i32) as f32).sin_cos())
            .collect();
        for (plane, &amplitude) in pattern.chunks_exact_mut(PLANE).zip(&self.colour) {
            for (values, &(sin_y, cos_y)) in plane.chunks_exact_mut(SYNTHETIC_SIZE).zip(&row) {
                for (value, &(sin_x, cos_x)) in values.iter_mut().zip(&column) {
                    *value += amplitude * (cos_y * cos_x - sin_y * sin_x);
                }
            }
        }
    }
}

/// A frequency with `0 <= fy <= LOW_FREQUENCY` and `|fx| <= LOW_FREQUENCY`.
fn low_frequency(rng: &mut StdRng) -> (i32, i32) {
    (
        rng.random_range(0..=LOW_FREQUENCY),
        rng.random_range(-LOW_FREQUENCY..=LOW_FREQUENCY),
    )
}

/// The noise-free ingredients: one template per group, one detail per class, each a 3x32x32
/// float image.
struct Patterns {
    templates: Vec<Vec<f32>>,
    details: Vec<Vec<f32>>,
}

impl Patterns {
    fn new(config: &SyntheticConfig) -> Self {
        let mut rng = StdRng::seed_from_u64(config.seed);
        let templates = (0..config.groups)
            .map(|_| {
                let base: [f32; 3] = std::array::from_fn(|_| {
                    128.0 + rng.random_range(-BASE_COLOUR_SPREAD..BASE_COLOUR_SPREAD)
                });
                let mut template: Vec<f32> = base.iter().flat_map(|&b| [b; PLANE]).collect();
                for _ in 0..GROUP_WAVES {
                    let frequency = loop {
                        let (fy, fx) = low_frequency(&mut rng);
                        // (0, -f) repeats (0, f) and (0, 0) is a constant: skip both.
                        if fy > 0 || fx > 0 {
                            break (fy, fx);
                        }
                    };
                    Wave::random(frequency, GROUP_AMPLITUDE, &mut rng).add_to(&mut template);
                }
                template
            })
            .collect();
        let details = (0..config.groups * config.classes_per_group)
            .map(|_| {
                let mut detail = vec![0.0; IMAGE_LEN];
                let max = CLASS_FREQUENCY.1 as i32;
                for _ in 0..CLASS_WAVES {
                    let frequency = loop {
                        let (fy, fx) = (rng.random_range(0..=max), rng.random_range(-max..=max));
                        let radius = ((fy * fy + fx * fx) as f32).sqrt();
                        if (CLASS_FREQUENCY.0..=CLASS_FREQUENCY.1).contains(&radius) {
                            break (fy, fx);
                        }
                    };
                    Wave::random(frequency, CLASS_AMPLITUDE, &mut rng).add_to(&mut detail);
                }
                detail
            })
            .collect();
        Patterns { templates, details }
    }

    /// The images of `split`, `per_class` of every class; each split has its own random streams.
    fn draw_split(&self, config: &SyntheticConfig, split: SplitName) -> ImageDataset {
        let (tag, per_class) = match split {
            SplitName::Train => (0, config.train_per_class),
            SplitName::Valid => (1, config.valid_per_class),
            SplitName::Test => (2, config.test_per_class),
        };
        let num_classes = self.details.len();
        let mut images = vec![0u8; num_classes * per_class * IMAGE_LEN];
        images
            .par_chunks_exact_mut(IMAGE_LEN)
            .enumerate()
            .for_each_init(
                || vec![0.0f32; IMAGE_LEN],
                |clean, (i, out)| {
                    let (class, index) = (i / per_class, i % per_class);
                    let stream = [config.seed, tag, class as u64, index as u64];
                    let mut rng = StdRng::seed_from_u64(mix_seed(&stream));
                    self.draw_image(config.classes_per_group, class, &mut rng, clean, out);
                },
            );
        let labels: Vec<u16> = (0..num_classes * per_class)
            .map(|i| (i / per_class) as u16)
            .collect();
        let coarse_labels = labels
            .iter()
            .map(|&label| (usize::from(label) / config.classes_per_group) as u16)
            .collect();
        ImageDataset {
            images,
            labels,
            coarse_labels: Some(coarse_labels),
            num_classes,
            channels: 3,
            height: SYNTHETIC_SIZE,
            width: SYNTHETIC_SIZE,
        }
    }

    /// One image of `class` into `out`, using `clean` as scratch space.
    fn draw_image(
        &self,
        classes_per_group: usize,
        class: usize,
        rng: &mut StdRng,
        clean: &mut [f32],
        out: &mut [u8],
    ) {
        let group = class / classes_per_group;
        let template = &self.templates[group];
        let own = &self.details[class];
        // Another class of the same group; a group of one lends its own detail at no strength.
        let (other, other_strength) = if classes_per_group > 1 {
            let offset = rng.random_range(1..classes_per_group);
            let other = group * classes_per_group + (class + offset) % classes_per_group;
            let strength = rng.random_range(OTHER_STRENGTH.0..OTHER_STRENGTH.1);
            (&self.details[other], strength)
        } else {
            (own, 0.0)
        };
        let own_strength = rng.random_range(OWN_STRENGTH.0..OWN_STRENGTH.1);

        let size = SYNTHETIC_SIZE as i32;
        let shift_y = rng.random_range(-MAX_SHIFT..=MAX_SHIFT);
        let shift_x = rng.random_range(-MAX_SHIFT..=MAX_SHIFT);
        for (i, value) in clean.iter_mut().enumerate() {
            let (c, y, x) = (
                i / PLANE,
                (i / SYNTHETIC_SIZE) % SYNTHETIC_SIZE,
                i % SYNTHETIC_SIZE,
            );
            // Cyclic shift: the patterns are periodic, so wrapping leaves no seam.
            let source_y = (y as i32 + shift_y).rem_euclid(size) as usize;
            let source_x = (x as i32 + shift_x).rem_euclid(size) as usize;
            let at = c * PLANE + source_y * SYNTHETIC_SIZE + source_x;
            *value = template[at] + own_strength * own[at] + other_strength * other[at];
        }
        for _ in 0..CLUTTER_WAVES {
            Wave::random(low_frequency(rng), CLUTTER_AMPLITUDE, rng).add_to(clean);
        }

        let cast: [f32; 3] =
            std::array::from_fn(|_| rng.random_range(-COLOUR_JITTER..COLOUR_JITTER));
        let contrast = rng.random_range(CONTRAST.0..CONTRAST.1);
        let brightness = rng.random_range(-BRIGHTNESS..BRIGHTNESS);
        for (i, (value, &clean)) in out.iter_mut().zip(clean.iter()).enumerate() {
            let noise: f32 = rng.sample(StandardNormal);
            let pixel =
                contrast * (clean + cast[i / PLANE] - 128.0) + 128.0 + brightness + NOISE * noise;
            // `as u8` saturates at 0 and 255; round to nearest first.
            *value = pixel.round() as u8;
        }
    }
}
