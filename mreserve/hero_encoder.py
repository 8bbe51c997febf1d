"""MERLOT Reserve's vision tower as a HERO frame encoder (data_pipeline/hero_features.py):

    python -m data_pipeline.hero_features ... --encoder mreserve.hero_encoder:vision_tower \\
        --encoder-arg checkpoint=DIR [--encoder-arg batch_size=32]

DIR is a params checkpoint (trainer/params_io.py: DIR/params + DIR/config.json, e.g. from
`mreserve.convert` or an export). Frames get the pretraining eval preprocessing of the
MERLOT Reserve reader (data_pipeline/mreserve_reader.py `decode_image`: JPEG q75 as the records
store frames, aspect-preserving bilinear resize into the output grid, zero padding, 16x16x3
patches); the tower's CLS output (hidden_size, the vector the contrastive image loss uses)
is the feature of each frame. Batches are split over all local devices; a short batch is
padded to the next power of two.
"""
from __future__ import annotations

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mreserve.model_config import ModelConfig
from mreserve.modeling import MerlotReserve
from trainer.params_io import load_params


@functools.lru_cache
def _patchify(grid: tuple[int, int]):
    """A traced-once TF function: JPEG strings [N] -> patches [N, h*w, 768]."""
    import tensorflow as tf

    from data_pipeline.mreserve_reader import decode_image
    return tf.function(lambda encoded: tf.map_fn(
        lambda e: decode_image(e, grid, None, False), encoded, fn_output_signature=tf.float32),
        input_signature=[tf.TensorSpec([None], tf.string)])


def frames_to_patches(frames: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """uint8 [N, H, W, 3] -> float32 [N, h*w, 768] patches (the reader's eval path)."""
    import tensorflow as tf

    from data_pipeline import media
    encoded = tf.constant([media.encode_jpeg(np.asarray(f)) for f in frames])
    return _patchify(tuple(grid))(encoded).numpy()


def vision_tower(checkpoint: str, batch_size: int = 32, dtype: str = 'float32'):
    """-> callable frames uint8 [N, H, W, 3] -> CLS features float32 [N, hidden_size]."""
    with open(os.path.join(checkpoint, 'config.json')) as f:
        saved = json.load(f)
    config = ModelConfig.from_config(saved).replace(dtype=dtype)
    model = MerlotReserve(config)
    params = load_params(checkpoint)
    devices = jax.local_devices()
    batch_size = -(-batch_size // len(devices)) * len(devices)
    mesh = Mesh(np.array(devices), ('data',))
    params = jax.device_put(params, NamedSharding(mesh, P()))
    data_sharding = NamedSharding(mesh, P('data'))

    @jax.jit
    def cls(p, patches):
        out = model.apply({'params': p}, patches,
                          method=lambda m, x: m.vision_encoder(x)['cls'])
        return out.astype(jnp.float32)

    def encode(frames: np.ndarray) -> np.ndarray:
        patches = frames_to_patches(frames, config.output_grid)
        out = []
        for i in range(0, len(patches), batch_size):
            chunk = patches[i:i + batch_size]
            # pad to a power of two (a multiple of the devices): few compiled sizes, little waste
            size = min(batch_size, -(-(1 << (len(chunk) - 1).bit_length()) // len(devices))
                       * len(devices))
            padded = np.zeros((size,) + chunk.shape[1:], np.float32)
            padded[:len(chunk)] = chunk
            out.append(np.asarray(cls(params, jax.device_put(padded, data_sharding)))
                       [:len(chunk)])
        return np.concatenate(out)
    return encode
