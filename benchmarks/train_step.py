"""Benchmark the full train step of any task on this machine.

    python benchmarks/train_step.py --task trainer.examples.lm:build_task \
        --config configs/examples/lm.py [--config.train.global_batch=32 ...]

Reports examples/s, step time, model FLOPs per example (analytic when the task gives it, and
XLA's cost analysis), model FLOPs utilisation against the measured matmul peak, compile time and
peak memory. The model benchmarks (mreserve_step.py, hero_step.py) call `measure_step`.
"""
from __future__ import annotations

import importlib
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import emit, peak_rss_bytes, time_fn  # noqa: E402
from trainer.compile import compiler_options  # noqa: E402


def _step_parts(config, task, devices):
    from trainer import mesh as mesh_lib
    from trainer.loop import batch_shardings
    from trainer.optim import make_optimizer
    from trainer.state import state_shardings
    from trainer.step import make_train_step

    rules = mesh_lib.rules_from_config(config.mesh.rules)
    mesh = mesh_lib.build_mesh(config.mesh, devices)
    optimizer, schedule = make_optimizer(config.optim, config.train.steps)
    abstract, shardings = state_shardings(task, optimizer, mesh, rules)
    bshard = batch_shardings(task, mesh, rules)
    step_fn = make_train_step(task, optimizer, config.train.micro_batches, False, schedule,
                              config.train.accumulate, rules)
    jitted = jax.jit(step_fn, in_shardings=(shardings, bshard, mesh_lib.replicated(mesh)),
                     out_shardings=(shardings, mesh_lib.replicated(mesh)), donate_argnums=0,
                     compiler_options=compiler_options(config.train.compiler_options,
                                                       jax.default_backend()))
    return mesh, rules, optimizer, abstract, bshard, jitted


def compile_step(config, task, devices=None) -> dict:
    """Compile the train step on abstract inputs only (nothing is allocated or run): compile
    time, XLA's FLOPs and XLA's memory estimate. For models too big to run here."""
    mesh, _, _, abstract, bshard, jitted = _step_parts(config, task, devices)
    batch = {k: jax.ShapeDtypeStruct(spec.shape, spec.dtype, sharding=bshard[k])
             for k, spec in task.batch_spec.items()}
    rng = jax.eval_shape(lambda: jax.random.key(1))
    start = time.perf_counter()
    with jax.set_mesh(mesh):
        lowered = jitted.lower(abstract, batch, rng)
        lower_s = time.perf_counter() - start
        compiled = lowered.compile()
    total_s = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    memory = compiled.memory_analysis()
    return {'task': task.name, 'compile_time_s': total_s, 'lower_time_s': lower_s,
            'flops_per_example_xla': (float(cost.get('flops', 0.0)) if cost else 0.0)
            / config.train.global_batch,
            'flops_per_example_analytic': task.flops_per_example,
            'xla_temp_bytes': getattr(memory, 'temp_size_in_bytes', None),
            'xla_argument_bytes': getattr(memory, 'argument_size_in_bytes', None),
            'global_batch': config.train.global_batch, 'devices': mesh.devices.size}


def measure_step(config, task, peak_flops_per_s: float | None = None, iters: int = 5,
                 devices=None, warmup: int = 2, peak_fn=None, block: int = 1) -> dict:
    """Compile and time one optimizer step of `task` under `config` (no checkpoints, no I/O).

    `peak_fn() -> FLOP/s`, when given, re-measures the matmul peak around every timed unit
    (see above); otherwise `mfu` is against `peak_flops_per_s`. A timed unit is `block`
    steps run back to back, as the training loop runs them (dispatch of the next step
    overlaps the current one); the step time is the unit's time / `block`.
    """
    from trainer.state import create_state

    mesh, rules, optimizer, abstract, bshard, jitted = _step_parts(config, task, devices)
    state, _, _ = create_state(task, optimizer, mesh, rules, jax.random.key(0))
    host = next(task.train_batches(0, 0, 1))
    batch = {k: jax.device_put(np.asarray(host[k], spec.dtype), bshard[k])
             for k, spec in task.batch_spec.items()}
    rng = jax.random.key(1)
    start = time.perf_counter()
    with jax.set_mesh(mesh):
        compiled = jitted.lower(abstract, batch, rng).compile()
    compile_s = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    xla_flops = float(cost.get('flops', 0.0)) if cost else 0.0
    memory = compiled.memory_analysis()

    holder = {'state': state}

    def run():
        for _ in range(block):
            holder['state'], metrics = compiled(holder['state'], batch, rng)
        return metrics

    examples = config.train.global_batch
    analytic = task.flops_per_example
    # Model FLOPs: the analytic count (forward + backward) when the task gives one, else XLA's.
    model_flops = analytic * examples if analytic else xla_flops
    mfus = []
    with jax.set_mesh(mesh):
        if peak_fn is None:
            step_s = time_fn(run, warmup=warmup, iters=iters) / block
        else:
            # On a shared machine: the peak is re-measured right before and after every timed
            # unit, and the MFU is the median of the per-unit ratios.
            time_fn(run, warmup=0, iters=warmup)
            times, peaks = [], []
            for _ in range(iters):
                before = peak_fn()
                times.append(time_fn(run, warmup=0, iters=1) / block)
                peaks.append((before + peak_fn()) / 2)
                mfus.append(model_flops / times[-1] / peaks[-1])
            step_s = statistics.median(times)
            peak_flops_per_s = statistics.median(peaks)
    result = {
        'task': task.name,
        'examples_per_s': examples / step_s,
        'step_time_s': step_s,
        'flops_per_example': model_flops / examples,
        'flops_per_example_analytic': analytic,
        'flops_per_example_xla': xla_flops / examples,
        'compile_time_s': compile_s,
        'peak_memory_bytes': peak_rss_bytes(),
        'xla_temp_bytes': getattr(memory, 'temp_size_in_bytes', None),
        'xla_argument_bytes': getattr(memory, 'argument_size_in_bytes', None),
        'global_batch': examples,
        'devices': mesh.devices.size,
        'steps_per_timed_unit': block,
    }
    if peak_flops_per_s:
        result['matmul_peak_flops_per_s'] = peak_flops_per_s
        result['mfu'] = (statistics.median(mfus) if mfus
                         else model_flops / step_s / peak_flops_per_s)
    if mfus:
        result['step_times_s'], result['matmul_peaks_flops_per_s'] = times, peaks
    return result


def load_builder(spec: str):
    module, name = spec.split(':')
    return getattr(importlib.import_module(module), name)


def main():
    from absl import flags
    from ml_collections import config_flags

    from benchmarks.matmul_peak import measure
    flags.DEFINE_string('task', 'trainer.examples.lm:build_task', 'module:function -> Task')
    config_flags.DEFINE_config_file('config', 'configs/examples/lm.py')
    flags.FLAGS(sys.argv)
    config = flags.FLAGS.config
    peak = measure()['float32_flops_per_s']
    result = measure_step(config, load_builder(flags.FLAGS.task)(config), peak)
    emit(result)


if __name__ == '__main__':
    main()
