"""HERO (HeroForPretraining) in Flax: f-TRM, collect, frame_transform, t-TRM and all heads.

Static-shape layout (spec §1.4, §7.4). A *video batch* is per video, so the batch axis shards
cleanly over the data-parallel mesh axes:

  frame_feats (B, L, vfeat) float  raw clip-level features, zero-padded
  frame_mask  (B, L)        int    1 on real frames
  sub_ids     (B, S, T)     int    f-TRM text of every subtitle: [SEP] + ids, padded with 1
  sub_mask    (B, S, T)     int    1 on real text tokens (all 0 for padded subtitles)
  sub_frames  (B, S, F)     int    video frame index of each of the subtitle's frame slots, -1 =
                                   none (a subtitle without frames is all -1: its masked dummy
                                   frame; padded subtitles are all -1 too)

Each subtitle becomes one f-TRM sequence `[F frame slots | T text slots]` with the combined key
mask; the frame slots are gathered from `frame_feats` (so MFM masking is applied once, on the
video). The f-TRM outputs at frame slots are then scattered back into the video's frame slots
(a per-video segment_sum; frames that no subtitle owns get 0), added to frame_transform(raw) and
encoded by the t-TRM.

Parameter names follow the original state dict (`v_encoder.f_encoder.embeddings...`), see
hero/convert.py.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from hero.config import HeroConfig
from hero.embeddings import Embedding, FrameEmbeddings, PositionOnlyEmbeddings, TextEmbeddings
from hero.heads import (
    LinearLayer,
    LMHead,
    QueryFeatEncoder,
    SpanConv,
    feat_regress,
    fom_output,
    mask_logits,
)
from hero.layers import TORCH, BertEncoder, Pooler, dense

Dtype = Any
VIDEO_KEYS = ('frame_feats', 'frame_mask', 'sub_ids', 'sub_mask', 'sub_frames')


class CrossModalEncoder(nn.Module):
    """f-TRM (`v_encoder.f_encoder`): text + frame embeddings, 6 layers, pooler, LM head."""
    config: HeroConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.embeddings = TextEmbeddings(self.config, **kw)
        self.img_embeddings = FrameEmbeddings(self.config, **kw)
        self.encoder = BertEncoder(self.config, self.config.f_layers, **kw)
        self.pooler = Pooler(self.config, **kw)
        self.lm_head = LMHead(self.config, **kw)

    def __call__(self, frame_feats, frame_mask, txt_ids, txt_mask, mfm_mask=None,
                 deterministic: bool = True):
        """(N, F, vfeat), (N, F), (N, T), (N, T) -> (N, F + T, H); mfm_mask (N, F) or None."""
        frames = self.img_embeddings(frame_feats, self.embeddings.type_one(), mfm_mask,
                                     deterministic)
        text = self.embeddings(txt_ids, deterministic)
        x = jnp.concatenate([frames, text], axis=1)
        mask = jnp.concatenate([frame_mask, txt_mask], axis=1)
        return self._encode(x, mask, deterministic)

    def encode_text(self, txt_ids, txt_mask, deterministic: bool = True):
        """Text-only f-TRM pass (queries): [CLS] + ids, positions 0.., type 1, no frames."""
        return self._encode(self.embeddings(txt_ids, deterministic), txt_mask, deterministic)

    def _encode(self, x, mask, deterministic):
        h = self.encoder(x, mask, deterministic)
        self.pooler(h)   # unused by every loss; called so its parameters exist (XLA drops it)
        return h

    def lm_logits(self, h):
        return self.lm_head(h, self.embeddings.word_embeddings.table())


class TemporalEncoder(nn.Module):
    """t-TRM (`v_encoder.c_encoder`): x + TimePos[arange(L)] -> LN -> layers (randomly init)."""
    config: HeroConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, mask, deterministic: bool):
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = PositionOnlyEmbeddings(cfg, cfg.c_max_position_embeddings, cfg.initializer_range,
                                   name='embeddings', **kw)(x, deterministic)
        h = BertEncoder(cfg, cfg.c_layers, name='encoder', **kw)(x, mask, deterministic)
        Pooler(cfg, name='pooler', **kw)(h)
        return h


def gather_subtitle_frames(frames_bld, sub_frames_bsf):
    """(B, L, D) video slots -> (B, S, F, D) per-subtitle frame slots (zeros where index -1)."""
    valid = sub_frames_bsf >= 0
    index = jnp.clip(sub_frames_bsf, 0, frames_bld.shape[1] - 1)
    out = jax.vmap(lambda f, i: jnp.take(f, i, axis=0))(frames_bld, index)
    return jnp.where(valid[..., None], out, jnp.zeros((), frames_bld.dtype))


def collect_frames(frame_out_bsfh, sub_frames_bsf, num_frames: int):
    """Scatter-add f-TRM frame outputs into their video frame slots (spec §1.5).

    Index -1 goes to a dump segment `num_frames` that is dropped, so frames owned by no
    subtitle receive 0. vmapped per video so the batch axis stays the sharded axis.
    """
    b, s, f, h = frame_out_bsfh.shape
    index = jnp.where(sub_frames_bsf >= 0, sub_frames_bsf, num_frames).reshape(b, s * f)

    def one_video(data, idx):
        return jax.ops.segment_sum(data, idx, num_segments=num_frames + 1)[:num_frames]
    return jax.vmap(one_video)(frame_out_bsfh.reshape(b, s * f, h), index)


def shuffle_frames(x_blh, shuffled_orders_bl):
    """FOM: the frame at position i moves to slot shuffled_orders[b, i] (a permutation)."""
    return jax.vmap(lambda x, o: jnp.zeros_like(x).at[o].set(x))(x_blh, shuffled_orders_bl)


class HeroEncoder(nn.Module):
    """`v_encoder`: f-TRM, frame_transform, t-TRM and the heads that live inside it."""
    config: HeroConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.f_encoder = CrossModalEncoder(cfg, **kw)
        self.frame_transform = LinearLayer(cfg, 'feat', **kw)
        self.c_encoder = TemporalEncoder(cfg, **kw)
        self.feat_regress = feat_regress(cfg, **kw)
        self.mask_embedding = Embedding(2, cfg.vfeat_dim, (None, 'feat'), padding_idx=0,
                                        init_std=cfg.initializer_range, **kw)
        self.fom_output = fom_output(cfg, **kw)

    def __call__(self, video, mfm_mask=None, shuffled_orders=None, deterministic: bool = True):
        """Video batch (module docstring) -> t-TRM frame representations (B, L, H).

        mfm_mask (B, L) bool masks frames for MFM (both levels); shuffled_orders (B, L)
        reorders the t-TRM input for FOM.
        """
        feats, sub_frames = video['frame_feats'], video['sub_frames']
        b, num_frames, vfeat = feats.shape
        _, s, f = sub_frames.shape
        t = video['sub_ids'].shape[-1]
        f_feats = gather_subtitle_frames(feats, sub_frames).reshape(b * s, f, vfeat)
        f_mfm = None
        if mfm_mask is not None:
            f_mfm = gather_subtitle_frames(mfm_mask[..., None], sub_frames)[..., 0]
            f_mfm = f_mfm.reshape(b * s, f)
        h = self.f_encoder(f_feats, (sub_frames >= 0).reshape(b * s, f).astype(jnp.int32),
                           video['sub_ids'].reshape(b * s, t), video['sub_mask'].reshape(b * s, t),
                           f_mfm, deterministic)
        frame_out = h[:, :f].reshape(b, s, f, -1)
        collected = collect_frames(frame_out, sub_frames, num_frames)
        raw = feats.astype(self.dtype)
        if mfm_mask is not None:
            mask_ids = mfm_mask.astype(jnp.int32)
            raw = raw * (1 - mask_ids[..., None]).astype(self.dtype) + self.mask_embedding(mask_ids)
        x = self.frame_transform(raw, deterministic) + collected
        if shuffled_orders is not None:
            x = shuffle_frames(x, shuffled_orders)
        x = nn.with_logical_constraint(x, ('act_batch', 'act_len', 'act_embed'))
        return self.c_encoder(x, video['frame_mask'], deterministic)

    def regress_features(self, h):
        return self.feat_regress(h)

    def fom_logits(self, h):
        return self.fom_output(h)


class HeroModel(nn.Module):
    """HeroForPretraining: `v_encoder` plus the top-level VSM modules (PyTorch-default init)."""
    config: HeroConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.v_encoder = HeroEncoder(cfg, **kw)
        self.video_query_linear = dense(cfg.hidden_size, ('embed', 'mlp'), config=cfg, style=TORCH,
                                        fan_in=cfg.hidden_size, **kw)
        self.video_st_predictor = SpanConv(**kw)
        self.video_ed_predictor = SpanConv(**kw)
        self.q_feat_attn = QueryFeatEncoder(cfg, **kw)

    def encode_video(self, video, mfm_mask=None, shuffled_orders=None,
                     deterministic: bool = True):
        return self.v_encoder(video, mfm_mask, shuffled_orders, deterministic)

    def encode_subtitles(self, frame_feats, frame_mask, txt_ids, txt_mask,
                         deterministic: bool = True):
        """f-TRM alone on `[frames | text]` sequences (MLM examples) -> (N, F + T, H)."""
        return self.v_encoder.f_encoder(frame_feats, frame_mask, txt_ids, txt_mask, None,
                                        deterministic)

    def mlm_logits(self, h):
        return self.v_encoder.f_encoder.lm_logits(h)

    def regress_features(self, h):
        return self.v_encoder.regress_features(h)

    def fom_logits(self, h):
        return self.v_encoder.fom_logits(h)

    def encode_query_tokens(self, query_ids, query_mask, deterministic: bool = True):
        """f-TRM text-only outputs of `[CLS] + query` (N, Tq, H)."""
        return self.v_encoder.f_encoder.encode_text(query_ids, query_mask, deterministic)

    def encode_query(self, query_ids, query_mask, deterministic: bool = True):
        """`[CLS] + query` -> f-TRM text-only -> QueryFeatEncoder -> (N, H)."""
        h = self.encode_query_tokens(query_ids, query_mask, deterministic)
        return self.q_feat_attn(h, query_mask, deterministic)

    def span_logits(self, query_nh, video_vlh, frame_mask_vl):
        """Start/end logits (N, V, L) for every (query, video) pair; padded frames -1e4."""
        sim = jnp.einsum('nd,vld->nvl', self.video_query_linear(query_nh), video_vlh)
        mask = frame_mask_vl[None]
        return (mask_logits(self.video_st_predictor(sim), mask),
                mask_logits(self.video_ed_predictor(sim), mask))

    def own_span_logits(self, query_bqh, video_blh, frame_mask_bl):
        """Start/end logits (B, Q, L) of each query against its own video only."""
        sim = jnp.einsum('bqd,bld->bql', self.video_query_linear(query_bqh), video_blh)
        mask = frame_mask_bl[:, None]
        return (mask_logits(self.video_st_predictor(sim), mask),
                mask_logits(self.video_ed_predictor(sim), mask))

    def __call__(self, video, query_ids, query_mask, deterministic: bool = True):
        """Touches every module once (used by `init`): MFM video pass, all heads, query path."""
        mfm_mask = jnp.zeros(video['frame_mask'].shape, bool)
        frames = self.encode_video(video, mfm_mask, None, deterministic)
        f_out = self.encode_query_tokens(query_ids, query_mask, deterministic)
        query = self.q_feat_attn(f_out, query_mask, deterministic)
        st, ed = self.span_logits(query, frames, video['frame_mask'])
        return (self.mlm_logits(f_out), self.regress_features(frames), self.fom_logits(frames),
                st, ed)


def dummy_inputs(config: HeroConfig, batch: int = 1):
    """Smallest inputs that exercise every module (parameter shapes do not depend on them)."""
    video = dict(frame_feats=jnp.zeros((batch, 2, config.vfeat_dim), jnp.float32),
                 frame_mask=jnp.ones((batch, 2), jnp.int32),
                 sub_ids=jnp.ones((batch, 1, 2), jnp.int32),
                 sub_mask=jnp.ones((batch, 1, 2), jnp.int32),
                 sub_frames=jnp.zeros((batch, 1, 1), jnp.int32))
    return video, jnp.zeros((batch, 2), jnp.int32), jnp.ones((batch, 2), jnp.int32)


def init_params(model: HeroModel, rng):
    """Boxed (logically partitioned) parameters; use under jax.eval_shape / jax.jit."""
    video, query_ids, query_mask = dummy_inputs(model.config)
    return model.init({'params': rng}, video, query_ids, query_mask)['params']


def param_count(params) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(nn.meta.unbox(params)))
