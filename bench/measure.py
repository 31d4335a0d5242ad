"""Measurement for the benchmarks: repeated timings, the machine, the matmul FLOP rate, tables.

Every benchmark reports min / median / max over repeats measured side by side in one run,
and the matmul FLOP rate of the same run, so a ratio can be read against what the
hardware gives at that moment (2 shared cores move by tens of percent between runs).
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable

import torch


def timed(fn: Callable[[], object]) -> float:
    """Wall seconds of one call (CUDA work is waited for)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t


def spread(values: list[float]) -> tuple[float, float, float]:
    return min(values), statistics.median(values), max(values)


def fmt(values: tuple[float, float, float], digits: int = 1) -> str:
    lo, mid, hi = values
    return f"{mid:.{digits}f} [{lo:.{digits}f}-{hi:.{digits}f}]"


def matmul_gflops(n: int = 512, device: str = "cpu", seconds: float = 0.5) -> float:
    """Measured float32 GEMM rate (n x n @ n x n) on ``device`` with the current thread count."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    reps, elapsed = 0, 0.0
    while elapsed < seconds:
        elapsed += timed(lambda: [a @ b for _ in range(10)])
        reps += 10
    return 2 * n**3 * reps / elapsed / 1e9


def machine() -> str:
    """CPU model, visible cores, torch threads and (if any) the GPU, as one line."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (f"{cpu}, {os.cpu_count()} cores visible, torch {torch.__version__} "
            f"with {torch.get_num_threads()} thread(s){gpu}")


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: " | ".join(str(c).ljust(w) for c, w in zip(r, widths))
    return "\n".join([line(header), "-+-".join("-" * w for w in widths), *map(line, rows)])


def preamble(title: str, device: str = "cpu") -> None:
    print(f"[lrservice] {title}")
    print(f"[lrservice] machine: {machine()}")
    n = 512 if device == "cpu" else 4096
    print(f"[lrservice] matmul {n}x{n} fp32 on {device}: {matmul_gflops(n, device):.1f} GFLOP/s (this run)")
