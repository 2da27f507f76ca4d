#!/usr/bin/env python3
"""PyTorch eager equivalent of BLT's patching path, for the side-by-side on a
GPU machine: entropy of the logits, global-threshold start ids, patch lengths
from start ids (the computation of BLT's entropy(), find_entropy_patch_start_ids
and patch_lengths_from_start_ids), on a [B, N / B] batch. Times it with CUDA
events and prints JSON lines, for the same shapes as bench_patcher.cu.

    python3 benchmarks/torch/patcher_eager.py [--dtype float32|bfloat16] [--sizes 65536,...]
"""
import argparse
import json

import torch


def patch_lengths(logits, threshold):
    bs, seq_len, _ = logits.shape
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    ent = -(log_probs.exp() * log_probs).sum(-1)
    mask = ent[:, 1:] > threshold  # a hit at index i of entropies[1:] starts a patch at i + 2
    mask = mask[:, :-1]  # without include_next_token
    first = torch.tensor([0, 1], device=logits.device).expand(bs, 2)
    counts = mask.sum(1)
    max_p = int(counts.max())  # BLT's path synchronises here
    ids = torch.arange(seq_len - 2, device=logits.device).expand(bs, -1)
    padded = torch.where(mask, ids, torch.full_like(ids, seq_len))
    starts = torch.cat([first, padded.sort(dim=1).values[:, :max_p] + 2], dim=1)
    ends = torch.cat([starts[:, 1:] - 1, torch.full_like(starts[:, :1], seq_len - 1)], dim=1)
    return ends - starts + 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    ap.add_argument("--sizes", default="65536,262144,1048576,4194304,16777216")
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    flush = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
    for n in [int(s) for s in args.sizes.split(",")]:
        logits = torch.randn(8, n // 8, 260, device="cuda", dtype=dtype)
        patch_lengths(logits, 2.0)
        torch.cuda.synchronize()
        total = 0.0
        reps = 5
        for _ in range(reps):
            flush.zero_()
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            patch_lengths(logits, 2.0)
            b.record()
            b.synchronize()
            total += a.elapsed_time(b)
        print(json.dumps({"impl": "torch_eager_blt_path", "dtype": args.dtype, "n": n, "ms": total / reps}))


if __name__ == "__main__":
    main()
