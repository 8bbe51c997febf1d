"""Measure this machine's float32 and bfloat16 matmul FLOP/s: the denominator of model FLOPs
utilisation in every other benchmark.

    python benchmarks/matmul_peak.py [--size 2048] [--iters 10]

The best of a few square sizes is reported, since the peak is what a perfectly efficient model
step could reach on this machine.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from benchmarks.common import emit, time_fn  # noqa: E402


def matmul_flops_per_s(size: int, dtype, iters: int) -> float:
    a = jax.random.normal(jax.random.key(0), (size, size), dtype)
    b = jax.random.normal(jax.random.key(1), (size, size), dtype)
    fn = jax.jit(lambda x, y: x @ y).lower(a, b).compile()
    seconds = time_fn(fn, a, b, iters=iters)
    return 2 * size**3 / seconds


def measure(sizes=(1024, 2048), iters: int = 10) -> dict:
    result = {'backend': jax.default_backend(), 'device_kind': jax.devices()[0].device_kind,
              'devices': jax.device_count()}
    for name, dtype in (('float32', jnp.float32), ('bfloat16', jnp.bfloat16)):
        best = max(matmul_flops_per_s(s, dtype, iters) for s in sizes)
        result[f'{name}_flops_per_s'] = best
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--size', type=int, nargs='*', default=[1024, 2048])
    parser.add_argument('--iters', type=int, default=10)
    args = parser.parse_args()
    result = measure(tuple(args.size), args.iters)
    for key in ('float32', 'bfloat16'):
        print(f'{key}: {result[f"{key}_flops_per_s"] / 1e9:.1f} GFLOP/s')
    emit(result)


if __name__ == '__main__':
    main()
