//! CIFAR-100 binary files written byte by byte in the official format, read back.

use std::path::Path;

use smooth_topk_data::{load_cifar100, read_cifar100_file, DataError, CIFAR100_RECORD_LEN};

/// Record `i`: coarse label `i % 20`, fine label `(7 i + 3) % 100`, pixel `j` = `(i + j) % 251`.
fn record(i: usize) -> Vec<u8> {
    let mut bytes = vec![(i % 20) as u8, ((7 * i + 3) % 100) as u8];
    bytes.extend((0..3072).map(|j| ((i + j) % 251) as u8));
    bytes
}

fn records(range: std::ops::Range<usize>) -> Vec<u8> {
    range.flat_map(record).collect()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn every_field_of_every_record_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "train.bin", &records(0..7));
    let data = read_cifar100_file(&path).unwrap();
    assert_eq!(data.len(), 7);
    assert_eq!(
        (data.num_classes, data.channels, data.height, data.width),
        (100, 3, 32, 32)
    );
    for i in 0..7 {
        let expected = record(i);
        assert_eq!(
            data.labels[i],
            u16::from(expected[1]),
            "fine label of record {i}"
        );
        assert_eq!(
            data.coarse_labels.as_ref().unwrap()[i],
            u16::from(expected[0])
        );
        assert_eq!(data.image(i), &expected[2..], "pixels of record {i}");
    }
    // Channel-major: red plane, then green, then blue, each row-major.
    assert_eq!(
        data.image(1)[1024 + 32 + 5],
        ((1 + 1024 + 32 + 5) % 251) as u8
    );
    data.validate().unwrap();
}

#[test]
fn a_truncated_file_names_the_file_and_the_incomplete_record() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = records(0..3);
    let path = write(
        dir.path(),
        "train.bin",
        &bytes[..CIFAR100_RECORD_LEN * 5 / 2],
    );
    let err = read_cifar100_file(&path).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("train.bin"), "{message}");
    assert!(message.contains("truncated: 7685 bytes"), "{message}");
    assert!(
        message.contains("last record at offset 6148 is incomplete"),
        "{message}"
    );
}

#[test]
fn out_of_range_labels_name_the_record_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = records(0..5);
    bytes[3 * CIFAR100_RECORD_LEN + 1] = 100;
    let path = write(dir.path(), "test.bin", &bytes);
    let message = read_cifar100_file(&path).unwrap_err().to_string();
    assert!(message.contains("test.bin"), "{message}");
    assert!(
        message.contains(
            "record 3 (byte offset 9223): fine label 100 is out of range, expected 0..=99"
        ),
        "{message}"
    );

    let mut bytes = records(0..5);
    bytes[4 * CIFAR100_RECORD_LEN] = 25;
    let path = write(dir.path(), "test.bin", &bytes);
    let message = read_cifar100_file(&path).unwrap_err().to_string();
    assert!(
        message.contains(
            "record 4 (byte offset 12296): coarse label 25 is out of range, expected 0..=19"
        ),
        "{message}"
    );
}

#[test]
fn missing_and_empty_files_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing.bin");
    let err = read_cifar100_file(&missing).unwrap_err();
    assert!(
        matches!(err, DataError::MissingFile { ref path } if *path == missing),
        "{err}"
    );
    assert!(err.to_string().contains("nothing.bin: not found"));

    let empty = write(dir.path(), "empty.bin", &[]);
    let message = read_cifar100_file(&empty).unwrap_err().to_string();
    assert!(message.ends_with("empty.bin: empty file"), "{message}");

    // load_cifar100 names the missing test file.
    write(dir.path(), "train.bin", &records(0..4));
    let message = load_cifar100(dir.path(), 1, 0).unwrap_err().to_string();
    assert!(message.contains("test.bin: not found"), "{message}");
}

#[test]
fn load_splits_train_into_disjoint_train_and_valid_and_keeps_test() {
    let dir = tempfile::tempdir().unwrap();
    // The archive's subdirectory is found too.
    let nested = dir.path().join("cifar-100-binary");
    std::fs::create_dir(&nested).unwrap();
    write(&nested, "train.bin", &records(0..40));
    write(&nested, "test.bin", &records(40..46));

    let splits = load_cifar100(dir.path(), 9, 42).unwrap();
    assert_eq!(
        (splits.train.len(), splits.valid.len(), splits.test.len()),
        (31, 9, 6)
    );
    assert_eq!(
        splits.test,
        read_cifar100_file(&nested.join("test.bin")).unwrap()
    );

    // Record i starts its pixels with i % 251, which identifies it here.
    let ids = |data: &smooth_topk_data::ImageDataset| -> Vec<u8> {
        (0..data.len()).map(|i| data.image(i)[0]).collect()
    };
    let (train_ids, valid_ids) = (ids(&splits.train), ids(&splits.valid));
    assert!(valid_ids.iter().all(|id| !train_ids.contains(id)));
    let mut all: Vec<u8> = train_ids.iter().chain(&valid_ids).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..40).collect::<Vec<u8>>());
    for (i, &id) in valid_ids.iter().enumerate() {
        assert_eq!(splits.valid.labels[i], u16::from(record(id.into())[1]));
    }

    assert_eq!(load_cifar100(dir.path(), 9, 42).unwrap(), splits);
    assert_ne!(
        ids(&load_cifar100(dir.path(), 9, 43).unwrap().valid),
        valid_ids
    );
    let err = load_cifar100(dir.path(), 40, 42).unwrap_err();
    assert!(matches!(
        err,
        DataError::ValidationTooLarge {
            valid_size: 40,
            len: 40
        }
    ));
}
