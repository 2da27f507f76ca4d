#!/usr/bin/env python3
"""BLT on the host against transformers' BltForCausalLM on the CPU, in one run.

A random BLT of BLT's debug shape (local encoder and decoder 8 layers of d 256
with heads of 64, global 8 layers of d 512, k 8, windows 512, n-grams 3-8 with
3 hash functions of 50,002 rows; an entropy model of 4 layers of d 256), fp32,
is saved once; the entropy threshold is set so that patches of about 4.5 bytes
form on the prompt. Then, on the same machine and threads, greedy bytes
after a --prompt-bytes prompt:

  * transformers without a cache (repeated forwards, use_cache=False: the
    truth, as BLT's own generate runs);
  * transformers' generate with its cache (which caches only the local
    models' self-attention; it may fail on some versions: reported);
  * tokenless-run --device cpu, cached and --no-cache; its bytes checked
    against transformers' uncached ones;
  * tokenless-run --device cpu on a batch of --batch prompts (the same text
    at other offsets), cached: the batch's bytes/s (its streams decode
    together: each weight read once a step), against batch 1's.

    python3 benchmarks/cpu/blt_side_by_side.py RUNNER [--threads N] [--new 32] [--prompt-bytes 256] [--batch 8]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from transformers import BltConfig, BltForCausalLM

TEXT = (b"Byte-level models read raw bytes. A patcher groups them into patches where the next byte is hard "
        b"to predict, and a large global transformer runs once a patch, so compute follows information. ") * 8


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runner")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--prompt-bytes", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    local = dict(hidden_size=256, num_attention_heads=4, num_hidden_layers=8, intermediate_size=768,
                 cross_attn_k=8, hidden_size_global=512)
    cfg = BltConfig(vocab_size=260, patching_mode="entropy", patch_in_forward=True, patch_size=4,
                    patching_threshold=0.0, cross_attn_k=8, local_attention_window_len=512,
                    encoder_hash_byte_group_size=[3, 4, 5, 6, 7, 8], encoder_hash_byte_group_nb_functions=3,
                    encoder_hash_byte_group_vocab=50002, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                    patcher_config=dict(hidden_size=256, num_attention_heads=4, num_hidden_layers=4,
                                        intermediate_size=768, sliding_window=512),
                    encoder_config=dict(local, cross_attn_all_layers=False),
                    decoder_config=dict(local, cross_attn_all_layers=True),
                    global_config=dict(hidden_size=512, num_attention_heads=8, num_hidden_layers=8,
                                       intermediate_size=1536))
    model = BltForCausalLM(cfg).eval()
    prompt = [1] + [b + 4 for b in TEXT[:a.prompt_bytes]]
    with torch.no_grad():
        ent, _, _ = model.model.patcher(torch.tensor([prompt]), patch_size=None)
    h = np.sort(ent[0, 1:].numpy())
    model.config.patching_threshold = float(h[int(len(h) * (1 - 1 / 4.5))])
    params = sum(p.numel() for p in model.parameters())
    res = {"model": f"random BLT, debug shape, {params / 1e6:.0f}M parameters (hash tables included), fp32",
           "threads": a.threads, "prompt_bytes": a.prompt_bytes, "new_bytes": a.new,
           "torch": torch.__version__, "transformers": __import__("transformers").__version__}
    with torch.no_grad():
        t0 = time.perf_counter()
        seq = list(prompt)
        for i in range(a.new):
            logits = model(torch.tensor([seq]), use_cache=False).logits[0, -1]
            if i == 0:
                res["transformers_prefill_ms"] = (time.perf_counter() - t0) * 1e3
                t1 = time.perf_counter()
            seq.append(int(torch.argmax(logits)))
        res["transformers_nocache_bytes_per_s"] = (a.new - 1) / (time.perf_counter() - t1)
        hf_bytes = seq[len(prompt):]
        try:
            t0 = time.perf_counter()
            out = model.generate(torch.tensor([prompt]), max_new_tokens=a.new, min_new_tokens=a.new, do_sample=False,
                                 use_cache=True)
            total = time.perf_counter() - t0
            res["transformers_cached_bytes_per_s"] = (a.new - 1) / max(1e-9, total - res["transformers_prefill_ms"] / 1e3)
            res["transformers_cached_same_bytes"] = [int(v) for v in out[0, len(prompt):]] == hf_bytes
        except Exception as e:  # some versions fail here (transformers PR #47916)
            res["transformers_cached_error"] = f"{type(e).__name__}: {e}"[:200]
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        with open(os.path.join(d, "ids.txt"), "w") as f:
            f.write(" ".join(map(str, prompt)))
        env = dict(os.environ, TOKENLESS_THREADS=str(a.threads), OPENBLAS_NUM_THREADS=str(a.threads))
        for tag, extra in (("tokenless", []), ("tokenless_nocache", ["--no-cache"])):
            runs = []
            for _ in range(3 if not extra else 1):
                p = subprocess.run([a.runner, "--model", d, "--ids", os.path.join(d, "ids.txt"), "--device", "cpu",
                                    "--max-new-tokens", str(a.new), "--ignore-eos", "--format", "json"] + extra,
                                   capture_output=True, text=True, env=env)
                if p.returncode != 0:
                    sys.exit(f"runner failed: {p.stderr}")
                runs.append(json.loads(p.stdout))
            res[f"{tag}_prefill_ms"] = statistics.median(r["prefill_ms"] for r in runs)
            res[f"{tag}_bytes_per_s"] = statistics.median(r["bytes_per_second"] for r in runs)
            res[f"{tag}_same_bytes"] = runs[0]["generated"] == hf_bytes
            res[f"{tag}_patches"] = len(runs[0]["patches"])
        with open(os.path.join(d, "prompts.txt"), "wb") as f:
            for b in range(a.batch):
                f.write(TEXT[17 * b:17 * b + a.prompt_bytes] + b"\n")
        runs = []
        for _ in range(3):
            p = subprocess.run([a.runner, "--model", d, "--prompts-file", os.path.join(d, "prompts.txt"), "--device",
                                "cpu", "--max-new-tokens", str(a.new), "--ignore-eos", "--format", "json"],
                               capture_output=True, text=True, env=env)
            if p.returncode != 0:
                sys.exit(f"runner failed: {p.stderr}")
            runs.append(json.loads(p.stdout))
        res[f"tokenless_batch{a.batch}_bytes_per_s"] = statistics.median(r["bytes_per_second"] for r in runs)
        res[f"tokenless_batch{a.batch}_first_same_bytes"] = runs[0]["outputs"][0]["generated"] == hf_bytes
        res[f"tokenless_batch{a.batch}_vs_batch1"] = res[f"tokenless_batch{a.batch}_bytes_per_s"] / res["tokenless_bytes_per_s"]
    res["speedup_vs_transformers_nocache"] = res["tokenless_bytes_per_s"] / res["transformers_nocache_bytes_per_s"]
    if "transformers_cached_bytes_per_s" in res:
        res["speedup_vs_transformers_cached"] = res["tokenless_bytes_per_s"] / res["transformers_cached_bytes_per_s"]
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
