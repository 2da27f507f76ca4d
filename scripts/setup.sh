#!/usr/bin/env bash
# Installs the Debian packages tokenless's build needs and the machine lacks.
# The CUDA toolkit is optional: without nvcc the host and CPU-executor parts build.
set -euo pipefail
pkgs=()
command -v cmake >/dev/null || pkgs+=(cmake)
command -v ninja >/dev/null || pkgs+=(ninja-build)
command -v g++ >/dev/null || pkgs+=(g++)
command -v python3 >/dev/null || pkgs+=(python3)
command -v c++filt >/dev/null || pkgs+=(binutils)
command -v ccache >/dev/null || pkgs+=(ccache)
[ -f /usr/include/nlohmann/json.hpp ] || pkgs+=(nlohmann-json3-dev)  # the demo's JSON output, the safetensors reader
[ -f /usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h ] || [ -f /usr/include/openblas/cblas.h ] || pkgs+=(libopenblas-dev)  # the host path's matrix products (tokenless::host)
if [ "${1:-}" = "--tests" ]; then
  [ -f /usr/include/doctest/doctest.h ] || pkgs+=(doctest-dev)
fi
if [ "${1:-}" = "--tests" ] || [ "${1:-}" = "--benchmarks" ]; then
  [ -f /usr/include/benchmark/benchmark.h ] || pkgs+=(libbenchmark-dev)
fi
if [ ${#pkgs[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${pkgs[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi
