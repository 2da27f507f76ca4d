#!/usr/bin/env python3
"""PyTorch side by side for bench_blt.cu: transformers' BltForCausalLM, bf16,
on the GPU, at the benchmark's shape (BLT-1B, transformers' BltConfig
defaults (the encoder's FFN 2730), with hash tables of 50,002 rows, as
bench_blt.cu has them), random weights, the threshold set for patches of
about 4.5 bytes on the same text-like bytes:

  * prefill: one forward (use_cache=False) of a prompt of n bytes, at batch
    1 and 16: bytes/s;
  * decode after a 1024-byte prompt: the uncached generation (a forward of
    the whole sequence a byte, BLT's own way and the truth) and
    generate(use_cache=True) at batch 1 and 16 (its cache covers only the
    local models' self-attention; it fails on some versions: reported):
    bytes/s.

    python3 benchmarks/torch/blt_eager.py [--sizes 1024,4096] [--new 16]
"""
import argparse
import json
import time

import torch
from timing import timed
from transformers import BltConfig, BltForCausalLM

TEXT = (b"Byte-level models read raw bytes. A patcher groups them into patches where the next byte is hard "
        b"to predict, and a large global transformer runs once a patch, so compute follows information. ")


def ids(n):
    return [1] + [TEXT[i % len(TEXT)] + 4 for i in range(n - 1)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1024,4096")
    ap.add_argument("--new", type=int, default=16)
    a = ap.parse_args()
    torch.manual_seed(0)
    cfg = BltConfig(encoder_hash_byte_group_vocab=50002)
    model = BltForCausalLM(cfg).to("cuda", torch.bfloat16).eval()
    res = {"model": "random BLT-1B shape (hash rows 50,002), bf16",
           "torch": torch.__version__, "transformers": __import__("transformers").__version__,
           "device": torch.cuda.get_device_name()}
    with torch.no_grad():
        x = torch.tensor([ids(4096)], device="cuda")
        ent, _, _ = model.model.patcher(x, patch_size=None)
        h = torch.sort(ent[0, 1:].float()).values
        model.config.patching_threshold = float(h[int(len(h) * (1 - 1 / 4.5))])
        for n in map(int, a.sizes.split(",")):
            for b in (1, 16):
                x = torch.tensor([ids(n)] * b, device="cuda")
                try:
                    ms = timed(lambda: model(x, use_cache=False), reps=3)
                    res[f"prefill_{n}_batch{b}_bytes_per_s"] = b * n / (ms / 1e3)
                except Exception as e:  # memory at batch 16, or the version's limits
                    res[f"prefill_{n}_batch{b}_error"] = f"{type(e).__name__}: {e}"[:200]
        seq = ids(1024)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(a.new):
            logits = model(torch.tensor([seq], device="cuda"), use_cache=False).logits[0, -1]
            seq.append(int(torch.argmax(logits)))
        torch.cuda.synchronize()
        res["decode_uncached_bytes_per_s"] = a.new / (time.perf_counter() - t0)
        for b in (1, 16):  # cached generate at batch 1 and 16 (bench_blt's BM_BltDecode/1024/B)
            try:
                x = torch.tensor([ids(1024)] * b, device="cuda")
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                model.generate(x, max_new_tokens=a.new, min_new_tokens=a.new, do_sample=False, use_cache=True)
                torch.cuda.synchronize()
                res[f"decode_cached_batch{b}_bytes_per_s"] = b * a.new / (time.perf_counter() - t0)
            except Exception as e:  # transformers PR #47916, or memory
                res[f"decode_cached_batch{b}_error"] = f"{type(e).__name__}: {e}"[:200]
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
