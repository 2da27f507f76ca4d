#!/usr/bin/env python3
"""Golden fixtures for training (issue 25), from transformers and torch autograd.

For each family (Llama 3, Mistral with a sliding window, Mixtral with its
load-balancing loss, Phi-3) this builds a tiny random model stored in fp32
(vocab 128, FFN 64; d 128, 2 heads of 64 with 1 KV head, Phi-3 d 192 with
heads of 96, its head dim; 2 layers for Llama and Mixtral, whose balance loss
sums over layers, 1 for Mistral and Phi-3, to keep the files small), a fixed
id sequence as the training data, and records:

  model.safetensors, config.json   the model, as save_pretrained writes it (fp32)
  grads.safetensors                every parameter's gradient of step 0's loss
                                   (transformers' names, fp32)
  grads_bf16.safetensors           the same from the model in bf16 (torch's bf16
                                   autograd, stored as fp32): what a naive
                                   same-precision run gets, for the kernels' bounds
  after3.safetensors               every parameter after three AdamW steps with
                                   clipping (torch.optim.AdamW, clip_grad_norm_)
  after3_bf16.safetensors          the same three steps in naive mixed precision
                                   (fp32 masters and AdamW; each step a bf16 copy
                                   of them runs torch's bf16 autograd and its
                                   gradients are widened): the kernels' bounds;
                                   its losses and norms are train.json's bf16_steps
  train.json                       the data, the batch recipe and hyperparameters,
                                   step 0's loss (cross-entropy and auxiliary
                                   parts), and per step: the loss before the
                                   update, the gradient norm before clipping,
                                   the learning rate; versions

The batches are the trainer's documented ones (`tokenless-train`): row r of
step s, micro-batch m, is the L + 1 consecutive ids starting at
((s*A + m)*B + r)*L of the data, wrapping around its end; the model reads the
first L and predicts the next L; the loss is the mean cross-entropy over the
B*L predictions (micro-batch losses averaged over A) plus, for Mixtral with
output_router_logits, router_aux_loss_coef times the load-balancing loss, as
transformers' MixtralForCausalLM adds it. AdamW's groups: 1-D parameters (the
norm weights) are not decayed. Schedule: constant.

Tests read only the committed files; this script needs torch, transformers
and safetensors from PyPI and is run by hand:

  python3 scripts/make_train_fixtures.py [OUT_DIR]   (default tests/fixtures/train)
"""
import json
import os
import sys

import torch
import transformers
from safetensors.torch import save_file
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, MixtralConfig,
                          MixtralForCausalLM, Phi3Config, Phi3ForCausalLM)

VOCAB = 128
DATA_LEN = 203  # not a multiple of L: the recipe wraps around the end
HYPER = dict(lr=3e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, clip=1.0, batch_size=2, seq_len=16,
             grad_accum=2, steps=3, schedule="constant")
COMMON = dict(vocab_size=VOCAB, num_attention_heads=2, num_key_value_heads=1,
              intermediate_size=64, max_position_embeddings=128, rms_norm_eps=1e-5, tie_word_embeddings=False,
              bos_token_id=1, eos_token_id=2, pad_token_id=0, initializer_range=0.08)


def families():
    yield "llama", LlamaForCausalLM, LlamaConfig(
        hidden_size=128, head_dim=64, num_hidden_layers=2, rope_theta=500000.0,
        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                          original_max_position_embeddings=64), **COMMON)
    yield "mistral", MistralForCausalLM, MistralConfig(hidden_size=128, head_dim=64, num_hidden_layers=1, rope_theta=10000.0,
                                                        sliding_window=6, **COMMON)
    yield "mixtral", MixtralForCausalLM, MixtralConfig(hidden_size=128, head_dim=64, num_hidden_layers=2, rope_theta=1e6,
                                                        num_local_experts=4, num_experts_per_tok=2,
                                                        router_aux_loss_coef=0.02, output_router_logits=True,
                                                        **COMMON)
    yield "phi3", Phi3ForCausalLM, Phi3Config(hidden_size=192, num_hidden_layers=1, rope_theta=10000.0, resid_pdrop=0.0, embd_pdrop=0.0,
                                              attention_dropout=0.0, original_max_position_embeddings=128, **COMMON)


def batch(data, step, micro, B, L, A):
    """The trainer's documented rows: [B, L + 1] ids."""
    n = len(data)
    rows = []
    for r in range(B):
        start = ((step * A + micro) * B + r) * L
        rows.append([data[(start + i) % n] for i in range(L + 1)])
    return torch.tensor(rows)


