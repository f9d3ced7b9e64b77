//! The synthetic dataset: shapes, determinism, and a nearest-class-mean sanity check that the
//! group is easier than the class.

use smooth_topk_data::{
    generate, generate_split, DataError, ImageDataset, SplitName, SyntheticConfig,
};

fn small(seed: u64) -> SyntheticConfig {
    SyntheticConfig {
        groups: 4,
        classes_per_group: 3,
        train_per_class: 6,
        valid_per_class: 2,
        test_per_class: 3,
        seed,
    }
}

#[test]
fn splits_have_the_configured_sizes_and_balanced_labels() {
    let splits = generate(&small(1)).unwrap();
    for (data, per_class) in [(&splits.train, 6), (&splits.valid, 2), (&splits.test, 3)] {
        data.validate().unwrap();
        assert_eq!(data.len(), 12 * per_class);
        assert_eq!(
            (data.num_classes, data.channels, data.height, data.width),
            (12, 3, 32, 32)
        );
        for class in 0..12u16 {
            assert_eq!(
                data.labels.iter().filter(|&&l| l == class).count(),
                per_class
            );
        }
        let coarse = data.coarse_labels.as_ref().unwrap();
        assert!(data.labels.iter().zip(coarse).all(|(&l, &g)| l / 3 == g));
    }
}

#[test]
fn generation_is_deterministic_and_splits_are_distinct_draws() {
    let splits = generate(&small(7)).unwrap();
    assert_eq!(generate(&small(7)).unwrap(), splits);
    // One split alone is the same as in the whole set.
    let test = generate_split(&small(7), SplitName::Test).unwrap();
    assert_eq!(test, splits.test);
    assert_ne!(
        generate(&small(8)).unwrap().train.images,
        splits.train.images
    );

    let all: Vec<&[u8]> = [&splits.train, &splits.valid, &splits.test]
        .iter()
        .flat_map(|data| (0..data.len()).map(|i| data.image(i)))
        .collect();
    for i in 0..all.len() {
        for j in 0..i {
            assert_ne!(all[i], all[j], "images {i} and {j} are identical");
        }
    }

    // More images per class extend each class's list without changing its first images.
    let bigger = generate(&SyntheticConfig {
        train_per_class: 9,
        ..small(7)
    })
    .unwrap();
    assert_eq!(bigger.train.image(9), splits.train.image(6)); // class 1, image 0
    assert_eq!(bigger.test, splits.test);
}

#[test]
fn images_use_the_pixel_range_without_saturating() {
    let data = generate(&small(3)).unwrap().train;
    let (mean, std) = data.channel_stats();
    for c in 0..3 {
        assert!(
            (0.35..0.65).contains(&mean[c]),
            "channel {c} mean {}",
            mean[c]
        );
        assert!((0.1..0.3).contains(&std[c]), "channel {c} std {}", std[c]);
    }
    let saturated = data.images.iter().filter(|&&v| v == 0 || v == 255).count();
    assert!(
        saturated * 100 < data.images.len(),
        "{saturated} saturated pixels"
    );
}

#[test]
fn invalid_sizes_are_rejected() {
    let err = generate(&SyntheticConfig {
        test_per_class: 0,
        ..small(0)
    })
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "test_per_class = 0 is invalid: must be positive"
    );
    let err = generate(&SyntheticConfig {
        groups: 0,
        ..small(0)
    })
    .unwrap_err();
    assert!(matches!(
        err,
        DataError::InvalidConfig { name: "groups", .. }
    ));
    let err = generate(&SyntheticConfig {
        train_per_class: usize::MAX / 4,
        ..small(0)
    })
    .unwrap_err();
    assert!(err.to_string().contains("at most 5000000 images"), "{err}");
    // The largest split allowed, one image short of too many.
    let err = generate(&SyntheticConfig {
        groups: 1,
        classes_per_group: 2,
        train_per_class: 2_500_001,
        ..small(0)
    })
    .unwrap_err();
    assert!(matches!(
        err,
        DataError::InvalidConfig {
            name: "images per split",
            value: 5_000_002,
            ..
        }
    ));
}

/// Top-1, top-5 and group accuracy of the nearest class mean (raw pixels, squared distance).
fn nearest_class_mean(
    train: &ImageDataset,
    test: &ImageDataset,
    classes_per_group: usize,
) -> [f64; 3] {
    let len = train.image_len();
    let mut means = vec![0.0f64; train.num_classes * len];
    let mut counts = vec![0usize; train.num_classes];
    for i in 0..train.len() {
        let class = usize::from(train.labels[i]);
        counts[class] += 1;
        for (sum, &v) in means[class * len..(class + 1) * len]
            .iter_mut()
            .zip(train.image(i))
        {
            *sum += f64::from(v);
        }
    }
    for (mean, &count) in means.chunks_exact_mut(len).zip(&counts) {
        mean.iter_mut().for_each(|v| *v /= count as f64);
    }
    let mut hits = [0usize; 3];
    for i in 0..test.len() {
        let image = test.image(i);
        let mut distances: Vec<(f64, usize)> = means
            .chunks_exact(len)
            .enumerate()
            .map(|(class, mean)| {
                let d = mean
                    .iter()
                    .zip(image)
                    .map(|(m, &v)| (m - f64::from(v)).powi(2))
                    .sum();
                (d, class)
            })
            .collect();
        distances.sort_by(|a, b| a.0.total_cmp(&b.0));
        let truth = usize::from(test.labels[i]);
        hits[0] += usize::from(distances[0].1 == truth);
        hits[1] += usize::from(distances[..5].iter().any(|&(_, c)| c == truth));
        hits[2] += usize::from(distances[0].1 / classes_per_group == truth / classes_per_group);
    }
    hits.map(|h| h as f64 / test.len() as f64)
}

/// The default dataset's intended difficulty, seen by the simplest classifier: far above
/// chance (1%), the group found much more often than the class, top-5 well above top-1.
#[test]
fn nearest_class_mean_finds_groups_far_more_often_than_classes() {
    let config = SyntheticConfig::default();
    let splits = generate(&config).unwrap();
    let [top1, top5, group] =
        nearest_class_mean(&splits.train, &splits.test, config.classes_per_group);
    println!("nearest class mean: top-1 {top1:.3}, top-5 {top5:.3}, group {group:.3}");
    assert!((0.1..0.45).contains(&top1), "top-1 {top1}");
    assert!(top5 > top1 + 0.35, "top-5 {top5} vs top-1 {top1}");
    assert!(
        group > 0.7 && group > 2.5 * top1,
        "group {group} vs top-1 {top1}"
    );
}
