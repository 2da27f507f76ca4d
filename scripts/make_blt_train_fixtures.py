#!/usr/bin/env python3
"""Golden fixtures for BLT's training (issue 25), from transformers'
BltForCausalLM and torch autograd.

Two tiny random models, stored in fp32 (config.json, model.safetensors),
entropy patching with the entropy model frozen (BLT trains it apart), and
head dims the kernels' attention has (64, 128):

  blt     k 2; encoder d 64 (one head, 1 layer, window 8); global d 64 (2
          layers, the k·d_e → d_g projection); decoder d 64 (2 layers,
          cross-attention before every layer); n-grams 3-5, two hash functions
  blt_k4  k 4; encoder d 64 (2 layers, cross-attention after every layer:
          only the last one's reaches the loss); global d 128 (one head, 1
          layer, projected from 256); decoder d 64 (cross-attention before
          layer 0 only); no windows; n-grams 3-8, one hash function;
          max_patch_length 4

The threshold sits in the widest gap between the entropy model's values
over every training row (near the 2/3 quantile: about a third of the
positions above it), so that no patch hangs on a rounding; train.json
records the gap. The data is a fixed
English text as BLT ids (byte + 4, no BOS), and the batches are the
trainer's documented ones (make_train_fixtures.py), B = 2 rows of L = 24
predictions, A = 2 micro-batches. Each row is its own sequence, run alone
(batch 1: transformers patches a batch's rows apart and pads the shorter
ones, which changes nothing but costs a mask): the micro-batch's loss is
the mean of its rows' mean cross-entropies (= the mean over its B·L
predictions). Written to tests/fixtures/train/<name>/:

  grads.safetensors       every trained parameter's gradient of step 0's loss
                          (transformers' names; the patcher's are absent)
  grads_bf16.safetensors  the same from the model in bf16 (the naive
                          same-precision run; stored bf16, as computed). The
                          bf16 runs take the fp32 entropy model's patches
  after3.safetensors      every trained parameter after three AdamW steps
                          with clipping (1-D parameters undecayed)
  after3_bf16.safetensors the three steps in naive mixed precision
  train.json              the data, the recipe, step 0's micro-batch losses
                          and patch lengths, each step's loss and norm (fp32
                          and mixed), versions

Tests read only the committed files; this script needs torch, transformers
and safetensors (PyPI) and is run by hand:

  python3 scripts/make_blt_train_fixtures.py [OUT_DIR]   (default tests/fixtures/train)
"""
import json
import os
import sys

import numpy as np

import torch
import transformers
from safetensors.torch import save_file
from transformers import BltConfig, BltForCausalLM

sys.path.insert(0, os.path.dirname(__file__))
from make_train_fixtures import adamw, batch  # noqa: E402

TEXT = (b"Byte latent transformers read raw bytes. An entropy model cuts them into patches where the next byte "
        b"is hard to guess; a local encoder pools each patch, a global transformer runs over patches, and a "
        b"local decoder turns patches back into bytes. ")
HYPER = dict(lr=3e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, clip=1.0, batch_size=2, seq_len=24,
             grad_accum=2, steps=3, schedule="constant")


