#!/usr/bin/env bash
# Where CI's time goes: the ten slowest build steps (from .ninja_log) and the
# ten slowest tests (from ctest's cost data) of a build folder.
#   bash scripts/ci_times.sh [BUILD_DIR]     (default build/ci)
set -euo pipefail
dir="${1:-build/ci}"

# report TITLE FILE AWK: AWK prints "seconds name" lines from FILE.
report() {
  if [ ! -f "$2" ]; then
    echo "no $2: build and test first"
    return
  fi
  echo "$1 (seconds):"
  awk "$3" "$2" | sort -rn | head -10 | awk '{ printf "%8.1f  %s\n", $1, $2 }'
}

# .ninja_log v5: start_ms end_ms mtime target hash; a target's last entry wins.
report "slowest build steps" "$dir/.ninja_log" \
  'NR > 1 { t[$4] = ($2 - $1) / 1000.0 } END { for (k in t) print t[k], k }'
# CTestCostData: name runs cost, until the "---" line.
report "slowest tests (last run)" "$dir/Testing/Temporary/CTestCostData.txt" \
  '/^---/ { exit } NF >= 3 { print $3, $1 }'
