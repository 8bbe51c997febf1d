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


def matmul_peak_fn(size: int = 2048):
    """-> a function measuring the float32 size x size matmul FLOP/s now (the `mfu`
    denominator; 2048 is where benchmarks/matmul_peak.py finds the peak here)."""
    import jax.numpy as jnp
    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (size, size), jnp.float32)
    matmul = jax.jit(lambda x, y: x @ y).lower(a, b).compile()
    return lambda: 2 * size**3 / time_fn(matmul, a, b, warmup=1, iters=5)


def run_child(script: str, name: str, iters: int) -> dict:
    """Run `script --child name --iters N` in a fresh single-device CPU process (no fake
    devices, the training entry points' process settings of trainer/process_env.py) and
    return the JSON of its last output line."""
    import os
    import subprocess
    import sys
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get('JAX_PLATFORMS', 'cpu'))
    flags = env.get('XLA_FLAGS', '').split()
    env['XLA_FLAGS'] = ' '.join(f for f in flags if 'host_platform_device_count' not in f)
    from trainer.process_env import process_env
    env = process_env(env)  # the entry points' process settings (malloc tunables, XLA:CPU)
    out = subprocess.run([sys.executable, os.path.abspath(script), '--child', name,
                          '--iters', str(iters)], env=env, check=True, capture_output=True,
                         text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])
