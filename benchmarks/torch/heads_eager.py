#!/usr/bin/env python3
"""PyTorch side by side for bench_heads.cu: the linear cross-entropy at Llama
3's head (d 4096, V 128256), bf16, forward + backward (dH and dW), time and
peak memory, for 4K to 32K tokens:

  * PyTorch: F.linear then F.cross_entropy (the logits in bf16, upcast to
    fp32 inside the loss), eager and torch.compile;
  * Liger's LigerFusedLinearCrossEntropyLoss and Cut Cross-Entropy's
    linear_cross_entropy, when they import (pip install liger-kernel
    cut-cross-entropy); skipped otherwise.

Then the byte head at BLT-1B's decoder width (d 1024, V 260), bf16, for 16K
and 64K bytes, as bench_heads.cu times it: RMSNorm + linear + the entropy
(the patcher's feed), + argmax (the greedy next byte), and the training
forward (entropy, cross-entropy and dz = d loss / d logits), eager and
torch.compile.

    python3 benchmarks/torch/heads_eager.py [--tokens 4096,8192,16384,32768] [--bytes 16384,65536]
"""
import argparse
import json

import torch
import torch.nn.functional as F
from timing import timed

D, V = 4096, 128256


def torch_ce(h, w, y):
    return F.cross_entropy(F.linear(h, w).float(), y)


def candidates():
    out = [("torch_eager", torch_ce), ("torch_compile", torch.compile(torch_ce))]
    try:
        from liger_kernel.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss
        liger = LigerFusedLinearCrossEntropyLoss()
        out.append(("liger", lambda h, w, y: liger(w, h, y)))
    except Exception as e:  # not installed
        print(json.dumps({"impl": "liger", "skipped": str(e)[:120]}), flush=True)
    try:
        from cut_cross_entropy import linear_cross_entropy
        out.append(("cut_cross_entropy", lambda h, w, y: linear_cross_entropy(h, w, y)))
    except Exception as e:
        print(json.dumps({"impl": "cut_cross_entropy", "skipped": str(e)[:120]}), flush=True)
    return out


DB, VB = 1024, 260


def byte_logits(h, g, w):
    # transformers' BLT/Llama RMSNorm: normalise in fp32, cast, then scale.
    hf = h.float()
    y = (hf * torch.rsqrt(hf.pow(2).mean(-1, keepdim=True) + 1e-5)).to(h.dtype) * g
    return F.linear(y, w).float()


def byte_entropy(h, g, w):
    logp = F.log_softmax(byte_logits(h, g, w), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def byte_greedy(h, g, w):
    return byte_logits(h, g, w).argmax(-1)


def byte_train(h, g, w, y):
    z = byte_logits(h, g, w).detach().requires_grad_()
    logp = F.log_softmax(z, dim=-1)
    ent = -(logp.exp() * logp).sum(-1)
    loss = F.nll_loss(logp, y)
    (dz,) = torch.autograd.grad(loss, z)
    return ent, loss, dz.to(h.dtype)


def byte_head(sizes):
    g = torch.rand(DB, device="cuda", dtype=torch.bfloat16) + 0.5
    w = torch.randn(VB, DB, device="cuda", dtype=torch.bfloat16) * 3 * DB ** -0.5
    for n in sizes:
        h = torch.randn(n, DB, device="cuda", dtype=torch.bfloat16) * 2
        y = torch.randint(0, VB, (n,), device="cuda")
        for op, fn in [("byte_entropy", lambda: byte_entropy(h, g, w)), ("byte_greedy", lambda: byte_greedy(h, g, w)),
                       ("byte_train_fwd", lambda: byte_train(h, g, w, y))]:
            for name, f in [("torch_eager", fn), ("torch_compile", torch.compile(fn))]:
                print(json.dumps({"impl": name, "op": op, "bytes": n, "ms": timed(f, reps=20)}), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", default="4096,8192,16384,32768")
    ap.add_argument("--bytes", default="16384,65536")
    args = ap.parse_args()
    byte_head([int(s) for s in args.bytes.split(",") if s])
    w = (torch.randn(V, D, device="cuda", dtype=torch.bfloat16) * D ** -0.5).requires_grad_()
    for n in [int(s) for s in args.tokens.split(",") if s]:
        h = torch.randn(n, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        y = torch.randint(0, V, (n,), device="cuda")
        for name, fn in candidates():
            try:
                fwd = timed(lambda: fn(h, w, y), reps=5)

                def step():
                    loss = fn(h, w, y)
                    torch.autograd.grad(loss, (h, w))

                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                both = timed(step, reps=5)
                peak = (torch.cuda.max_memory_allocated() - base) / 2**20
                print(json.dumps({"impl": name, "op": "linear_ce_llama3", "tokens": n, "fwd_ms": fwd,
                                  "fwd_bwd_ms": both, "peak_extra_MiB": peak}), flush=True)
            except torch.cuda.OutOfMemoryError:
                print(json.dumps({"impl": name, "tokens": n, "error": "out of memory"}), flush=True)
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
