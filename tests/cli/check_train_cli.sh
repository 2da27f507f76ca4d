#!/usr/bin/env bash
# tokenless-train's command line on the training fixtures
# (tests/fixtures/train, scripts/make_train_fixtures.py): every family's
# three steps give torch's losses and gradient norms (train.json) and the
# weights after3.safetensors holds; a run resumed from a save is the same
# bits as one that never stopped; a save is a folder transformers' names and
# dtype, written atomically; bad input fails with a message that names it
# and writes nothing.
#   bash check_train_cli.sh TRAINER FIXTURES_DIR WORK_DIR
set -uo pipefail
train="$1"
fixtures="$2"
work="$3"
export PYTHONPATH="$(cd "$(dirname "$0")" && pwd)${PYTHONPATH:+:$PYTHONPATH}"  # f32_tensors.py
rm -rf "$work"
mkdir -p "$work"
fails=0
check() {  # check NAME EXIT-CODE
  if [ "$2" -ne 0 ]; then
    echo "FAIL: $1"
    fails=$((fails + 1))
  else
    echo "ok: $1"
  fi
}
# refuse NAME PATTERN ARGS...: exits non-zero, says PATTERN on stderr, prints nothing on stdout.
refuse() {
  local name="$1" pattern="$2"
  shift 2
  "$train" "$@" >"$work/out" 2>"$work/err"
  local rc=$?
  if [ $rc -ne 0 ] && grep -q -- "$pattern" "$work/err" && [ ! -s "$work/out" ]; then
    echo "ok: refuses $name ($(head -c 160 "$work/err" | tr '\n' ' '))"
  else
    echo "FAIL: $name: rc $rc, stderr: $(cat "$work/err"), stdout: $(cat "$work/out")"
    fails=$((fails + 1))
  fi
}

hyper="--batch-size 2 --seq-len 16 --grad-accum 2 --lr 3e-3 --betas 0.9,0.95 --eps 1e-8 --weight-decay 0.1 --clip 1"
for f in llama mistral mixtral phi3; do
  python3 -c "import json,sys; print(' '.join(map(str, json.load(open(sys.argv[1]))['data'])))" \
    "$fixtures/$f/train.json" >"$work/$f.ids"
  out=$("$train" --model "$fixtures/$f" --ids "$work/$f.ids" --steps 3 $hyper --format json --save "$work/$f.save")
  python3 - "$out" "$fixtures/$f/train.json" "$work/$f.save" "$fixtures/$f/after3.safetensors" <<'PY'
import json, struct, sys
j, want = json.loads(sys.argv[1]), json.load(open(sys.argv[2]))
for key in ("losses", "grad_norms", "skipped", "tokens_per_second", "peak_memory_bytes"):
    assert key in j, key
assert j["skipped"] == 0 and j["tokens_per_second"] > 0 and j["peak_memory_bytes"] > 0, j
for got, s in zip(j["losses"], want["steps"]):
    assert abs(got - s["loss"]) <= 1e-5 * abs(s["loss"]), (got, s)
for got, s in zip(j["grad_norms"], want["steps"]):
    assert abs(got - s["grad_norm"]) <= 1e-5 * abs(s["grad_norm"]), (got, s)
