"""The training loop: mesh, born-sharded state, compile once, stream batches, log, checkpoint.

`train(config, workdir, task)` is everything a model package needs: it resumes from the work
directory by itself, stops cleanly on SIGTERM (saving at the next step boundary) and refuses to
write a checkpoint whose state came from a non-finite step.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import time

import jax
import numpy as np
from jax.experimental import multihost_utils

from trainer import mesh as mesh_lib
from trainer import params_io
from trainer.checkpoint import Checkpointer
from trainer.compile import compiler_options
from trainer.config import validate_engine_config
from trainer.errors import ConfigError, NonFiniteError
from trainer.metrics import MetricWriter, Progress
from trainer.optim import make_optimizer
from trainer.state import count_params, create_state, parameter_overview, state_shardings
from trainer.step import make_eval_step, make_train_step
from trainer.task import Task

log = logging.getLogger(__name__)


class _StopSignal:
    """Remembers a SIGTERM (TPU maintenance/preemption notice) until the next step boundary."""

    def __init__(self):
        self.received = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread
            self._previous = None
        return self

    def _handle(self, signum, frame):
        del signum, frame
        log.warning('SIGTERM received: saving a checkpoint at the next step boundary')
        self.received = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def any_process(self) -> bool:
        if jax.process_count() == 1:
            return self.received
        flags = multihost_utils.process_allgather(np.int32(self.received))
        return bool(np.any(flags))


def build_task_from_config(config) -> Task:
    """The Task named by `config.task` ('package.module:function'); the engine imports the
    model package by name only, so trainer/ never depends on a model package."""
    import importlib
    if not config.get('task'):
        raise ConfigError('task', "the config names no task builder ('package.module:function')")
    module, _, function = config.task.partition(':')
    try:
        return getattr(importlib.import_module(module), function)(config)
    except (ImportError, AttributeError) as error:
        raise ConfigError('task', f'cannot load {config.task!r}: {error}') from error


def write_config(config, workdir: str):
    if jax.process_index() != 0:
        return
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
        f.write(config.to_json_best_effort(indent=2, sort_keys=True))


def batch_shardings(task: Task, mesh, rules):
    return {k: mesh_lib.logical_sharding(mesh, rules, spec.logical_axes())
            for k, spec in task.batch_spec.items()}


def to_global(host_batch, shardings, task: Task):
    """Host-local numpy batch -> global jax.Arrays (`make_array_from_process_local_data`)."""
    out = {}
    for key, spec in task.batch_spec.items():
        if key not in host_batch:
            raise KeyError(f'batch from {task.name} has no {key!r} (has {sorted(host_batch)})')
        value = np.asarray(host_batch[key], dtype=spec.dtype)
        out[key] = jax.make_array_from_process_local_data(shardings[key], value, spec.shape)
    return out


def _fetch(metrics) -> dict[str, float]:
    return {k: float(v) for k, v in jax.device_get(metrics).items()}


def train(config, workdir: str, task: Task, devices=None) -> dict:
    """Train `task` for config.train.steps optimizer steps in `workdir`; returns a summary.

    `devices` restricts the mesh to a subset of the devices (default: all of them). With
    `config.train.stop_after` > 0 the run checkpoints and returns at that step, as if it had
    been interrupted there; the schedule still spans `config.train.steps`.
    """
    rules = mesh_lib.rules_from_config(config.mesh.rules)
    mesh = mesh_lib.build_mesh(config.mesh, devices)
    validate_engine_config(config, mesh, rules, task)
    write_config(config, workdir)
    total = int(config.train.steps)
    optimizer, schedule = make_optimizer(config.optim, total)
    init_rng, step_rng = jax.random.split(jax.random.key(config.seed))
    checkpointer = Checkpointer(os.path.join(workdir, 'checkpoints'), config.train.ckpt_every,
                                config.train.keep_ckpts, config.train.async_ckpt)

    abstract, shardings = state_shardings(task, optimizer, mesh, rules)
    restored = checkpointer.restore(abstract) if checkpointer.steps() else None
    if restored is not None:
        start, state, data_state = restored
        log.info('resumed from %s at step %d (data position %s)', checkpointer.directory,
                 start, data_state)
    else:
        state, _, _ = create_state(task, optimizer, mesh, rules, init_rng)
        start = 0
        if config.init_from:
            params = params_io.load_params(config.init_from, abstract.params)
            # the optimizer state starts from the loaded params (decay toward init keeps them)
            with jax.set_mesh(mesh):
                opt_state = jax.jit(optimizer.init, out_shardings=shardings.opt_state)(params)
            state = state.replace(params=params, opt_state=opt_state)
            log.info('initialised parameters from %s', config.init_from)
    log.info('parameters:\n%s', parameter_overview(state.params))

    bshard = batch_shardings(task, mesh, rules)
    step_fn = make_train_step(task, optimizer, config.train.micro_batches,
                              config.train.nonfinite == 'skip', schedule,
                              config.train.accumulate, rules)
    jitted = jax.jit(step_fn, in_shardings=(shardings, bshard, mesh_lib.replicated(mesh)),
                     out_shardings=(shardings, mesh_lib.replicated(mesh)), donate_argnums=0,
                     compiler_options=compiler_options(config.train.compiler_options,
                                                       jax.default_backend()))
    abstract_batch = {k: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=bshard[k])
                      for k, s in task.batch_spec.items()}
    t0 = time.perf_counter()
    with jax.set_mesh(mesh):
        compiled = jitted.lower(abstract, abstract_batch, step_rng).compile()
    compile_s = time.perf_counter() - t0
    memory = compiled.memory_analysis()
    log.info('train step compiled in %.1f s; memory: %s', compile_s, memory)

    writer = MetricWriter(workdir)
    progress = Progress(total, config.train.global_batch, start)
    history: list[dict] = []
    batches = task.train_batches(start, jax.process_index(), jax.process_count())
    pending = None  # (step number after the update, device metrics), fetched one step late

    def settle(item):
        step, device_metrics = item
        metrics = _fetch(device_metrics)
        history.append(dict(metrics, step=step))
        if metrics['nonfinite'] and config.train.nonfinite == 'stop':
            raise NonFiniteError(step, metrics)
        if step % config.train.log_every == 0 or step == total:
            writer.write(step, dict(metrics, **_data_metrics(task)))
            if jax.process_index() == 0:
                log.info(progress.line(step, metrics))
        return metrics

    step = start
    last = min(total, config.train.stop_after) if config.train.stop_after > 0 else total
    stopped_by_signal = False
    completed = False
    try:
        with _StopSignal() as stop, jax.set_mesh(mesh):
            while step < last:
                profiling = config.train.profile_start >= 0
                if profiling and step == config.train.profile_start:
                    jax.profiler.start_trace(os.path.join(workdir, 'profile'))
                batch = to_global(next(batches), bshard, task)
                state, metrics = compiled(state, batch, step_rng)
                step += 1
                if profiling and step == config.train.profile_start + config.train.profile_steps:
                    jax.block_until_ready(state)
                    jax.profiler.stop_trace()
                if pending is not None:
                    settle(pending)
                pending = (step, metrics)
                preempted = stop.any_process()
                if checkpointer.should_save(step) or preempted or step == last:
                    settle(pending)  # never save a state whose step was not finite
                    pending = None
                    checkpointer.save(step, state, {'step': step, 'seed': int(config.seed)},
                                      force=True)
                if (config.train.eval_every and task.eval_batches is not None
                        and step % config.train.eval_every == 0):
                    run_eval(task, state.params, mesh, rules, bshard, writer, step)
                if preempted:
                    stopped_by_signal = True
                    log.warning('stopping at step %d after SIGTERM; restart to resume', step)
                    break
            if pending is not None:
                settle(pending)
        completed = True
    finally:
        _close(checkpointer, writer, quietly=not completed)
    return {'start_step': start, 'final_step': step, 'history': history, 'state': state,
            'compile_s': compile_s, 'num_params': count_params(state.params),
            'preempted': stopped_by_signal}


def _close(checkpointer: Checkpointer, writer: MetricWriter, quietly: bool) -> None:
    """Finish pending checkpoint writes and close the metric files. When the run is already
    failing, errors here (for example a full disk) are logged, not raised, so they never hide
    the original error."""
    for close in (checkpointer.close, writer.close):
        try:
            close()
        except Exception:
            if not quietly:
                raise
            log.exception('while shutting down after an error')


def _data_metrics(task: Task) -> dict[str, float]:
    """The input pipeline's counters (`Task.data_metrics`), summed over the processes (every
    process settles the same steps, so the all-gather is collective)."""
    if task.data_metrics is None:
        return {}
    values = {k: float(v) for k, v in sorted(task.data_metrics().items())}
    if jax.process_count() > 1 and values:
        gathered = multihost_utils.process_allgather(np.asarray(list(values.values()),
                                                                np.float32))
        values = dict(zip(values, np.sum(gathered, axis=0).tolist()))
    return values


def run_eval(task: Task, params, mesh, rules, bshard, writer: MetricWriter, step: int) -> dict:
    """Average the eval metrics over the task's finite eval batches."""
    evaluate = jax.jit(make_eval_step(task, rules))
    rng = jax.random.key(0)
    sums: dict[str, float] = {}
    count = 0
    for host_batch in task.eval_batches(0, jax.process_index(), jax.process_count()):
        metrics = _fetch(evaluate(params, to_global(host_batch, bshard, task), rng))
        for key, value in metrics.items():
            sums[key] = sums.get(key, 0.0) + value
        count += 1
    means = {f'eval/{k}': v / max(count, 1) for k, v in sums.items()}
    writer.write(step, means)
    if jax.process_index() == 0:
        log.info('eval at step %d: %s', step, json.dumps(means))
    return means
