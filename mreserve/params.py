"""Parameter trees: initialisation, abstract shapes, counts, and the scanned <-> original layout.

The original layout (and the released checkpoints) has one subtree per layer, `layer_00`,
`layer_01`, ...; with `scan_layers` a TransformerEncoder holds one `layers` subtree whose leaves
carry a leading 'layers' axis. The two convert losslessly in both directions.
"""
from __future__ import annotations

import functools
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mreserve.model_config import ModelConfig
from mreserve.modeling import MerlotReserve

LAYER_KEY = re.compile(r'^layer_(\d{2,})$')
SCANNED_KEY = 'layers'


def dummy_inputs(config: ModelConfig) -> tuple[jax.Array, ...]:
    """Smallest inputs that touch every parameter (one frame, one segment's audio)."""
    c = config
    n_patches = c.output_grid[0] * c.output_grid[1]
    return (jnp.zeros((1, 1, n_patches, c.patch_dim), jnp.float32),
            jnp.zeros((1, c.num_audio_subsegments, c.audio_seq_length, c.audio_num_features),
                      jnp.float32),
            jnp.zeros((1, 8), jnp.int32), jnp.zeros((1, 8), jnp.int32),
            jnp.ones((1, c.text_span_length), jnp.int32))


def init_params(config: ModelConfig, rng: jax.Array) -> Any:
    """Parameters with logical-partitioning boxes (what the engine's Task.init returns).

    MerlotReserve and MerlotReservePretrainer share this tree."""
    return MerlotReserve(config).init(rng, *dummy_inputs(config))['params']


def abstract_params(config: ModelConfig) -> Any:
    """Unboxed ShapeDtypeStructs of the parameters, without allocating anything."""
    boxed = jax.eval_shape(functools.partial(init_params, config), jax.random.key(0))
    return nn.unbox(boxed)


def param_count(params: Any) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


def to_scanned(tree: Any) -> Any:
    """layer_00, layer_01, ... -> one `layers` subtree stacked on a new leading axis."""
    if not isinstance(tree, dict):
        return tree
    layer_keys = sorted((k for k in tree if LAYER_KEY.match(k)),
                        key=lambda k: int(LAYER_KEY.match(k).group(1)))
    out = {k: to_scanned(v) for k, v in tree.items() if k not in layer_keys}
    if layer_keys:
        if [int(LAYER_KEY.match(k).group(1)) for k in layer_keys] != list(range(len(layer_keys))):
            raise ValueError(f'layer subtrees are not numbered 0..n-1: {layer_keys}')
        layers = [tree[k] for k in layer_keys]
        out[SCANNED_KEY] = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]),
                                        *layers)
    return out


def to_unscanned(tree: Any) -> Any:
    """One stacked `layers` subtree -> layer_00, layer_01, ... (the original layout)."""
    if not isinstance(tree, dict):
        return tree
    out = {k: to_unscanned(v) for k, v in tree.items() if k != SCANNED_KEY}
    if SCANNED_KEY in tree:
        stacked = tree[SCANNED_KEY]
        n_layers = jax.tree.leaves(stacked)[0].shape[0]
        for i in range(n_layers):
            out[f'layer_{i:02d}'] = jax.tree.map(lambda x, i=i: x[i], stacked)
    return out
