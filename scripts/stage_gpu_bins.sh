#!/usr/bin/env bash
# Gathers what scripts/gpu_verify.sh runs into one flat folder, for a GPU
# machine that should spend no time building: the gpu tier, the benchmarks,
# the demo (GPU and CPU builds) and Google Benchmark's shared library, which
# such a machine may lack.
#
#   bash scripts/stage_gpu_bins.sh [BUILD_DIR] [DEST]    (defaults: build/gpu .gpu-bin)
#
# .gpu-bin is ignored by git (.gitignore); carry it to the GPU
# machine and run `bash scripts/gpu_verify.sh DEST OUT_DIR`. Fails when
# something is missing or the folder is over the 48 MiB that leaves room for
# the working tree under a 64 MiB transfer limit.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build/gpu}
dest=${2:-.gpu-bin}
rm -rf "$dest"
mkdir -p "$dest"
for name in tests/tokenless_gpu_tests benchmarks/tokenless_bench_core benchmarks/tokenless_bench_encoder \
  benchmarks/tokenless_bench_patcher benchmarks/tokenless_bench_attention benchmarks/tokenless_bench_bottleneck benchmarks/tokenless_bench_blocks \
  benchmarks/tokenless_bench_models benchmarks/tokenless_bench_heads benchmarks/tokenless_bench_blt benchmarks/tokenless_bench_optim benchmarks/tokenless_bench_train examples/tokenless-patch examples/tokenless-patch-cpu examples/tokenless-run examples/tokenless-run-cpu; do
  [ -x "$build/$name" ] || { echo "missing: $build/$name (build with: cmake --preset gpu && cmake --build --preset gpu)" >&2; exit 1; }
  cp "$build/$name" "$dest/"
done
# Google Benchmark's library, as the benchmarks resolve it here.
lib=$(ldd "$dest/tokenless_bench_core" | awk '/libbenchmark\.so/ {print $3; exit}')
if [ -n "$lib" ]; then
  cp -L "$lib" "$dest/$(basename "$lib")"
fi
strip --strip-debug "$dest"/* 2>/dev/null || true
kib=$(du -sk "$dest" | cut -f1)
echo "staged $(ls "$dest" | wc -l) files, $((kib / 1024)) MiB, in $dest"
[ "$kib" -le $((48 * 1024)) ] || { echo "over 48 MiB: too large to carry beside the working tree" >&2; exit 1; }
