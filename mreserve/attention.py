"""The attention core softmax(q k^T / sqrt(d) - 1e10 [masked]) v, in two schedules.

- 'xla': scores for all sequences and heads at once (flax's `dot_product_attention_weights`),
  which is what TPUs and GPUs fuse well.
- 'blocked': a loop over blocks of (sequence, head) pairs whose score matrices fit in the CPU
  cache, rematerialised in the backward pass (flash-attention's schedule at the granularity
  of whole heads). On XLA:CPU the all-at-once scores of the joint transformer (hundreds of MB
  in float32) make every softmax pass a trip to DRAM; blocked, the same FLOPs run from cache
  (about 1.8x faster for the 640-token joint sequences, fwd + bwd, see benchmarks/README.md).
- 'auto': 'blocked' when compiling for CPU (the mesh's platform, else the default backend),
  else 'xla'.

Both give the same values up to float rounding (the same additive -1e10 bias). Under a mesh the
blocked loop runs per device inside `shard_map`: attention is independent across sequences and
heads, so each device loops over its own shard with no communication.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

ATTENTION_BIAS = -1e10
# Score bytes per loop iteration (at least two (sequence, head) rows): measured best on the
# development VM (2 MB L2 per core, 32 MB L3) for both the 241-token vision and the 640-token
# joint sequences of the base model.
BLOCK_BYTES = 2 << 20
MIN_BLOCK_ROWS = 2
SCHEDULES = ('auto', 'xla', 'blocked')


def attention(q, k, v, mask, schedule: str = 'auto'):
    """q, k, v [B, L, heads, head_dim]; mask [B, L, L] bool (True = attend) or None.

    Returns [B, L, heads, head_dim] in q's dtype.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if schedule == 'auto':
        platform = jax.default_backend() if mesh.empty else mesh.abstract_device.platform
        schedule = 'blocked' if platform == 'cpu' else 'xla'
    if schedule == 'xla':
        return _all_at_once(q, k, v, mask)
    if schedule != 'blocked':
        raise ValueError(f'attention schedule {schedule!r}: use one of {SCHEDULES}')
    if mask is None:
        mask = jnp.ones((q.shape[0], q.shape[1], k.shape[1]), bool)
    if mesh.empty or mesh.size == 1:
        return _blocked(q, k, v, mask)
    spec = nn.logical_to_mesh_axes(('act_batch', None, 'act_heads', None))
    mask_spec = PartitionSpec(spec[0], None, None)
    return jax.shard_map(_blocked, mesh=mesh, in_specs=(spec, spec, spec, mask_spec),
                         out_specs=spec, check_vma=False)(q, k, v, mask)


def _all_at_once(q, k, v, mask):
    bias = None if mask is None else jnp.where(mask, 0.0, ATTENTION_BIAS).astype(q.dtype)[:, None]
    weights = nn.dot_product_attention_weights(q, k, bias=bias, dtype=q.dtype)
    return jnp.einsum('bhqk,bkhd->bqhd', weights, v)


def _blocked(q, k, v, mask):
    batch, length, heads, depth = q.shape
    rows = batch * heads
    per_row = length * k.shape[1] * jnp.dtype(q.dtype).itemsize
    block = _largest_divisor_at_most(rows, max(MIN_BLOCK_ROWS, BLOCK_BYTES // per_row))
    if block == rows:       # everything fits in one block: no loop, no recomputation
        return _all_at_once(q, k, v, mask)

    def to_blocks(x):   # [B, L, h, d] -> [rows / block, block, L, d], rows ordered (b, h)
        x = jnp.swapaxes(x, 1, 2).reshape((rows, x.shape[1], depth))
        return x.reshape((rows // block, block) + x.shape[1:])

    q = q * jnp.asarray(depth ** -0.5, q.dtype)       # as dot_product_attention_weights
    row_to_sequence = (jnp.arange(rows) // heads).reshape(rows // block, block)

    @jax.checkpoint
    def one_block(qb, kb, vb, sequence):
        scores = jnp.einsum('nqd,nkd->nqk', qb, kb)
        scores = scores + jnp.where(mask[sequence], 0.0, ATTENTION_BIAS).astype(scores.dtype)
        weights = jax.nn.softmax(scores, axis=-1).astype(q.dtype)
        return jnp.einsum('nqk,nkd->nqd', weights, vb)

    _, out = jax.lax.scan(lambda carry, xs: (carry, one_block(*xs)), None,
                          (to_blocks(q), to_blocks(k), to_blocks(v), row_to_sequence))
    out = out.reshape((batch, heads, length, depth))
    return jnp.swapaxes(out, 1, 2)


def _largest_divisor_at_most(n: int, limit: int) -> int:
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)
