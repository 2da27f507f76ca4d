#!/usr/bin/env python3
"""PyTorch side by side for bench_models.cu, bf16:

  * transformers' LlamaDecoderLayer at Llama-3-8B's shape (d 4096, 32 heads,
    8 KV heads of 128, FFN 14336) over 4K and 16K tokens of one sequence
    (SDPA attention, transformers' default): forward, and forward + backward,
    eager and torch.compile;
  * decode at batch 1 with a Llama-3.2-1B-shaped random LlamaForCausalLM
    (16 layers, d 2048, 32 heads, 8 KV heads, FFN 8192, vocab 128256):
    tokens/s of transformers' generate after a 512- and a 4096-token prompt,
    with the dynamic cache (eager) and the static cache.

    python3 benchmarks/torch/models_eager.py [--tokens 4096,16384] [--contexts 512,4096] [--new 64]
"""
import argparse
import json
import time

import torch
from timing import timed
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding


def layer_bench(t):
    cfg = LlamaConfig(hidden_size=4096, num_attention_heads=32, num_key_value_heads=8, intermediate_size=14336,
                      rope_theta=500000.0, max_position_embeddings=max(t, 8192), rms_norm_eps=1e-5)
    cfg._attn_implementation = "sdpa"
    layer = LlamaDecoderLayer(cfg, layer_idx=0).to("cuda", torch.bfloat16)
    rope = LlamaRotaryEmbedding(cfg).to("cuda")
    x = torch.randn(1, t, 4096, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    pos = torch.arange(t, device="cuda")[None]
    cos_sin = rope(x, pos)
    g = torch.randn_like(x)

    def fwd(fn):
        with torch.no_grad():
            return fn(x, position_embeddings=cos_sin, position_ids=pos)

    def fwd_bwd(fn):
        y = fn(x, position_embeddings=cos_sin, position_ids=pos)
        y = y[0] if isinstance(y, tuple) else y
        torch.autograd.grad(y, [x] + list(layer.parameters()), g)

    compiled = torch.compile(layer)
    for name, fn in (("torch_eager", layer), ("torch_compile", compiled)):
        f = timed(lambda: fwd(fn), reps=5)
        fb = timed(lambda: fwd_bwd(fn), reps=5)
        print(json.dumps({"impl": name, "op": "llama3_8b_layer", "tokens": t, "fwd_ms": f, "fwd_bwd_ms": fb}),
              flush=True)


def decode_bench(contexts, new):
    cfg = LlamaConfig(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                      intermediate_size=8192, vocab_size=128256, rope_theta=500000.0,
                      max_position_embeddings=max(contexts) + new + 8, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).to("cuda", torch.bfloat16).eval()
    for ctx in contexts:
        prompt = torch.randint(0, cfg.vocab_size, (1, ctx), device="cuda")
        for cache in ("dynamic", "static"):
            kw = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0, eos_token_id=None)
            if cache == "static":
                kw["cache_implementation"] = "static"

            def run(n):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                with torch.no_grad():
                    model.generate(prompt, **dict(kw, max_new_tokens=n, min_new_tokens=n))
                torch.cuda.synchronize()
                return time.perf_counter() - t0

            run(new)  # warm-up (and the static cache's compile, if any)
            # Tokens/s of the decode steps alone: the difference of two runs removes the prefill.
            t_long, t_short = run(new), run(1)
            tps = (new - 1) / max(t_long - t_short, 1e-9)
            print(json.dumps({"impl": f"transformers_generate_{cache}", "op": "llama1b_decode_batch1",
                              "context": ctx, "tokens_per_s": tps}), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", default="4096,16384")
    ap.add_argument("--contexts", default="512,4096")
    ap.add_argument("--new", type=int, default=64)
    args = ap.parse_args()
    for t in [int(s) for s in args.tokens.split(",") if s]:
        layer_bench(t)
    decode_bench([int(s) for s in args.contexts.split(",") if s], args.new)


if __name__ == "__main__":
    main()
