"""CUDA-event timing for the side-by-side scripts: the mean of `reps` runs
after a warm-up, each after flushing L2 (a 256 MiB write), as the C++
harness times (benchmarks/harness.cuh)."""
import torch

_flush = None


def timed(fn, reps=10):
    global _flush
    if _flush is None:
        _flush = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
    fn()
    torch.cuda.synchronize()
    total = 0.0
    for _ in range(reps):
        _flush.zero_()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        total += a.elapsed_time(b)
    return total / reps
