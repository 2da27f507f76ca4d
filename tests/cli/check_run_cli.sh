#!/usr/bin/env bash
# tokenless-run's command line: every family's greedy ids equal transformers'
# (tests/fixtures/models/*/expected.json), --logits writes a float32 .npy of
# [n_prompt, vocab] within tolerance of transformers' logits, --ids reads a
# file, and bad input fails with a message that names it.
#   bash check_run_cli.sh RUNNER FIXTURES_DIR WORK_DIR [cpu|emu|gpu]
# With emu or gpu, the kernels' path (bf16): the JSON, the .npy within a bf16
# tolerance of transformers' bf16 logits, the ids in the vocabulary (their
# exact check against transformers is the emu and gpu tiers' test_models),
# and the device's own refusals, and --speculative (llama_mtp: a model with a multi-token
# module, scripts/make_mtp_fixture.py) giving the plain greedy ids.
set -uo pipefail
run="$1"
fixtures="$2"
work="$3"
device="${4:-cpu}"
mkdir -p "$work"
fails=0
check() {  # check NAME CONDITION-EXIT-CODE
  if [ "$2" -ne 0 ]; then
    echo "FAIL: $1"
    fails=$((fails + 1))
  else
    echo "ok: $1"
  fi
}
field() { python3 -c "import json,sys; print(','.join(map(str, json.load(open(sys.argv[1]))[sys.argv[2]])))" "$1" "$2"; }

if [ "$device" != cpu ]; then
  for f in llama mistral mixtral phi3; do
    prompt=$(field "$fixtures/$f/expected.json" prompt)
    out=$("$run" --model "$fixtures/$f" --ids-list "$prompt" --max-new-tokens 8 --ignore-eos --format json \
          --device "$device" --logits "$work/$f.npy")
    python3 -c "
import json, sys
j = json.loads(sys.argv[1])
assert j['device'] == sys.argv[2] and j['dtype'] == 'bf16' and j['prompt_tokens'] == 12, j
assert len(j['generated']) == 8 and all(0 <= t < 320 for t in j['generated']), j
assert j['tokens_per_second'] > 0, j" "$out" "$device"
    check "$f: --device $device json ($out)" $?
    python3 - "$work/$f.npy" "$fixtures/$f/logits_bf16.npy" <<'PY'
import struct, sys
def load(p):
    b = open(p, 'rb').read()
    n = struct.unpack('<H', b[8:10])[0]
    h = b[10:10 + n].decode()
    shape = tuple(int(x) for x in h.split('(')[1].split(')')[0].split(',') if x.strip())
    return shape, struct.unpack('<%df' % (shape[0] * shape[1]), b[10 + n:])
(s1, a), (s2, b) = load(sys.argv[1]), load(sys.argv[2])
assert s1 == s2, (s1, s2)
# Two bf16 runs, each within ~0.08 of the truth on logits of magnitude ~6.
assert max(abs(x - y) for x, y in zip(a, b)) < 0.3
PY
    check "$f: --device $device --logits .npy" $?
  done
  err=$("$run" --model "$fixtures/llama" --ids-list 1,2 --device "$device" --dtype fp32 2>&1 >/dev/null)
  [ $? -ne 0 ] && [[ "$err" == *"--dtype fp32"* ]]
  check "--device $device refuses fp32 by name" $?
  # --speculative on the model with a multi-token module: the plain greedy ids, and the counts.
  mtp="$fixtures/llama_mtp"
  plain=$("$run" --model "$mtp" --ids-list 5,6,7,8,9 --max-new-tokens 12 --ignore-eos --device "$device" 2>/dev/null)
  spec=$("$run" --model "$mtp" --ids-list 5,6,7,8,9 --max-new-tokens 12 --ignore-eos --device "$device" \
         --speculative 3 --format json)
  python3 -c "
