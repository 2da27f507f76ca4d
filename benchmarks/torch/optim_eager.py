#!/usr/bin/env python3
"""PyTorch side by side for bench_optim.cu: one AdamW step with
clip_grad_norm_(1.0) over a 1B-shaped Llama's tensors (Llama 3.2 1B: d 2048,
16 layers, FFN 8192, GQA 32:8, vocab 128,256; the embedding once; norm
weights undecayed), on the GPU:

  * fp32 parameters: torch.optim.AdamW(fused=True) and (foreach=True);
  * bf16 parameters with fp32 master weights, the usual mixed-precision
    recipe: the fused step on the fp32 masters, then a copy into the bf16
    parameters (what tokenless's bf16 step does in one pass).

Each: ms a step and the fraction of the copy bandwidth (a device-to-device
copy, measured here) at the bytes tokenless counts (30 an element for bf16,
32 for fp32).

    python3 benchmarks/torch/optim_eager.py
"""
import json

import torch


def shapes():
    d, f, kv, vocab = 2048, 8192, 512, 128256
    s = [(vocab, d)]
    for _ in range(16):
        s += [(d,), (d, d), (kv, d), (kv, d), (d, d), (d,), (f, d), (f, d), (d, f)]
    return s + [(d,)]


def timed(fn, reps=10):
    fn()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = 1e30
    for _ in range(reps):
        a.record()
        fn()
        b.record()
        b.synchronize()
        best = min(best, a.elapsed_time(b))
    return best


def main():
    torch.manual_seed(0)
    res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    n = 1 << 28
    src, dst = torch.empty(n, dtype=torch.uint8, device="cuda"), torch.empty(n, dtype=torch.uint8, device="cuda")
    copy_bw = 2 * n / (timed(lambda: dst.copy_(src)) / 1e3)
    res["copy_bytes_per_s"] = copy_bw
    del src, dst
    total = sum(int(torch.tensor(s).prod()) for s in shapes())
    res["params"] = total

    def step_fn(params, opt):
        def f():
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
        return f

    for impl in ("fused", "foreach"):
        params = [torch.nn.Parameter(torch.randn(*s, device="cuda") * 0.02) for s in shapes()]
        for p in params:
            p.grad = torch.randn_like(p) * 1e-3
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        opt = torch.optim.AdamW(groups, lr=3e-4, betas=(0.9, 0.95), **{impl: True})
        ms = timed(step_fn(params, opt))
        res[f"fp32_{impl}_ms"] = ms
        res[f"fp32_{impl}_frac_copy_bw"] = 32.0 * total / (ms / 1e3) / copy_bw
        del params, opt
        torch.cuda.empty_cache()
    # bf16 parameters, fp32 masters: the fused step on the masters, then the copy.
    master = [torch.nn.Parameter(torch.randn(*s, device="cuda") * 0.02) for s in shapes()]
    model = [m.detach().to(torch.bfloat16) for m in master]
    grads = [torch.randn_like(m, dtype=torch.bfloat16) * 1e-3 for m in master]
    opt = torch.optim.AdamW(master, lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)

    def bf16_step():
        for m, g in zip(master, grads):
            m.grad = g.float()
        torch.nn.utils.clip_grad_norm_(master, 1.0)
        opt.step()
        torch._foreach_copy_(model, master)

    ms = timed(bf16_step)
    res["bf16_master_fused_ms"] = ms
    res["bf16_master_fused_frac_copy_bw"] = 30.0 * total / (ms / 1e3) / copy_bw
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
