#!/usr/bin/env python3
"""PyTorch side by side for bench_attention.cu, on the GPU machine, same shapes:

  * causal, head dims 128 and 64, S 1K-16K over 16K tokens, forward and
    backward: SDPA with its flash and its cuDNN backends (and FlexAttention);
  * BLT-1B cross-attention (8K-64K bytes, patches of 1-8 bytes, k = 2, 16
    heads of 64), encoder and decoder masks: FlexAttention, with
    create_block_mask timed in, since BLT builds its BlockMask every batch;
  * DLCM-like token -> concept (head dim 128, 8K-32K tokens): FlexAttention;
  * decode at batch 1, one query, 32 heads over 8 KV heads of 128, caches of
    4K-32K: SDPA (GQA) and, when installed, flash_attn_with_kvcache.

Times with CUDA events after an L2 flush; prints one JSON line a measurement.

    python3 benchmarks/torch/attention_sdpa.py [--only causal|blt|dlcm|decode]
"""
import argparse
import json
import random

import torch
import torch.nn.functional as F
from timing import timed

try:
    from torch.nn.attention import SDPBackend, sdpa_kernel
except ImportError:  # older torch
    SDPBackend = None
try:
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    flex = torch.compile(flex_attention, dynamic=False)
except Exception:  # noqa: BLE001 - FlexAttention needs torch >= 2.5
    flex = None

def emit(**kw):
    print(json.dumps(kw), flush=True)


def causal():
    for d in (128, 64):
        h = 2048 // d
        s = 1024
        while s <= 16384:
            b = max(1, 16384 // s)
            q, k, v = (torch.randn(b, h, s, d, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
            flops = 4.0 * b * h * d * s * (s + 1) / 2
            backends = []
            if SDPBackend is not None:
                backends = [("sdpa_flash", SDPBackend.FLASH_ATTENTION), ("sdpa_cudnn", SDPBackend.CUDNN_ATTENTION)]
            for name, backend in backends:
                try:
                    with sdpa_kernel(backend):
                        fwd = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)  # noqa: E731
                        ms = timed(fwd)
                        out = fwd()
                        g = torch.randn_like(out)
                        ms_b = timed(lambda: torch.autograd.grad(out, (q, k, v), g, retain_graph=True))
                    emit(impl=name, shape="causal", hd=d, S=s, B=b, fwd_ms=ms, bwd_ms=ms_b,
                         fwd_tflops=flops / ms * 1e-9, bwd_tflops=2.5 * flops / ms_b * 1e-9)
                except RuntimeError as e:
                    emit(impl=name, shape="causal", hd=d, S=s, error=str(e)[:200])
            s *= 2


def patch_lengths(n, seed):
    rng = random.Random(seed)
    lens, pos = [], 0
    while pos < n:
        ln = min(n - pos, 1 + rng.randrange(8))
        lens.append(ln)
        pos += ln
    return lens


def blt():
    if flex is None:
        emit(impl="flex_attention", error="FlexAttention unavailable")
        return
    k_slots = 2
    for n in (8192, 16384, 32768, 65536):
        lens = torch.tensor(patch_lengths(n, 7), device="cuda")
        p = lens.numel()
        ids = torch.repeat_interleave(torch.arange(p, device="cuda"), lens)  # encoder patch id of every byte
        dec = torch.repeat_interleave(torch.arange(p - 1, device="cuda"), lens[1:])
        dec = torch.cat([dec, torch.full((n - dec.numel(),), p - 1, device="cuda")])
        q_enc = torch.randn(1, 16, p * k_slots, 64, device="cuda", dtype=torch.bfloat16)
        kv = torch.randn(1, 16, n, 64, device="cuda", dtype=torch.bfloat16)

        def enc_mask(b, h, q_idx, kv_idx):
            return ids[kv_idx] == q_idx // k_slots

        def dec_mask(b, h, q_idx, kv_idx):
            return dec[q_idx] == kv_idx // k_slots

        def enc():
            bm = create_block_mask(enc_mask, 1, 1, p * k_slots, n, device="cuda")
            return flex(q_enc, kv, kv, block_mask=bm)

        q_dec = torch.randn(1, 16, n, 64, device="cuda", dtype=torch.bfloat16)
        kv_slots = torch.randn(1, 16, p * k_slots, 64, device="cuda", dtype=torch.bfloat16)

        def dec_fn():
            bm = create_block_mask(dec_mask, 1, 1, n, p * k_slots, device="cuda")
            return flex(q_dec, kv_slots, kv_slots, block_mask=bm)

        for name, fn in (("encoder_cross", enc), ("decoder_cross", dec_fn)):
            try:
                emit(impl="flex_attention+create_block_mask", shape="blt1b_" + name, n=n, ms=timed(fn))
            except Exception as e:  # noqa: BLE001
                emit(impl="flex_attention", shape="blt1b_" + name, n=n, error=str(e)[:200])


def dlcm():
    if flex is None:
        return
    for n in (8192, 16384, 32768):
        lens = torch.tensor(patch_lengths(n, 9), device="cuda")
        c = lens.numel()
        seg = torch.repeat_interleave(torch.arange(c, device="cuda"), lens)
        q = torch.randn(1, 16, n, 128, device="cuda", dtype=torch.bfloat16)
        kv = torch.randn(1, 16, c, 128, device="cuda", dtype=torch.bfloat16)

        def mask(b, h, q_idx, kv_idx):
            return kv_idx <= seg[q_idx]

        def fn():
            bm = create_block_mask(mask, 1, 1, n, c, device="cuda")
            return flex(q, kv, kv, block_mask=bm)

        try:
            emit(impl="flex_attention+create_block_mask", shape="dlcm_token_to_concept", n=n, ms=timed(fn))
        except Exception as e:  # noqa: BLE001
            emit(impl="flex_attention", shape="dlcm_token_to_concept", n=n, error=str(e)[:200])


def decode():
    try:
        from flash_attn import flash_attn_with_kvcache
    except ImportError:
        flash_attn_with_kvcache = None
    s = 4096
    while s <= 32768:
        q = torch.randn(1, 32, 1, 128, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, 8, s, 128, device="cuda", dtype=torch.bfloat16)
        v = torch.randn_like(k)
        cache_bytes = 2 * k.numel() * 2
        try:
            ms = timed(lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True))
            emit(impl="sdpa_gqa", shape="decode_batch1", S=s, ms=ms, cache_gb_per_s=cache_bytes / ms * 1e-6)
        except (RuntimeError, TypeError) as e:
            emit(impl="sdpa_gqa", shape="decode_batch1", S=s, error=str(e)[:200])
        if flash_attn_with_kvcache is not None:
            kc, vc = k.transpose(1, 2).contiguous(), v.transpose(1, 2).contiguous()
            qf = q.transpose(1, 2).contiguous()
            lens = torch.tensor([s], device="cuda", dtype=torch.int32)
            ms = timed(lambda: flash_attn_with_kvcache(qf, kc, vc, cache_seqlens=lens, causal=True))
            emit(impl="flash_attn_with_kvcache", shape="decode_batch1", S=s, ms=ms,
                 cache_gb_per_s=cache_bytes / ms * 1e-6)
        s *= 2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=["causal", "blt", "dlcm", "decode"])
    args = ap.parse_args()
    for name, fn in (("causal", causal), ("blt", blt), ("dlcm", dlcm), ("decode", decode)):
        if args.only in (None, name):
            fn()


if __name__ == "__main__":
    main()
