"""The jitted train and eval steps.

One pure function per step: RNG is `fold_in(seed_rng, step)`, micro-batches are accumulated
inside the step with `lax.scan`, non-finite losses or gradients are flagged (and optionally
skipped) inside the step so the host can stop without ever writing a bad state.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from trainer.state import TrainState
from trainer.task import Task


def _split_micro(batch, micro_batches: int):
    """(B, ...) -> (m, B/m, ...) such that each device's rows stay on that device.

    Rows are interleaved (micro-batch i takes rows i, i+m, ...), which is a local transpose when
    the example axis is sharded in contiguous blocks of a multiple of m rows.
    """
    def split(x):
        x = x.reshape((x.shape[0] // micro_batches, micro_batches) + x.shape[1:])
        return jnp.moveaxis(x, 1, 0)
    return jax.tree.map(split, batch)


def with_rules(fn, rules):
    """Run `fn` with flax's logical axis rules set, so `nn.with_logical_constraint` inside
    the model constrains activations onto the mesh (without rules it silently does nothing)."""
    if rules is None:
        return fn

    def wrapped(*args, **kwargs):
        with nn.logical_axis_rules(rules):
            return fn(*args, **kwargs)
    return wrapped


def make_train_step(task: Task, optimizer: optax.GradientTransformation, micro_batches: int,
                    skip_nonfinite: bool, schedule: optax.Schedule | None = None,
                    accumulate: str = 'mean', rules=None):
    """Returns step(state, batch, seed_rng) -> (state, metrics).

    With micro-batches the gradients are averaged (`accumulate='mean'`, the same update as one
    big batch) or summed (`'sum'`, as HERO's original loop did); loss and metrics are averaged.
    """
    grad_fn = jax.value_and_grad(with_rules(task.loss, rules), has_aux=True)

    def step(state: TrainState, batch, seed_rng):
        rng = jax.random.fold_in(seed_rng, state.step)
        if micro_batches == 1:
            (loss, metrics), grads = grad_fn(state.params, batch, rng, state.step)
        else:
            micro = _split_micro(batch, micro_batches)

            def add_micro_batch(carry, xs):
                index, mb = xs
                (mb_loss, m), g = grad_fn(state.params, mb, jax.random.fold_in(rng, index),
                                          state.step)
                acc_g, acc_l, acc_m = carry
                return (jax.tree.map(jnp.add, acc_g, g), acc_l + mb_loss,
                        jax.tree.map(jnp.add, acc_m, m)), None

            zeros_g = jax.tree.map(jnp.zeros_like, state.params)
            shapes = jax.eval_shape(grad_fn, state.params, jax.tree.map(lambda x: x[0], micro),
                                    rng, state.step)
            zeros_m = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes[0][1])
            (grads, loss, metrics), _ = jax.lax.scan(
                add_micro_batch, (zeros_g, jnp.zeros((), jnp.float32), zeros_m),
                (jnp.arange(micro_batches), micro))
            scale = 1.0 / micro_batches
            if accumulate == 'mean':
                grads = jax.tree.map(lambda g: g * scale, grads)
            loss = loss * scale
            metrics = jax.tree.map(lambda m: m * scale, metrics)

        grad_norm = optax.global_norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = TrainState(step=state.step + 1, params=params, opt_state=opt_state)
        if skip_nonfinite:
            new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state,
                                     state.replace(step=state.step + 1))
        metrics = dict(metrics, loss=loss, grad_norm=grad_norm,
                       nonfinite=jnp.logical_not(finite).astype(jnp.int32))
        if schedule is not None:
            metrics['lr'] = schedule(state.step)
        return new_state, metrics

    return step


def make_eval_step(task: Task, rules=None):
    """Returns eval(params, batch, rng) -> metrics."""
    if task.eval_metrics is not None:
        return with_rules(task.eval_metrics, rules)

    def evaluate(params, batch, rng):
        loss, metrics = task.loss(params, batch, rng, jnp.zeros((), jnp.int32))
        return dict(metrics, loss=loss)
    return with_rules(evaluate, rules)
