#!/usr/bin/env bash
# Verification run on a GPU machine: the gpu tier, compute-sanitizer (memcheck,
# racecheck), the benchmarks and the PyTorch side-by-side scripts.
#
#   bash scripts/gpu_verify.sh [BIN_DIR] [OUT_DIR] [steps...]
#
# BIN_DIR holds tokenless_gpu_tests and the tokenless_bench_* binaries (built by
# `cmake --preset gpu && cmake --build --preset gpu`, or copied next to a
# libbenchmark.so when the GPU machine has no Google Benchmark). Steps default
# to "info tests memcheck racecheck bench torch demo"; "ncu" profiles the hot
# kernels once. Logs and JSON go to OUT_DIR.
#
# BENCH_FILTER (a Google Benchmark regex, default: all) narrows the bench step;
# BENCH_FILTER=targets runs only the shapes the issues set targets on.
#
# TIME_BUDGET (seconds, default: none) bounds the whole run: every step's
# timeout is cut to what is left, a step that no longer fits is skipped and
# says so, and the summary and the log archive are always written, so a run
# under a device tool's time limit still brings its results back.
set -uo pipefail
bin=${1:-build/gpu}
out=${2:-${OUT:-build/gpu/verify}}
shift 2 2>/dev/null || shift $#
steps=${*:-info tests memcheck racecheck bench torch demo}
benches=${BENCHES:-core encoder patcher attention bottleneck blocks models heads blt optim train}
bench_filter=${BENCH_FILTER:-.}
if [ "$bench_filter" = targets ]; then
  # The encoder at 64K and 1M bytes, the patcher at 16M and 64M positions
  # (the harness measures the copy and GEMM peaks in every binary).
  benches=${BENCHES:-encoder patcher attention bottleneck blocks models heads blt optim train}
  bench_filter='BM_Blt|BM_LlamaTrainStep|BM_AdamW|heads_|models_|attention_|blocks_.*/16384/|blocks_moe_.*/4096/|bottleneck_.*/(1048576|4194304)/|bottleneck_(compress|concept)_.*/16384/|encoder_forward/blt1b_bf16/(65536|1048576)/|encoder_backward_sparse_bf16_grads/blt1b_bf16/(4096|65536)/|encoder_backward_(atomic|fresh_bf16_grads)/(blt1b|small)_bf16/1048576/|encoder_backward_deterministic/blt1b_bf16/65536/|_logits.*/(16777216|67108864)/'
fi
mkdir -p "$out"
final=$out
out=$out/logs
mkdir -p "$out"
export LD_LIBRARY_PATH="$bin:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
find_bin() { for p in "$bin/$1" "$bin/tests/$1" "$bin/benchmarks/$1" "$bin/examples/$1"; do [ -x "$p" ] && { echo "$p"; return; }; done; echo "missing:$1"; }
tests=$(find_bin tokenless_gpu_tests)
summary="$out/summary.txt"
: >"$summary"
note() { echo "$*" | tee -a "$summary"; }
budget=${TIME_BUDGET:-0}
# The timeout for a step that would take up to $1 seconds, or 0 when it no
# longer fits (15 s stay for packing the results).
fit() {
  [ "$budget" -gt 0 ] || { echo "$1"; return; }
  local left=$((budget - SECONDS - 15))
  if [ "$left" -lt 20 ]; then echo 0; elif [ "$left" -lt "$1" ]; then echo "$left"; else echo "$1"; fi
}
# bounded SECONDS CMD...: CMD under timeout $(fit SECONDS); 124 without running it when nothing fits
# (never `timeout 0`, which would mean no limit).
bounded() {
  local t
  t=$(fit "$1")
  shift
  [ "$t" = 0 ] && { echo "skipped: TIME_BUDGET=${budget}s spent" >&2; return 124; }
  timeout "$t" "$@"
}

