"""Jittable example corruption for the pretraining tasks (spec §2.1, §2.2, §2.4).

The original does this in the Python datasets; doing it on device keeps the input pipeline to
plain feature/token arrays, and the data pipeline may still do it on the host instead. Every
function is per batch, draws from the given key only, and keeps static shapes.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def mask_tokens(rng, txt_ids, txt_mask, *, mask_id: int, random_id_range: tuple[int, int],
                mask_prob: float = 0.15, first_position: int = 1, max_predictions: int = 0):
    """BERT masking of `[CLS] + subtitle` rows -> (corrupted ids, labels with -1 elsewhere).

    Each real token from `first_position` on (position 0 is [CLS]) is selected with
    `mask_prob`; of those 80 % become `mask_id`, 10 % a uniform id in `random_id_range`
    (the tokenizer's v_range), 10 % stay. A row with no selection gets its first token forced
    to `mask_id` (the original's rule).

    `max_predictions` > 0 keeps only the first that many selections of a row (BERT's
    max_predictions_per_seq; the later ones stay unchanged and get no label), so that the MLM
    loss can score a fixed budget of positions per row and still score every target
    (hero/pretrain.py `mlm_outputs`). The configs choose it so that the cap binds in about
    1 row in 10^4 (binomial tail of the selection count); 0 = no cap, as the original.
    """
    select_key, kind_key, random_key = jax.random.split(rng, 3)
    positions = jnp.arange(txt_ids.shape[-1])
    candidate = txt_mask.astype(bool) & (positions >= first_position)
    selected = candidate & (jax.random.uniform(select_key, txt_ids.shape) < mask_prob)
    if max_predictions:
        selected &= jnp.cumsum(selected, axis=-1) <= max_predictions
    forced = (~selected.any(-1, keepdims=True)) & candidate & (positions == first_position)
    kind = jax.random.uniform(kind_key, txt_ids.shape)
    to_mask = (selected & (kind < 0.8)) | forced
    to_random = selected & (kind >= 0.8) & (kind < 0.9)
    random_ids = jax.random.randint(random_key, txt_ids.shape, *random_id_range, txt_ids.dtype)
    corrupted = jnp.where(to_mask, mask_id, jnp.where(to_random, random_ids, txt_ids))
    labels = jnp.where(selected | forced, txt_ids, -1)
    return corrupted.astype(txt_ids.dtype), labels


def mask_frames(rng, frame_mask, mask_prob: float = 0.15):
    """MFM mask (B, L) bool: each real frame with `mask_prob`, at least one per video (a
    uniformly chosen real frame when none was drawn)."""
    select_key, force_key = jax.random.split(rng)
    real = frame_mask.astype(bool)
    masked = real & (jax.random.uniform(select_key, real.shape) < mask_prob)
    pick = jnp.argmax(jnp.where(real, jax.random.uniform(force_key, real.shape), -1.0), -1)
    forced = jax.nn.one_hot(pick, real.shape[-1], dtype=bool) & real
    return masked | ((~masked.any(-1, keepdims=True)) & forced)


def shuffle_orders(rng, frame_mask, reorder_prob: float = 0.15):
    """FOM: (shuffled_orders, targets), both (B, L).

    Each real frame is selected with `reorder_prob`; selected frames are randomly permuted
    among the selected slots (a frame may stay). shuffled_orders[b, i] = slot that frame i
    moves to; targets[b, j] = original index of the frame in selected slot j, -1 elsewhere.
    """
    select_key, perm_key = jax.random.split(rng)
    real = frame_mask.astype(bool)
    selected = real & (jax.random.uniform(select_key, real.shape) < reorder_prob)
    length = real.shape[-1]

    def one_video(sel, key):
        slots = jnp.argsort(~sel, stable=True)             # selected positions first, in order
        count = sel.sum()
        rank = jnp.arange(length)
        keys = jnp.where(rank < count, jax.random.uniform(key, (length,)), 2.0)
        permuted = slots[jnp.argsort(keys)]                 # a permutation of the first `count`
        orders = jnp.arange(length).at[slots].set(jnp.where(rank < count, permuted, slots))
        targets = jnp.full((length,), -1).at[orders].set(jnp.arange(length))
        return orders, jnp.where(sel, targets, -1)   # the selected slot set is unchanged

    keys = jax.random.split(perm_key, real.shape[0])
    return jax.vmap(one_video)(selected, keys)
