"""HERO downstream models and losses (spec §4): VCMR (TVR/How2R), video QA (TVQA/How2QA), VIOLIN.

VCMR is the pretraining model's VSM head trained per query (hero/modeling.py `HeroModel`, so a
pretraining checkpoint loads as is): one query per video row (`num_q_per_v = 1`, duplicated videos
allowed), local start/end CE plus the two hinge ranking losses with hard negatives
(hero/pretrain.py `vsm_loss`).

QA and VIOLIN run the t-TRM as a cross-modal encoder over `[fused frames ++ text]` (spec §4.3):
the fused frames (f-TRM collect + frame_transform, as in HeroEncoder) go through the t-TRM
embeddings (positions + LN + dropout), the text `[SEP] q [SEP] a_k` (QA) or `[SEP] statement`
(VIOLIN) through the f-TRM text embeddings, and the t-TRM layers see both; the first L outputs
are the frames. Parameter names keep the `v_encoder.{f_encoder,frame_transform,c_encoder}`
layout of the pretraining model so hero/load_pretrained.py can copy them.

Batches (first axis = questions / statement pairs, C = candidates per example, 5 or 2):
  frame_feats (N, L, vfeat), frame_mask (N, L), sub_frames (N, S, F)   shared by the C instances
  sub_ids, sub_mask (N, C, S, T)   subtitle text with the instance's text appended (QA)
  txt_ids, txt_mask (N, C, Tx)     the instance's text alone, for the t-TRM
  QA: answer (N,), span (N, 2) start/end frame (-1 = none); VIOLIN: labels (N, C) in {0, 1}
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from hero.config import HeroConfig
from hero.embeddings import PositionOnlyEmbeddings
from hero.heads import LinearLayer, MLPHead, mask_logits
from hero.layers import BertEncoder, Pooler, dense
from hero.modeling import CrossModalEncoder, collect_frames, gather_subtitle_frames
from hero.pretrain import cross_entropy, masked_mean, vsm_loss
from hero.vsm import VsmSettings

Dtype = Any
QA_TEMPORAL_WEIGHT = 0.4


# ---------------------------------------------------------------------------------------- VCMR
def vcmr_as_vsm_batch(batch):
    """Per-query VCMR batch (query_ids (B, Tq), query_targets (B, 2)) -> the VSM layout with
    one query per video row."""
    out = dict(batch)
    for key in ('query_ids', 'query_mask', 'query_targets'):
        out[key] = batch[key][:, None]
    return out


def vcmr_loss(model, params, batch, rng, step, settings: VsmSettings, deterministic=False):
    """TVR training loss: lw_st_ed * span CE (kept in 1 - drop_svmr_prob of steps) + hinges."""
    return vsm_loss(model, params, vcmr_as_vsm_batch(batch), rng, step, settings, deterministic)


# -------------------------------------------------------------------------- QA / VIOLIN encoder
class MultimodalTemporalEncoder(nn.Module):
    """`c_encoder` with the parameter names of hero/modeling.py TemporalEncoder, able to take
    extra (already embedded) text tokens after the frames."""
    config: HeroConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.embeddings = PositionOnlyEmbeddings(cfg, cfg.c_max_position_embeddings,
                                                 cfg.initializer_range, **kw)
        self.encoder = BertEncoder(cfg, cfg.c_layers, **kw)
        self.pooler = Pooler(cfg, **kw)

    def __call__(self, frames, frame_mask, text=None, text_mask=None,
                 deterministic: bool = True):
        """(N, L, H) fused frames [+ (N, Tx, H) embedded text] -> (N, L, H) frame outputs."""
        length = frames.shape[1]
        x, mask = self.embeddings(frames, deterministic), frame_mask
        if text is not None:
            x = jnp.concatenate([x, text.astype(x.dtype)], axis=1)
            mask = jnp.concatenate([frame_mask, text_mask], axis=1)
        h = self.encoder(x, mask, deterministic)
        self.pooler(h)
        return h[:, :length]


class DownstreamEncoder(nn.Module):
    """`v_encoder` for QA / VIOLIN: f-TRM, frame_transform and the multimodal t-TRM."""
    config: HeroConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.f_encoder = CrossModalEncoder(cfg, **kw)
        self.frame_transform = LinearLayer(cfg, 'feat', **kw)
        self.c_encoder = MultimodalTemporalEncoder(cfg, **kw)

    def fuse(self, feats, sub_frames, sub_ids, sub_mask, deterministic: bool):
        """f-TRM over every subtitle, collect into frame slots, + frame_transform(raw)
        (the part of HeroEncoder.__call__ before the t-TRM, without MFM/FOM)."""
        b, num_frames, vfeat = feats.shape
        _, s, f = sub_frames.shape
        t = sub_ids.shape[-1]
        f_feats = gather_subtitle_frames(feats, sub_frames).reshape(b * s, f, vfeat)
        h = self.f_encoder(f_feats, (sub_frames >= 0).reshape(b * s, f).astype(jnp.int32),
                           sub_ids.reshape(b * s, t), sub_mask.reshape(b * s, t), None,
                           deterministic)
        collected = collect_frames(h[:, :f].reshape(b, s, f, -1), sub_frames, num_frames)
        x = self.frame_transform(feats.astype(self.dtype), deterministic) + collected
        return nn.with_logical_constraint(x, ('act_batch', 'act_len', 'act_embed'))

    def __call__(self, batch, deterministic: bool = True):
        """Batch of the module docstring -> frame outputs (N, C, L, H)."""
        n, c = batch['sub_ids'].shape[:2]

        def repeat(x):   # (N, ...) -> (N * C, ...): one instance per candidate
            return jnp.repeat(x, c, axis=0)

        def flat(x):
            return x.reshape((n * c,) + x.shape[2:])
        frame_mask = repeat(batch['frame_mask'])
        fused = self.fuse(repeat(batch['frame_feats']), repeat(batch['sub_frames']),
                          flat(batch['sub_ids']), flat(batch['sub_mask']), deterministic)
        text = self.f_encoder.embeddings(flat(batch['txt_ids']), deterministic)
        h = self.c_encoder(fused, frame_mask, text, flat(batch['txt_mask']), deterministic)
        return h.reshape((n, c) + h.shape[1:])


def masked_pool(scores, values, mask, axis):
    """Softmax of `scores` over `axis` (masked with -1e4) and the weighted sum of `values`."""
    weights = jax.nn.softmax(mask_logits(scores.astype(jnp.float32), mask), axis=axis)
    return jnp.sum(weights[..., None].astype(values.dtype) * values, axis=axis)


def _pool_score(name, config, kw):
    return dense(1, ('embed', None), name=name, config=config, use_bias=False, **kw)


class HeroForVideoQA(nn.Module):
    """TVQA / How2QA: qa_pool + qa_pred_head over the 5 candidates, and the temporal head
    (`st_ed_pool`, initialised as a copy of qa_pool by `init_params`, softmax across the
    candidates per frame) predicting the start/end frame of the question's moment."""
    config: HeroConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, batch, deterministic: bool = True):
        """-> answer logits (N, C), start and end logits (N, L) (padded frames -1e4)."""
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = DownstreamEncoder(cfg, name='v_encoder', **kw)(batch, deterministic)  # (N,C,L,H)
        mask = jnp.broadcast_to(batch['frame_mask'][:, None], h.shape[:3])
        qa_scores = _pool_score('qa_pool', cfg, kw)(h)[..., 0]                    # (N, C, L)
        pooled = masked_pool(qa_scores, h, mask, axis=2)                          # (N, C, H)
        logits = MLPHead(cfg, 2 * cfg.hidden_size, 1, 'classes', name='qa_pred_head',
                         **kw)(pooled)[..., 0]
        st_scores = _pool_score('st_ed_pool', cfg, kw)(h)[..., 0]                 # (N, C, L)
        per_frame = masked_pool(st_scores, h, jnp.ones_like(mask), axis=1)        # (N, L, H)
        span = MLPHead(cfg, 2 * cfg.hidden_size, 2, 'classes', name='st_ed_pred_head',
                       **kw)(per_frame)
        frame_mask = batch['frame_mask']
        return (logits.astype(jnp.float32), mask_logits(span[..., 0].astype(jnp.float32),
                                                        frame_mask),
                mask_logits(span[..., 1].astype(jnp.float32), frame_mask))