import json, sys
j = json.loads(sys.argv[1])
assert ' '.join(map(str, j['generated'])) == sys.argv[2], (j['generated'], sys.argv[2])
assert j['speculative'] == 3 and len(j['acceptance']) == 4 and sum(j['acceptance']) >= 3, j" "$spec" "$plain"
  check "--speculative 3 gives the greedy ids ($plain)" $?
  err=$("$run" --model "$fixtures/llama" --ids-list 1,2 --device "$device" --speculative 2 2>&1 >/dev/null)
  [ $? -ne 0 ] && [[ "$err" == *"no multi-token module"* ]]
  check "--speculative refuses a model without a module" $?
  err=$("$run" --model "$mtp" --ids-list 1,2 --device "$device" --speculative 16 2>&1 >/dev/null)
  [ $? -ne 0 ] && [[ "$err" == *"1 to 15"* ]]
  check "--speculative refuses 16 drafts" $?
  # BLT on the kernels (bf16, cached): the greedy bytes and patches of
  # transformers' fp32 run (the fixtures' margins exceed bf16's error; the
  # logits' check is test_blt's), a batch, --no-cache's equal bytes, and the
  # refusals.
  for f in blt blt_k4; do
    text=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['prompt_text'], end='')" "$fixtures/$f/expected.json")
    out=$("$run" --model "$fixtures/$f" --prompt "$text" --prompt "ab" --max-new-tokens 12 --ignore-eos --format json \
          --device "$device" --logits "$work/$f.npy")
    python3 - "$out" "$fixtures/$f/expected.json" "$device" "$work/$f.npy" <<'PY'
import json, os, sys
j, e = json.loads(sys.argv[1]), json.load(open(sys.argv[2]))
assert j['device'] == sys.argv[3] and j['dtype'] == 'bf16' and j['cached'] and j['batch'] == 2, j
o = j['outputs'][0]
assert o['generated'] == e['generated'], (o['generated'], e['generated'])
assert o['patches'] == e['patch_lengths_full'], (o['patches'], e['patch_lengths_full'])
assert len(j['outputs'][1]['generated']) == 12, j
assert os.path.getsize(sys.argv[4]) == 128 + 4 * 260 * (len(e['prompt']) + 3), os.path.getsize(sys.argv[4])
PY
    check "$f: BLT on --device $device: transformers' greedy bytes and patches, a batch of two, --logits" $?
    a=$("$run" --model "$fixtures/$f" --prompt "$text" --max-new-tokens 12 --ignore-eos --device "$device" 2>/dev/null)
    b=$("$run" --model "$fixtures/$f" --prompt "$text" --max-new-tokens 12 --ignore-eos --device "$device" --no-cache 2>/dev/null)
    [ -n "$a" ] && [ "$a" = "$b" ]
    check "$f: BLT on --device $device: cached generation equals --no-cache" $?
  done
  blt="$fixtures/blt"
  # Sampling through the byte head: a seed's bytes cached or not, stream 0 of
  # a batch as alone (the draw is keyed by seed, position and stream), and
  # another seed's differ.
  samp="--max-new-tokens 12 --ignore-eos --temperature 0.9 --top-p 0.95 --format json --device $device"
  # shellcheck disable=SC2086
  {
    s1=$("$run" --model "$blt" --prompt "Hello" --prompt "ab" --seed 7 $samp)
    s2=$("$run" --model "$blt" --prompt "Hello" --prompt "ab" --seed 7 $samp --no-cache)
    s3=$("$run" --model "$blt" --prompt "Hello" --seed 7 $samp)
    s4=$("$run" --model "$blt" --prompt "Hello" --seed 8 $samp)
  }
  python3 -c "
import json, sys
s1, s2, s3, s4 = (json.loads(x) for x in sys.argv[1:5])
a = [o['generated'] for o in s1['outputs']]
assert a == [o['generated'] for o in s2['outputs']], (s1, s2)
assert a[0] == s3['generated'] and s4['generated'] != s3['generated'], (s1, s3, s4)
assert s1['sampling']['temperature'] > 0.89, s1
" "$s1" "$s2" "$s3" "$s4"
  check "BLT on --device $device: --temperature/--top-p/--seed through the byte head, cached or not, batched or alone" $?
  for args in "--dtype fp32" "--speculative 2"; do
    # shellcheck disable=SC2086
    out=$("$run" --model "$blt" --prompt x --device "$device" $args --format json 2>"$work/err.txt")
    rc=$?
    [ $rc -ne 0 ] && [ -z "$out" ] && grep -q "BLT's kernels" "$work/err.txt"
    check "BLT on --device $device refuses $args by name" $?
  done
  exit $fails
fi

