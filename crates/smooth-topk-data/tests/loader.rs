//! The streaming loader on generated image folders: identical batches from files and from
//! memory, and every kind of bad file (corrupt, truncated, empty, a header that claims a huge
//! image) either named in an error or, when asked, skipped and reported.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::{ImageFormat, Rgb, RgbImage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use smooth_topk_data::{
    decode_image_files, file_split, list_image_folder, list_test_files, read_image, Batch,
    BatchView, CropSpec, DataError, Loader, LoaderConfig, Normalization, Split, Views,
    MAX_FILE_SIDE,
};

/// An image of random pixels, so that every crop position and flip gives other values.
fn noisy(width: u32, height: u32, seed: u64) -> RgbImage {
    let mut rng = StdRng::seed_from_u64(seed);
    RgbImage::from_fn(width, height, |_, _| Rgb(rng.random()))
}

fn save(image: &RgbImage, path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image
        .save_with_format(path, ImageFormat::from_path(path).unwrap())
        .unwrap();
}

/// train/ with 3 classes of 6 images of assorted sizes and formats, val/ with 2 per class.
fn build_folder(root: &Path) {
    for c in 0..3 {
        for i in 0..8u64 {
            let split = if i < 6 { "train" } else { "val" };
            let ext = ["png", "jpg"][(i % 2) as usize];
            let (w, h) = [(40, 30), (24, 50), (33, 33)][(i % 3) as usize];
            let path = root.join(format!("{split}/class{c}/{i:02}.{ext}"));
            save(&noisy(w, h, 10 * c + i), &path);
        }
    }
}

fn view(views: Views, crop: usize, pad: usize) -> BatchView {
    BatchView {
        crop: CropSpec { crop, pad },
        norm: Normalization {
            mean: [0.4, 0.5, 0.6],
            std: [0.2, 0.25, 0.3],
        },
        views,
    }
}

fn loader(skip: bool) -> Loader {
    Loader::new(&LoaderConfig {
        threads: 3,
        prefetch: 2,
        skip_unreadable: skip,
    })
    .unwrap()
}

