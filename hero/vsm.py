"""VSM scoring pieces shared by pretraining and retrieval fine-tuning (spec §2.3).

Pure jnp functions of query vectors, frame representations and masks, so the same code scores
a global batch under jax.jit or the all-gathered shards inside shard_map.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from hero.heads import mask_logits


@dataclasses.dataclass(frozen=True)
class VsmSettings:
    """Loss weights and ranking options (pretraining values of spec §2.3 / §2.5)."""
    lw_st_ed: float = 0.01
    lw_neg_ctx: float = 8.0
    lw_neg_q: float = 8.0
    margin: float = 0.1
    hard_negative_start_step: int = 20000
    hard_pool_size: int = 20
    hard_neg_weight: float = 10.0
    easy_neg_weight: float = 0.1
    drop_svmr_prob: float = 0.8
    # gradient scale of the hinge terms: 1/R reproduces an R-GPU original run (spec §2.3)
    hinge_grad_scale: float = 1.0


def span_ce(st_logits, ed_logits, targets):
    """Start and end CE per query: (B, Q, L) logits, (B, Q, 2) targets -> (N, 2) CE and (N, 2)
    validity (targets -1 are ignored, like `ignore_index=-1`)."""
    logits = jnp.stack([st_logits, ed_logits], axis=-2).astype(jnp.float32)   # (B, Q, 2, L)
    picked = jnp.take_along_axis(logits, jnp.maximum(targets, 0)[..., None], -1)[..., 0]
    valid = targets >= 0
    ce = jnp.where(valid, jax.nn.logsumexp(logits, -1) - picked, 0.0)
    return ce.reshape(-1, 2), valid.reshape(-1, 2)


def l2_normalize(x, eps: float = 1e-5):
    """x / max(||x||, eps), like torch.nn.functional.normalize with the original's eps."""
    x = x.astype(jnp.float32)
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def video_query_scores(query_nh, video_vlh, frame_mask_vl):
    """(Nq, Nv): max over valid frames of the cosine between query and frame."""
    cos = jnp.einsum('nd,vld->nvl', l2_normalize(query_nh), l2_normalize(video_vlh))
    return jnp.max(mask_logits(cos, frame_mask_vl[None]), axis=-1)


def weighted_hinge(pos, neg, valid, settings: VsmSettings, use_hard):
    """Per row: mean over valid negatives of w_rank * max(0, margin + s_neg - s_pos).

    Ranks come from a descending sort of the row's negatives; with hard negatives on, the
    `hard_pool_size` highest get `hard_neg_weight`, the rest `easy_neg_weight`.
    """
    neg = jnp.where(valid, neg, -jnp.inf)
    neg_sorted = -jnp.sort(-neg, axis=-1)
    valid_sorted = jnp.isfinite(neg_sorted)
    neg_sorted = jnp.where(valid_sorted, neg_sorted, 0.0)
    hinge = jnp.maximum(settings.margin + neg_sorted - pos[:, None], 0.0)
    rank = jnp.arange(neg.shape[-1])[None]
    hard = jnp.where(rank < settings.hard_pool_size, settings.hard_neg_weight,
                     settings.easy_neg_weight)
    weight = jnp.where(use_hard, hard, 1.0)
    total = jnp.sum(jnp.where(valid_sorted, weight * hinge, 0.0), axis=-1)
    return total / jnp.maximum(jnp.sum(valid_sorted, axis=-1), 1)


def ranking_terms(scores, q_vidx, settings: VsmSettings, use_hard):
    """neg_ctx and neg_q hinge terms per query from the (Nq, Nv) score matrix.

    neg_ctx: the query's score against every other video; neg_q: its video's score against
    every query of another video (duplicated queries included, as in the original).
    """
    nq, nv = scores.shape
    pos = scores[jnp.arange(nq), q_vidx]
    other_video = jnp.arange(nv)[None, :] != q_vidx[:, None]
    neg_ctx = weighted_hinge(pos, scores, other_video, settings, use_hard)
    column = scores.T[q_vidx]                       # (Nq, Nq): score(query j', video of j)
    other_query = q_vidx[None, :] != q_vidx[:, None]
    neg_q = weighted_hinge(pos, column, other_query, settings, use_hard)
    return neg_ctx, neg_q
