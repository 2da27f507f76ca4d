#!/usr/bin/env python3
"""PyTorch side by side for bench_blocks.cu: transformers' LlamaRMSNorm with
the residual add before it (bf16, d 4096, 4K and 16K tokens), forward and
backward, eager and torch.compile.

    python3 benchmarks/torch/blocks_eager.py [--tokens 4096,16384]
"""
import argparse
import json

import torch
from timing import timed


def add_rms_norm(x, resid, w, eps=1e-5):
    h = resid + x
    hf = h.to(torch.float32)
    hf = hf * torch.rsqrt(hf.pow(2).mean(-1, keepdim=True) + eps)
    return w * hf.to(h.dtype), h


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", default="4096,16384")
    args = ap.parse_args()
    d = 4096
    compiled = torch.compile(add_rms_norm)
    for t in [int(s) for s in args.tokens.split(",")]:
        x = torch.randn(t, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        resid = torch.randn(t, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        w = torch.rand(d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        for name, fn in (("torch_eager", add_rms_norm), ("torch_compile", compiled)):
            fwd = timed(lambda: fn(x, resid, w))
            y, h = fn(x, resid, w)
            g = torch.randn_like(y)
            bwd = timed(lambda: torch.autograd.grad(y, (x, w), g, retain_graph=True))
            print(json.dumps({"impl": name, "op": "add_rms_norm", "tokens": t, "d": d, "fwd_ms": fwd, "bwd_ms": bwd}),
                  flush=True)


if __name__ == "__main__":
    main()