fn streamed(loader: &Loader, split: &Split, order: &[usize], view: BatchView) -> Vec<Batch> {
    loader
        .stream(Arc::new(split.clone()), order.to_vec(), 4, view, 77)
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn files_and_memory_give_identical_batches() {
    let dir = tempfile::tempdir().unwrap();
    build_folder(dir.path());
    let listing = list_image_folder(dir.path()).unwrap();
    assert_eq!(listing.classes, ["class0", "class1", "class2"]);
    let (train, valid) = listing.choose(Some(4), 2, 3).unwrap();
    assert_eq!((train.len(), valid.len()), (12, 6));
    let test = list_test_files(dir.path(), &listing.classes).unwrap();
    assert_eq!(test.len(), 6);

    let size = 20;
    let from_files = file_split(train.clone(), size, 3).unwrap();
    let in_memory = Split::whole(Arc::new(decode_image_files(&train, size, 3).unwrap())).unwrap();
    let l = loader(false);
    let order = [11, 0, 5, 7, 3, 3, 9, 1, 2, 10];
    for v in [
        view(Views::RandomCropFlip, 16, 0),
        view(Views::RandomCropFlip, 20, 4),
        view(Views::Center, 16, 0),
        view(Views::TenCrop, 12, 2),
    ] {
        let a = streamed(&l, &from_files, &order, v);
        let b = streamed(&l, &in_memory, &order, v);
        assert_eq!(a.len(), 3);
        assert_eq!(a, b, "{v:?}");
        assert_eq!(
            a.iter().flat_map(|b| b.labels.clone()).collect::<Vec<_>>(),
            order.iter().map(|&p| train[p].1).collect::<Vec<_>>()
        );
    }
    // The random crops do move: two positions of the same image differ.
    let batch = l
        .batch(
            &from_files,
            &[3, 3],
            0,
            &view(Views::RandomCropFlip, 16, 0),
            5,
        )
        .unwrap();
    let len = 3 * 16 * 16;
    assert_ne!(batch.images[..len], batch.images[len..]);
    // Channel statistics read the same pixels too.
    assert_eq!(
        l.channel_stats(&from_files, 5, 1).unwrap(),
        l.channel_stats(&in_memory, 5, 1).unwrap()
    );
}

/// The CRC-32 of PNG chunks (ISO 3309), bit by bit.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A real PNG whose header claims `width x height` (IHDR patched, CRC fixed).
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = Vec::new();
    noisy(8, 8, 1)
        .write_to(&mut std::io::Cursor::new(&mut bytes), ImageFormat::Png)
        .unwrap();
    // Signature (8), chunk length (4), "IHDR" (4), then width and height.
    assert_eq!(&bytes[12..16], b"IHDR");
    bytes[16..20].copy_from_slice(&width.to_be_bytes());
    bytes[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    bytes
}

/// A real baseline JPEG whose frame header claims `width x height`.
fn jpeg_claiming(width: u16, height: u16) -> Vec<u8> {
    let mut bytes = Vec::new();
    noisy(16, 16, 2)
        .write_to(&mut std::io::Cursor::new(&mut bytes), ImageFormat::Jpeg)
        .unwrap();
    let sof = bytes
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("a baseline frame header");
    // Marker (2), length (2), precision (1), then height and width.
    bytes[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    bytes[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    bytes
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn bad_files_are_named_and_never_allocate_what_their_header_claims() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut good = Vec::new();
    noisy(64, 48, 3)
        .write_to(&mut std::io::Cursor::new(&mut good), ImageFormat::Jpeg)
        .unwrap();
    let mut good_png = Vec::new();
    noisy(64, 48, 4)
        .write_to(&mut std::io::Cursor::new(&mut good_png), ImageFormat::Png)
        .unwrap();
    read_image(&write(d, "good.jpg", &good), 32).unwrap();

    let decode = |path: &Path| -> DataError { read_image(path, 32).unwrap_err() };
    let named = |e: &DataError, name: &str| assert!(e.to_string().contains(name), "{e}");

    let empty = write(d, "empty.jpg", &[]);
    let e = decode(&empty);
    assert!(matches!(e, DataError::Decode { .. }), "{e}");
    named(&e, "empty.jpg: cannot decode image");

    let garbage = write(d, "garbage.png", &[0x5a; 300]);
    named(&decode(&garbage), "garbage.png: cannot decode image");

    let cut_png = write(d, "cut.png", &good_png[..good_png.len() / 2]);
    let e = decode(&cut_png);
    assert!(matches!(e, DataError::Decode { .. }), "{e}");
    named(&e, "cut.png");

    // A JPEG cut inside its header has no image to give; one cut inside its scan would
    // decode with grey filling the rest, and is refused too.
    let cut_jpeg = write(d, "cut.jpg", &good[..200]);
    named(&decode(&cut_jpeg), "cut.jpg: cannot decode image");
    let half_jpeg = write(d, "half.jpg", &good[..good.len() / 2]);
    let e = decode(&half_jpeg);
    named(&e, "half.jpg: cannot decode image: truncated JPEG");
    // Bytes after the end of the image are allowed.
    let trailer = write(d, "trailer.jpg", &[&good[..], b"camera trailer"].concat());
    assert_eq!(
        read_image(&trailer, 32).unwrap(),
        read_image(&write(d, "g.jpg", &good), 32).unwrap()
    );

    for (name, bytes, claimed) in [
        (
            "huge.png",
            png_claiming(1 << 30, 1 << 30),
            (1u64 << 30, 1u64 << 30),
        ),
        (
            "wide.png",
            png_claiming(MAX_FILE_SIDE + 1, 8),
            (u64::from(MAX_FILE_SIDE) + 1, 8),
        ),
        ("huge.jpg", jpeg_claiming(60_000, 60_000), (60_000, 60_000)),
        // Within the side limit, beyond the decoded-bytes limit (16000^2 x 3 = 768 MB).
        ("big.jpg", jpeg_claiming(16_000, 16_000), (16_000, 16_000)),
    ] {
        let path = write(d, name, &bytes);
        match decode(&path) {
            DataError::ImageTooLarge {
                path: p,
                width,
                height,
                ..
            } => {
                assert_eq!(p, path);
                assert_eq!((width, height), claimed, "{name}");
            }
            other => panic!("{name}: {other}"),
        }
        named(&decode(&path), name);
    }

    // A long, thin image is read through its centre square: nothing larger than the square
    // (1 x 1 here) is ever made, whatever the requested size.
    let thin = RgbImage::from_pixel(MAX_FILE_SIDE, 1, Rgb([9, 8, 7]));
    let thin_path = d.join("thin.png");
    thin.save(&thin_path).unwrap();
    assert_eq!(
        read_image(&thin_path, 4096).unwrap(),
        [
            vec![9u8; 4096 * 4096],
            vec![8; 4096 * 4096],
            vec![7; 4096 * 4096]
        ]
        .concat()
    );

    let missing = d.join("missing.png");
    assert!(matches!(decode(&missing), DataError::MissingFile { .. }));
}

#[test]
fn unreadable_images_stop_a_batch_or_are_skipped_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    build_folder(dir.path());
    let bad = dir.path().join("train/class1/02.png");
    std::fs::write(&bad, b"not a png").unwrap();
    let truncated = dir.path().join("train/class2/00.png");
    let bytes = std::fs::read(&truncated).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    let listing = list_image_folder(dir.path()).unwrap();
    let (train, _) = listing.choose(None, 0, 0).unwrap();
    let split = file_split(train.clone(), 16, 3).unwrap();
    let order: Vec<usize> = (0..split.len()).collect();
    let v = view(Views::Center, 16, 0);

    // Without skipping, the first bad image in batch order stops the stream, named.
    let mut stream = loader(false).stream(Arc::new(split.clone()), order.clone(), 4, v, 0);
    let results: Vec<Result<Batch, DataError>> = stream.by_ref().collect();
    let err = results.last().unwrap().as_ref().unwrap_err();
    assert!(err.to_string().contains("class1/02.png"), "{err}");
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 2);

    // With skipping, both are left out and reported; the others all arrive, in order.
    let batches = streamed(&loader(true), &split, &order, v);
    let skipped: Vec<&String> = batches.iter().flat_map(|b| &b.skipped).collect();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(skipped[0].contains("class1/02.png"), "{skipped:?}");
    assert!(skipped[1].contains("class2/00.png"), "{skipped:?}");
    let labels: Vec<u16> = batches.iter().flat_map(|b| b.labels.clone()).collect();
    let expected: Vec<u16> = train
        .iter()
        .filter(|(path, _)| *path != bad && *path != truncated)
        .map(|&(_, label)| label)
        .collect();
    assert_eq!(labels, expected);
    let floats: usize = batches.iter().map(|b| b.images.len()).sum();
    assert_eq!(floats, expected.len() * 3 * 16 * 16);

    // A batch of nothing but bad images is empty when skipping, and names them.
    let only_bad: Vec<usize> = train
        .iter()
        .enumerate()
        .filter(|(_, (path, _))| *path == bad)
        .map(|(i, _)| i)
        .collect();
    let batch = loader(true).batch(&split, &only_bad, 0, &v, 0).unwrap();
    assert!(batch.is_empty() && batch.images.is_empty());
    assert_eq!(batch.skipped.len(), 1);
    // Loader settings that cannot be meant are refused.
    for config in [
        LoaderConfig {
            threads: 5000,
            ..LoaderConfig::default()
        },
        LoaderConfig {
            prefetch: 1_000_000_000_000,
            ..LoaderConfig::default()
        },
    ] {
        assert!(matches!(
            Loader::new(&config),
            Err(DataError::InvalidConfig { .. })
        ));
    }
}
