#!/usr/bin/env python3
"""Golden fixtures for the assembled BLT (issue 24), from transformers' BltForCausalLM.

Two tiny random models (tests/fixtures/models/blt, blt_k4), saved with
save_pretrained (weights rounded to bf16 and stored as bf16, so every run
reads the same values):

  blt     k 2; encoder d 128 (2 heads of 64, 1 layer, window 8); global d 128
          (one head of 128, 2 layers, the k·d_e → d_g projection); decoder
          d 128 (2 heads of 64, 2 layers, cross-attention before every
          layer); an entropy model of 2 layers (window 6); n-grams 3-5, two
          hash functions
  blt_k4  k 4; encoder d 64 (2 layers, cross-attention after every layer);
          global d 256 (2 heads of 128, 1 KV head, no projection: k·d_e =
          d_g); decoder d 64 (cross-attention before layer 0 only); no
          windows; n-grams 3-8, one hash function; max_patch_length 4

The entropy threshold of each is set between two of the entropy model's
values over the prompt and its continuation, so that patches of about
three bytes form and no comparison is near a tie.

  logits_fp64.npy   the prompt's logits [n, 260], transformers in float64 (the truth)
  logits_fp32.npy   the same in float32 (the naive same-precision run)
  expected.json     prompt ids (BOS + bytes + 4), the greedy continuation by
                    repeated uncached forwards (float64 and float32 agree),
                    each step's top-1/top-2 margin, the patch lengths of
                    prompt + continuation, the entropies' smallest distance
                    to the threshold, versions

Greedy decoding by uncached forwards is the truth: transformers' cached BLT
caches only the local models' self-attention and differs from the second new
byte (../shared/notes/reference-systems.md). Tests read only the committed
files; this script needs torch and transformers (PyPI), run by hand:

  python3 scripts/make_blt_fixtures.py [OUT_DIR]   (default tests/fixtures/models)
"""
import json
import os
import sys

import numpy as np
import torch
import transformers
from transformers import BltConfig, BltForCausalLM

PROMPT_TEXT = "Byte patches: the quick brown fox jumps over the lazy dog."
NEW_BYTES = 12


def configs():
    yield "blt", dict(
        cross_attn_k=2, local_attention_window_len=8, max_patch_length=None,
        encoder_hash_byte_group_size=[3, 4, 5], encoder_hash_byte_group_nb_functions=2,
        encoder_hash_byte_group_vocab=61,
        patcher_config=dict(hidden_size=64, num_attention_heads=1, num_hidden_layers=2, intermediate_size=128,
                            sliding_window=6, rope_parameters=dict(rope_type="default", rope_theta=10000.0)),
        encoder_config=dict(hidden_size=128, num_attention_heads=2, num_hidden_layers=1, intermediate_size=256,
                            cross_attn_k=2, hidden_size_global=128, cross_attn_all_layers=False),
        global_config=dict(hidden_size=128, num_attention_heads=1, num_hidden_layers=2, intermediate_size=256),
        decoder_config=dict(hidden_size=128, num_attention_heads=2, num_hidden_layers=2, intermediate_size=256,
                            cross_attn_k=2, hidden_size_global=128, cross_attn_all_layers=True),
    )
    yield "blt_k4", dict(
        cross_attn_k=4, local_attention_window_len=None, max_patch_length=4,
        encoder_hash_byte_group_size=[3, 4, 5, 6, 7, 8], encoder_hash_byte_group_nb_functions=1,
        encoder_hash_byte_group_vocab=53,
        patcher_config=dict(hidden_size=64, num_attention_heads=1, num_hidden_layers=2, intermediate_size=128,
                            sliding_window=None),
        encoder_config=dict(hidden_size=64, num_attention_heads=1, num_hidden_layers=2, intermediate_size=128,
                            cross_attn_k=4, hidden_size_global=256, cross_attn_all_layers=True),
        global_config=dict(hidden_size=256, num_attention_heads=2, num_key_value_heads=1, num_hidden_layers=1,
                           intermediate_size=256),
        decoder_config=dict(hidden_size=64, num_attention_heads=1, num_hidden_layers=2, intermediate_size=128,
                            cross_attn_k=4, hidden_size_global=256, cross_attn_all_layers=False),
    )


