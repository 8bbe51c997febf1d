"""Shared benchmark helpers: timing a compiled function, peak memory, JSON output."""
from __future__ import annotations

import json
import resource
import time

import jax


def time_fn(fn, *args, warmup: int = 2, iters: int = 10) -> float:
    """Median seconds per call of an already-compiled function (results are blocked on)."""
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def emit(result: dict) -> None:
    """Every benchmark ends with one JSON object on its last line of output."""
    print(json.dumps(result, sort_keys=True))
