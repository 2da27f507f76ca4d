#!/usr/bin/env python3
"""PyTorch side by side for bench_bottleneck.cu's CoCoMix shapes, on the GPU
machine (bf16, dictionary 32768, k 32, d 768 and 2048, 4K and 16K tokens),
as CoCoMix's model code computes them (projects/cocomix, modeling_gpt2_cocomix.py):

* topk: torch.topk(concept_logit, 32) and the mask;
* compress: compress_layer(mask * concept_logit) + pre_bias, × std + mean:
  a dense [T, 32768] x [32768, d] GEMM over a mostly-zero matrix, forward and
  backward (to the logits and the weight);
* loss: the mean over 4 labels of F.cross_entropy(concept_logit, labels),
  forward and backward;
* sae_encode: OpenAI's TopK SAE as CoCoMix runs it (d 768): the dense
  F.linear to 32768 latents, torch.topk(32), ReLU and the scatter into a
  dense latent row; and the GEMM alone.

    python3 benchmarks/torch/concepts_eager.py [--tokens 4096,16384]
"""
import argparse
import json

import torch
import torch.nn.functional as F
from timing import timed

L, K = 32768, 32


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", default="4096,16384")
    args = ap.parse_args()
    for t in [int(s) for s in args.tokens.split(",")]:
        z = torch.randn(t, L, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        topk_ms = timed(lambda: torch.topk(z, K, dim=-1))
        print(json.dumps({"impl": "torch_eager", "op": "concept_topk", "tokens": t, "ms": topk_ms}), flush=True)
        for d in (768, 2048):
            lin = torch.nn.Linear(L, d, device="cuda", dtype=torch.bfloat16)
            pre = torch.zeros(d, device="cuda", dtype=torch.bfloat16)
            mu = torch.randn(t, 1, device="cuda", dtype=torch.bfloat16)
            sd = torch.rand(t, 1, device="cuda", dtype=torch.bfloat16) + 0.5

            def compress():
                idx = torch.topk(z, K, dim=-1)[1]
                mask = torch.zeros_like(z, dtype=torch.bool).scatter_(-1, idx, True)
                return (lin(mask * z) + pre) * sd + mu

            def gemm_only():
                return lin(z)

            fwd = timed(compress)
            out = compress()
            g = torch.randn_like(out)
            bwd = timed(lambda: torch.autograd.grad(out, (z, lin.weight), g, retain_graph=True))
            gemm = timed(gemm_only)
            print(json.dumps({"impl": "torch_eager", "op": "compress", "tokens": t, "d": d, "fwd_ms": fwd,
                              "bwd_ms": bwd, "dense_gemm_ms": gemm}), flush=True)
        labels = torch.randint(0, L, (t, 4), device="cuda")

        def loss_fn():
            return sum(0.25 * F.cross_entropy(z, labels[:, i]) for i in range(4)) * 0.1

        fwd = timed(loss_fn)
        loss = loss_fn()
        bwd = timed(lambda: torch.autograd.grad(loss, z, retain_graph=True))
        print(json.dumps({"impl": "torch_eager", "op": "concept_loss", "tokens": t, "fwd_ms": fwd, "bwd_ms": bwd}),
              flush=True)
        with torch.no_grad():
            x = torch.randn(t, 768, device="cuda", dtype=torch.bfloat16)
            w_enc = torch.randn(L, 768, device="cuda", dtype=torch.bfloat16) * 0.03
            b_lat = torch.zeros(L, device="cuda", dtype=torch.bfloat16)

            def encode():
                pre = F.linear(x, w_enc, b_lat)
                top = torch.topk(pre, K, dim=-1)
                return torch.zeros_like(pre).scatter_(-1, top.indices, F.relu(top.values))

            enc = timed(encode)
            gemm = timed(lambda: F.linear(x, w_enc, b_lat))
        print(json.dumps({"impl": "torch_eager", "op": "sae_encode", "tokens": t, "ms": enc, "gemm_only_ms": gemm}),
              flush=True)


if __name__ == "__main__":
    main()
