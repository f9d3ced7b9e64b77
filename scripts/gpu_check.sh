#!/usr/bin/env bash
# The whole GPU device check in one call (see BENCHMARKS.md for how it was run):
#   1. the fused kernel against the CPU core, then its timings (gpu_check, Vulkan through wgpu);
#   2. PyTorch cross-entropy on the same shapes, same timing method;
#   3. a training step of a small convnet with either loss (train_step_bench --wgpu), if shipped.
# Expects, from the repository root: .gpu/gpu_check.xz (the release example binary, built here with
# `cargo build --release -p smooth-topk-burn --features wgpu --example gpu_check`) and .gl/*.deb
# (Debian's libvulkan1, since the GPU machine has the NVIDIA driver but no Vulkan loader).
set -uo pipefail
source scripts/gpu_env.sh
xz -dc .gpu/gpu_check.xz > /tmp/gpu_check && chmod +x /tmp/gpu_check
out=${OUT:-/tmp}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/device.txt"
/tmp/gpu_check "$@" 2>&1 | tee "$out/gpu_check.txt"
status=${PIPESTATUS[0]}
PYTHONUNBUFFERED=1 python3 scripts/torch_ce_bench.py 2>&1 | tee "$out/torch_ce.txt"
# 3. A whole training step (small convnet, batch 64, 100 classes) on the GPU, CE against the SVM.
if [ -f .gpu/train_step_bench.xz ]; then
  xz -dc .gpu/train_step_bench.xz > /tmp/train_step_bench && chmod +x /tmp/train_step_bench
  /tmp/train_step_bench --wgpu 2>&1 | tee "$out/train_step.txt"
fi
exit "$status"
