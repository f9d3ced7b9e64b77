#!/usr/bin/env bash
# The whole GPU device check in one call (see BENCHMARKS.md for how it was run), most important
# first, so that a call cut short still returns what matters:
#   1. the fused kernel against the CPU core on CUDA (gpu_check --cuda; kernels compiled by NVRTC);
#   2. timings in alternating rounds, each: ours on CUDA, PyTorch cross-entropy, ours on wgpu
#      (Vulkan), every one with the autotuner's choice of launch plan and each plan pinned; the
#      first round starts with 15 s of GPU work (a GPU fresh from idle ran the same calls up to
#      2.8x slower for tens of seconds); then per runtime and shape the median over rounds of
#      each and their ratio (gpu_compare.py);
#   3. a training step of a small convnet with either loss (train_step_bench), on CUDA and wgpu;
#   4. the kernel against the CPU core on wgpu (measured before: BENCHMARKS.md).
# (The row-kernel yardstick, examples/gpu_probe.rs, runs on its own: files back are limited.)
# `bash scripts/gpu_check.sh cuda-only` is the short form for a short lease (about 4 minutes):
# step 1 on n = 1000 alone (--quick), step 2 on CUDA and PyTorch alone, two rounds, acceptance
# shapes only.
# Each step has a time limit, and rounds 2-3 and steps 3-4 are skipped when the time left
# (BUDGET_S, default 540 s from the start) is short.
# Expects, from the repository root: .gpu/gpu_check.xz and .gpu/train_step_bench.xz (built here
# with `bash scripts/build_cuda_offline.sh`, which gives both runtimes), and .gl/*.deb (Debian's
# libvulkan1, since the GPU machine has the NVIDIA driver but no Vulkan loader).
set -uo pipefail
source scripts/gpu_env.sh
# NVRTC and the CUDA runtime libraries (not the `stubs` folder: CUDA_ERROR_STUB_LIBRARY).
cuda=/usr/local/cuda
[ -d "$cuda" ] || cuda=$(ls -d /usr/local/cuda-* 2>/dev/null | tail -1)
export CUDA_PATH=$cuda
export LD_LIBRARY_PATH=$cuda/targets/x86_64-linux/lib:$cuda/lib64:/usr/local/nvidia/lib64:${LD_LIBRARY_PATH:-}
# What the mode changes: rounds, the accuracy step's flags and time limit, round 1's shapes,
# and whether wgpu, the training step and wgpu's accuracy run at all.
if [ "${1:-full}" = cuda-only ]; then
  rounds="1 2"; accuracy_flags="--quick"; accuracy_limit=90; first_shapes="--targets"; full=no
else
  rounds="1 2 3"; accuracy_flags=""; accuracy_limit=200; first_shapes=""; full=yes
fi
budget=${BUDGET_S:-540}
left() { echo $((budget - SECONDS)); }
out=${OUT:-/tmp}
for b in gpu_check train_step_bench; do
  [ -f .gpu/$b.xz ] && xz -dc .gpu/$b.xz > /tmp/$b && chmod +x /tmp/$b
done
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/accuracy.txt"
# The binaries run in a folder whose cubecl.toml has cubecl's autotuner log its timings of each
# launch plan and its choice per shape (copied to autotune.txt at the end).
run_dir=$(mktemp -d)
printf '[autotune.logger]\nfile = "%s/autotune.log"\nlevel = "full"\n' "$run_dir" > "$run_dir/cubecl.toml"
# check SECONDS FLAGS...: gpu_check in that folder, stopped after SECONDS.
check() { local limit=$1; shift; (cd "$run_dir" && timeout "$limit" /tmp/gpu_check "$@") 2>&1; }
# 1. Accuracy on CUDA.
check "$accuracy_limit" --cuda --no-timing $accuracy_flags | tee -a "$out/accuracy.txt"
status=${PIPESTATUS[0]}
echo "[${SECONDS} s] accuracy on CUDA done (exit $status)" | tee -a "$out/accuracy.txt"
# 2. Round 1 on every shape, rounds 2 and 3 on the acceptance shapes (n = 1000, 10000).
for round in $rounds; do
  if [ "$round" = 1 ]; then shapes=$first_shapes; warm=15; else shapes="--targets"; warm=2; fi
  [ "$round" = 1 ] || [ "$(left)" -gt 120 ] || break
  f="$out/round$round.txt"
  check 150 --cuda --no-sweep --plans $shapes --warm-up $warm > "$f"
  PYTHONUNBUFFERED=1 timeout 90 python3 scripts/torch_ce_bench.py $shapes >> "$f" 2>&1
  [ "$full" = yes ] && check 120 --no-sweep --plans --targets --warm-up 2 >> "$f"
  echo "[${SECONDS} s] round $round done" | tee -a "$f"
done
python3 scripts/gpu_compare.py "$out"/round*.txt > "$out/compare.txt"
grep -v '^JSON' "$out/compare.txt"
# 3. A whole training step (small convnet, batch 64, 100 classes), CE against the SVM.
for rt in cuda wgpu; do
  if [ "$full" = yes ] && [ "$(left)" -gt 60 ] && [ -x /tmp/train_step_bench ]; then
    (cd "$run_dir" && timeout "$(left)" /tmp/train_step_bench --$rt) 2>&1 | tee -a "$out/train_step.txt"
  fi
done
# 4. Accuracy on wgpu (Vulkan).
if [ "$full" = yes ] && [ "$(left)" -gt 90 ]; then
  check "$(left)" --no-timing > "$out/accuracy_wgpu.txt" || status=1
  grep -E "max error|took" "$out/accuracy_wgpu.txt" | tail -8
fi
cp "$run_dir/autotune.log" "$out/autotune.txt" 2>/dev/null
grep "^Fastest result" "$out/autotune.txt" 2>/dev/null | tail -40
echo "[${SECONDS} s] done"
exit "$status"
