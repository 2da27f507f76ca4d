#!/usr/bin/env python3
"""PyTorch eager equivalent of tokenless's byte encoder, for the side-by-side
comparison on a GPU machine: unfold, int64 rolling hash, one nn.Embedding per
table, summed. Times forward and backward with CUDA events (L2 flushed) for
the same shapes as benchmarks/bench_encoder.cu and prints JSON lines.

    python3 benchmarks/torch/encoder_eager.py [--config blt1b|small] [--sizes 4096,65536,1048576]

The backward runs with every .grad set to None, so PyTorch produces a fresh
dense bf16 gradient: its like-for-like counterpart in tokenless_bench_encoder
is encoder_backward_fresh_bf16_grads (deterministic, accumulate = false).
With --sparse the tables are nn.Embedding(sparse=True) and each gradient is
coalesced (sorted unique rows, summed): the counterpart of
encoder_backward_sparse_bf16_grads (HashEmbeddingSparseBackward). With
--accumulate the .grad buffers are kept, so each backward adds into them, as
in gradient accumulation: the counterpart of encoder_backward_atomic and
encoder_backward_deterministic (accumulate = true; tokenless's gradient
tables are fp32 there, PyTorch's bf16 like the parameters).
"""
import argparse
import json

import torch
from timing import timed

PRIMES = [1000000007, 5915587277, 1500450271, 3267000013, 5754853343, 4093082899,
          9576890767, 3628273133, 2860486313, 5463458053, 3367900313]
CONFIGS = {"blt1b": (500002, 1024), "small": (30000, 256)}


def hash_ids(ids, n, f, V):
    # BLT's byte_group_hash_function: left-pad with 0, windows of n, sum w_j p^j in int64.
    x = torch.cat([torch.zeros(ids.shape[0], n - 1, dtype=torch.int64, device=ids.device), ids], dim=1)
    windows = x.unfold(1, n, 1)
    powers = PRIMES[f] ** torch.arange(n, dtype=torch.int64, device=ids.device)
    return (windows * powers).sum(-1) % V


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="small", choices=CONFIGS)
    ap.add_argument("--sizes", default="4096,16384,65536,262144,1048576")
    ap.add_argument("--sparse", action="store_true", help="sparse=True embeddings, coalesced gradients")
    ap.add_argument("--accumulate", action="store_true", help="keep .grad: every backward adds into it")
    args = ap.parse_args()
    if args.sparse and args.accumulate:
        ap.error("--sparse and --accumulate are separate comparisons")
    V, d = CONFIGS[args.config]
    ngrams = [3, 4, 5, 6, 7, 8]
    dev = "cuda"
    byte_emb = torch.nn.Embedding(260, d, device=dev, dtype=torch.bfloat16, sparse=args.sparse)
    tables = torch.nn.ModuleList(torch.nn.Embedding(V, d, device=dev, dtype=torch.bfloat16, sparse=args.sparse)
                                 for _ in ngrams)

    def forward(ids):
        out = byte_emb(ids)
        for k, n in enumerate(ngrams):
            out = out + tables[k](hash_ids(ids, n, 0, V))
        return out

    for n in [int(s) for s in args.sizes.split(",")]:
        ids = (torch.randint(32, 127, (1, n), device=dev) + 4).to(torch.int64)
        fwd_ms = timed(lambda: forward(ids))
        g = torch.randn(1, n, d, device=dev, dtype=torch.bfloat16)

        params = list(byte_emb.parameters()) + list(tables.parameters())

        def fwd_bwd():
            if not args.accumulate:
                for p in params:
                    p.grad = None
            forward(ids).backward(g)
            if args.sparse:
                for p in params:
                    p.grad = p.grad.coalesce()

        bwd_ms = timed(fwd_bwd) - fwd_ms
        impl = "torch_eager" + ("_sparse" if args.sparse else "") + ("_accumulate" if args.accumulate else "")
        print(json.dumps({"impl": impl, "config": args.config, "n": n, "forward_ms": fwd_ms, "backward_ms": bwd_ms}))


if __name__ == "__main__":
    main()