for step in $steps; do
  if [ "$(fit 20)" = 0 ]; then
    note "$step: skipped, TIME_BUDGET=${budget}s spent"
    continue
  fi
  case $step in
    info)
      nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader | tee -a "$summary"
      git rev-parse --short HEAD 2>/dev/null | sed 's/^/commit /' | tee -a "$summary"
      ;;
    tests)
      bounded 120 "$tests" --duration=true >"$out/gpu_tests.txt" 2>&1
      note "gpu tests: rc=$? $(grep -E '^\[doctest\] (test cases|assertions)' "$out/gpu_tests.txt" | tr '\n' ' ')"
      ;;
    memcheck | racecheck)
      # racecheck tracks every shared-memory access: the production-shape cases would take minutes.
      filter=""
      [ "$step" = racecheck ] && filter="-tce=scale*"
      bounded 200 compute-sanitizer --tool "$step" --error-exitcode 3 --print-limit 20 \
        "$tests" $filter >"$out/$step.txt" 2>&1
      note "$step: rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$out/$step.txt" | tail -1)"
      ;;
    bench)
      for b in $benches; do
        bounded 240 "$(find_bin tokenless_bench_$b)" --benchmark_min_time=0.05 --benchmark_filter="$bench_filter" \
          --benchmark_out="$out/bench_$b.json" --benchmark_out_format=json >"$out/bench_$b.txt" 2>&1
        note "bench $b: rc=$?"
      done
      ;;
    torch)
      {
        PYTHONUNBUFFERED=1 bounded 60 python3 benchmarks/torch/encoder_eager.py --config blt1b
        PYTHONUNBUFFERED=1 bounded 60 python3 benchmarks/torch/encoder_eager.py --config small
        PYTHONUNBUFFERED=1 bounded 60 python3 benchmarks/torch/encoder_eager.py --config blt1b --sparse --sizes 4096,65536
        PYTHONUNBUFFERED=1 bounded 60 python3 benchmarks/torch/encoder_eager.py --config blt1b --accumulate --sizes 4096,65536,1048576
        PYTHONUNBUFFERED=1 bounded 60 python3 benchmarks/torch/patcher_eager.py --dtype bfloat16
        PYTHONUNBUFFERED=1 bounded 120 python3 benchmarks/torch/attention_sdpa.py
        PYTHONUNBUFFERED=1 bounded 60 python3 benchmarks/torch/bottleneck_eager.py
        PYTHONUNBUFFERED=1 bounded 120 python3 benchmarks/torch/dechunk_eager.py
        PYTHONUNBUFFERED=1 bounded 120 python3 benchmarks/torch/concepts_eager.py
        PYTHONUNBUFFERED=1 bounded 240 python3 benchmarks/torch/blocks_eager.py
        PYTHONUNBUFFERED=1 bounded 300 python3 benchmarks/torch/models_eager.py
        PYTHONUNBUFFERED=1 bounded 240 python3 benchmarks/torch/heads_eager.py
        PYTHONUNBUFFERED=1 bounded 300 python3 benchmarks/torch/blt_eager.py
        PYTHONUNBUFFERED=1 bounded 120 python3 benchmarks/torch/optim_eager.py
        PYTHONUNBUFFERED=1 bounded 300 python3 benchmarks/torch/train_eager.py
      } >"$out/torch.txt" 2>&1
      note "torch: rc=$?"
      ;;
    demo)
      # CPU equals GPU: the demo's patches from the GPU and from the same
      # kernels on the CPU executor (tokenless-patch-cpu --device emu), on the
      # sample text, in every mode; and how many modes the plain C++ path
      # (--device cpu: the host references) agrees on.
      same=0 differ="" host=0
      for m in entropy monotonic topk static space byte; do
        a=$("$(find_bin tokenless-patch)" --device gpu --mode "$m" --format json examples/patch/sample.txt 2>/dev/null | grep -o '"patch_lengths":\[[^]]*\]')
        b=$("$(find_bin tokenless-patch-cpu)" --device emu --mode "$m" --format json examples/patch/sample.txt 2>/dev/null | grep -o '"patch_lengths":\[[^]]*\]')
        c=$("$(find_bin tokenless-patch-cpu)" --device cpu --mode "$m" --format json examples/patch/sample.txt 2>/dev/null | grep -o '"patch_lengths":\[[^]]*\]')
        if [ -n "$a" ] && [ "$a" = "$b" ]; then same=$((same + 1)); else differ="$differ $m"; fi
        if [ -n "$a" ] && [ "$a" = "$c" ]; then host=$((host + 1)); fi
      done
      note "demo: GPU and executor patches identical in $same of 6 modes${differ:+; differ in:$differ}; plain C++ path identical in $host of 6"
      # tokenless-run's kernel path on the four families' fixtures (--device gpu).
      bounded 120 bash tests/cli/check_run_cli.sh "$(find_bin tokenless-run)" tests/fixtures/models "$out/run_cli" gpu \
        >"$out/run_cli.txt" 2>&1
      note "tokenless-run --device gpu: rc=$? ($(grep -c '^ok' "$out/run_cli.txt") ok, $(grep -c '^FAIL' "$out/run_cli.txt") failed)"
      ;;
    ncu)
      # One launch of each hot kernel under Nsight Compute: speed of light,
      # occupancy, warp states, memory and shared-memory traffic.
      sections="--section SpeedOfLight --section Occupancy --section WarpStateStats --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --section LaunchStats"
      bounded 240 ncu --kernel-name-base demangled --kernel-name regex:EntropyKernel --launch-count 1 $sections \
        "$(find_bin tokenless_bench_patcher)" --benchmark_filter='bf16_logits/4194304' --benchmark_min_time=0.001 \
        >"$out/ncu_entropy.txt" 2>&1
      note "ncu EntropyKernel: rc=$? $(grep -E 'Compute \(SM\) Throughput|DRAM Throughput' "$out/ncu_entropy.txt" | tr -s ' ' | tr '\n' ';')"
      bounded 240 ncu --kernel-name-base demangled --kernel-name regex:encoder::detail::ForwardKernel --launch-count 1 $sections \
        "$(find_bin tokenless_bench_encoder)" --benchmark_filter='encoder_forward/blt1b_bf16/65536' --benchmark_min_time=0.001 \
        >"$out/ncu_encoder_forward.txt" 2>&1
      note "ncu encoder ForwardKernel: rc=$? $(grep -E 'Compute \(SM\) Throughput|DRAM Throughput' "$out/ncu_encoder_forward.txt" | tr -s ' ' | tr '\n' ';')"
      ;;
    *) note "unknown step $step" ;;
  esac
done
# One archive beside the summary: the device tool returns at most eight files.
cp "$summary" "$final/summary.txt"
[ "$final" != "$out" ] && tar czf "$final/logs.tgz" -C "$out" . && rm -rf "$out"
cat "$final/summary.txt"
