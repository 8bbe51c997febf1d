"""MERLOT Reserve train-step benchmark (issue 3).

    python benchmarks/mreserve_step.py [--repeats 3] [--only tiny,bench,compile]

Configurations:
- `tiny`: the tiny variant (configs/mreserve/pretrain.py, batch 8, float32);
- `bench`: H=768, 12 heads, 2 layers in each of vision, audio, span and joint, grid 12x20,
  16 segments in 2 groups, lang_seq_len 160, seq_len 640, batch 2, float32;
- `compile_{base,large}_{scan,noscan}`: compile time of the full-depth train step (the
  variant's own dtype and remat, batch 2) with and without `scan_layers`, compiled on abstract
  inputs only (nothing is allocated or run).

Every measurement runs in a fresh single-device CPU process (no fake devices), so compile
caches and peak memory (`peak_memory_bytes`, the process's peak RSS) are per configuration.
Step measurements time the float32 2048x2048 matmul (benchmarks/matmul_peak.py's peak) in
the same process right before and after every timed unit; `mfu` is the median over units of
model FLOPs / step time / the mean of those two peaks, which follows the load of a shared
machine. A timed unit is one step for `bench` and 10 back-to-back steps for `tiny` (as the
training loop runs them; one ~50 ms tiny step between two ~45 ms matmul probes measures the
probe's aftermath, not the step: single steps vary 0.039-0.116 s, see benchmarks/README.md).
Each configuration is repeated `--repeats` times and the median of every figure is reported
(with the min and max of the step time and peak, since a shared machine makes them noisy).
`flops_per_example` is the analytic count (mreserve/flops.py); `flops_per_example_xla` is
XLA's cost analysis of the compiled step (it also counts non-matmul work, and remat
recomputation when enabled).
The last line of output is one JSON object: {configuration name: figures}.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

STEP_CONFIGS = ('tiny', 'bench')
STEPS_PER_UNIT = {'tiny': 10}   # back-to-back steps per timed unit (see above)
COMPILE_CONFIGS = tuple(f'compile_{v}_{s}' for v in ('base', 'large')
                        for s in ('scan', 'noscan'))


def make_config(name: str):
    from configs.mreserve.pretrain import get_config
    if name == 'tiny':
        config = get_config('variant=tiny')
    elif name == 'bench':
        config = get_config('variant=base,batch=2')
        for key in ('vit_num_layers', 'audio_num_layers', 'span_num_layers',
                    'joint_num_layers'):
            config.model[key] = 2
        config.train.dtype = 'float32'
        config.optim.mu_dtype = 'float32'
    else:
        _, variant, scan = name.split('_')
        config = get_config(f'variant={variant},batch=2,scan_layers={scan == "scan"}')
    config.mesh.data = 1
    return config


def run_one(name: str, iters: int) -> dict:
    """One measurement in this process (the child side)."""
    import jax

    from benchmarks.train_step import compile_step, measure_step
    from mreserve.task import build_task
    config = make_config(name)
    task = build_task(config)
    devices = jax.devices()[:1]
    if name in COMPILE_CONFIGS:
        return compile_step(config, task, devices)
    from benchmarks.common import matmul_peak_fn
    return measure_step(config, task, iters=iters, devices=devices,
                        warmup=1 if name == 'bench' else 2, peak_fn=matmul_peak_fn(),
                        block=STEPS_PER_UNIT.get(name, 1))


def summarise(runs: list[dict]) -> dict:
    out = {}
    for key, value in runs[0].items():
        values = [r[key] for r in runs]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = statistics.median(values)
        else:
            out[key] = value
    for key in ('step_time_s', 'matmul_peak_flops_per_s', 'compile_time_s'):
        if key in runs[0]:
            values = [r[key] for r in runs]
            out[f'{key}_min'], out[f'{key}_max'] = min(values), max(values)
    out['repeats'] = len(runs)
    try:
        out['load_average_1m'] = os.getloadavg()[0]
    except OSError:
        pass
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--only', default='tiny,bench,compile',
                        help='comma-separated: tiny, bench, compile or configuration names')
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--compile-repeats', type=int, default=1)
    parser.add_argument('--iters', type=int, default=3)
    parser.add_argument('--child', default='', help=argparse.SUPPRESS)
    args = parser.parse_args()
    from benchmarks.common import emit, run_child
    if args.child:
        emit(run_one(args.child, args.iters))
        return

    names = []
    for item in args.only.split(','):
        names += list(COMPILE_CONFIGS) if item == 'compile' else [item]
    results = {}
    for name in names:
        repeats = args.compile_repeats if name in COMPILE_CONFIGS else args.repeats
        runs = []
        for i in range(repeats):
            runs.append(run_child(__file__, name, args.iters))
            print(f'{name} run {i}: {json.dumps(runs[-1], sort_keys=True)}', flush=True)
        results[name] = summarise(runs)
    emit(results)


if __name__ == '__main__':
    main()
