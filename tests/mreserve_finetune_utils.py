"""Helpers for the MERLOT Reserve finetuning tests: tiny configs and a fast in-process
finetuning loop (one low-optimisation compile) over the task's own batches."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mreserve import finetune_sources, finetune_tasks
from trainer.state import init_batch

FAST_COMPILE = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}


def tiny_config(name: str, arg: str = 'variant=tiny'):
    from configs.mreserve import kinetics, tvqa, vcr
    config = {'tvqa': tvqa, 'vcr': vcr, 'kinetics': kinetics}[name].get_config(arg)
    config.train.async_ckpt = False
    return config


def fast_finetune(config, steps: int, lr: float = 1e-3, seed: int = 0, params=None,
                  warmup: int = 0):
    """AdamW on the task loss over the task's training batches -> (params, metrics per step).
    With `warmup` the LR rises linearly over that many steps and gradients are clipped at
    global norm 1."""
    task = finetune_tasks.build_task(config, finetune_tasks.kind_of(config))
    if params is None:
        batch = init_batch(task)
        params = nn.meta.unbox(jax.jit(lambda r: task.init(r, batch),
                                       compiler_options=FAST_COMPILE)(jax.random.key(seed)))
    if warmup:
        schedule = optax.linear_schedule(0.0, lr, warmup)
        optimizer = optax.chain(optax.clip_by_global_norm(1.0),
                                optax.adamw(schedule, b2=0.98, weight_decay=0.01))
    else:
        optimizer = optax.adamw(lr, b2=0.98, weight_decay=0.01)

    def step(p, s, batch, i):
        (loss, metrics), g = jax.value_and_grad(
            lambda q: task.loss(q, batch, jax.random.key(0), i), has_aux=True)(p)
        updates, s = optimizer.update(g, s, p)
        return optax.apply_updates(p, updates), s, dict(metrics, loss=loss)

    state = optimizer.init(params)
    batches = task.train_batches(0, 0, 1)
    first = next(batches)
    compiled = jax.jit(step).lower(params, state, first, jnp.int32(0)).compile(FAST_COMPILE)
    history, batch = [], first
    for i in range(steps):
        params, state, metrics = compiled(params, state, batch, jnp.int32(i))
        history.append({k: float(v) for k, v in metrics.items()})
        batch = next(batches)
    return params, history


def source(config, split='val'):
    return finetune_sources.load_split(config, finetune_tasks.kind_of(config), split)


def assert_finite(history):
    for row in history:
        assert all(np.isfinite(v) for v in row.values()), row