from f32_tensors import tensors
got, ref = tensors(sys.argv[3] + "/model.safetensors"), tensors(sys.argv[4])
# transformers 5 saves Mixtral's experts as the Hub's w1/w3/w2 (the save is
# in the checkpoint's own layout); its fused in-memory tensors, as the
# fixture holds them, are cut into those names.
for k in [k for k in ref if ".mlp." in k and ("experts" in k or k.endswith("mlp.gate.weight"))]:
    shape, v = ref.pop(k)
    b = k.split(".mlp.")[0] + ".block_sparse_moe."
    if k.endswith("mlp.gate.weight"):
        ref[b + "gate.weight"] = (shape, v)
        continue
    E, R, C = shape
    for e in range(E):
        m = v[e * R * C:(e + 1) * R * C]
        if k.endswith("gate_up_proj"):
            ref[b + f"experts.{e}.w1.weight"] = ([R // 2, C], m[:R * C // 2])
            ref[b + f"experts.{e}.w3.weight"] = ([R // 2, C], m[R * C // 2:])
        else:
            ref[b + f"experts.{e}.w2.weight"] = ([R, C], m)
assert set(got) == set(ref), set(got) ^ set(ref)
lr = want["hyper"]["lr"]
for k in ref:
    assert got[k][0] == ref[k][0], (k, got[k][0], ref[k][0])
    err = max(abs(a - b) for a, b in zip(got[k][1], ref[k][1]))
    assert err < 1e-1 * lr, (k, err)  # test_train.cpp states the bound
for name in ("config.json", "optimizer.safetensors", "trainer_state.json"):
    open(sys.argv[3] + "/" + name).close()
PY
  check "$f: three steps equal torch's losses, norms and weights" $?
done

# Resuming: 2 steps, save, resume to 3 = 3 steps straight, bit for bit (weights and moments).
"$train" --model "$fixtures/mixtral" --ids "$work/mixtral.ids" --steps 2 $hyper --save "$work/two" >/dev/null 2>&1
"$train" --resume "$work/two" --ids "$work/mixtral.ids" --steps 3 $hyper --save "$work/three" --format json >"$work/resumed.json"
cmp -s "$work/three/model.safetensors" "$work/mixtral.save/model.safetensors" &&
  cmp -s "$work/three/optimizer.safetensors" "$work/mixtral.save/optimizer.safetensors"
check "mixtral: resumed from step 2 = never stopped (same bytes)" $?
python3 -c "import json,sys; j=json.load(open(sys.argv[1])); assert j['first_step'] == 2 and len(j['losses']) == 1, j" "$work/resumed.json"
check "mixtral: the resumed run reports step 3 only" $?
# A save over an existing folder replaces it whole, and leaves no temporary behind.
"$train" --model "$fixtures/llama" --ids "$work/llama.ids" --steps 1 $hyper --save "$work/llama.save" >/dev/null 2>&1
python3 -c "import json,sys; assert json.load(open(sys.argv[1]))['step'] == 1" "$work/llama.save/trainer_state.json" &&
  [ -z "$(ls -A "$work" | grep '\.tmp-')" ]
check "a save replaces an existing one atomically, no temporary left" $?
# A bf16 checkpoint (the llama fixture rounded to bf16) saves as bf16, with
# fp32 masters beside the moments; its resume continues from the masters.
mkdir -p "$work/bf16"
cp "$fixtures/llama/config.json" "$work/bf16/"
python3 - "$fixtures/llama/model.safetensors" "$work/bf16/model.safetensors" <<'PY'
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
h.pop("__metadata__", None)
out, header, off = bytearray(), {}, 0
for k, v in h.items():
    s, e = v["data_offsets"]
    for (bits,) in struct.iter_unpack("<I", b[8 + n + s:8 + n + e]):
        out += struct.pack("<H", (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16)  # round to nearest even
    header[k] = {"dtype": "BF16", "shape": v["shape"], "data_offsets": [off, off + (e - s) // 2]}
    off += (e - s) // 2
text = json.dumps(header).encode()
text += b" " * (-len(text) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(text)) + text + out)
PY
"$train" --model "$work/bf16" --ids "$work/llama.ids" --steps 1 $hyper --save "$work/bf16.save" >/dev/null 2>&1 &&
  "$train" --resume "$work/bf16.save" --ids "$work/llama.ids" --steps 2 $hyper --save "$work/bf16.two" >/dev/null 2>&1 &&
  python3 - "$work/bf16.save" "$work/bf16.two" <<'PY'
import json, struct, sys
def header(p):
    b = open(p, "rb").read()
    return json.loads(b[8:8 + struct.unpack("<Q", b[:8])[0]])
for d in sys.argv[1:]:
    m, o = header(d + "/model.safetensors"), header(d + "/optimizer.safetensors")
    assert all(v["dtype"] == "BF16" for k, v in m.items() if k != "__metadata__"), d
    assert all(("master." + k) in o for k in m if k != "__metadata__"), d
    assert json.load(open(d + "/trainer_state.json"))["fp32_masters"] is True
PY
check "a bf16 checkpoint saves as bf16 with fp32 masters, and resumes" $?

# Text mode: a progress line a step on stderr.
"$train" --model "$fixtures/llama" --ids "$work/llama.ids" --steps 2 $hyper 2>"$work/progress" >/dev/null &&
  [ "$(grep -c '^step [12]/2  loss' "$work/progress")" -eq 2 ]
check "text mode: a progress line a step on stderr" $?

# The kernels on the CPU executor (--device emu, bf16): every family's three
# steps within 3x torch's naive mixed precision's distance from its fp32 run
# (train.json's bf16_steps; tests/kernels/train.hpp checks the weights), the
# save transformers' names in fp32 (the masters), resume bit for bit.
for f in llama mistral mixtral phi3; do
  out=$("$train" --model "$fixtures/$f" --ids "$work/$f.ids" --steps 3 $hyper --device emu --format json \
    --save "$work/$f.emu")
  python3 - "$out" "$fixtures/$f/train.json" "$work/$f.emu" <<'PY'
import json, struct, sys
j, want = json.loads(sys.argv[1]), json.load(open(sys.argv[2]))
assert j["device"] == "emu" and j["dtype"] == "bf16" and j["skipped"] == 0, j
for key, field in (("losses", "loss"), ("grad_norms", "grad_norm")):
    for got, s, m in zip(j[key], want["steps"], want["bf16_steps"]):
        assert abs(got - s[field]) <= max(3 * abs(m[field] - s[field]), 2e-3 * abs(s[field])), (key, got, s, m)
b = open(sys.argv[3] + "/model.safetensors", "rb").read()
h = json.loads(b[8:8 + struct.unpack("<Q", b[:8])[0]])
assert all(v["dtype"] == "F32" for k, v in h.items() if k != "__metadata__")
PY
  check "$f: three bf16 steps on the kernels (emu) follow torch's" $?
done
"$train" --model "$fixtures/mixtral" --ids "$work/mixtral.ids" --steps 1 $hyper --device emu --save "$work/emu.one" \
  >/dev/null 2>&1 &&
  "$train" --resume "$work/emu.one" --ids "$work/mixtral.ids" --steps 3 $hyper --device emu --save "$work/emu.three" \
    >/dev/null 2>&1 &&
  cmp -s "$work/emu.three/model.safetensors" "$work/mixtral.emu/model.safetensors" &&
  cmp -s "$work/emu.three/optimizer.safetensors" "$work/mixtral.emu/optimizer.safetensors"
check "mixtral on the kernels: resumed from step 1 = never stopped (same bytes)" $?
"$train" --model "$fixtures/mixtral" --ids "$work/mixtral.ids" --steps 3 $hyper --device emu --checkpoint-layers \
  --save "$work/emu.ckpt" >/dev/null 2>&1 &&
  cmp -s "$work/emu.ckpt/model.safetensors" "$work/mixtral.emu/model.safetensors"
check "mixtral on the kernels: --checkpoint-layers gives the same bytes" $?

# BLT on bytes (--bytes-file: id = byte + 4), the host path: three steps
# equal torch's losses, norms and every trained weight; the save holds every
# tensor (the frozen entropy model's unchanged); resume is bit for bit.
bhyper="--batch-size 2 --seq-len 24 --grad-accum 2 --lr 3e-3 --betas 0.9,0.95 --eps 1e-8 --weight-decay 0.1 --clip 1"
for f in blt blt_k4; do
  python3 -c "import json,sys; sys.stdout.buffer.write(bytes(x - 4 for x in json.load(open(sys.argv[1]))['data']))" \
    "$fixtures/$f/train.json" >"$work/$f.bytes"
  out=$("$train" --model "$fixtures/$f" --bytes-file "$work/$f.bytes" --steps 3 $bhyper --format json --save "$work/$f.save")
  python3 - "$out" "$fixtures/$f" "$work/$f.save" <<'PY'
import json, struct, sys
j, fx, save = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
want = json.load(open(fx + "/train.json"))
for got, s in zip(j["losses"], want["steps"]):
    assert abs(got - s["loss"]) <= 1e-5 * abs(s["loss"]), (got, s)
for got, s in zip(j["grad_norms"], want["steps"]):
    assert abs(got - s["grad_norm"]) <= 1e-5 * abs(s["grad_norm"]), (got, s)
from f32_tensors import tensors
got, ref, init = ({k: v for k, (_, v) in tensors(p).items()}
                  for p in (save + "/model.safetensors", fx + "/after3.safetensors", fx + "/model.safetensors"))
assert set(got) == set(init), set(got) ^ set(init)  # every tensor of the checkpoint
lr = want["hyper"]["lr"]
for k in got:
    if k in ref:
        err = max(abs(a - b) for a, b in zip(got[k], ref[k]))
        assert err < 1e-1 * lr, (k, err)  # test_blt_train.cpp states the bound
    else:  # frozen: the entropy model, the encoder's cross-attentions before its last
        assert got[k] == init[k], k
PY
  check "$f: three steps on bytes equal torch's losses, norms and weights" $?
done
"$train" --model "$fixtures/blt" --bytes-file "$work/blt.bytes" --steps 1 $bhyper --save "$work/blt.one" >/dev/null 2>&1 &&
  "$train" --resume "$work/blt.one" --bytes-file "$work/blt.bytes" --steps 3 $bhyper --save "$work/blt.three" >/dev/null 2>&1 &&
  cmp -s "$work/blt.three/model.safetensors" "$work/blt.save/model.safetensors" &&
  cmp -s "$work/blt.three/optimizer.safetensors" "$work/blt.save/optimizer.safetensors"
check "blt: resumed from step 1 = never stopped (same bytes)" $?

# Bad input: a message, nothing written.
m=(--model "$fixtures/llama")
refuse "fp32 on the kernels" "the kernels train in bf16" "${m[@]}" --ids "$work/llama.ids" --seq-len 16 --device emu --dtype fp32
refuse "bf16 on the host path" "the host path trains in fp32" "${m[@]}" --ids "$work/llama.ids" --seq-len 16 --device cpu --dtype bf16
refuse "--device gpu in the CPU build" "tokenless-train-gpu" "${m[@]}" --ids "$work/llama.ids" --seq-len 16 --device gpu
refuse "a batch that does not fit the kernels' memory" "MiB available" "${m[@]}" --ids "$work/llama.ids" --seq-len 16 \
  --device emu --batch-size 100000000
echo "1 2 3" >"$work/short.ids"
refuse "data shorter than L + 1" "fewer than --seq-len + 1 = 17" "${m[@]}" --ids "$work/short.ids" --seq-len 16
{ head -c 40 "$work/llama.ids"; echo " 128 5"; } >"$work/oov.ids"
refuse "an id outside the vocabulary, by position" "id 128 at position" "${m[@]}" --ids "$work/oov.ids" --seq-len 4
echo "1 2 x 3" >"$work/bad.ids"
refuse "a token that is not an id" "holds 'x'" "${m[@]}" --ids "$work/bad.ids"
refuse "an unreadable --ids" "cannot read" "${m[@]}" --ids "$work/none.ids"
refuse "a missing --save directory" "does not exist" "${m[@]}" --ids "$work/llama.ids" --seq-len 16 --save "$work/no/such/dir"
mkdir -p "$work/ro" && chmod 555 "$work/ro"
if [ "$(id -u)" -ne 0 ]; then
  refuse "an unwritable --save directory" "not writable" "${m[@]}" --ids "$work/llama.ids" --seq-len 16 --save "$work/ro/out"
fi
touch "$work/file"
refuse "--save onto a file" "not a directory" "${m[@]}" --ids "$work/llama.ids" --seq-len 16 --save "$work/file"
refuse "a batch that does not fit the memory" "MiB available" "${m[@]}" --ids "$work/llama.ids" --seq-len 16 \
  --batch-size 2000000000 --save "$work/never"
[ ! -e "$work/never" ]
check "the refused run wrote nothing" $?
refuse "a negative lr" "lr" "${m[@]}" --ids "$work/llama.ids" --seq-len 16 --lr -1
refuse "beta1 outside [0, 1)" "beta1" "${m[@]}" --ids "$work/llama.ids" --seq-len 16 --betas 1.0,0.95
refuse "eps <= 0" "eps" "${m[@]}" --ids "$work/llama.ids" --seq-len 16 --eps 0
refuse "betas that are not two numbers" "B1,B2" "${m[@]}" --ids "$work/llama.ids" --betas 0.9
refuse "a zero step count" "--steps '0'" "${m[@]}" --ids "$work/llama.ids" --steps 0
refuse "a resume past --steps" "past --steps" --resume "$work/three" --ids "$work/mixtral.ids" --steps 2 $hyper
refuse "--resume of a plain checkpoint" "trainer_state.json" --resume "$fixtures/llama" --ids "$work/llama.ids" --seq-len 16
refuse "no data" "--ids FILE" "${m[@]}"
refuse "--bytes-file for a token model" "for BLT checkpoints" "${m[@]}" --bytes-file "$work/llama.ids"
b=(--model "$fixtures/blt")
refuse "--ids for BLT" "give its data as bytes" "${b[@]}" --ids "$work/llama.ids"
refuse "BLT on the kernels (not yet)" "BLT trains on the host path" "${b[@]}" --bytes-file "$work/blt.bytes" --device emu
refuse "bytes shorter than L + 1" "6 bytes, fewer than --seq-len + 1 = 25" "${b[@]}" --bytes-file "$work/short.ids" \
  --seq-len 24
refuse "an unknown option" "unknown option" "${m[@]}" --ids "$work/llama.ids" --frobnicate 1

echo "$fails failure(s)"
[ "$fails" -eq 0 ]
