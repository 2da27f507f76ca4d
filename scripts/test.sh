#!/usr/bin/env bash
# Installs what is missing, then builds and runs all four test tiers
# (host, emu, compile, gpu). The gpu tier is skipped without a device.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --tests
cmake --preset ci
cmake --build --preset ci
ctest --preset ci
