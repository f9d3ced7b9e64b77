#!/usr/bin/env bash
# Training on the GPU through the CLI (Vulkan via wgpu), in one device call:
#   1. training-step throughput, CE against the smooth SVM: DenseNet 40-40 and the small convnet;
#   2. the default `train` run for 3 epochs on the GPU backend.
# Expects, from the repository root: .gpu/smooth-topk.xz (built here with
# `cargo build --release -p smooth-topk-cli --features wgpu`) and .gl/*.deb (see gpu_env.sh).
set -uo pipefail
source scripts/gpu_env.sh
xz -dc .gpu/smooth-topk.xz > /tmp/smooth-topk && chmod +x /tmp/smooth-topk
out=${OUT:-/tmp}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/device.txt"
/tmp/smooth-topk train-bench --backend wgpu --model densenet40 --warmup 5 --steps 20 2>&1 | tee "$out/densenet_step.txt"
/tmp/smooth-topk train-bench --backend wgpu --model convnet --warmup 5 --steps 30 2>&1 | tee "$out/convnet_step.txt"
/usr/bin/time -v /tmp/smooth-topk train --backend wgpu --epochs 3 --lr-schedule 3 --out "$out/run" 2>&1 \
  | grep -v "^\s*\(Page\|Minor\|Major\|Swaps\|File\|Socket\|Signals\|Voluntary\|Involuntary\|Average\|Exit\)" \
  | tee "$out/train.txt"