def configs():
    yield "blt", dict(
        cross_attn_k=2, local_attention_window_len=8, max_patch_length=None,
        encoder_hash_byte_group_size=[3, 4, 5], encoder_hash_byte_group_nb_functions=2,
        encoder_hash_byte_group_vocab=61,
        patcher_config=dict(hidden_size=64, num_attention_heads=1, num_hidden_layers=1, intermediate_size=128,
                            sliding_window=6),
        encoder_config=dict(hidden_size=64, num_attention_heads=1, num_hidden_layers=1, intermediate_size=128,
                            cross_attn_k=2, hidden_size_global=64, cross_attn_all_layers=False),
        global_config=dict(hidden_size=64, num_attention_heads=1, num_hidden_layers=2, intermediate_size=128),
        decoder_config=dict(hidden_size=64, num_attention_heads=1, num_hidden_layers=2, intermediate_size=128,
                            cross_attn_k=2, hidden_size_global=64, cross_attn_all_layers=True))
    yield "blt_k4", dict(
        cross_attn_k=4, local_attention_window_len=None, max_patch_length=4,
        encoder_hash_byte_group_size=[3, 4, 5, 6, 7, 8], encoder_hash_byte_group_nb_functions=1,
        encoder_hash_byte_group_vocab=53,
        patcher_config=dict(hidden_size=64, num_attention_heads=1, num_hidden_layers=1, intermediate_size=128,
                            sliding_window=None),
        encoder_config=dict(hidden_size=64, num_attention_heads=1, num_hidden_layers=2, intermediate_size=128,
                            cross_attn_k=4, hidden_size_global=128, cross_attn_all_layers=True),
        global_config=dict(hidden_size=128, num_attention_heads=1, num_hidden_layers=1, intermediate_size=256),
        decoder_config=dict(hidden_size=64, num_attention_heads=1, num_hidden_layers=2, intermediate_size=128,
                            cross_attn_k=4, hidden_size_global=128, cross_attn_all_layers=False))


def make_model(name, kw, data, out):
    """A random model whose threshold sits in the widest gap between the
    entropy model's values over every training row (each row a sequence of
    its own, as the trainer patches it), about a third of them above: no
    row's patches hang on a rounding. Returns that gap."""
    torch.manual_seed(4321 if name == "blt" else 77)
    cfg = BltConfig(vocab_size=260, patching_mode="entropy", patch_in_forward=True, patch_size=4,
                    patching_threshold=0.0, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                    tie_word_embeddings=False, **kw)
    model = BltForCausalLM(cfg).eval()
    h = HYPER
    B, L, A = h["batch_size"], h["seq_len"], h["grad_accum"]
    values = []
    with torch.no_grad():
        for s in range(h["steps"]):
            for m in range(A):
                rows = batch(data, s, m, B, L, A)
                for r in range(B):
                    ent, _, _ = model.model.patcher(rows[r:r + 1, :L], patch_size=None)
                    values += ent[0].double().numpy()[:-1].tolist()  # the last position cuts nothing
    v = np.sort(np.array(values))
    cut = int(len(v) * 2 / 3)
    _, i = max((v[j + 1] - v[j], j) for j in range(cut - 12, cut + 12))
    model.config.patching_threshold = float((v[i] + v[i + 1]) / 2)
    model.save_pretrained(out)
    return float(v[i + 1] - v[i])


def trained(model):
    """The trained parameters: all but the entropy model's, and but the
    encoder's cross-attentions before its last when it has one a layer
    (cross_attn_all_layers: only the last one's output reaches the loss; torch
    gives them no gradient and AdamW skips them)."""
    c = model.config
    unused = set()
    if c.encoder_config.cross_attn_all_layers:
        unused = {f"model.local_encoder.cross_attn_layers.{i}." for i in range(c.encoder_config.num_hidden_layers - 1)}
    return {k: p for k, p in model.named_parameters()
            if not k.startswith("model.patcher.") and not any(k.startswith(u) for u in unused)}


def patch_lengths(patcher_model, ids):
    """The fp32 entropy model's patches of a row: every run (bf16 too) uses
    these, as the frozen entropy model is not what the bf16 runs measure."""
    with torch.no_grad():
        _, pl, _ = patcher_model.model.patcher(ids, patch_size=patcher_model.config.patch_size,
                                              threshold=patcher_model.config.patching_threshold,
                                              max_patch_length=patcher_model.config.max_patch_length,
                                              patching_batch_size=1, device=ids.device)
    return pl


