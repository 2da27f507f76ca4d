#!/usr/bin/env python3
"""Golden values for the optimizer (tests/host/test_optim.cpp): torch's own
AdamW and clip_grad_norm_ on small fp32 tensors, step by step.

Four tensors in two parameter groups (three matrices decayed, a bias not),
three steps of random gradients (the first two scaled so that clipping acts,
the third small enough that it does not), torch.optim.AdamW with betas
(0.9, 0.95), eps 1e-8, weight decay 0.1, lr 0.05 (a large one: the steps
move the weights visibly), clip_grad_norm_(1.0) before each step. Written:
the initial weights, each step's gradients (before clipping), the norm
clip_grad_norm_ returned, and the weights, exp_avg and exp_avg_sq after it.

    python3 scripts/make_optim_fixture.py [OUT]   (default tests/fixtures/optim/adamw.json)
"""
import json
import os
import sys

import torch


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures",
                                                             "optim", "adamw.json")
    torch.manual_seed(20261207)
    shapes = {"w1": (6, 10), "b1": (10,), "w2": (5, 3), "emb": (40, 8)}
    params = {k: torch.nn.Parameter(torch.randn(*s) * 0.5) for k, s in shapes.items()}
    decayed = [params[k] for k in ("w1", "w2", "emb")]
    hyper = dict(lr=0.05, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, max_norm=1.0)
    opt = torch.optim.AdamW([{"params": decayed}, {"params": [params["b1"]], "weight_decay": 0.0}],
                            lr=hyper["lr"], betas=hyper["betas"], eps=hyper["eps"], weight_decay=hyper["weight_decay"])
    flat = lambda t: [float(x) for x in t.detach().reshape(-1)]
    fx = {"hyper": hyper, "shapes": {k: list(s) for k, s in shapes.items()}, "decay": {"w1": 1, "b1": 0, "w2": 1, "emb": 1},
          "order": list(shapes), "initial": {k: flat(p) for k, p in params.items()}, "steps": [],
          "torch": torch.__version__}
    for step, scale in enumerate((3.0, 1.5, 0.01)):
        grads = {k: torch.randn(*s) * scale for k, s in shapes.items()}
        for k, p in params.items():
            p.grad = grads[k].clone()
        norm = torch.nn.utils.clip_grad_norm_(list(params.values()), hyper["max_norm"])
        opt.step()
        st = {k: opt.state[p] for k, p in params.items()}
        fx["steps"].append({"grads": {k: flat(g) for k, g in grads.items()}, "norm": float(norm),
                            "params": {k: flat(p) for k, p in params.items()},
                            "exp_avg": {k: flat(st[k]["exp_avg"]) for k in params},
                            "exp_avg_sq": {k: flat(st[k]["exp_avg_sq"]) for k in params}})
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(fx, f, separators=(",", ":"))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
