#!/usr/bin/env python3
"""A checkpoint tokenless-train saved loads in transformers and gives
tokenless-run's logits (issue 25's check; run by hand: it needs torch and
transformers, which the tests never import).

For each family's training fixture (tests/fixtures/train/<family>), it trains
a few steps with tokenless-train --save, loads the folder with
AutoModelForCausalLM.from_pretrained, and compares its logits on the first
32 data ids with tokenless-run --device cpu --logits on the same folder.
The BLT fixtures (blt, blt_k4) train on their data as bytes (--bytes-file)
and compare the logits of the first 24 bytes' ids (tokenless-run
--ids-list: the ids as given, no BOS, as the trainer reads them).

    python3 scripts/check_train_checkpoint.py BUILD_DIR [--steps N]
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile

import torch
from transformers import AutoModelForCausalLM


def load_npy(path):
    b = open(path, "rb").read()
    n = struct.unpack("<H", b[8:10])[0]
    h = b[10:10 + n].decode()
    shape = tuple(int(x) for x in h.split("(")[1].split(")")[0].split(",") if x.strip())
    return torch.frombuffer(bytearray(b[10 + n:]), dtype=torch.float32).reshape(shape)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    train = os.path.join(args.build, "examples", "tokenless-train")
    run = os.path.join(args.build, "examples", "tokenless-run-cpu")
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for family in ("llama", "mistral", "mixtral", "phi3"):
            fixture = os.path.join(root, "tests", "fixtures", "train", family)
            data = json.load(open(os.path.join(fixture, "train.json")))["data"]
            ids = os.path.join(tmp, family + ".ids")
            open(ids, "w").write(" ".join(map(str, data)))
            out = os.path.join(tmp, family)
            subprocess.run([train, "--model", fixture, "--ids", ids, "--steps", str(args.steps), "--batch-size", "2",
                            "--seq-len", "16", "--lr", "3e-3", "--save", out], check=True, capture_output=True)
            prompt = data[:32]
            npy = os.path.join(tmp, family + ".npy")
            subprocess.run([run, "--model", out, "--ids-list", ",".join(map(str, prompt)), "--max-new-tokens", "1",
                            "--device", "cpu", "--logits", npy], check=True, capture_output=True)
            model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
            with torch.no_grad():
                want = model(torch.tensor([prompt])).logits[0]
            got = load_npy(npy)
            err = (got - want).abs().max().item() / want.abs().max().item()
            # the initial model's logits differ: the save holds the trained weights
            base = AutoModelForCausalLM.from_pretrained(fixture, dtype=torch.float32).eval()
            with torch.no_grad():
                moved = (base(torch.tensor([prompt])).logits[0] - want).abs().max().item()
            print(f"{family}: trained {args.steps} steps; transformers' logits of the save vs tokenless-run's: "
                  f"max error {err:.2e} of the largest (the untrained model's differ by {moved:.3f})")
            assert err < 1e-5 and moved > 1e-3, (err, moved)
            worst = max(worst, err)
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("blt", "blt_k4"):
            fixture = os.path.join(root, "tests", "fixtures", "train", name)
            data = json.load(open(os.path.join(fixture, "train.json")))["data"]
            raw = os.path.join(tmp, name + ".bytes")
            open(raw, "wb").write(bytes(x - 4 for x in data))
            out = os.path.join(tmp, name)
            subprocess.run([train, "--model", fixture, "--bytes-file", raw, "--steps", str(args.steps), "--batch-size",
                            "2", "--seq-len", "24", "--lr", "3e-3", "--save", out], check=True, capture_output=True)
            prompt = data[:24]
            npy = os.path.join(tmp, name + ".npy")
            subprocess.run([run, "--model", out, "--ids-list", ",".join(map(str, prompt)), "--max-new-tokens", "1",
                            "--device", "cpu", "--logits", npy], check=True, capture_output=True)
            model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
            with torch.no_grad():
                want = model(torch.tensor([prompt]), use_cache=False).logits[0]
            got = load_npy(npy)
            err = (got - want).abs().max().item() / want.abs().max().item()
            base = AutoModelForCausalLM.from_pretrained(fixture, dtype=torch.float32).eval()
            with torch.no_grad():
                moved = (base(torch.tensor([prompt]), use_cache=False).logits[0] - want).abs().max().item()
            print(f"{name}: trained {args.steps} steps on bytes; transformers' logits of the save vs tokenless-run's: "
                  f"max error {err:.2e} of the largest (the untrained model's differ by {moved:.3f})")
            assert err < 1e-5 and moved > 1e-3, (err, moved)
            worst = max(worst, err)
    print(f"ok: every family's save loads in transformers and gives tokenless-run's logits (worst {worst:.2e})")


if __name__ == "__main__":
    sys.exit(main())
