#!/usr/bin/env bash
# Peak memory of `train --data folder` and `eval` on the large generated folder against the same
# commands on the small one (scripts/make_imagenet_like.sh makes both), with GNU time; then the
# loader's throughput. The difference is what the dataset's size costs: with streaming, the file
# list only.
# Usage: bash scripts/bench_folder_memory.sh DIR [STEPS]
set -euo pipefail
dir="${1:?usage: bench_folder_memory.sh DIR [STEPS]}"
steps="${2:-300}"
cd "$(dirname "$0")/.."
cargo build --release -p smooth-topk-cli
bin=target/release/smooth-topk
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
peak() { grep "Maximum resident set size" "$1" | awk '{print $6}'; }
for size in small large; do
  # The same run on both: a convnet on 56x56 crops of images read at 64x64, one validation
  # image per class, a few hundred steps of batch 64, test split evaluated once at the end.
  /usr/bin/time -v "$bin" train --data folder --data-dir "$dir/$size" --model convnet \
    --image-size 64 --crop 56 --valid-size 1000 --batch-size 64 --epochs 40 \
    --max-steps "$steps" --lr 0.1 --out "$work/$size" > "$work/$size.log" 2> "$work/$size.time"
  /usr/bin/time -v "$bin" eval --checkpoint "$work/$size/best-top1" --split test \
    > "$work/$size.eval" 2> "$work/$size.eval-time"
  echo "$size: train peak RSS $(peak "$work/$size.time") KiB ($(grep -m1 ' train / ' "$work/$size.log" | sed 's/.*(//; s/).*//')), $(grep 'Elapsed' "$work/$size.time" | awk '{print $NF}') wall; eval peak RSS $(peak "$work/$size.eval-time") KiB on $(head -1 "$work/$size.eval" | sed 's/.*split, //; s/:.*//'), $(grep 'Elapsed' "$work/$size.eval-time" | awk '{print $NF}') wall"
done
train_diff=$(( $(peak "$work/large.time") - $(peak "$work/small.time") ))
eval_diff=$(( $(peak "$work/large.eval-time") - $(peak "$work/small.eval-time") ))
echo "large - small: train $((train_diff / 1024)) MiB, eval $((eval_diff / 1024)) MiB"
"$bin" loader-bench --data-dir "$dir/large" --threads 1,2 --images 2048
