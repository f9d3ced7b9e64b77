#!/usr/bin/env bash
# Builds the device examples with the CUDA runtime (kernels compiled by NVRTC) as well as wgpu,
# on a machine that cannot download LLVM: cubecl-llvm is replaced, for this build only, by the
# interface-only crate in tools/cubecl-llvm-offline (see its README), and Cargo.lock is restored
# afterwards. With internet access, `--features wgpu,cuda` builds the same without this script.
#   bash scripts/build_cuda_offline.sh [EXAMPLE...]   (default: gpu_check train_step_bench)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -gt 0 ]; then examples=("$@"); else examples=(gpu_check train_step_bench); fi
saved=$(mktemp)
cp Cargo.lock "$saved"
trap 'cp "$saved" Cargo.lock; rm -f "$saved"' EXIT
args=()
for e in "${examples[@]}"; do args+=(--example "$e"); done
cargo build --release -p smooth-topk-burn --features wgpu,cuda-nvrtc \
  --config "patch.crates-io.cubecl-llvm.path=\"$PWD/tools/cubecl-llvm-offline\"" "${args[@]}"