for f in llama mistral mixtral phi3; do
  prompt=$(field "$fixtures/$f/expected.json" prompt)
  want=$(field "$fixtures/$f/expected.json" generated)
  out=$("$run" --model "$fixtures/$f" --ids-list "$prompt" --max-new-tokens 8 --ignore-eos --format json \
        --logits "$work/$f.npy")
  got=$(python3 -c "import json,sys; print(','.join(map(str, json.loads(sys.argv[1])['generated'])))" "$out")
  [ "$got" = "$want" ]
  check "$f: greedy ids $got" $?
  python3 -c "import json,sys; j=json.loads(sys.argv[1]); assert j['tokens_per_second'] > 0 and j['prompt_tokens'] == 12" "$out"
  check "$f: json fields" $?
  # The .npy: its header and shape, and its values within 1e-4 of transformers' fp32 logits.
  python3 - "$work/$f.npy" "$fixtures/$f/logits_fp32.npy" <<'PY'
import struct, sys
def load(p):
    b = open(p, 'rb').read()
    assert b[:6] == b'\x93NUMPY', 'magic'
    n = struct.unpack('<H', b[8:10])[0]
    h = b[10:10 + n].decode()
    assert "'descr': '<f4'" in h and "'fortran_order': False" in h, h
    shape = tuple(int(x) for x in h.split('(')[1].split(')')[0].split(',') if x.strip())
    vals = struct.unpack('<%df' % (shape[0] * shape[1]), b[10 + n:])
    return shape, vals
(s1, a), (s2, b) = load(sys.argv[1]), load(sys.argv[2])
assert s1 == s2, (s1, s2)
assert max(abs(x - y) for x, y in zip(a, b)) < 1e-4
PY
  check "$f: --logits .npy" $?
done

# --ids FILE, one id a line, gives the same ids as --ids-list.
prompt=$(field "$fixtures/llama/expected.json" prompt)
echo "$prompt" | tr ',' '\n' > "$work/prompt.txt"
a=$("$run" --model "$fixtures/llama" --ids "$work/prompt.txt" --max-new-tokens 4 2>/dev/null)
b=$("$run" --model "$fixtures/llama" --ids-list "$prompt" --max-new-tokens 4 2>/dev/null)
[ -n "$a" ] && [ "$a" = "$b" ]
check "--ids FILE equals --ids-list" $?

# Bad input: a message that names the problem, and a failing exit code.
expect_fail() {  # expect_fail NAME NEEDLE ARGS...
  local name="$1" needle="$2"
  shift 2
  local err
  err=$("$run" "$@" 2>&1 >/dev/null)
  local rc=$?
  [ $rc -ne 0 ] && [[ "$err" == *"$needle"* ]]
  check "$name (\"$needle\")" $?
}
expect_fail "no model folder" "config.json" --model "$work/missing" --ids-list 1,2
expect_fail "an id outside the vocabulary" "id 99999" --model "$fixtures/llama" --ids-list 1,99999
expect_fail "a prompt that is not ids" "'x7'" --model "$fixtures/llama" --ids-list 1,x7
expect_fail "an unknown flag" "--frobnicate" --model "$fixtures/llama" --ids-list 1 --frobnicate
expect_fail "an unknown dtype" "fp8" --model "$fixtures/llama" --ids-list 1 --dtype fp8
expect_fail "--speculative on the plain C++ decoder" "--device gpu or emu" --model "$fixtures/llama_mtp" --ids-list 1 \
  --device cpu --speculative 2
mkdir -p "$work/gpt2"
echo '{"architectures": ["GPT2LMHeadModel"]}' > "$work/gpt2/config.json"
expect_fail "an unknown architecture" "GPT2LMHeadModel" --model "$work/gpt2" --ids-list 1
# BLT (model_type "blt"), on the host path: the prompt as text, its greedy
# bytes and patches as transformers' (tests/fixtures/models/blt*), --logits
# as [BOS + bytes, 260] within fp32's tolerance of transformers' float64 run,
# --bytes-file equal to --prompt, and its bad input.
if [ "$device" = cpu ]; then
  for f in blt blt_k4; do
    text=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['prompt_text'], end='')" "$fixtures/$f/expected.json")
    out=$("$run" --model "$fixtures/$f" --prompt "$text" --max-new-tokens 12 --ignore-eos --format json \
          --logits "$work/$f.npy")
    python3 - "$out" "$fixtures/$f/expected.json" "$work/$f.npy" "$fixtures/$f/logits_fp64.npy" <<'PY'
