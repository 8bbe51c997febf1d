"""Train state, born sharded: parameters and optimizer state never sit whole on one device.

`jax.eval_shape` traces the init to get shapes and logical axis names, the mesh rules turn the
names into shardings, and `jax.jit(init, out_shardings=...)` materialises every shard in place.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from trainer import mesh as mesh_lib
from trainer.task import Task


@struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any


def init_batch(task: Task, examples: int = 1) -> dict:
    """A zero batch with `examples` examples, only used to trace the model's init."""
    return {k: spec.zeros(examples) for k, spec in task.batch_spec.items()}


def _boxed_init(task: Task, optimizer: optax.GradientTransformation):
    batch = init_batch(task)

    def init(rng):
        # No axis rules here: out_shardings place the parameters, and flax would otherwise
        # constrain kernels that DenseGeneral initialises in a flattened shape.
        params = task.init(rng, batch)
        # optax maps over the boxes, so moments inherit the parameters' logical axes.
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          opt_state=optimizer.init(params))
    return init


def state_shardings(task: Task, optimizer, mesh, rules):
    """(abstract unboxed state, shardings) without allocating anything."""
    boxed = jax.eval_shape(_boxed_init(task, optimizer), jax.random.key(0))
    shardings = mesh_lib.tree_shardings(mesh, rules, boxed)
    abstract = nn.unbox(boxed)
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                            abstract, shardings)
    return abstract, shardings


def create_state(task: Task, optimizer, mesh, rules, rng: jax.Array):
    """Initialise the train state directly into its shards."""
    abstract, shardings = state_shardings(task, optimizer, mesh, rules)
    boxed_init = _boxed_init(task, optimizer)
    init = jax.jit(lambda r: nn.unbox(boxed_init(r)), out_shardings=shardings)
    with jax.set_mesh(mesh):
        state = init(rng)
    return state, abstract, shardings


def param_shardings(task: Task, mesh, rules):
    """Shardings and abstract shapes of the parameters alone (for params-only checkpoints)."""
    boxed = jax.eval_shape(lambda r: task.init(r, init_batch(task)), jax.random.key(0))
    shardings = mesh_lib.tree_shardings(mesh, rules, boxed)
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                            nn.unbox(boxed), shardings)
    return abstract, shardings


def count_params(params) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(params))


def parameter_overview(params, max_rows: int = 60) -> str:
    """A table of parameter paths, shapes and sizes, with the total (replaces clu's overview)."""
    rows = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        name = '/'.join(str(getattr(k, 'key', getattr(k, 'idx', k))) for k in path)
        sharding = getattr(leaf, 'sharding', None)
        spec = getattr(sharding, 'spec', '')
        rows.append((name, tuple(leaf.shape), str(leaf.dtype), int(leaf.size), str(spec)))
    width = max([len(r[0]) for r in rows] + [4])
    lines = [f'{"name":<{width}}  {"shape":<20} {"dtype":<9} {"size":>12}  sharding']
    shown = rows if len(rows) <= max_rows else rows[:max_rows]
    for name, shape, dtype, size, spec in shown:
        lines.append(f'{name:<{width}}  {str(shape):<20} {dtype:<9} {size:>12,}  {spec}')
    if len(rows) > max_rows:
        lines.append(f'... {len(rows) - max_rows} more')
    lines.append(f'total: {sum(r[3] for r in rows):,} parameters in {len(rows)} arrays')
    return '\n'.join(lines)
