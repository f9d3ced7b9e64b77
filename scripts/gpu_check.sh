#!/usr/bin/env bash
# The whole GPU device check in one call (see BENCHMARKS.md for how it was run):
#   1. the fused kernel against the CPU core (gpu_check, Vulkan through wgpu);
#   2. timings, ours (the autotuner's choice of launch plan, then each plan pinned) and PyTorch
#      cross-entropy's, in alternating rounds after 20 s of GPU work (a GPU fresh from idle ran
#      the same calls up to 2.8x slower for tens of seconds), then per shape the median over
#      rounds of each and their ratio (gpu_compare.py);
#   3. a training step of a small convnet with either loss (train_step_bench --wgpu), if shipped;
#   4. the row-kernel yardstick (gpu_probe: bandwidth and launch floors of plain row kernels on
#      the same runtime, burn's own cross-entropy), if shipped.
# Expects, from the repository root: .gpu/gpu_check.xz (the release example binary, built here with
# `cargo build --release -p smooth-topk-burn --features wgpu --example gpu_check`) and .gl/*.deb
# (Debian's libvulkan1, since the GPU machine has the NVIDIA driver but no Vulkan loader).
set -uo pipefail
source scripts/gpu_env.sh
xz -dc .gpu/gpu_check.xz > /tmp/gpu_check && chmod +x /tmp/gpu_check
out=${OUT:-/tmp}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/device.txt"
# The binaries run in a folder whose cubecl.toml has cubecl's autotuner log its timings of each
# launch plan and its choice per shape (copied to autotune.txt at the end).
run_dir=$(mktemp -d)
printf '[autotune.logger]\nfile = "%s/autotune.log"\nlevel = "full"\n' "$run_dir" > "$run_dir/cubecl.toml"
(cd "$run_dir" && /tmp/gpu_check --no-timing) 2>&1 | tee "$out/gpu_check.txt"
status=${PIPESTATUS[0]}
# Round 1 on every shape, rounds 2 and 3 on the acceptance shapes (n = 1000, 10000).
for round in 1 2 3; do
  if [ "$round" = 1 ]; then shapes=""; warm=20; else shapes="--targets"; warm=2; fi
  (cd "$run_dir" && /tmp/gpu_check --no-sweep --plans $shapes --warm-up $warm) 2>&1 | tee "$out/round$round.txt"
  PYTHONUNBUFFERED=1 python3 scripts/torch_ce_bench.py $shapes 2>&1 | tee -a "$out/round$round.txt"
done
python3 scripts/gpu_compare.py "$out"/round*.txt | tee "$out/compare.txt"
# 3. A whole training step (small convnet, batch 64, 100 classes) on the GPU, CE against the SVM.
if [ -f .gpu/train_step_bench.xz ]; then
  xz -dc .gpu/train_step_bench.xz > /tmp/train_step_bench && chmod +x /tmp/train_step_bench
  (cd "$run_dir" && /tmp/train_step_bench --wgpu) 2>&1 | tee -a "$out/compare.txt"
fi
# 4. What plain row kernels reach on this runtime (the fused kernel's yardstick).
if [ -f .gpu/gpu_probe.xz ]; then
  xz -dc .gpu/gpu_probe.xz > /tmp/gpu_probe && chmod +x /tmp/gpu_probe
  /tmp/gpu_probe 2>&1 | tee "$out/probe.txt"
fi
cp "$run_dir/autotune.log" "$out/autotune.txt" 2>/dev/null
grep "^Fastest result" "$out/autotune.txt" 2>/dev/null
exit "$status"
