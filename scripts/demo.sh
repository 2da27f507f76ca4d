#!/usr/bin/env bash
# Builds and runs the main demo: on the GPU when one is present, otherwise on
# the CPU SIMT executor. Arguments go to the demo (e.g. a file to read).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake --preset demo >/dev/null
cmake --build --preset demo
if [ -x build/demo/examples/tokenless_smoke ]; then
  rc=0
  build/demo/examples/tokenless_smoke "$@" || rc=$?
  [ "$rc" -eq 3 ] || exit "$rc"  # 3: no CUDA device, so fall through to the executor
fi
echo "(running on the CPU SIMT executor)"
exec build/demo/examples/tokenless_smoke_emu "$@"
