#!/usr/bin/env python3
"""The host path against transformers on the CPU, in one run (docs/performance.md).

A random Llama of about 125M parameters (d 768, 12 layers, 12 heads, 4 KV
heads, FFN 2048, vocab 32000, fp32) is saved once; then, on the same
machine and threads:

  * transformers: a 64-token prefill (the forward's wall time, median of 5)
    and greedy decoding with its dynamic cache (tokens/s over --new tokens);
  * tokenless-run --device cpu on the same checkpoint and prompt (its JSON's
    prefill_ms and tokens_per_second, median of 3 runs), and its greedy ids
    checked against transformers'.

    python3 benchmarks/cpu/host_side_by_side.py RUNNER [--threads N] [--new 32] [--prompt 64]

RUNNER is tokenless-run-cpu (or tokenless-run). torch is the fixture scripts'
dependency, never the tests'.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runner")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--prompt", type=int, default=64)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=4,
                      intermediate_size=2048, vocab_size=32000, max_position_embeddings=2048,
                      rope_theta=500000.0, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).eval()
    params = sum(p.numel() for p in model.parameters())
    prompt = torch.randint(4, 32000, (1, a.prompt))
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        with open(os.path.join(d, "ids.txt"), "w") as f:
            f.write(" ".join(str(int(i)) for i in prompt[0]))
        # transformers
        with torch.no_grad():
            model(prompt)  # warm-up
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                model(prompt)
                times.append(time.perf_counter() - t0)
            prefill_hf = statistics.median(times)
            model.generation_config.eos_token_id = None
            t0 = time.perf_counter()
            out = model.generate(prompt, max_new_tokens=a.new, do_sample=False, min_new_tokens=a.new)
            total = time.perf_counter() - t0
        # generate's time includes its own prefill: take it off for the decode rate.
        decode_hf = (a.new - 1) / max(1e-9, total - prefill_hf)
        hf_ids = [int(i) for i in out[0, a.prompt:]]
        # tokenless
        runs = []
        env = dict(os.environ, TOKENLESS_THREADS=str(a.threads), OPENBLAS_NUM_THREADS=str(a.threads))
        for _ in range(3):
            p = subprocess.run([a.runner, "--model", d, "--ids", os.path.join(d, "ids.txt"), "--device", "cpu",
                                "--max-new-tokens", str(a.new), "--ignore-eos", "--format", "json"],
                               capture_output=True, text=True, env=env)
            if p.returncode != 0:
                sys.exit(f"runner failed: {p.stderr}")
            runs.append(json.loads(p.stdout))
        prefill_tl = statistics.median(r["prefill_ms"] for r in runs) / 1e3
        # The runner's rate counts the prefill's token too (N tokens over N - 1 steps): as above, steps only.
        decode_tl = statistics.median(r["tokens_per_second"] for r in runs) * (a.new - 1) / a.new
        same = runs[0]["generated"] == hf_ids
    res = {
        "model": f"random Llama, {params / 1e6:.0f}M parameters, fp32", "threads": a.threads,
        "prompt_tokens": a.prompt, "new_tokens": a.new,
        "torch": torch.__version__, "transformers": __import__("transformers").__version__,
        "transformers_prefill_s": prefill_hf, "tokenless_prefill_s": prefill_tl,
        "prefill_speedup": prefill_hf / prefill_tl,
        "transformers_decode_tokens_per_s": decode_hf, "tokenless_decode_tokens_per_s": decode_tl,
        "decode_speedup": decode_tl / decode_hf,
        "same_greedy_ids": same,
    }
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
