"""Input embeddings of HERO: subtitle text, frames inside the f-TRM, and position-only tables.

Facts kept from the original (spec §1.4, §1.6, §8):
- text positions are explicit and start at 0 (not RoBERTa's padding_idx + 1), clipped at 511;
- token type 1 for text *and* frames (row 0 of the 2-row table is never used);
- frame positions restart at 0 inside every subtitle group (table of `max_frm_seq_len` rows);
- MFM adds the mask-embedding row m to every frame feature before the input LayerNorm;
- every embedding LayerNorm uses eps 1e-5.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from hero.config import PAD_ID, HeroConfig
from hero.layers import OTHER_LN_EPS, dense, layer_norm

Dtype = Any
MAX_TEXT_POSITION = 511


class Embedding(nn.Module):
    """Lookup table with PyTorch `padding_idx` semantics: lookups of the padding row pass no
    gradient to it (the row keeps its init/checkpoint value as far as lookups are concerned)."""
    num_embeddings: int
    features: int
    axes: tuple[str | None, str | None]
    padding_idx: int | None = None
    init_std: float = 0.02
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        self.embedding = self.param(
            'embedding',
            nn.with_logical_partitioning(nn.initializers.normal(self.init_std), self.axes),
            (self.num_embeddings, self.features), self.param_dtype)

    def __call__(self, ids):
        out = jnp.take(self.embedding, ids, axis=0)
        if self.padding_idx is not None:
            is_pad = (ids == self.padding_idx)[..., None]
            out = jnp.where(is_pad, jax.lax.stop_gradient(out), out)
        return out.astype(self.dtype)

    def table(self):
        """The raw table, e.g. for the tied LM decoder (which does train the padding row)."""
        return self.embedding.astype(self.dtype)


class TextEmbeddings(nn.Module):
    """`f_encoder.embeddings`: LN(Word[id] + Pos[t] + Type[1]) -> dropout (SubEmbeddings)."""
    config: HeroConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype,
                  init_std=cfg.initializer_range)
        self.word_embeddings = Embedding(cfg.vocab_size, cfg.hidden_size, ('vocab', 'embed'),
                                         padding_idx=PAD_ID, **kw)
        self.position_embeddings = Embedding(cfg.max_position_embeddings, cfg.hidden_size,
                                             ('pos', 'embed'), **kw)
        self.token_type_embeddings = Embedding(cfg.type_vocab_size, cfg.hidden_size,
                                               (None, 'embed'), **kw)
        self.LayerNorm = layer_norm(OTHER_LN_EPS, dtype=self.dtype,
                                    param_dtype=self.param_dtype)
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def type_one(self):
        """Token-type row 1, shared by text and frames."""
        return self.token_type_embeddings(jnp.ones((), jnp.int32))

    def __call__(self, ids, deterministic: bool):
        last = min(MAX_TEXT_POSITION, self.config.max_position_embeddings - 1)
        positions = jnp.minimum(jnp.arange(ids.shape[-1]), last)
        x = self.word_embeddings(ids) + self.position_embeddings(positions) + self.type_one()
        x = self.dropout(self.LayerNorm(x), deterministic=deterministic)
        return nn.with_logical_constraint(x, ('act_batch', 'act_len', 'act_embed'))


class FrameEmbeddings(nn.Module):
    """`f_encoder.img_embeddings`: LN(Linear(LN(feat [+ MaskEmb[m]])) + FramePos[k] + Type[1])."""
    config: HeroConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, feats, type_embedding, mfm_mask, deterministic: bool):
        """feats (N, F, vfeat); mfm_mask (N, F) bool or None (only MFM batches pass one)."""
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        feats = feats.astype(self.dtype)
        if mfm_mask is not None:
            # (the model's init path passes a mask so that this table is always created)
            mask_ids = mfm_mask.astype(jnp.int32)
            feats = feats * (1 - mask_ids[..., None]).astype(self.dtype)
            feats = feats + Embedding(2, cfg.vfeat_dim, (None, 'feat'), padding_idx=0,
                                      init_std=cfg.initializer_range, name='mask_embedding',
                                      **kw)(mask_ids)
        x = layer_norm(OTHER_LN_EPS, name='img_LayerNorm', **kw)(feats)
        x = dense(cfg.hidden_size, ('feat', 'embed'), name='img_linear', config=cfg, **kw)(x)
        positions = jnp.arange(feats.shape[1])
        x = x + Embedding(cfg.max_frm_seq_len, cfg.hidden_size, ('pos', 'embed'),
                          init_std=cfg.initializer_range, name='position_embeddings',
                          **kw)(positions)
        x = layer_norm(OTHER_LN_EPS, name='LayerNorm', **kw)(x + type_embedding)
        x = nn.Dropout(cfg.hidden_dropout)(x, deterministic=deterministic)
        return nn.with_logical_constraint(x, ('act_batch', 'act_len', 'act_embed'))


class PositionOnlyEmbeddings(nn.Module):
    """LN(x + Pos[arange(L)]) -> dropout: the t-TRM embeddings and the query position embedding.

    `init_std` is 0.02 for the t-TRM (inside v_encoder) and 1.0 for the query encoder, which
    keeps PyTorch's default N(0, 1) Embedding init (spec §1.9).
    """
    config: HeroConfig
    num_positions: int
    init_std: float
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, deterministic: bool):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        positions = jnp.arange(x.shape[1])
        x = x + Embedding(self.num_positions, self.config.hidden_size, ('pos', 'embed'),
                          init_std=self.init_std, name='position_embeddings', **kw)(positions)
        x = layer_norm(OTHER_LN_EPS, name='LayerNorm', **kw)(x)
        x = nn.Dropout(self.config.hidden_dropout)(x, deterministic=deterministic)
        return nn.with_logical_constraint(x, ('act_batch', 'act_len', 'act_embed'))
