#!/usr/bin/env python3
"""PyTorch side by side for bench_bottleneck.cu, on the GPU machine, same
shapes (bf16, d 1024, 64K-4M positions in 8 sequences, patches of 1-8
bytes): BLT's pooling (scatter_reduce amax, include_self=False, into zeros),
mean pooling, replication (index_select), and BLT's patch slots (the amax
pooling into Linear(1024, 2048, bias=False)), forward and backward.

    python3 benchmarks/torch/bottleneck_eager.py [--sizes 65536,...]
"""
import argparse
import json
import random

import torch
from timing import timed


def patch_ids(n, seed=5):
    rng = random.Random(seed)
    ids, p = [], 0
    for b in range(8):
        left = n * (b + 1) // 8 - n * b // 8
        while left > 0:
            ln = min(left, 1 + rng.randrange(8))
            ids += [p] * ln
            p += 1
            left -= ln
    return torch.tensor(ids, device="cuda"), p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="65536,262144,1048576,4194304")
    args = ap.parse_args()
    d = 1024
    for n in [int(s) for s in args.sizes.split(",")]:
        ids, p = patch_ids(n)
        x = torch.randn(n, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        index = ids.unsqueeze(1).expand(-1, d)

        def pool_max():
            return torch.zeros(p, d, device="cuda", dtype=x.dtype).scatter_reduce(0, index, x, "amax",
                                                                               include_self=False)

        def pool_mean():
            return torch.zeros(p, d, device="cuda", dtype=x.dtype).scatter_reduce(0, index, x, "mean",
                                                                               include_self=False)

        src = torch.randn(p, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        prev = (ids - 1).clamp(min=0)

        def replicate():
            return src.index_select(0, prev)

        proj = torch.nn.Linear(d, 2 * d, bias=False, device="cuda", dtype=torch.bfloat16)

        def patch_slots():
            return proj(pool_max())

        for name, fn in (("pool_max", pool_max), ("pool_mean", pool_mean), ("replicate", replicate),
                         ("patch_slots", patch_slots)):
            fwd = timed(fn)
            out = fn()
            g = torch.randn_like(out)
            bwd = timed(lambda: torch.autograd.grad(out, (x if name != "replicate" else src), g, retain_graph=True))
            print(json.dumps({"impl": "torch_eager", "op": name, "n": n, "d": d, "fwd_ms": fwd, "bwd_ms": bwd}),
                  flush=True)


if __name__ == "__main__":
    main()
