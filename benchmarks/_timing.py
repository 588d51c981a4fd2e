"""Shared timing helper of the benchmark scripts."""
from __future__ import annotations

import time


def best_ms(fn, repeat: int, warmup: int = 2) -> float:
    """Best-of-`repeat` wall time of `fn()` in ms after `warmup` calls (the minimum is robust to
    other processes on the machine; first calls are often several times slower)."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1000