class HeroForViolin(nn.Module):
    """VIOLIN: violin_pool masked softmax over frames -> MLP -> one logit per statement."""
    config: HeroConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, batch, deterministic: bool = True):
        """-> logits (N, C) (sigmoid = probability that the statement is entailed)."""
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = DownstreamEncoder(cfg, name='v_encoder', **kw)(batch, deterministic)
        mask = jnp.broadcast_to(batch['frame_mask'][:, None], h.shape[:3])
        pooled = masked_pool(_pool_score('violin_pool', cfg, kw)(h)[..., 0], h, mask, axis=2)
        logits = MLPHead(cfg, 2 * cfg.hidden_size, 1, 'classes', name='violin_pred_head',
                         **kw)(pooled)[..., 0]
        return logits.astype(jnp.float32)


def _apply(model, params, batch, rng, deterministic):
    rngs = None if deterministic else {'dropout': rng}
    return model.apply({'params': params}, batch, deterministic, rngs=rngs)


def qa_accuracy(logits, answer):
    """Fraction of questions whose highest-scoring candidate is the answer (first max wins)."""
    return jnp.mean(jnp.argmax(logits, -1) == answer)


def violin_accuracy(logits, labels):
    """Fraction of statements with (sigmoid(logit) > 0.5) == label."""
    return jnp.mean((logits > 0) == (labels > 0.5))


