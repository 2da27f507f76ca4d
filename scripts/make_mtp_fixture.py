#!/usr/bin/env python3
"""A tiny Llama with one DeepSeek-V3-style multi-token module, for
tokenless-run --speculative's command-line test (tests/cli/check_run_cli.sh).

No Python implementation of the module exists to take golden values from
(transformers has none): the test compares the speculative ids with the same
binary's plain greedy ones, which must be identical whatever the drafts. The
weights are random (numpy, fixed seed), stored in bf16 in a safetensors file
written by hand (the format is a JSON header and the raw tensors):

  model.layers.{L}.enorm.weight, hnorm.weight, eh_proj.weight [d, 2d],
  shared_head.norm.weight, and a decoder block's tensors under the same
  prefix (DeepSeek-V3's naming; the head is the model's lm_head).

    python3 scripts/make_mtp_fixture.py [OUT_DIR]   (default tests/fixtures/models/llama_mtp)
"""
import json
import os
import struct
import sys

import numpy as np

D, F, V, L, HEADS, KV, HD = 64, 128, 320, 2, 1, 1, 64


def bf16_bytes(a):
    # Round to nearest even, then keep the high 16 bits.
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return u.tobytes()


def block(rng, prefix, out):
    s = D ** -0.5
    out[prefix + "input_layernorm.weight"] = 1 + 0.1 * rng.standard_normal(D)
    out[prefix + "post_attention_layernorm.weight"] = 1 + 0.1 * rng.standard_normal(D)
    out[prefix + "self_attn.q_proj.weight"] = s * rng.standard_normal((HEADS * HD, D))
    out[prefix + "self_attn.k_proj.weight"] = s * rng.standard_normal((KV * HD, D))
    out[prefix + "self_attn.v_proj.weight"] = s * rng.standard_normal((KV * HD, D))
    out[prefix + "self_attn.o_proj.weight"] = (HEADS * HD) ** -0.5 * rng.standard_normal((D, HEADS * HD))
    out[prefix + "mlp.gate_proj.weight"] = s * rng.standard_normal((F, D))
    out[prefix + "mlp.up_proj.weight"] = s * rng.standard_normal((F, D))
    out[prefix + "mlp.down_proj.weight"] = F ** -0.5 * rng.standard_normal((D, F))


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures",
                                                                     "models", "llama_mtp")
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(20261203)
    t = {"model.embed_tokens.weight": rng.standard_normal((V, D)),
         "model.norm.weight": 1 + 0.1 * rng.standard_normal(D),
         "lm_head.weight": 2 * D ** -0.5 * rng.standard_normal((V, D))}
    for layer in range(L):
        block(rng, "model.layers.%d." % layer, t)
    p = "model.layers.%d." % L  # the module
    t[p + "enorm.weight"] = 1 + 0.1 * rng.standard_normal(D)
    t[p + "hnorm.weight"] = 1 + 0.1 * rng.standard_normal(D)
    t[p + "eh_proj.weight"] = (2 * D) ** -0.5 * rng.standard_normal((D, 2 * D))
    t[p + "shared_head.norm.weight"] = 1 + 0.1 * rng.standard_normal(D)
    block(rng, p, t)
    header, blobs, offset = {}, [], 0
    for name in sorted(t):
        b = bf16_bytes(t[name])
        header[name] = {"dtype": "BF16", "shape": list(t[name].shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(os.path.join(out_dir, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    config = {"architectures": ["LlamaForCausalLM"], "vocab_size": V, "hidden_size": D, "intermediate_size": F,
              "num_hidden_layers": L, "num_attention_heads": HEADS, "num_key_value_heads": KV, "head_dim": HD,
              "hidden_act": "silu", "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 256,
              "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": False, "num_nextn_predict_layers": 1}
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
