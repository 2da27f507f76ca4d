#!/usr/bin/env python3
"""PyTorch side by side for bench_train.cu: one training step of Llama 3.2
1B's shape (d 2048, 16 layers, 32 heads of 64 with 8 KV heads, FFN 8192,
vocab 128,256, the head tied; random weights) on the GPU, at the same
B x L (8 x 1024 and 4 x 2048): the forward, the loss, the backward,
clip_grad_norm_(1.0) and AdamW, the loss read back, as tokenless's step.

The usual mixed-precision recipe, two ways:
  * eager: fp32 weights, torch.autocast(bf16), torch.optim.AdamW(fused=True);
  * compiled: the same with torch.compile(model).
transformers' LlamaForCausalLM, SDPA attention (FlashAttention's kernels on
an H100). Prints ms a step, tokens/s and MFU against a bf16 GEMM measured
here (8192^3), and writes train_eager.json.

    python3 benchmarks/torch/train_eager.py [--shapes 8x1024,4x2048] [--no-compile]
"""
import argparse
import json
import math

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from timing import timed


def config():
    return LlamaConfig(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                       head_dim=64, intermediate_size=8192, vocab_size=128256, max_position_embeddings=131072,
                       rms_norm_eps=1e-5, tie_word_embeddings=True, rope_theta=500000.0,
                       rope_scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                         original_max_position_embeddings=8192))


def step_flops(c, B, L):
    d, T = c.hidden_size, B * L
    q = c.num_attention_heads * c.head_dim
    qkv = q + 2 * c.num_key_value_heads * c.head_dim
    layer = d * qkv + q * d + 3 * d * c.intermediate_size
    forward = 2 * T * (c.num_hidden_layers * layer + c.vocab_size * d)
    attention = c.num_hidden_layers * 2 * 2 * B * (L * L / 2) * q
    return 3 * forward + 3.5 * attention  # as bench_train.cu counts


def gemm_peak():
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    ms = timed(lambda: a @ b.T, reps=10)
    return 2 * n ** 3 / (ms * 1e-3)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="8x1024,4x2048")
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    c = config()
    peak = gemm_peak()
    results = []
    for mode in ["eager"] + ([] if args.no_compile else ["compile"]):
        model = LlamaForCausalLM(c).cuda().train()
        run = torch.compile(model) if mode == "compile" else model
        opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
        for shape in args.shapes.split(","):
            B, L = map(int, shape.split("x"))
            ids = torch.randint(0, c.vocab_size, (B, L + 1), device="cuda")

            def step():
                opt.zero_grad(set_to_none=True)
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    logits = run(ids[:, :L]).logits
                loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, c.vocab_size),
                                                         ids[:, 1:].reshape(-1))
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                return float(loss)

            first = step()
            assert abs(first - math.log(c.vocab_size)) < 0.5, first
            step()  # compile's warm-up
            ms = timed(step, reps=10)
            r = {"mode": mode, "B": B, "L": L, "ms": ms, "tokens_per_s": B * L / (ms * 1e-3),
                 "mfu": step_flops(c, B, L) / (ms * 1e-3) / peak,
                 "peak_memory_bytes": torch.cuda.max_memory_allocated()}
            print(f"{mode:8s} {B}x{L}: {ms:.1f} ms, {r['tokens_per_s']:.0f} tokens/s, MFU {r['mfu']:.2f}")
            results.append(r)
        del model, run, opt
        torch.cuda.empty_cache()
    with open("train_eager.json", "w") as f:
        json.dump({"gemm_peak_flops": peak, "results": results, "torch": torch.__version__}, f, indent=1)


if __name__ == "__main__":
    main()
