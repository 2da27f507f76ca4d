#!/usr/bin/env python3
"""PyTorch side by side for bench_blocks.cu, bf16, eager and torch.compile:

  * transformers' LlamaRMSNorm with the residual add before it (d 4096),
    forward and backward, 4K and 16K tokens;
  * transformers' apply_rotary_pos_emb on Llama-3-8B's q and k (32 and 8
    heads of 128);
  * SwiGLU from a fused gate_up row (F 14336), forward and backward;
  * Mixtral-8x7B's MoE layer (d 4096, F 14336, 8 experts, top-2) as
    transformers 5's MixtralExperts computes it (a loop over experts),
    forward and forward + backward, 4K tokens.

    python3 benchmarks/torch/blocks_eager.py [--tokens 4096,16384] [--moe-tokens 4096]
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


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def rope(q, k, cos, sin):
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


def swiglu(gu):
    g, u = gu.chunk(2, dim=-1)
    return torch.nn.functional.silu(g) * u


def moe(x, router, gate_up, down, top_k=2):
    logits = torch.nn.functional.linear(x, router)
    probs = torch.softmax(logits.float(), dim=-1)
    w, idx = torch.topk(probs, top_k, dim=-1)
    w = w / w.sum(dim=-1, keepdim=True)
    out = torch.zeros_like(x)
    mask = torch.nn.functional.one_hot(idx, num_classes=router.shape[0]).permute(2, 1, 0)
    for e in range(router.shape[0]):
        pos, tok = torch.where(mask[e])
        h = torch.nn.functional.linear(x[tok], gate_up[e])
        a = swiglu(h)
        y = torch.nn.functional.linear(a, down[e]) * w[tok, pos, None]
        out.index_add_(0, tok, y.to(out.dtype))
    return out


def bench_rope(t, compiled):
    hq, hk, hd = 32, 8, 128
    q = torch.randn(1, hq, t, hd, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, hk, t, hd, device="cuda", dtype=torch.bfloat16)
    inv = 1.0 / (500000.0 ** (torch.arange(0, hd, 2, device="cuda").float() / hd))
    f = torch.outer(torch.arange(t, device="cuda").float(), inv)
    emb = torch.cat((f, f), dim=-1)
    cos, sin = emb.cos().to(torch.bfloat16)[None, None], emb.sin().to(torch.bfloat16)[None, None]
    for name, fn in (("torch_eager", rope), ("torch_compile", compiled)):
        ms = timed(lambda: fn(q, k, cos, sin))
        print(json.dumps({"impl": name, "op": "rope", "tokens": t, "fwd_ms": ms}), flush=True)


def bench_swiglu(t, compiled):
    f = 14336
    gu = torch.randn(t, 2 * f, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    for name, fn in (("torch_eager", swiglu), ("torch_compile", compiled)):
        fwd = timed(lambda: fn(gu))
        y = fn(gu)
        g = torch.randn_like(y)
        bwd = timed(lambda: torch.autograd.grad(y, (gu,), g, retain_graph=True))
        print(json.dumps({"impl": name, "op": "swiglu", "tokens": t, "fwd_ms": fwd, "bwd_ms": bwd}), flush=True)


def bench_moe(t, compiled):
    d, f, e = 4096, 14336, 8
    x = torch.randn(t, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    router = (torch.randn(e, d, device="cuda", dtype=torch.bfloat16) * 0.02).requires_grad_()
    gate_up = (torch.randn(e, 2 * f, d, device="cuda", dtype=torch.bfloat16) * 0.02).requires_grad_()
    down = (torch.randn(e, d, f, device="cuda", dtype=torch.bfloat16) * 0.02).requires_grad_()
    g = torch.randn(t, d, device="cuda", dtype=torch.bfloat16)
    for name, fn in (("torch_eager", moe), ("torch_compile", compiled)):
        fwd = timed(lambda: fn(x, router, gate_up, down))

        def step():
            y = fn(x, router, gate_up, down)
            torch.autograd.grad(y, (x, router, gate_up, down), g)

        both = timed(step)
        print(json.dumps({"impl": name, "op": "moe_mixtral_8x7b", "tokens": t, "fwd_ms": fwd, "fwd_bwd_ms": both}),
              flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", default="4096,16384")
    ap.add_argument("--moe-tokens", default="4096")
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
        bench_rope(t, torch.compile(rope))
        bench_swiglu(t, torch.compile(swiglu))
    for t in [int(s) for s in args.moe_tokens.split(",")]:
        bench_moe(t, torch.compile(moe))


if __name__ == "__main__":
    main()
