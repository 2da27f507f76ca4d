#!/usr/bin/env bash
# tokenless-patch as a new user meets it: each check is a defect that was
# found and fixed (issue 10).
# Usage: check_patch_cli.sh BIN SAMPLE WORKDIR [GPU_BUILD_BIN]
set -uo pipefail
bin=$(readlink -f "$1")
sample="$2"
work="$3"
gpu_bin=$([ $# -ge 4 ] && readlink -f "$4" || true)
mkdir -p "$work"
failed=0
passed=0
ok() { passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
# expect_exit CODE PATTERN ARGS...: exit code CODE and PATTERN in stdout or stderr.
expect_exit() {
  local code="$1" pattern="$2"
  shift 2
  local out rc
  out=$("$bin" "$@" 2>&1)
  rc=$?
  if [ "$rc" -ne "$code" ]; then fail "'$*' exited $rc, not $code: $out"; return; fi
  if ! grep -qF -- "$pattern" <<<"$out"; then fail "'$*' did not say '$pattern': $out"; return; fi
  ok
}

# A directory is refused with a message and exit 2 (it aborted).
expect_exit 2 "it is a directory" "$work"
expect_exit 2 "it is a directory" --train "$work" "$sample"
expect_exit 2 "it is a directory" --entropies "$work" "$sample"
# Integer flags are integers, in range.
expect_exit 2 "expects an integer" --patch-size 2.7 "$sample"
expect_exit 2 "expects an integer" --patch-size 1e20 --mode static "$sample"
expect_exit 2 "expects an integer in [0, 2147483647]" --max-patch-length 2147483648 "$sample"
expect_exit 0 "patches" --max-patch-length 2147483647 "$sample"
# Monotonic mode's default threshold is BLT's, not calibrated.
expect_exit 0 "(BLT's default)" --mode monotonic "$sample"
# An empty training file is refused.
: >"$work/empty.txt"
expect_exit 2 "nothing to train on" --train "$work/empty.txt" "$sample"
# Flags that do not apply are said so.
expect_exit 0 "--threshold is ignored" --mode topk --threshold 2 "$sample"
expect_exit 0 "--threshold-add is ignored" --mode monotonic --threshold-add 0.5 "$sample"
expect_exit 0 "--train is ignored" --entropies /dev/null --train "$sample" --mode static "$sample"
# The plot is a window, and says which.
expect_exit 0 "plot: bytes 10 to 60 of" --plot "$work/p.svg" --plot-range 10:60 "$sample"
if [ "$(stat -c %s "$work/p.svg")" -gt 20000 ]; then fail "a 50-byte plot is $(stat -c %s "$work/p.svg") bytes"; else ok; fi
# JSON is valid with NaN and Inf entropies and a file name with a quote and a backslash.
name="$work/a\"b\\c.txt"
cp "$sample" "$name"
python3 -c "
import struct, sys
n = len(open(sys.argv[1], 'rb').read())
v = [1.0] * n
v[3] = float('nan'); v[5] = float('inf')
open(sys.argv[2], 'wb').write(struct.pack('<%df' % n, *v))" "$name" "$work/e.f32"
if "$bin" --format json --entropies "$work/e.f32" --threshold 0.5 "$name" >"$work/out.json" 2>/dev/null &&
   python3 -c "
import json, sys
j = json.load(open(sys.argv[1]))
assert j['file'] == sys.argv[2], j['file']
assert j['entropies'][3] is None and j['entropies'][5] is None
" "$work/out.json" "$name"; then ok; else fail "JSON output is not valid JSON: $(head -c 300 "$work/out.json")"; fi
# The GPU build hands --device emu to the executor build beside it, found
# through /proc/self/exe even when reached through a symlink or PATH.
if [ -n "$gpu_bin" ]; then
  mkdir -p "$work/bin"
  ln -sf "$gpu_bin" "$work/bin/tp-link"
  if "$work/bin/tp-link" --device emu --mode static "$sample" 2>&1 | grep -q "SIMT executor"; then ok; else fail "--device emu through a symlink"; fi
  if PATH="$work/bin:$PATH" tp-link --device emu --mode static "$sample" 2>&1 | grep -q "SIMT executor"; then ok; else fail "--device emu through PATH"; fi
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