def step_loss(model, patcher_model, data, step, h, parts=None):
    B, L, A = h["batch_size"], h["seq_len"], h["grad_accum"]
    total = 0.0
    for m in range(A):
        rows = batch(data, step, m, B, L, A)
        loss = 0.0
        lengths = []
        for r in range(B):
            ids = rows[r:r + 1]
            pl = patch_lengths(patcher_model, ids[:, :L])
            logits = model(ids[:, :L], patch_lengths=pl, use_cache=False).logits.float()
            loss = loss + torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[0, 1:]) / B
            lengths.append([int(x) for x in pl[0].tolist()])
        (loss / A).backward()
        total += float(loss) / A
        if parts is not None:
            parts.append({"cross_entropy": float(loss), "patch_lengths": lengths})
    return total


def load(path, dtype):
    model = BltForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="eager").train()
    keep = trained(model)
    for k, p in model.named_parameters():
        p.requires_grad_(k in keep)
    return model


def main():
    out_root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests",
                                                                  "fixtures", "train")
    data = [b + 4 for b in TEXT]
    h = HYPER
    for name, kw in configs():
        out = os.path.join(out_root, name)
        os.makedirs(out, exist_ok=True)
        gap = make_model(name, kw, data, out)
        model = load(out, torch.float32)
        params = trained(model)
        opt = adamw(params, h)
        steps, step0 = [], []
        for s in range(h["steps"]):
            opt.zero_grad(set_to_none=True)
            loss = step_loss(model, model, data, s, h, step0 if s == 0 else None)
            if s == 0:
                save_file({k: p.grad.detach().contiguous() for k, p in params.items()},
                          os.path.join(out, "grads.safetensors"))
            norm = torch.nn.utils.clip_grad_norm_(list(params.values()), h["clip"])
            opt.step()
            steps.append({"loss": loss, "grad_norm": float(norm), "lr": h["lr"]})
        save_file({k: p.detach().contiguous() for k, p in params.items()}, os.path.join(out, "after3.safetensors"))
        # bf16: step 0's gradients, then three naive mixed-precision steps.
        reference = load(out, torch.float32)  # its patcher, for every run's patches
        mb = load(out, torch.bfloat16)
        step_loss(mb, reference, data, 0, h)
        save_file({k: p.grad.detach().contiguous() for k, p in trained(mb).items()},  # bf16, exactly
                  os.path.join(out, "grads_bf16.safetensors"))
        masters = load(out, torch.float32)
        mparams = trained(masters)
        mopt = adamw(mparams, h)
        work = load(out, torch.bfloat16)
        wparams = trained(work)
        bf16_steps = []
        for s in range(h["steps"]):
            with torch.no_grad():
                for k, p in wparams.items():
                    p.copy_(mparams[k])
            work.zero_grad(set_to_none=True)
            loss = step_loss(work, reference, data, s, h)
            for k, p in mparams.items():
                p.grad = wparams[k].grad.float()
            norm = torch.nn.utils.clip_grad_norm_(list(mparams.values()), h["clip"])
            mopt.step()
            bf16_steps.append({"loss": loss, "grad_norm": float(norm), "lr": h["lr"]})
        save_file({k: p.detach().contiguous() for k, p in mparams.items()}, os.path.join(out, "after3_bf16.safetensors"))
        fx = {"architecture": "BltForCausalLM", "threshold_gap": gap, "data": data, "hyper": h,
              "step0_micro_batches": step0, "steps": steps, "bf16_steps": bf16_steps,
              "decayed": sorted(k for k, p in params.items() if p.dim() >= 2),
              "transformers": transformers.__version__, "torch": torch.__version__}
        with open(os.path.join(out, "train.json"), "w") as f:
            json.dump(fx, f, indent=1)
        print(f"{name}: losses {[round(x['loss'], 4) for x in steps]}, norms "
              f"{[round(x['grad_norm'], 3) for x in steps]}, patches {step0[0]['patch_lengths']}, "
              f"{sum(p.numel() for p in params.values())} trained parameters")


if __name__ == "__main__":
    main()
