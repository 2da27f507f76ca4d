#!/usr/bin/env bash
# Builds and runs the main demo, tokenless-patch: BLT-style entropy patching of
# a text, on the GPU when one is present, otherwise on the CPU (the plain C++
# path; --device emu runs the kernels on the CPU SIMT executor). The entropy
# model is a byte n-gram model built from the project's documentation. Extra
# arguments go to tokenless-patch (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake --preset demo >/dev/null
cmake --build --preset demo
out=build/demo
cat README.md docs/*.md > "$out/train.txt"
bin="$out/examples/tokenless-patch"
[ -x "$bin" ] || bin="$out/examples/tokenless-patch-cpu"
if [ $# -eq 0 ]; then
  set -- --train "$out/train.txt" --plot "$out/patches.svg" examples/patch/sample.txt
fi
"$bin" "$@"
[ -f "$out/patches.svg" ] && echo "plot: $out/patches.svg"
exit 0