import json, struct, sys
j, e = json.loads(sys.argv[1]), json.load(open(sys.argv[2]))
assert j['model'] == 'BltForCausalLM' and j['device'] == 'cpu', j
assert j['generated'] == e['generated'], (j['generated'], e['generated'])
assert j['patches'] == e['patch_lengths_full'], (j['patches'], e['patch_lengths_full'])
assert j['text'].encode('utf-8', 'replace') and j['bytes_per_second'] > 0 and j['prefill_ms'] > 0, j
def load(p):
    b = open(p, 'rb').read()
    n = struct.unpack('<H', b[8:10])[0]
    h = b[10:10 + n].decode()
    f = 'd' if "'<f8'" in h else 'f'
    shape = tuple(int(x) for x in h.split('(')[1].split(')')[0].split(',') if x.strip())
    return shape, struct.unpack('<%d%s' % (shape[0] * shape[1], f), b[10 + n:])
(s1, a), (s2, b) = load(sys.argv[3]), load(sys.argv[4])
assert s1 == s2 == (len(e['prompt']), 260), (s1, s2)
assert max(abs(x - y) for x, y in zip(a, b)) <= 4 * e['fp32_error'] + 4 * 5.96e-8 * e['logit_scale']
PY
    check "$f: BLT --prompt, greedy bytes, patches and --logits as transformers'" $?
    printf '%s' "$text" > "$work/$f.bytes"
    a=$("$run" --model "$fixtures/$f" --bytes-file "$work/$f.bytes" --max-new-tokens 3 --ignore-eos 2>/dev/null)
    b=$("$run" --model "$fixtures/$f" --prompt "$text" --max-new-tokens 3 --ignore-eos 2>/dev/null)
    [ -n "$a" ] && [ "$a" = "$b" ]
    check "$f: --bytes-file equals --prompt" $?
    c=$("$run" --model "$fixtures/$f" --prompt "$text" --max-new-tokens 12 --ignore-eos --no-cache 2>/dev/null)
    d=$("$run" --model "$fixtures/$f" --prompt "$text" --max-new-tokens 12 --ignore-eos 2>/dev/null)
    [ -n "$c" ] && [ "$c" = "$d" ]
    check "$f: cached generation equals --no-cache" $?
  done
  # A batch: prompts from --prompt, --prompts-file (a prompt a line) and
  # --bytes-file, each equal to itself alone; seeded sampling repeats.
  blt="$fixtures/blt"
  printf 'The q\nzz' > "$work/lines.txt"
  printf 'abc' > "$work/abc.bytes"
  out=$("$run" --model "$blt" --prompt "Hello" --prompts-file "$work/lines.txt" --bytes-file "$work/abc.bytes" \
        --max-new-tokens 6 --ignore-eos --format json)
  ok=0
  i=0
  for p in "Hello" "The q" "zz" "abc"; do
    alone=$("$run" --model "$blt" --prompt "$p" --max-new-tokens 6 --ignore-eos --format json)
    python3 -c "
import json, sys
b, a = json.loads(sys.argv[1]), json.loads(sys.argv[2])
assert b['batch'] == 4 and len(b['outputs']) == 4, b
o = b['outputs'][int(sys.argv[3])]
assert o['generated'] == a['generated'] and o['patches'] == a['patches'] and o['prompt_bytes'] == a['prompt_bytes'], (o, a)
" "$out" "$alone" $i || ok=1
    i=$((i + 1))
  done
  check "BLT: a batch of 4 prompts (--prompt, --prompts-file, --bytes-file) equals each alone" $ok
  s1=$("$run" --model "$blt" --prompt "Hello" --max-new-tokens 12 --ignore-eos --temperature 0.9 --top-p 0.95 --seed 7 --format json)
  s2=$("$run" --model "$blt" --prompt "Hello" --max-new-tokens 12 --ignore-eos --temperature 0.9 --top-p 0.95 --seed 7 --format json --no-cache)
  s3=$("$run" --model "$blt" --prompt "Hello" --max-new-tokens 12 --ignore-eos --temperature 0.9 --top-p 0.95 --seed 8 --format json)
  g=$("$run" --model "$blt" --prompt "Hello" --max-new-tokens 12 --ignore-eos --format json)
  python3 -c "
