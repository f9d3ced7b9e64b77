//! Image folders of small PNG and JPEG files written with the `image` crate.

use std::path::Path;

use image::{ImageFormat, Rgb, RgbImage};
use smooth_topk_data::{load_image_folder, read_image, DataError, FolderConfig};

/// A `width x height` image filled with one colour.
fn solid(width: u32, height: u32, colour: [u8; 3]) -> RgbImage {
    RgbImage::from_pixel(width, height, Rgb(colour))
}

fn save(image: &RgbImage, path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let format = ImageFormat::from_path(path).unwrap();
    image.save_with_format(path, format).unwrap();
}

/// Image `i` of class `c` is solid with red 40 c and green 20 i + 10, so the class and the file
/// show in the pixels (JPEG moves them by a few levels at most).
/// train/: "cat" 6 images, "dog" 5, "emu" 7 (PNG, JPEG, upper-case extension, odd sizes);
/// val/: "cat" 2, "emu" 1. Plus files that must be ignored.
fn build_tree(root: &Path) {
    let classes = [("cat", 6), ("dog", 5), ("emu", 7)];
    for (c, &(name, count)) in classes.iter().enumerate() {
        for i in 0..count {
            let ext = ["png", "jpg", "JPEG"][i % 3];
            let (w, h) = if i % 2 == 0 { (40, 30) } else { (20, 50) };
            let colour = [(40 * c) as u8, (20 * i + 10) as u8, 200];
            save(
                &solid(w, h, colour),
                &root.join(format!("train/{name}/{i:02}.{ext}")),
            );
        }
        std::fs::write(root.join(format!("train/{name}/notes.txt")), "not an image").unwrap();
    }
    save(&solid(33, 33, [1, 2, 3]), &root.join("val/cat/a.png"));
    save(&solid(16, 64, [4, 5, 6]), &root.join("val/cat/b.png"));
    save(&solid(64, 16, [7, 8, 9]), &root.join("val/emu/c.png"));
}

fn config(train_per_class: Option<usize>, valid_per_class: usize) -> FolderConfig {
    FolderConfig {
        image_size: 16,
        train_per_class,
        valid_per_class,
        seed: 5,
    }
}

#[test]
fn loads_classes_labels_and_shapes() {
    let dir = tempfile::tempdir().unwrap();
    build_tree(dir.path());
    let (splits, names) = load_image_folder(dir.path(), &config(None, 1)).unwrap();
    assert_eq!(names, ["cat", "dog", "emu"]);
    for data in [&splits.train, &splits.valid, &splits.test] {
        assert_eq!(
            (data.channels, data.height, data.width, data.num_classes),
            (3, 16, 16, 3)
        );
        assert_eq!(data.coarse_labels, None);
        data.validate().unwrap();
    }
    assert_eq!(
        splits.train.labels,
        [0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2]
    );
    assert_eq!(splits.valid.labels, [0, 1, 2]);
    assert_eq!(splits.test.labels, [0, 0, 2]);

    // Solid images stay solid through resizing and cropping (JPEG within a few levels).
    let test = &splits.test;
    assert_eq!(test.image(0), [[1u8; 256], [2; 256], [3; 256]].concat());
    assert_eq!(test.image(2), [[7u8; 256], [8; 256], [9; 256]].concat());
    // (class, file index) read back from the colour of every train and valid image.
    let mut seen = Vec::new();
    for data in [&splits.train, &splits.valid] {
        for i in 0..data.len() {
            let (red, green) = (data.image(i)[0], data.image(i)[256]);
            let class = (usize::from(red) + 20) / 40;
            assert_eq!(class, usize::from(data.labels[i]), "image {i}: red {red}");
            seen.push((class, usize::from(green) / 20));
        }
    }
    // Train and valid together hold every file exactly once.
    seen.sort_unstable();
    let all: Vec<(usize, usize)> = [6, 5, 7]
        .iter()
        .enumerate()
        .flat_map(|(c, &count)| (0..count).map(move |i| (c, i)))
        .collect();
    assert_eq!(seen, all);

    let again = load_image_folder(dir.path(), &config(None, 1)).unwrap();
    assert_eq!(again.0, splits);
}

#[test]
fn balanced_subsets_take_the_same_count_from_every_class() {
    let dir = tempfile::tempdir().unwrap();
    build_tree(dir.path());
    let (splits, _) = load_image_folder(dir.path(), &config(Some(3), 2)).unwrap();
    assert_eq!(splits.train.labels, [0, 0, 0, 1, 1, 1, 2, 2, 2]);
    assert_eq!(splits.valid.labels, [0, 0, 1, 1, 2, 2]);

    // "dog" has 5 images: 2 valid + 4 train is too many.
    let err = load_image_folder(dir.path(), &config(Some(4), 2)).unwrap_err();
    assert_eq!(err.to_string(), "class dog has 5 images, 6 are needed");
}

