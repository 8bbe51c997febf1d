"""The three contrastive losses of MERLOT Reserve pretraining (spec §2.3).

Negatives come from the whole global batch. One implementation serves two uses:
- under `jax.jit` on global (sharded) arrays, `gather` is the identity: every row already sees
  every candidate, and the mean over rows equals the original's pmean of per-device means;
- per "device group" (the original's pmap, emulated with `jax.vmap(axis_name=...)` in the
  reference test), `gather` is `all_gather_rows(axis_name)`, which stacks the candidates
  device-major exactly as the original's `lax.all_gather` does.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp

from mreserve.layers import l2_normalize

MAX_LOG_SCALE = float(jnp.log(100.0))
SCALE_NAMES = ('imgs_to_audio', 'text_to_audio', 'stuff_to_span')
SPAN_SOURCES = ('text2audio', 'audio2text', 'random_text')

Gather = Callable[[jax.Array], jax.Array]


def identity_gather(x: jax.Array) -> jax.Array:
    return x


def all_gather_rows(axis_name: str) -> Gather:
    """[n, H] per device -> [n_devices * n, H], device-major."""
    def gather(x):
        g = jax.lax.all_gather(x, axis_name)
        return g.reshape((-1,) + x.shape[1:])
    return gather


def scale_and_normalize(v: jax.Array, log_scale: jax.Array, dtype=jnp.float32) -> jax.Array:
    """Unit-normalise (eps 1e-5 inside the sqrt) and multiply by exp(min(s, ln 100) / 2), so
    that the dot product of two such vectors is exp(s_eff) * cos."""
    scale = jnp.exp(jnp.minimum(log_scale, MAX_LOG_SCALE) / 2.0)
    return (l2_normalize(v.astype(jnp.float32)) * scale).astype(dtype)


def direction_losses(query: jax.Array, positive: jax.Array, candidates: jax.Array) -> jax.Array:
    """Per row: logsumexp_j(q_i . c_j) - q_i . p_i, in float32. The positive p_i is among the
    candidates (it is the row's own pair)."""
    logits = jnp.einsum('id,jd->ij', query, candidates, preferred_element_type=jnp.float32)
    pos = jnp.sum(query.astype(jnp.float32) * positive.astype(jnp.float32), axis=-1)
    return jax.nn.logsumexp(logits, axis=-1) - pos


def pair_losses(x, y, gather: Gather = identity_gather, y_extra=None):
    """Per-row losses of both directions; y_extra are extra negatives for x -> y only."""
    y_cands = y if y_extra is None else jnp.concatenate([y, y_extra], 0)
    x_to_y = direction_losses(x, y, gather(y_cands))
    y_to_x = direction_losses(y, x, gather(x))
    return x_to_y, y_to_x


def pretrain_losses(preds: Mapping[str, Mapping[str, jax.Array]],
                    gather: Gather = identity_gather) -> dict[str, jax.Array]:
    """`loss_fn_given_preds`: preds[name] = {'x', 'y'} (+ 'y_extra', '_sources'), already
    normalised and scaled. Returns the three losses, their sum ('total') and the span loss
    split by source (`_stuff_to_span_from_*`, a masked mean; 0 when a source is absent)."""
    out = {}
    for name in SCALE_NAMES:
        p = preds[name]
        x = p['x'].reshape(-1, p['x'].shape[-1])
        y = p['y'].reshape(-1, p['y'].shape[-1])
        y_extra = p.get('y_extra')
        if y_extra is not None:
            y_extra = y_extra.reshape(-1, y_extra.shape[-1])
        x_to_y, y_to_x = pair_losses(x, y, gather, y_extra)
        out[name] = (x_to_y.mean() + y_to_x.mean()) / 2.0
        if name == 'stuff_to_span':
            per_row = (x_to_y + y_to_x) / 2.0
            sources = p['_sources'].reshape(-1)
            for i, src in enumerate(SPAN_SOURCES):
                hit = (sources == i).astype(jnp.float32)
                out[f'_stuff_to_span_from_{src}'] = (
                    jnp.sum(per_row * hit) / jnp.maximum(jnp.sum(hit), 1.0))
    out['total'] = sum(out[name] for name in SCALE_NAMES)
    return out
