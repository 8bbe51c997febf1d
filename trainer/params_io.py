"""Params-only checkpoints: what export writes and what `init_from`, evaluation, finetuning and
the zero-shot APIs read. A directory holds `params/` (Orbax) and `config.json`.
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp


def save_params(directory: str, params: Any, config: dict | None = None,
                dtype: str | None = None) -> str:
    """Write params (optionally cast to `dtype`, e.g. 'bfloat16') and the resolved config."""
    directory = os.path.abspath(directory)
    if dtype:
        cast = jnp.dtype(dtype)
        params = jax.tree.map(
            lambda x: x.astype(cast) if jnp.issubdtype(x.dtype, jnp.floating) else x, params)
    os.makedirs(directory, exist_ok=True)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(os.path.join(directory, 'params'), params, force=True)
    if config is not None and jax.process_index() == 0:
        with open(os.path.join(directory, 'config.json'), 'w') as f:
            json.dump(config, f, indent=2, sort_keys=True, default=str)
    return directory


def load_params(directory: str, abstract: Any | None = None) -> Any:
    """Read params; with `abstract` (ShapeDtypeStructs with shardings) they land sharded.

    Floating leaves are cast to the abstract dtype, so a bf16 export loads into f32 models.
    A shape mismatch names the first offending path and both shapes.
    """
    path = os.path.join(os.path.abspath(directory), 'params')
    if not os.path.isdir(path):
        raise FileNotFoundError(f'{directory} has no params/ checkpoint (expected {path})')
    with ocp.StandardCheckpointer() as checkpointer:
        if abstract is None:
            return checkpointer.restore(path)
        stored_tree = stored_metadata(path)
        check_shapes(abstract, stored_tree)
        target = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, s.dtype, sharding=a.sharding),
            abstract, stored_tree)
        params = checkpointer.restore(path, target)
    return jax.tree.map(lambda p, a: p.astype(a.dtype), params, abstract)


def stored_metadata(path: str):
    """The tree of array metadata (shape, dtype) of an Orbax checkpoint item."""
    with ocp.StandardCheckpointer() as checkpointer:
        meta = checkpointer.metadata(path)
    meta = getattr(meta, 'item_metadata', meta)
    return getattr(meta, 'tree', meta)


def _key_name(key) -> str:
    for attr in ('key', 'name', 'idx'):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _flat(tree) -> dict[str, Any]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {'/'.join(_key_name(k) for k in path): leaf for path, leaf in flat}


def check_shapes(expected: Any, actual: Any) -> None:
    """Raise ValueError naming the first path whose presence or shape differs."""
    want, have = _flat(expected), _flat(actual)
    for name in sorted(set(want) | set(have)):
        if name not in have:
            raise ValueError(f'parameter {name!r} is missing from the checkpoint '
                             f'(model expects shape {tuple(want[name].shape)})')
        if name not in want:
            raise ValueError(f'checkpoint parameter {name!r} (shape {tuple(have[name].shape)}) '
                             'does not exist in the model')
        if tuple(want[name].shape) != tuple(have[name].shape):
            raise ValueError(f'parameter {name!r}: checkpoint shape {tuple(have[name].shape)} '
                             f'!= model shape {tuple(want[name].shape)}')
