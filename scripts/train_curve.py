#!/usr/bin/env python3
"""The "it learns" runs of docs/training.md, on the repository's own docs
(docs/*.md and README.md, concatenated in name order, as bytes), each
initialised at random (--init random --seed 0) and trained by
tokenless-train --device cpu:

  --model llama  a byte-level Llama (examples/train/byte_llama: 3.4M
                 parameters, vocab 256, the byte values as ids), --ids
  --model blt    a small BLT (examples/train/byte_blt: local d 128, global
                 d 256, k 2), --bytes-file; its entropy model is random and
                 its threshold above every entropy, so the patches are
                 static, 4 bytes (max_patch_length)

Writes the losses as JSON and the curve as an SVG.

    python3 scripts/train_curve.py BUILD_DIR [--model llama|blt] [--steps 300] [--out PATH_STEM]
"""
import argparse
import glob
import json
import math
import os
import subprocess
import tempfile


def svg(losses, lrs, title, path):
    W, H, L, R, T, B = 640, 360, 60, 20, 40, 50
    n = len(losses)
    top = math.ceil(max(losses))
    x = lambda i: L + (W - L - R) * i / max(1, n - 1)
    y = lambda v: T + (H - T - B) * (1 - v / top)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="14">{title}</text>']
    for v in range(0, top + 1):
        out.append(f'<line x1="{L}" x2="{W - R}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{L - 8}" y="{y(v) + 4:.1f}" text-anchor="end">{v}</text>')
    for i in range(0, n + 1, max(1, n // 6)):
        out.append(f'<text x="{x(min(i, n - 1)):.1f}" y="{H - B + 18}" text-anchor="middle">{i}</text>')
    out.append(f'<text x="{W / 2}" y="{H - 12}" text-anchor="middle">step</text>')
    out.append(f'<text x="16" y="{H / 2}" text-anchor="middle" transform="rotate(-90 16 {H / 2})">loss (nats a byte)</text>')
    pts = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(losses))
    out.append(f'<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{pts}"/>')
    # the mean over a window of 10 steps: what the noise of single batches hides
    k = 10
    smooth = [sum(losses[max(0, i - k + 1):i + 1]) / len(losses[max(0, i - k + 1):i + 1]) for i in range(n)]
    pts = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(smooth))
    out.append(f'<polyline fill="none" stroke="#d62728" stroke-width="2" points="{pts}"/>')
    out.append(f'<text x="{W - R - 4}" y="{T + 14}" text-anchor="end" fill="#1f77b4">loss of each step\'s batch</text>')
    out.append(f'<text x="{W - R - 4}" y="{T + 30}" text-anchor="end" fill="#d62728">mean of the last 10</text>')
    out.append(f'<text x="{W - R - 4}" y="{T + 46}" text-anchor="end" fill="#555">uniform over 256 bytes: {math.log(256):.2f}</text>')
    out.append("</svg>")
    open(path, "w").write("\n".join(out) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--model", choices=("llama", "blt"), default="llama")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    out = args.out or ("docs/training_curve" if args.model == "llama" else "docs/training_curve_blt")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    files = sorted(glob.glob(os.path.join(root, "docs", "*.md"))) + [os.path.join(root, "README.md")]
    data = b"".join(open(f, "rb").read() for f in files)
    commit = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    opts = ["--steps", str(args.steps), "--batch-size", "8", "--seq-len", "128", "--lr", "2e-3", "--schedule", "cosine",
            "--warmup", "20", "--min-lr", "2e-4", "--weight-decay", "0.1", "--clip", "1.0", "--init", "random",
            "--seed", "0", "--device", "cpu"]
    with tempfile.TemporaryDirectory() as tmp:
        if args.model == "llama":
            path = os.path.join(tmp, "docs.ids")
            open(path, "w").write(" ".join(map(str, data)))
            given = ["--model", os.path.join(root, "examples", "train", "byte_llama"), "--ids", path]
        else:
            path = os.path.join(tmp, "docs.bytes")
            open(path, "wb").write(data)
            given = ["--model", os.path.join(root, "examples", "train", "byte_blt"), "--bytes-file", path]
        r = subprocess.run([os.path.join(args.build, "examples", "tokenless-train")] + given + ["--format", "json"] + opts,
                           check=True, capture_output=True, text=True)
    j = json.loads(r.stdout)
    losses = j["losses"]
    record = {"commit": commit, "bytes": len(data), "files": [os.path.relpath(f, root) for f in files],
              "options": " ".join(opts), "losses": losses, "lrs": j["lrs"], "grad_norms": j["grad_norms"],
              "tokens_per_second": j["tokens_per_second"], "peak_memory_bytes": j["peak_memory_bytes"]}
    open(os.path.join(root, out + ".json"), "w").write(json.dumps(record, indent=1) + "\n")
    name = "byte-level Llama (3.4M)" if args.model == "llama" else "BLT (static 4-byte patches)"
    svg(losses, j["lrs"], f"{name} on the repository's docs, tokenless-train --device cpu ({commit})",
        os.path.join(root, out + ".svg"))
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    print(f"{len(data)} bytes of docs; loss {first:.3f} -> {last:.3f} (means of the first and last 10 steps); "
          f"{j['tokens_per_second']:.0f} tokens/s; peak memory {j['peak_memory_bytes'] / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
