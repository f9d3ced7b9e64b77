#!/usr/bin/env bash
# Writes ImageNet-like image folders of generated 256x256 JPEGs (see
# crates/smooth-topk-data/examples/make_image_folder.rs):
#   OUT/large: 1000 classes x 200 training images + 10 validation images each (210k files, ~4 GB)
#   OUT/small: 1000 classes x 2 training images + 1 validation image each (3k files)
# Usage: bash scripts/make_imagenet_like.sh OUT [TRAIN_PER_CLASS]
# Files that exist are kept, so an interrupted run can be started again.
set -euo pipefail
out="${1:?usage: make_imagenet_like.sh OUT [TRAIN_PER_CLASS]}"
per_class="${2:-200}"
cd "$(dirname "$0")/.."
cargo build --release -p smooth-topk-data --example make_image_folder
gen=target/release/examples/make_image_folder
"$gen" --out "$out/small" --classes 1000 --train-per-class 2 --val-per-class 1
"$gen" --out "$out/large" --classes 1000 --train-per-class "$per_class" --val-per-class 10
du -sh "$out/small" "$out/large"