def step_loss(model, data, step, h, parts=None):
    """The mean of the A micro-batch losses, each backpropagated (gradients accumulate)."""
    B, L, A = h["batch_size"], h["seq_len"], h["grad_accum"]
    total = 0.0
    for m in range(A):
        ids = batch(data, step, m, B, L, A)
        out = model(ids[:, :L])
        logits = out.logits.float()
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        loss = ce
        aux = None
        if getattr(model.config, "output_router_logits", False):
            aux = out.aux_loss
            loss = ce + model.config.router_aux_loss_coef * aux
        (loss / A).backward()
        total += float(loss) / A
        if parts is not None:
            parts.append({"cross_entropy": float(ce), "aux_loss": None if aux is None else float(aux)})
    return total


def adamw(params, h):
    decayed = [p for p in params.values() if p.dim() >= 2]
    plain = [p for p in params.values() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decayed}, {"params": plain, "weight_decay": 0.0}], lr=h["lr"],
                             betas=h["betas"], eps=h["eps"], weight_decay=h["weight_decay"])


def mixed_precision(cls, out, data, h, path):
    """Three steps the naive mixed-precision way: fp32 masters and AdamW; each
    step copies them into a bf16 model, whose autograd gives the gradients,
    widened to fp32 for the clip and the update."""
    masters = cls.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").train()
    mparams = dict(masters.named_parameters())
    opt = adamw(mparams, h)
    work = cls.from_pretrained(out, dtype=torch.bfloat16, attn_implementation="eager").train()
    wparams = dict(work.named_parameters())
    steps = []
    for s in range(h["steps"]):
        with torch.no_grad():
            for k, p in wparams.items():
                p.copy_(mparams[k])
        work.zero_grad(set_to_none=True)
        loss = step_loss(work, data, s, h)
        for k, p in mparams.items():
            p.grad = wparams[k].grad.float()
        norm = torch.nn.utils.clip_grad_norm_(list(mparams.values()), h["clip"])
        opt.step()
        steps.append({"loss": loss, "grad_norm": float(norm), "lr": h["lr"]})
    save_file({k: p.detach().contiguous() for k, p in mparams.items()}, path)
    return steps


def main():
    out_root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests",
                                                                  "fixtures", "train")
    torch.manual_seed(20261207)
    data = torch.randint(3, VOCAB, (DATA_LEN,)).tolist()
    for name, cls, config in families():
        config._attn_implementation = "eager"
        model = cls(config)
        out = os.path.join(out_root, name)
        os.makedirs(out, exist_ok=True)
        model.save_pretrained(out, safe_serialization=True)
        model = cls.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").train()
        params = dict(model.named_parameters())
        h = HYPER
        opt = adamw(params, h)
        steps = []
        for s in range(h["steps"]):
            opt.zero_grad(set_to_none=True)
            parts = [] if s == 0 else None
            loss = step_loss(model, data, s, h, parts)
            if s == 0:
                save_file({k: p.grad.detach().contiguous() for k, p in params.items()},
                          os.path.join(out, "grads.safetensors"))
                step0 = parts
            norm = torch.nn.utils.clip_grad_norm_(list(params.values()), h["clip"])
            opt.step()
            steps.append({"loss": loss, "grad_norm": float(norm), "lr": h["lr"]})
        save_file({k: p.detach().contiguous() for k, p in params.items()}, os.path.join(out, "after3.safetensors"))
        # The same step 0 in bf16 (the weights rounded, torch's bf16 autograd):
        # the naive same-precision gradients that bound the kernels' error.
        rng = torch.get_rng_state()
        mb = cls.from_pretrained(out, dtype=torch.bfloat16, attn_implementation="eager").train()
        step_loss(mb, data, 0, h)
        save_file({k: p.grad.detach().float().contiguous() for k, p in mb.named_parameters()},
                  os.path.join(out, "grads_bf16.safetensors"))
        bf16_steps = mixed_precision(cls, out, data, h, os.path.join(out, "after3_bf16.safetensors"))
        torch.set_rng_state(rng)
        fx = {"architecture": cls.__name__, "data": data, "hyper": h, "step0_micro_batches": step0, "steps": steps,
              "bf16_steps": bf16_steps,
              "decayed": sorted(k for k, p in params.items() if p.dim() >= 2),
              "transformers": transformers.__version__, "torch": torch.__version__}
        with open(os.path.join(out, "train.json"), "w") as f:
            json.dump(fx, f, indent=1)
        print(f"{name}: losses {[round(x['loss'], 4) for x in steps]}, norms "
              f"{[round(x['grad_norm'], 3) for x in steps]}, {sum(p.numel() for p in params.values())} parameters")


if __name__ == "__main__":
    main()
