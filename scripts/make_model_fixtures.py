#!/usr/bin/env python3
"""Golden fixtures for the model runner (issue 13), from transformers.

For each family (Llama 3, Mistral with a sliding window, Mixtral, Phi-3) this
builds a tiny random model (2 layers, 4 heads with 2 KV heads; heads of 64, so
d 256, and Phi-3's of 96 as in Phi-3-mini), saves it with save_pretrained
(weights rounded to bf16 and stored as bf16, so fp32 and bf16 runs read the
same values), and records for a fixed prompt:

  logits_fp32.npy   the prompt's logits [n_prompt, vocab] in fp32 (the truth)
  logits_bf16.npy   the same model run in bf16 (the naive same-precision run)
  expected.json     the greedy continuation (fp32, use_cache on and off must
                    agree), the top-1/top-2 margins of every greedy step (so
                    a test knows the ids are well separated), the same two
                    for the bf16 run (what the kernels' bf16 path is held
                    to), Mixtral's load-balancing loss, the RoPE frequency
                    table, versions

Tests read only the committed files; this script needs torch and
transformers from PyPI and is run by hand:

  pip install torch transformers safetensors numpy
  python3 scripts/make_model_fixtures.py [OUT_DIR]   (default tests/fixtures/models)
"""
import json
import os
import sys

import numpy as np
import torch
import transformers
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, MixtralConfig,
                          MixtralForCausalLM, Phi3Config, Phi3ForCausalLM)

VOCAB = 320
PROMPT = [1, 17, 250, 3, 99, 42, 311, 7, 7, 128, 64, 5]
NEW_TOKENS = 8
COMMON = dict(vocab_size=VOCAB, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              intermediate_size=256, max_position_embeddings=128, rms_norm_eps=1e-5, tie_word_embeddings=False,
              bos_token_id=1, eos_token_id=2, pad_token_id=0,
              # Wide enough weights that the logits are well apart (greedy ids must match exactly).
              initializer_range=0.08)


def families():
    yield "llama", LlamaForCausalLM, LlamaConfig(
        hidden_size=256, rope_theta=500000.0,
        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                          original_max_position_embeddings=64), **COMMON)
    # A window shorter than prompt + continuation, so that it matters.
    yield "mistral", MistralForCausalLM, MistralConfig(hidden_size=256, rope_theta=10000.0, sliding_window=8,
                                                        head_dim=64, **COMMON)
    yield "mixtral", MixtralForCausalLM, MixtralConfig(hidden_size=256, rope_theta=1e6, num_local_experts=4,
                                                        num_experts_per_tok=2, router_aux_loss_coef=0.02,
                                                        head_dim=64, **COMMON)
    yield "phi3", Phi3ForCausalLM, Phi3Config(hidden_size=384, rope_theta=10000.0, resid_pdrop=0.0,
                                              embd_pdrop=0.0, attention_dropout=0.0,
                                              original_max_position_embeddings=128, **COMMON)


def greedy(model, ids, use_cache):
    out = model.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False, use_cache=use_cache,
                         pad_token_id=0, eos_token_id=None)
    return out[0, len(ids):].tolist()


def margins(model, ids, generated):
    """top-1 minus top-2 logit at every greedy step (in fp32, of the model's logits)."""
    seq = torch.tensor([ids + generated])
    with torch.no_grad():
        logits = model(seq).logits[0, len(ids) - 1:len(ids) - 1 + len(generated)]
    top = torch.topk(logits.float(), 2, dim=-1).values
    return (top[:, 0] - top[:, 1]).tolist()


def main():
    out_root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests",
                                                                  "fixtures", "models")
    torch.manual_seed(20261202)
    for name, cls, config in families():
        config._attn_implementation = "eager"
        model = cls(config).eval()
        with torch.no_grad():  # the weights as bf16 values, so that the stored file holds them exactly
            for p in model.parameters():
                p.copy_(p.to(torch.bfloat16).to(torch.float32))
        out = os.path.join(out_root, name)
        os.makedirs(out, exist_ok=True)
        model.to(torch.bfloat16).save_pretrained(out, safe_serialization=True)
        # Reloaded as a user would: casting the model back would leave its RoPE
        # buffers (inv_freq) rounded to bf16.
        model = cls.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").eval()
        ids = PROMPT
        with torch.no_grad():
            logits32 = model(torch.tensor([ids])).logits[0].float().numpy()
            aux = None
            if name == "mixtral":
                o = model(torch.tensor([ids]), output_router_logits=True, labels=torch.tensor([ids]))
                aux = float(o.aux_loss)
        gen = greedy(model, ids, True)
        assert gen == greedy(model, ids, False), f"{name}: generation with the cache differs from without"
        m = margins(model, ids, gen)
        bf = cls.from_pretrained(out, dtype=torch.bfloat16, attn_implementation="eager").eval()
        with torch.no_grad():
            logits16 = bf(torch.tensor([ids])).logits[0].float().numpy()
        gen16 = greedy(bf, ids, True)
        assert gen16 == greedy(bf, ids, False), f"{name}: bf16 generation with the cache differs from without"
        m16 = margins(bf, ids, gen16)
        np.save(os.path.join(out, "logits_fp32.npy"), logits32.astype(np.float32))
        np.save(os.path.join(out, "logits_bf16.npy"), logits16.astype(np.float32))
        rotary = getattr(model.model, "rotary_emb", None)
        expected = {
            "architecture": cls.__name__,
            "prompt": ids,
            "generated": gen,
            "greedy_margins": m,
            "generated_bf16": gen16,
            "greedy_margins_bf16": m16,
            "inv_freq": rotary.inv_freq.float().tolist() if rotary is not None else None,
            "aux_loss": aux,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
        }
        with open(os.path.join(out, "expected.json"), "w") as f:
            json.dump(expected, f, indent=1)
        print(f"{name}: generated {gen}, smallest margin {min(m):.4f}, files in {out}")


if __name__ == "__main__":
    main()
