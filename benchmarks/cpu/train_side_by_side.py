#!/usr/bin/env python3
"""Training on the host: tokenless-train --device cpu against PyTorch eager
(transformers' LlamaForCausalLM, torch.optim.AdamW, clip_grad_norm_) on the
same machine and threads, the same random model, data and batches.

The model is examples/train/byte_llama (a byte-level Llama of 3.4M
parameters: 4 layers of d 256, heads of 64, GQA 4:2, FFN 704, vocab 256),
initialised by transformers with a fixed seed and saved once; the data are
the repository's docs as bytes. Each side trains --steps steps of the
documented batches (B --batch, L --seq-len, AdamW lr 1e-3, betas 0.9/0.95,
wd 0.1, clip 1.0); the losses must agree step by step (fp32 both), and the
tokens a second of steps 2.. are compared.

With --model blt, the model is examples/train/byte_blt (a small BLT: local
d 128, global d 256, k 2, static 4-byte patches: its random entropy model's
threshold is above every entropy), transformers' BltForCausalLM against
tokenless-train --bytes-file, the entropy model frozen on both sides.

    python3 benchmarks/cpu/train_side_by_side.py TRAINER [--model llama|blt] [--threads N] [--steps 12] [--batch 8] [--seq-len 128]
"""
import argparse
import glob
import json
import os
import subprocess
import tempfile
import time

import torch
from transformers import BltConfig, BltForCausalLM, LlamaConfig, LlamaForCausalLM


def rows(data, step, micro, B, L, A):
    n = len(data)
    out = []
    for r in range(B):
        start = ((step * A + micro) * B + r) * L
        out.append([data[(start + i) % n] for i in range(L + 1)])
    return torch.tensor(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("trainer")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--model", choices=("llama", "blt"), default="llama")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    blt = args.model == "blt"
    name = "byte_blt" if blt else "byte_llama"
    cfg = json.load(open(os.path.join(root, "examples", "train", name, "config.json")))
    files = sorted(glob.glob(os.path.join(root, "docs", "*.md"))) + [os.path.join(root, "README.md")]
    raw = b"".join(open(f, "rb").read() for f in files)
    data = [b + 4 for b in raw] if blt else list(raw)
    B, L, steps = args.batch, args.seq_len, args.steps
    hyper = dict(lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        kw = {k: v for k, v in cfg.items() if k not in ("architectures", "model_type", "torch_dtype", "dtype")}
        model = (BltForCausalLM(BltConfig(**kw)) if blt else LlamaForCausalLM(LlamaConfig(**kw))).float()
        if blt:
            model.config._attn_implementation = "eager"
        model.save_pretrained(os.path.join(tmp, "model"))
        if blt:
            given = os.path.join(tmp, "docs.bytes")
            open(given, "wb").write(raw)
            flag = "--bytes-file"
        else:
            given = os.path.join(tmp, "docs.ids")
            open(given, "w").write(" ".join(map(str, data)))
            flag = "--ids"
        env = dict(os.environ, OPENBLAS_NUM_THREADS=str(args.threads))
        r = subprocess.run([args.trainer, "--model", os.path.join(tmp, "model"), flag, given, "--steps", str(steps),
                            "--batch-size", str(B), "--seq-len", str(L), "--lr", "1e-3", "--betas", "0.9,0.95",
                            "--eps", "1e-8", "--weight-decay", "0.1", "--clip", "1.0", "--format", "json"],
                           check=True, capture_output=True, text=True, env=env)
        ours = json.loads(r.stdout)
    # PyTorch eager: the same recipe (matrices decayed, norms not).
    trained = [(n, p) for n, p in model.named_parameters() if not n.startswith("model.patcher.")]
    for n, p in model.named_parameters():
        p.requires_grad_(not n.startswith("model.patcher."))
    decay = [p for n, p in trained if p.dim() >= 2]
    rest = [p for n, p in trained if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay}, {"params": rest, "weight_decay": 0.0}], **hyper)
    model.train()
    losses, times = [], []
    for s in range(steps):
        t0 = time.perf_counter()
        x = rows(data, s, 0, B, L, 1)
        logits = model(x[:, :-1], use_cache=False).logits if blt else model(x[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in trained], 1.0)
        opt.step()
        times.append(time.perf_counter() - t0)
        losses.append(float(loss))
    torch_tps = B * L * (steps - 1) / sum(times[1:])
    worst = max(abs(a - b) / abs(b) for a, b in zip(ours["losses"], losses))
    params = sum(p.numel() for _, p in trained)
    print(f"{name} ({params / 1e6:.1f}M trained params), B {B} x L {L}, {steps} steps, {args.threads} threads")
    print(f"  losses: tokenless {ours['losses'][0]:.4f} -> {ours['losses'][-1]:.4f}, "
          f"torch {losses[0]:.4f} -> {losses[-1]:.4f} (worst relative difference {worst:.1e})")
    print(f"  tokenless-train --device cpu: {ours['tokens_per_second']:.0f} tokens/s "
          f"(peak memory {ours['peak_memory_bytes'] / 2**20:.0f} MiB)")
    print(f"  PyTorch {torch.__version__} eager:      {torch_tps:.0f} tokens/s")
    print(f"  ratio: {ours['tokens_per_second'] / torch_tps:.2f}x")
    assert worst < 1e-3, worst


if __name__ == "__main__":
    main()
