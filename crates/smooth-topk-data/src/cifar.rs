//! CIFAR-100 in its official binary format (`cifar-100-binary.tar.gz`).
//!
//! `train.bin` holds 50000 records and `test.bin` 10000; a record is 3074 bytes: the coarse
//! label (0..=19), the fine label (0..=99), then 3072 pixel bytes (1024 red, 1024 green,
//! 1024 blue, each plane row-major 32x32). The pixels are already channel-major, so they are
//! copied into [`ImageDataset`] unchanged.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::{split_validation, split_validation_indices, DataError, ImageDataset, Split, Splits};

/// Bytes per CIFAR-100 record: two label bytes and a 3x32x32 image.
pub const CIFAR100_RECORD_LEN: usize = 2 + CIFAR_IMAGE_LEN;
const CIFAR_IMAGE_LEN: usize = 3 * 32 * 32;
const CIFAR100_FINE_CLASSES: usize = 100;
const CIFAR100_COARSE_CLASSES: usize = 20;

/// Reads one CIFAR-100 binary file (`train.bin` or `test.bin`): 100 classes, coarse labels set.
///
/// The file is read once and its records are compacted in place into the image buffer, so the
/// peak memory is the file's size.
pub fn read_cifar100_file(path: &Path) -> Result<ImageDataset, DataError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let meta = file.metadata().map_err(|e| DataError::io(path, e))?;
    // Checked before reading: a regular file no larger than the records CIFAR can hold.
    let max = MAX_RECORDS as u64 * CIFAR100_RECORD_LEN as u64;
    if !meta.is_file() || meta.len() > max {
        return Err(DataError::Decode {
            path: path.into(),
            message: format!(
                "not a CIFAR-100 binary: {} (at most {MAX_RECORDS} records of {CIFAR100_RECORD_LEN} bytes)",
                if meta.is_file() {
                    format!("{} bytes", meta.len())
                } else {
                    "not a regular file".to_string()
                }
            ),
        });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max)
        .read_to_end(&mut bytes)
        .map_err(|e| DataError::io(path, e))?;
    parse_cifar100(bytes, path)
}

/// Most records of a CIFAR-100 file (the official ones hold 50000 and 10000).
const MAX_RECORDS: usize = 1_000_000;

fn parse_cifar100(mut bytes: Vec<u8>, path: &Path) -> Result<ImageDataset, DataError> {
    if bytes.is_empty() {
        return Err(DataError::EmptyFile { path: path.into() });
    }
    if !bytes.len().is_multiple_of(CIFAR100_RECORD_LEN) {
        return Err(DataError::Truncated {
            path: path.into(),
            len: bytes.len(),
            offset: bytes.len() / CIFAR100_RECORD_LEN * CIFAR100_RECORD_LEN,
            record_len: CIFAR100_RECORD_LEN,
        });
    }
    let count = bytes.len() / CIFAR100_RECORD_LEN;
    let mut labels = Vec::with_capacity(count);
    let mut coarse_labels = Vec::with_capacity(count);
    for record in 0..count {
        let offset = record * CIFAR100_RECORD_LEN;
        let check = |kind, value: u8, offset, classes: usize| {
            if usize::from(value) < classes {
                Ok(u16::from(value))
            } else {
                Err(DataError::LabelOutOfRange {
                    path: path.into(),
                    record,
                    offset,
                    kind,
                    value,
                    max: (classes - 1) as u8,
                })
            }
        };
        coarse_labels.push(check(
            "coarse",
            bytes[offset],
            offset,
            CIFAR100_COARSE_CLASSES,
        )?);
        labels.push(check(
            "fine",
            bytes[offset + 1],
            offset + 1,
            CIFAR100_FINE_CLASSES,
        )?);
        // Image `record` moves to its place in the image buffer; the destination never
        // overtakes the records still to be read.
        bytes.copy_within(
            offset + 2..offset + CIFAR100_RECORD_LEN,
            record * CIFAR_IMAGE_LEN,
        );
    }
    bytes.truncate(count * CIFAR_IMAGE_LEN);
    bytes.shrink_to_fit();
    Ok(ImageDataset {
        images: bytes,
        labels,
        coarse_labels: Some(coarse_labels),
        num_classes: CIFAR100_FINE_CLASSES,
        channels: 3,
        height: 32,
        width: 32,
    })
}

/// Loads CIFAR-100 from `dir` holding `train.bin` and `test.bin` (either directly or in the
/// archive's `cifar-100-binary/` subdirectory).
///
/// The paper's split: `valid_size` images (5000 in the paper) of `train.bin` become the
/// validation set, chosen by [`split_validation`] with `seed` (stratified when `valid_size` is a
/// multiple of 100); `test.bin` is the test set.
pub fn load_cifar100(dir: &Path, valid_size: usize, seed: u64) -> Result<Splits, DataError> {
    let dir = cifar100_dir(dir);
    let full_train = read_cifar100_file(&dir.join("train.bin"))?;
    let test = read_cifar100_file(&dir.join("test.bin"))?;
    let (train, valid) = split_validation(&full_train, valid_size, seed)?;
    Ok(Splits { train, valid, test })
}

/// The training and validation splits of [`load_cifar100`] as views of one buffer holding
/// `train.bin`'s images (nothing is copied): `(train, valid)`.
pub fn cifar100_train_valid(
    dir: &Path,
    valid_size: usize,
    seed: u64,
) -> Result<(Split, Split), DataError> {
    let data = Arc::new(read_cifar100_file(&cifar100_dir(dir).join("train.bin"))?);
    let (train, valid) =
        split_validation_indices(&data.labels, data.num_classes, valid_size, seed)?;
    let whole = Split::whole(data)?;
    Ok((whole.select(&train), whole.select(&valid)))
}

/// The test split of [`load_cifar100`] (`test.bin` alone).
pub fn cifar100_test(dir: &Path) -> Result<Split, DataError> {
    Split::whole(Arc::new(read_cifar100_file(
        &cifar100_dir(dir).join("test.bin"),
    )?))
}

/// `dir` itself unless only the archive's subdirectory holds the files; then errors name the
/// paths the caller gave.
fn cifar100_dir(dir: &Path) -> PathBuf {
    let nested = dir.join("cifar-100-binary");
    if !dir.join("train.bin").exists() && nested.join("train.bin").exists() {
        nested
    } else {
        dir.to_path_buf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_bytes_are_checked_against_their_own_ranges() {
        // Coarse 19 and fine 99 are the largest valid values.
        let mut record = vec![0u8; CIFAR100_RECORD_LEN];
        record[0] = 19;
        record[1] = 99;
        let data = parse_cifar100(record.clone(), Path::new("x.bin")).unwrap();
        assert_eq!((data.labels[0], data.coarse_labels.unwrap()[0]), (99, 19));

        record[0] = 20;
        let err = parse_cifar100(record.clone(), Path::new("x.bin")).unwrap_err();
        assert!(matches!(
            err,
            DataError::LabelOutOfRange {
                kind: "coarse",
                value: 20,
                ..
            }
        ));
        record[0] = 0;
        record[1] = 100;
        let err = parse_cifar100(record.clone(), Path::new("x.bin")).unwrap_err();
        assert!(matches!(
            err,
            DataError::LabelOutOfRange {
                kind: "fine",
                value: 100,
                ..
            }
        ));
    }
}