import json, sys
s1, s2, s3, g = (json.loads(x) for x in sys.argv[1:5])
assert s1['generated'] == s2['generated'], (s1, s2)
assert s1['generated'] != s3['generated'] and s1['generated'] != g['generated'], (s1, s3, g)
assert s1['sampling']['seed'] == 7 and g['sampling']['temperature'] == 0, (s1, g)
" "$s1" "$s2" "$s3" "$g"
  check "BLT: --temperature/--top-p/--seed: the same bytes for a seed, cached or not; another seed differs" $?
  l1=$("$run" --model "$fixtures/llama" --ids-list 1,5,9 --device cpu --temperature 1 --seed 3 --ignore-eos 2>/dev/null)
  l2=$("$run" --model "$fixtures/llama" --ids-list 1,5,9 --device cpu --temperature 1 --seed 3 --ignore-eos 2>/dev/null)
  [ -n "$l1" ] && [ "$l1" = "$l2" ]
  check "Llama on the host: seeded sampling repeats" $?
  g=$("$run" --model "$blt" --prompt "Hello, wor" --max-new-tokens 24 --ignore-eos --format json)
  sp=$("$run" --model "$blt" --prompt "Hello, wor" --max-new-tokens 24 --ignore-eos --format json --speculative 4)
  python3 -c "
import json, sys
g, s = json.loads(sys.argv[1]), json.loads(sys.argv[2])
assert s['generated'] == g['generated'] and s['patches'] == g['patches'], (s, g)
assert s['speculative'] == 4 and len(s['acceptance']) == 5 and sum(s['acceptance']) >= 5, s
" "$g" "$sp"
  check "BLT: --speculative 4 gives the greedy bytes, with acceptance counts" $?
  expect_fail_blt() {  # NAME NEEDLE ARGS...: a message, a failing exit, no JSON on stdout
    local name="$1" needle="$2"
    shift 2
    local err out
    out=$("$run" "$@" --format json 2>"$work/err.txt")
    local rc=$?
    err=$(cat "$work/err.txt")
    [ $rc -ne 0 ] && [[ "$err" == *"$needle"* ]] && [ -z "$out" ]
    check "BLT: $name (\"$needle\")" $?
  }
  expect_fail_blt "an empty prompt" "the prompt is empty" --model "$blt" --prompt ""
  expect_fail_blt "a directory as --bytes-file" "is a directory" --model "$blt" --bytes-file "$work"
  expect_fail_blt "an unreadable --bytes-file" "cannot read" --model "$blt" --bytes-file "$work/none.bin"
  expect_fail_blt "more bytes than the positions" "positions" --model "$blt" --prompt x --max-new-tokens 100000
  expect_fail_blt "an id outside 260" "outside BLT's 260" --model "$blt" --ids-list 1,300
  expect_fail_blt "bf16" "fp32" --model "$blt" --prompt x --dtype bf16
  expect_fail_blt "--prompt on a token model" "BLT checkpoints" --model "$fixtures/llama" --prompt x
  expect_fail_blt "two prompts" "exactly one of" --model "$blt" --prompt x --ids-list 1
  expect_fail_blt "a NaN temperature" "--temperature" --model "$blt" --prompt x --temperature nan
  expect_fail_blt "a negative temperature" "--temperature" --model "$blt" --prompt x --temperature -1
  expect_fail_blt "top-p 0" "--top-p" --model "$blt" --prompt x --top-p 0
  expect_fail_blt "a negative seed" "--seed" --model "$blt" --prompt x --seed -3
  printf 'ok\n\nok\n' > "$work/gap.txt"
  expect_fail_blt "an empty line in --prompts-file" "prompt 1 is empty" --model "$blt" --prompts-file "$work/gap.txt"
  : > "$work/none.txt"
  expect_fail_blt "an empty --prompts-file" "holds no prompt" --model "$blt" --prompts-file "$work/none.txt"
  expect_fail_blt "a directory as --prompts-file" "is a directory" --model "$blt" --prompts-file "$work"
  expect_fail_blt "a batch beyond the positions" "prompt 0:" --model "$blt" --prompt x --prompt y --max-new-tokens 100000
  mkdir -p "$work/blt_space"
  cp "$blt/model.safetensors" "$work/blt_space/"
  python3 -c "import json,sys; j=json.load(open(sys.argv[1])); j['patching_mode']='space'; json.dump(j, open(sys.argv[2],'w'))" \
    "$blt/config.json" "$work/blt_space/config.json"
  expect_fail_blt "a patching mode transformers lacks" "patching_mode 'space'" --model "$work/blt_space" --prompt x
  mkdir -p "$work/blt_llama"
  python3 -c "import json,sys; j=json.load(open(sys.argv[1])); j['architectures']=['LlamaForCausalLM']; json.dump(j, open(sys.argv[2],'w'))" \
    "$blt/config.json" "$work/blt_llama/config.json"
  expect_fail_blt "another family under model_type blt" "only BltForCausalLM" --model "$work/blt_llama" --prompt x
fi
exit $fails