def qa_loss(model, params, batch, rng, deterministic=False):
    """CE over the candidates + 0.4 * (CE_st + CE_ed) / 2 (targets -1 ignored)."""
    logits, st, ed = _apply(model, params, batch, rng, deterministic)
    answer = batch['answer']
    qa = jnp.mean(cross_entropy(logits, answer))
    span = batch['span']
    ce_st = masked_mean(cross_entropy(st, span[:, 0]), span[:, 0] >= 0)
    ce_ed = masked_mean(cross_entropy(ed, span[:, 1]), span[:, 1] >= 0)
    temporal = (ce_st + ce_ed) / 2
    loss = qa + QA_TEMPORAL_WEIGHT * temporal
    return loss, {'qa_loss': qa, 'qa_temporal_loss': temporal,
                  'qa_accuracy': qa_accuracy(logits, answer)}


def violin_loss(model, params, batch, rng, deterministic=False):
    """Sigmoid BCE per statement; accuracy of sigmoid > 0.5."""
    logits = _apply(model, params, batch, rng, deterministic)
    labels = batch['labels'].astype(jnp.float32)
    bce = jnp.mean(jnp.maximum(logits, 0) - logits * labels + jnp.log1p(jnp.exp(-jnp.abs(
        logits))))
    return bce, {'violin_loss': bce, 'violin_accuracy': violin_accuracy(logits, labels)}


def dummy_batch(config: HeroConfig, candidates: int):
    """Smallest QA/VIOLIN batch that touches every parameter (shapes do not depend on it)."""
    return dict(frame_feats=jnp.zeros((1, 2, config.vfeat_dim), jnp.float32),
                frame_mask=jnp.ones((1, 2), jnp.int32),
                sub_frames=jnp.zeros((1, 1, 1), jnp.int32),
                sub_ids=jnp.ones((1, candidates, 1, 2), jnp.int32),
                sub_mask=jnp.ones((1, candidates, 1, 2), jnp.int32),
                txt_ids=jnp.ones((1, candidates, 2), jnp.int32),
                txt_mask=jnp.ones((1, candidates, 2), jnp.int32))


def init_params(model, rng, candidates: int):
    """Boxed parameters of HeroForVideoQA / HeroForViolin. For QA, `st_ed_pool` starts as a
    copy of `qa_pool` (the original deep-copies it at construction)."""
    params = model.init({'params': rng}, dummy_batch(model.config, candidates))['params']
    if 'st_ed_pool' in params:
        params = dict(params, st_ed_pool=params['qa_pool'])
    return params
