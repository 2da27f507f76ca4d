#!/usr/bin/env python3
"""PyTorch side by side for bench_bottleneck.cu's dechunk, on the GPU machine,
same shapes (bf16, d 1024, 8 sequences, chunks of 1-8 positions, an fp32
residual), forward and forward+backward:

* torch_loop: the EMA as a sequential loop over a padded [8, chunks, d]
  layout (H-Net's DeChunkLayer.step, once per chunk), then the gather back to
  positions: the baseline any eager implementation has (small sizes only);
* mamba_ssm: H-Net's own prefill (hnet/modules/dc.py): dt = log(1/(1-p)),
  x = z/dt, mamba_chunk_scan_combined with block 256 and head dim 32, in bf16,
  when mamba_ssm imports.

    python3 benchmarks/torch/dechunk_eager.py [--sizes 65536,...] [--loop-max 65536]
"""
import argparse
import json
import random

import torch
from timing import timed


def chunks(n, seed=5):
    """Per sequence: chunk lengths of 1-8 that tile n/8 positions."""
    rng = random.Random(seed)
    out = []
    for b in range(8):
        left, seq = n * (b + 1) // 8 - n * b // 8, []
        while left > 0:
            seq.append(min(left, 1 + rng.randrange(8)))
            left -= seq[-1]
        out.append(seq)
    return out


def inputs(n, d):
    lens = chunks(n)
    B, L, M = 8, n // 8, max(len(s) for s in lens)
    mask = torch.zeros(B, L, dtype=torch.bool)
    for b, seq in enumerate(lens):
        pos = 0
        for ln in seq:
            mask[b, pos] = True
            pos += ln
    p = torch.rand(B, L) * 0.5
    p[mask] = 0.5 + 0.49 * torch.rand(int(mask.sum())) + 1e-3
    p[:, 0] = 1.0
    z = torch.randn(B, M, d, dtype=torch.bfloat16)
    res = torch.randn(B, L, d)
    return mask.cuda(), p.cuda(), z.cuda().requires_grad_(), res.cuda().requires_grad_()


def gather_back(out, mask):
    idx = torch.cumsum(mask, dim=1) - 1
    return torch.gather(out, 1, idx.unsqueeze(-1).expand(-1, -1, out.shape[-1]))


def chunk_p(p, mask, M):
    # The p of each chunk's first position, padded to M (H-Net's argsort trick).
    L = mask.shape[1]
    token_idx = torch.arange(L, device=p.device)[None, :] + (~mask).long() * L
    order = torch.argsort(token_idx, dim=1)[:, :M]
    return torch.gather(p, 1, order).clamp(1e-4, 1 - 1e-4)


def loop_dechunk(z, p, mask, res):
    pc = chunk_p(p, mask, z.shape[1])
    h = torch.zeros(z.shape[0], z.shape[2], device=z.device, dtype=torch.float32)
    outs = []
    for c in range(z.shape[1]):
        h = pc[:, c, None] * z[:, c].float() + (1 - pc[:, c, None]) * h
        outs.append(h)
    out = torch.stack(outs, dim=1)
    return (gather_back(out, mask) + res).to(torch.bfloat16)


def mamba_dechunk(z, p, mask, res):
    from einops import rearrange, repeat
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    pc = chunk_p(p, mask, z.shape[1])
    dt = torch.log(1 / (1 - pc)).to(torch.bfloat16)
    x = (z / dt[..., None]).to(torch.bfloat16)
    heads = z.shape[-1] // 32
    A = -torch.ones(heads, device=z.device, dtype=torch.float32)
    b = pc.to(torch.bfloat16)
    out = mamba_chunk_scan_combined(rearrange(x, "b l (h p) -> b l h p", p=32), repeat(dt, "b l -> b l h", h=heads), A,
                                    rearrange(b, "b l -> b l 1 1"), rearrange(torch.ones_like(b), "b l -> b l 1 1"),
                                    chunk_size=256)
    out = rearrange(out, "b l h p -> b l (h p)")
    return (gather_back(out, mask).float() + res).to(torch.bfloat16)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="65536,262144,1048576,4194304")
    ap.add_argument("--loop-max", type=int, default=65536, help="largest n for the sequential loop")
    args = ap.parse_args()
    d = 1024
    impls = [("torch_loop", loop_dechunk)]
    try:
        import mamba_ssm  # noqa: F401
        impls.append(("mamba_ssm", mamba_dechunk))
    except ImportError as e:
        print(json.dumps({"impl": "mamba_ssm", "skipped": str(e)}), flush=True)
    for n in [int(s) for s in args.sizes.split(",")]:
        mask, p, z, res = inputs(n, d)
        for name, fn in impls:
            if name == "torch_loop" and n > args.loop_max:
                continue
            fwd = timed(lambda: fn(z, p, mask, res), reps=3 if name == "torch_loop" else 10)
            out = fn(z, p, mask, res)
            g = torch.randn_like(out)
            bwd = timed(lambda: torch.autograd.grad(out, (z, res), g, retain_graph=True),
                        reps=3 if name == "torch_loop" else 10)
            print(json.dumps({"impl": name, "op": "dechunk", "n": n, "d": d, "fwd_ms": fwd, "bwd_ms": bwd}), flush=True)


if __name__ == "__main__":
    main()
