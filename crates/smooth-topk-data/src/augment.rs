//! Augmentation and normalisation of one CHW `u8` image into CHW `f32`.
//!
//! Every view is a `crop x crop` window of the image zero-padded by `pad` pixels on each side
//! (padding is black, i.e. 0 before normalisation, as torchvision's `RandomCrop(padding=...)`),
//! optionally mirrored left-right, then normalised per channel: `(v / 255 - mean) / std`.
//! These functions serve internal loaders that have already validated the sizes, so a
//! mismatch is a programming error and panics.

use rand::Rng;

/// Per-channel normalisation applied to `pixel / 255`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalization {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// Crop geometry. CIFAR: `crop 32, pad 4`; image folders: stored size `S`, `crop < S`, `pad 0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CropSpec {
    pub crop: usize,
    pub pad: usize,
}

/// Training view: a random `crop x crop` window of the image zero-padded by `spec.pad`,
/// mirrored with probability 1/2, normalised, written to `out` (`3 * crop * crop`, CHW).
///
/// Draws from `rng`, in order: the top offset, the left offset (each uniform over the
/// `H + 2 pad - crop + 1` possible positions), then the flip.
///
/// # Panics
///
/// If `image` is shorter than `3 * height * width`, `out` is not `3 * crop * crop` long, or the
/// crop does not fit in the padded image.
pub fn random_crop_flip(
    image: &[u8],
    height: usize,
    width: usize,
    spec: CropSpec,
    norm: &Normalization,
    rng: &mut impl Rng,
    out: &mut [f32],
) {
    let (padded_h, padded_w) = padded_size(height, width, spec);
    let top = rng.random_range(0..=padded_h - spec.crop);
    let left = rng.random_range(0..=padded_w - spec.crop);
    let flip = rng.random_bool(0.5);
    let view = View {
        top,
        left,
        pad: spec.pad,
        crop: spec.crop,
        flip,
    };
    view.write(image, height, width, norm, out);
}

/// Evaluation view: the centre `crop x crop` window (no padding; offsets rounded down),
/// normalised, written to `out` (`3 * crop * crop`, CHW).
///
/// # Panics
///
/// If `image` is shorter than `3 * height * width`, `out` is not `3 * crop * crop` long, or
/// `crop` exceeds `height` or `width`.
pub fn center_crop(
    image: &[u8],
    height: usize,
    width: usize,
    crop: usize,
    norm: &Normalization,
    out: &mut [f32],
) {
    assert!(
        crop <= height && crop <= width,
        "crop {crop} exceeds the {height}x{width} image"
    );
    let view = View {
        top: (height - crop) / 2,
        left: (width - crop) / 2,
        pad: 0,
        crop,
        flip: false,
    };
    view.write(image, height, width, norm, out);
}

/// The 10 standard views, written one after another into `out` (`10 * 3 * crop * crop`):
/// top-left, top-right, bottom-left, bottom-right and centre crops, then the same five
/// mirrored (view `5 + i` is view `i` flipped).
///
/// The crops are taken from the image zero-padded by `spec.pad`, the same geometry as
/// [`random_crop_flip`], so they are the extreme and central positions of the training crops.
/// This matters when `crop == height == width` (CIFAR): without padding all five crops would be
/// the whole image. With `pad == 0` these are torchvision's `TenCrop` views (torchvision
/// orders the flipped corners differently).
///
/// # Panics
///
/// As [`random_crop_flip`], with `out` of length `10 * 3 * crop * crop`.
pub fn ten_crops(
    image: &[u8],
    height: usize,
    width: usize,
    spec: CropSpec,
    norm: &Normalization,
    out: &mut [f32],
) {
    let (padded_h, padded_w) = padded_size(height, width, spec);
    let view_len = 3 * spec.crop * spec.crop;
    assert_eq!(out.len(), 10 * view_len, "ten_crops output length");
    let (bottom, right) = (padded_h - spec.crop, padded_w - spec.crop);
    let positions = [
        (0, 0),
        (0, right),
        (bottom, 0),
        (bottom, right),
        (bottom / 2, right / 2),
    ];
    let flips = [false, true];
    let views = flips
        .iter()
        .flat_map(|&flip| positions.iter().map(move |&(top, left)| (top, left, flip)));
    for ((top, left, flip), out) in views.zip(out.chunks_exact_mut(view_len)) {
        let view = View {
            top,
            left,
            pad: spec.pad,
            crop: spec.crop,
            flip,
        };
        view.write(image, height, width, norm, out);
    }
}

