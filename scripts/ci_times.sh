#!/usr/bin/env bash
# Where CI's time goes: the ten slowest build steps (from .ninja_log) and the
# ten slowest tests (from ctest's last run) of a build folder.
#   bash scripts/ci_times.sh [BUILD_DIR]     (default build/ci)
set -euo pipefail
dir="${1:-build/ci}"
log="$dir/.ninja_log"
if [ -f "$log" ]; then
  echo "slowest build steps (seconds):"
  # .ninja_log v5: start_ms end_ms mtime target hash; keep each target's last entry.
  awk 'NR > 1 { t[$4] = ($2 - $1) / 1000.0 } END { for (k in t) printf "%8.1f  %s\n", t[k], k }' "$log" | sort -rn | head -10
else
  echo "no $log: build first"
fi
costs="$dir/Testing/Temporary/CTestCostData.txt"
if [ -f "$costs" ]; then
  echo "slowest tests (seconds, last run):"
  # CTestCostData: name runs cost, until the "---" line.
  awk '/^---/ { exit } NF >= 3 { printf "%8.1f  %s\n", $3, $1 }' "$costs" | sort -rn | head -10
else
  echo "no $costs: run ctest first"
fi