#[test]
fn read_image_resizes_the_shorter_side_and_crops_the_centre() {
    let dir = tempfile::tempdir().unwrap();
    // 60 wide, 10 high: left third red, middle third green, right third blue.
    let image = RgbImage::from_fn(60, 10, |x, _| match x / 20 {
        0 => Rgb([255, 0, 0]),
        1 => Rgb([0, 255, 0]),
        _ => Rgb([0, 0, 255]),
    });
    let path = dir.path().join("stripes.png");
    save(&image, &path);
    // Height 10 -> 5, width 60 -> 30; the centre 5x5 (columns 12..17) comes from the middle of
    // the green third, out of reach of the filter's blending with the other stripes.
    let chw = read_image(&path, 5).unwrap();
    assert_eq!(chw, [[0u8; 25], [255; 25], [0; 25]].concat());
    // At full height nothing is resized and the crop keeps columns 25..35.
    let chw = read_image(&path, 10).unwrap();
    assert_eq!(chw, [[0u8; 100], [255; 100], [0; 100]].concat());
}

#[test]
fn a_corrupt_image_is_named() {
    let dir = tempfile::tempdir().unwrap();
    build_tree(dir.path());
    let bad = dir.path().join("train/dog/zz.jpg");
    std::fs::write(
        &bad,
        [0x12u8, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0].repeat(8),
    )
    .unwrap();
    let err = load_image_folder(dir.path(), &config(None, 0)).unwrap_err();
    assert!(
        matches!(err, DataError::Decode { ref path, .. } if *path == bad),
        "{err}"
    );
    assert!(
        err.to_string().contains("zz.jpg: cannot decode image"),
        "{err}"
    );

    // A PNG cut in half.
    let png = dir.path().join("val/emu/c.png");
    let bytes = std::fs::read(&png).unwrap();
    std::fs::write(&png, &bytes[..bytes.len() / 2]).unwrap();
    let message = read_image(&png, 8).unwrap_err().to_string();
    assert!(message.contains("c.png: cannot decode image"), "{message}");
}

#[test]
fn structural_problems_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let missing = root.join("absent");
    let err = load_image_folder(&missing, &config(None, 0)).unwrap_err();
    assert!(
        matches!(err, DataError::MissingFile { ref path } if *path == missing),
        "{err}"
    );

    std::fs::create_dir_all(root.join("train")).unwrap();
    let err = load_image_folder(root, &config(None, 0)).unwrap_err();
    assert!(matches!(err, DataError::NoClasses { .. }), "{err}");

    build_tree(root);
    std::fs::create_dir_all(root.join("train/fox")).unwrap();
    std::fs::write(root.join("train/fox/readme.md"), "no images").unwrap();
    let err = load_image_folder(root, &config(None, 0)).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("fox: class directory holds no .jpg, .jpeg or .png file"),
        "{err}"
    );
    std::fs::remove_dir_all(root.join("train/fox")).unwrap();

    save(&solid(8, 8, [0; 3]), &root.join("val/gnu/x.png"));
    let err = load_image_folder(root, &config(None, 0)).unwrap_err();
    assert!(
        matches!(err, DataError::UnknownClass { ref class, .. } if class == "gnu"),
        "{err}"
    );
    std::fs::remove_dir_all(root.join("val")).unwrap();

    let err = load_image_folder(root, &config(None, 0)).unwrap_err();
    assert!(matches!(err, DataError::MissingTestSplit { .. }), "{err}");
    // test/ serves when val/ is absent.
    save(&solid(8, 8, [9; 3]), &root.join("test/dog/x.png"));
    let (splits, _) = load_image_folder(root, &config(None, 0)).unwrap();
    assert_eq!(splits.test.labels, [1]);
    assert!(splits.valid.is_empty());
}

#[cfg(unix)]
#[test]
fn class_names_that_collide_once_converted_are_refused() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for raw in [&b"bird\xff"[..], &b"bird\xfe"[..]] {
        let class = root.join("train").join(std::ffi::OsStr::from_bytes(raw));
        save(&solid(8, 8, [1; 3]), &class.join("a.png"));
    }
    save(&solid(8, 8, [1; 3]), &root.join("val/x/a.png"));
    let err = load_image_folder(root, &config(None, 0)).unwrap_err();
    assert!(
        matches!(err, DataError::DuplicateClassName { ref name, .. } if name == "bird\u{fffd}"),
        "{err}"
    );
    assert!(err.to_string().contains("rename one"), "{err}");
}
