#!/usr/bin/env python3
"""Compile tier: build one translation unit with nvcc for one or more
architectures, with register spills and local memory as errors, then check
each kernel's registers and shared memory against the budget file.

Several --arch values share one front-end pass: nvcc emits the PTX of the
first (compute_80) once and ptxas assembles it for each, which is what a
fat binary built for those targets from that PTX runs. Only a unit whose code
branches on __CUDA_ARCH__ beyond 800 (the encoder's vector atomics) needs its
own pass per architecture (one --arch a run)."""
import argparse
import re
import subprocess
import sys


def demangle(names):
    if not names:
        return {}
    try:
        out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True).stdout
        return dict(zip(names, out.splitlines()))
    except (OSError, subprocess.CalledProcessError):
        return {n: n for n in names}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nvcc", required=True)
    ap.add_argument("--arch", required=True, action="append", help="e.g. 80, 90 or 90a; repeat for one PTX, several targets")
    ap.add_argument("--source", required=True)
    ap.add_argument("--budget", required=True)
    ap.add_argument("--include", action="append", default=[])
    ap.add_argument("--output", required=True)
    args = ap.parse_args()

    # -cubin: the device pass alone. Its front end parses the whole unit, host
    # code included, and the host pass (a third of the time) adds no check
    # that the gpu tier's build does not make.
    archs = args.arch
    codes = ",".join(f"sm_{a}" for a in archs)
    cmd = [args.nvcc, "-std=c++20", "--expt-relaxed-constexpr", "-O3",
           f"-gencode=arch=compute_{archs[0]},code=[{codes}]",
           "-Xptxas", "-v,-warn-spills,-warn-lmem-usage,-Werror",
           "-cubin" if len(archs) == 1 else "-fatbin", args.source, "-o", args.output]
    for inc in args.include:
        cmd += ["-I", inc]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        print(log)
        print(f"FAIL: nvcc returned {proc.returncode} for {codes} (spills and local memory are errors)")
        return 1

    budgets = []
    for line in open(args.budget):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        pattern, regs, smem = line.rsplit(None, 2)
        budgets.append((re.compile(pattern.strip()), int(regs), int(smem)))

    kernels = {}
    current = None
    for line in log.splitlines():
        m = re.search(r"Compiling entry function '([^']+)' for 'sm_(\w+)'", line)
        if m:
            current = (m.group(1), m.group(2))
            kernels[current] = {"regs": 0, "smem": 0, "stack": 0}
            continue
        m = re.search(r"(\d+) bytes stack frame", line)
        if m and current:
            kernels[current]["stack"] = int(m.group(1))
        m = re.search(r"Used (\d+) registers", line)
        if m and current:
            kernels[current]["regs"] = int(m.group(1))
            s = re.search(r"(\d+) bytes smem", line)
            kernels[current]["smem"] = int(s.group(1)) if s else 0

    names = demangle(sorted({m for m, _ in kernels}))
    failures = 0
    print(f"{'kernel':100} {'arch':>6} {'regs':>5} {'smem':>7}  budget")
    for (mangled, arch), k in sorted(kernels.items(), key=lambda kv: (names[kv[0][0]], kv[0][1])):
        name = names[mangled]
        budget = next(((r, s) for p, r, s in budgets if p.search(name)), None)
        verdict = ""
        if budget is None:
            verdict = "FAIL: no budget entry"
        elif k["regs"] > budget[0] or k["smem"] > budget[1]:
            verdict = f"FAIL: over budget {budget[0]} regs / {budget[1]} B"
        elif k["stack"] > 0:
            verdict = f"FAIL: {k['stack']} bytes of stack frame"
        failures += bool(verdict)
        shown = name if len(name) <= 100 else name[:97] + "..."
        print(f"{shown:100} {'sm_' + arch:>6} {k['regs']:>5} {k['smem']:>7}  {verdict or (f'<= {budget[0]} / {budget[1]}')}")
    missing = set(archs) - {a for _, a in kernels}
    if kernels and missing:
        print(f"FAIL: ptxas compiled nothing for sm_{', sm_'.join(sorted(missing))}")
        return 1
    if not kernels:
        print("FAIL: no kernels were compiled")
        return 1
    print(f"{len(kernels)} kernels, {failures} over budget or unbudgeted")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
