#!/usr/bin/env bash
# Builds the safetensors fuzz target with clang's libFuzzer (ASan + UBSan)
# and runs it from the committed corpus.
#   bash tests/fuzz/run_fuzz.sh OUT_DIR [RUNS] [--grow]
# RUNS: libFuzzer's -runs (default 20000: the test tier's short run; the
# recorded campaign ran 10^6, docs/verification.md). New inputs go to
# OUT_DIR/corpus; with --grow they are merged into the committed corpus
# (tests/fuzz/corpus/safetensors), minimised, to commit.
# Without clang's libFuzzer (CI's clean machine installs no clang), the
# corpus is replayed through the target built by g++ with ASan + UBSan and a
# plain main (replay_main.cpp): every committed input is checked, no new
# inputs are made.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:?OUT_DIR}"
runs="${2:-20000}"
grow="${3:-}"
cxx="${TOKENLESS_FUZZ_CXX:-clang++}"
mkdir -p "$out/corpus"
# replay WHY: the g++ build of the target over the committed corpus.
replay() {
  echo "$1: replaying the corpus with g++ (ASan + UBSan), no new inputs"
  local rbin="$out/replay_safetensors"
  g++ -std=c++20 -g1 -O1 -fsanitize=address,undefined -fno-sanitize-recover=all -DTOKENLESS_NO_CUDA_HEADERS \
    -I"$root/include" "$here/fuzz_safetensors.cpp" "$here/replay_main.cpp" -o "$rbin"
  "$rbin" "$here/corpus/safetensors"
  exit 0
}
if ! command -v "$cxx" >/dev/null; then
  [ "$grow" = "--grow" ] && { echo "--grow needs $cxx with libFuzzer" >&2; exit 1; }
  replay "no $cxx"
fi
bin="$out/fuzz_safetensors"
flags=(-std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -DTOKENLESS_NO_CUDA_HEADERS
       -I"$root/include")
if [ ! -x "$bin" ] || [ "$here/fuzz_safetensors.cpp" -nt "$bin" ] || [ "$root/include/tokenless/io/safetensors.hpp" -nt "$bin" ]; then
  if ! "$cxx" "${flags[@]}" "$here/fuzz_safetensors.cpp" -o "$bin" 2>"$out/build.log"; then
    if grep -q "clang_rt.fuzzer\|unsupported option '-fsanitize=fuzzer" "$out/build.log"; then
      [ "$grow" = "--grow" ] && { echo "--grow needs $cxx with libFuzzer" >&2; exit 1; }
      replay "$cxx has no libFuzzer runtime"
    fi
    cat "$out/build.log"
    exit 1
  fi
fi
# The dictionary steers mutations to the format's keys.
"$bin" -runs="$runs" -seed=20261202 -max_len=4096 -dict="$here/safetensors.dict" "$out/corpus" "$here/corpus/safetensors" \
  2>&1 | tail -n 1
if [ "$grow" = "--grow" ]; then
  mkdir -p "$out/merged"
  "$bin" -merge=1 "$out/merged" "$here/corpus/safetensors" "$out/corpus" 2>&1 | tail -n 2
  rm -f "$here/corpus/safetensors"/*
  cp "$out/merged"/* "$here/corpus/safetensors/"
  echo "corpus: $(ls "$here/corpus/safetensors" | wc -l) inputs"
fi