/// Size of the image after padding, checking that the crop fits.
fn padded_size(height: usize, width: usize, spec: CropSpec) -> (usize, usize) {
    let (padded_h, padded_w) = (height + 2 * spec.pad, width + 2 * spec.pad);
    assert!(
        spec.crop <= padded_h && spec.crop <= padded_w,
        "crop {} exceeds the {padded_h}x{padded_w} padded image",
        spec.crop
    );
    (padded_h, padded_w)
}

/// A window at (`top`, `left`) of the image padded by `pad`, in padded coordinates.
struct View {
    top: usize,
    left: usize,
    pad: usize,
    crop: usize,
    flip: bool,
}

impl View {
    fn write(
        &self,
        image: &[u8],
        height: usize,
        width: usize,
        norm: &Normalization,
        out: &mut [f32],
    ) {
        let plane = height * width;
        assert!(
            image.len() >= 3 * plane,
            "image shorter than 3x{height}x{width}"
        );
        assert_eq!(out.len(), 3 * self.crop * self.crop, "view output length");
        for (c, out_plane) in out.chunks_exact_mut(self.crop * self.crop).enumerate() {
            let channel = &image[c * plane..(c + 1) * plane];
            // (v / 255 - mean) / std as one multiply-add; padding maps to `offset`.
            let scale = 1.0 / (255.0 * norm.std[c]);
            let offset = -norm.mean[c] / norm.std[c];
            for (y, out_row) in out_plane.chunks_exact_mut(self.crop).enumerate() {
                // Padded row `top + y` is image row `top + y - pad` when that is in range.
                let source_y = (self.top + y)
                    .checked_sub(self.pad)
                    .filter(|&sy| sy < height);
                for (x, out_value) in out_row.iter_mut().enumerate() {
                    let window_x = if self.flip { self.crop - 1 - x } else { x };
                    let source_x = (self.left + window_x)
                        .checked_sub(self.pad)
                        .filter(|&sx| sx < width);
                    *out_value = match (source_y, source_x) {
                        (Some(sy), Some(sx)) => {
                            f32::from(channel[sy * width + sx]) * scale + offset
                        }
                        _ => offset,
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    /// Normalisation that maps byte v to v exactly: mean 0, std 1/255.
    const RAW: Normalization = Normalization {
        mean: [0.0; 3],
        std: [1.0 / 255.0; 3],
    };

    /// A 3 x h x w image whose pixel (c, y, x) is `c * 80 + y * 10 + x + 1` (never 0, so
    /// padding is recognisable).
    fn coded_image(h: usize, w: usize) -> Vec<u8> {
        let mut image = Vec::new();
        for c in 0..3 {
            for y in 0..h {
                for x in 0..w {
                    image.push((c * 80 + y * 10 + x + 1) as u8);
                }
            }
        }
        image
    }

    fn code(c: usize, y: usize, x: usize) -> f32 {
        (c * 80 + y * 10 + x + 1) as f32
    }

    /// The expected CHW view: window at padded (top, left), optionally flipped.
    fn expected_view(
        h: usize,
        w: usize,
        pad: usize,
        crop: usize,
        top: usize,
        left: usize,
        flip: bool,
    ) -> Vec<f32> {
        let mut view = Vec::new();
        for c in 0..3 {
            for y in 0..crop {
                for x in 0..crop {
                    let x = if flip { crop - 1 - x } else { x };
                    let (py, px) = (top + y, left + x);
                    let inside = py >= pad && px >= pad && py - pad < h && px - pad < w;
                    view.push(if inside {
                        code(c, py - pad, px - pad)
                    } else {
                        0.0
                    });
                }
            }
        }
        view
    }

    #[test]
    fn random_crops_are_shifted_windows_of_the_padded_image() {
        let (h, w, pad, crop) = (6, 7, 2, 5);
        let image = coded_image(h, w);
        let spec = CropSpec { crop, pad };
        let mut out = vec![f32::NAN; 3 * crop * crop];
        let mut seen_flip = [false; 2];
        let mut seen_padding = false;
        for seed in 0..200 {
            random_crop_flip(
                &image,
                h,
                w,
                spec,
                &RAW,
                &mut StdRng::seed_from_u64(seed),
                &mut out,
            );
            // Replay the documented draws to know the window.
            let mut rng = StdRng::seed_from_u64(seed);
            let top = rng.random_range(0..=h + 2 * pad - crop);
            let left = rng.random_range(0..=w + 2 * pad - crop);
            let flip = rng.random_bool(0.5);
            assert_eq!(
                out,
                expected_view(h, w, pad, crop, top, left, flip),
                "seed {seed}"
            );
            seen_flip[usize::from(flip)] = true;
            seen_padding |= out.contains(&0.0);
        }
        assert!(seen_flip[0] && seen_flip[1] && seen_padding);
    }

    #[test]
    fn a_known_pixel_lands_where_the_shift_puts_it() {
        // Padded window at top = 0, left = 3 with pad 2: output (y, x) shows image
        // (y - 2, x + 1); flipped, output (y, x) shows image (y - 2, crop - 1 - x + 1).
        let (h, w, crop) = (6, 7, 5);
        let image = coded_image(h, w);
        let view = View {
            top: 0,
            left: 3,
            pad: 2,
            crop,
            flip: false,
        };
        let mut out = vec![0.0; 3 * crop * crop];
        view.write(&image, h, w, &RAW, &mut out);
        assert_eq!(out[crop * crop + 2 * crop], code(1, 0, 1)); // channel 1, (2, 0)
        assert_eq!(out[crop + 4], 0.0); // row 1 is padding
        let flipped = View { flip: true, ..view };
        flipped.write(&image, h, w, &RAW, &mut out);
        assert_eq!(out[crop * crop + 2 * crop], code(1, 0, 5)); // (2, 0) mirrors (2, 4)
        assert_eq!(out[2 * crop + 4], code(0, 0, 1));
    }

    #[test]
    fn center_crop_takes_the_middle_window() {
        let image = coded_image(5, 8);
        let mut out = vec![0.0; 3 * 9];
        center_crop(&image, 5, 8, 3, &RAW, &mut out);
        // Offsets (5 - 3) / 2 = 1 and (8 - 3) / 2 = 2.
        assert_eq!(out, expected_view(5, 8, 0, 3, 1, 2, false));
        assert_eq!(out[0], code(0, 1, 2));
    }

    #[test]
    fn ten_crops_are_corners_centre_and_their_mirrors() {
        let (h, w, crop) = (6, 9, 4);
        let image = coded_image(h, w);
        let view_len = 3 * crop * crop;
        let mut out = vec![f32::NAN; 10 * view_len];
        ten_crops(&image, h, w, CropSpec { crop, pad: 0 }, &RAW, &mut out);
        let positions = [(0, 0), (0, 5), (2, 0), (2, 5), (1, 2)];
        for (i, &(top, left)) in positions.iter().enumerate() {
            let plain = &out[i * view_len..(i + 1) * view_len];
            let mirrored = &out[(i + 5) * view_len..(i + 6) * view_len];
            assert_eq!(
                plain,
                expected_view(h, w, 0, crop, top, left, false),
                "view {i}"
            );
            assert_eq!(
                mirrored,
                expected_view(h, w, 0, crop, top, left, true),
                "view {}",
                i + 5
            );
        }
        // The asymmetric image makes all ten views distinct.
        let views: Vec<&[f32]> = out.chunks_exact(view_len).collect();
        for i in 0..10 {
            for j in 0..i {
                assert_ne!(views[i], views[j], "views {i} and {j}");
            }
        }
    }

    #[test]
    fn ten_crops_of_a_full_size_crop_use_the_padding() {
        let (h, w, pad) = (4, 4, 1);
        let image = coded_image(h, w);
        let view_len = 3 * h * w;
        let mut out = vec![f32::NAN; 10 * view_len];
        ten_crops(&image, h, w, CropSpec { crop: 4, pad }, &RAW, &mut out);
        assert_eq!(&out[..view_len], expected_view(h, w, pad, 4, 0, 0, false));
        assert_eq!(
            &out[3 * view_len..4 * view_len],
            expected_view(h, w, pad, 4, 2, 2, false)
        );
        // The centre of the padded image is the image itself.
        assert_eq!(
            &out[4 * view_len..5 * view_len],
            expected_view(h, w, 0, 4, 0, 0, false)
        );
    }

    #[test]
    fn normalisation_applies_mean_and_std_per_channel() {
        // One 3x1x1 image, crop 1 with pad 1 so the top-left view is padding.
        let image = [0u8, 51, 255];
        let norm = Normalization {
            mean: [0.5, 0.2, 0.4],
            std: [0.25, 0.5, 2.0],
        };
        let mut out = [0.0f32; 3];
        center_crop(&image, 1, 1, 1, &norm, &mut out);
        let expected = [(0.0 - 0.5) / 0.25, (0.2 - 0.2) / 0.5, (1.0 - 0.4) / 2.0];
        for c in 0..3 {
            assert!((out[c] - expected[c]).abs() < 1e-6, "{out:?}");
        }
        let mut views = [0.0f32; 30];
        ten_crops(
            &image,
            1,
            1,
            CropSpec { crop: 1, pad: 1 },
            &norm,
            &mut views,
        );
        let padding = [-0.5 / 0.25, -0.2 / 0.5, -0.4 / 2.0];
        for c in 0..3 {
            assert!((views[c] - padding[c]).abs() < 1e-6, "{views:?}");
        }
    }
}