def entropies(model, ids):
    with torch.no_grad():
        ent, _, _ = model.model.patcher(torch.tensor([ids]), patch_size=None)
    return ent[0].double().numpy()


def greedy(model, ids, n):
    """Greedy bytes by uncached forwards; each step's top-1 - top-2 margin."""
    seq, margins = list(ids), []
    with torch.no_grad():
        for _ in range(n):
            logits = model(torch.tensor([seq]), use_cache=False).logits[0, -1].double()
            top = torch.topk(logits, 2).values
            margins.append(float(top[0] - top[1]))
            seq.append(int(torch.argmax(logits)))
    return seq[len(ids):], margins


def patch_lengths(model, ids):
    with torch.no_grad():
        _, lengths, _ = model.model.patcher(torch.tensor([ids]), patch_size=model.config.patch_size,
                                            threshold=model.config.patching_threshold,
                                            max_patch_length=model.config.max_patch_length)
    return [int(v) for v in lengths[0] if v > 0]


def main():
    out_root = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/models"
    prompt = [1] + [b + 4 for b in PROMPT_TEXT.encode()]
    for name, kw in configs():
        torch.manual_seed(1234 if name == "blt" else 99)
        cfg = BltConfig(vocab_size=260, patching_mode="entropy", patch_in_forward=True, patch_size=4,
                        patching_threshold=0.0, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                        tie_word_embeddings=False, **kw)
        model = BltForCausalLM(cfg).eval()
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.to(torch.bfloat16).to(torch.float32))
        # The threshold: between two neighbouring entropies, about a third of
        # positions above it, on the prompt and a first continuation.
        seq = prompt
        for _ in range(2):
            h = np.sort(entropies(model, seq)[1:])
            cut = int(len(h) * 2 / 3)
            gaps = [(h[i + 1] - h[i], i) for i in range(max(1, cut - 4), min(len(h) - 1, cut + 4))]
            _, i = max(gaps)
            model.config.patching_threshold = float((h[i] + h[i + 1]) / 2)
            gen, _ = greedy(model, prompt, NEW_BYTES)
            seq = prompt + gen
        d = os.path.join(out_root, name)
        os.makedirs(d, exist_ok=True)
        model.to(torch.bfloat16).save_pretrained(d)
        m32 = BltForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
        m64 = BltForCausalLM.from_pretrained(d, dtype=torch.float64).eval()
        with torch.no_grad():
            l32 = m32(torch.tensor([prompt]), use_cache=False).logits[0].float().numpy()
            l64 = m64(torch.tensor([prompt]), use_cache=False).logits[0].double().numpy()
        np.save(os.path.join(d, "logits_fp32.npy"), l32.astype(np.float32))
        np.save(os.path.join(d, "logits_fp64.npy"), l64.astype(np.float64))
        gen64, margins = greedy(m64, prompt, NEW_BYTES)
        gen32, _ = greedy(m32, prompt, NEW_BYTES)
        assert gen64 == gen32, (name, gen64, gen32)
        full = prompt + gen64
        ent = entropies(m64, full)
        thr = m64.config.patching_threshold
        expected = {
            "prompt_text": PROMPT_TEXT,
            "prompt": prompt,
            "generated": gen64,
            "greedy_margins": margins,
            "patch_lengths_prompt": patch_lengths(m64, prompt),
            "patch_lengths_full": patch_lengths(m64, full),
            "entropies_full": [float(v) for v in ent],
            "threshold": thr,
            "threshold_margin": float(np.min(np.abs(ent[1:] - thr))),
            "fp32_error": float(np.max(np.abs(l32.astype(np.float64) - l64))),
            "logit_scale": float(np.max(np.abs(l64))),
            "transformers": transformers.__version__,
            "torch": torch.__version__,
        }
        with open(os.path.join(d, "expected.json"), "w") as f:
            json.dump(expected, f, indent=1)
        lens = expected["patch_lengths_full"]
        print(f"{name}: {len(prompt)} prompt ids, generated {gen64}, patches {lens} "
              f"(mean {np.mean(lens):.2f}), threshold {thr:.4f} (margin {expected['threshold_margin']:.2e}), "
              f"fp32 error {expected['fp32_error']:.2e} of {expected['logit_scale']:.2f}, "
              f"min greedy margin {min(margins):.3e}")


if __name__ == "__main__":
    main()
