"""Prediction heads of HERO (spec §1.7) and the QueryFeatEncoder.

LN eps is 1e-5 everywhere here except inside the query encoder's attention block (a transformer
layer, 1e-12). `v_encoder` heads use BERT init; `q_feat_attn` keeps PyTorch defaults (spec §1.9).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from hero.config import HeroConfig
from hero.embeddings import PositionOnlyEmbeddings
from hero.layers import (
    BERT,
    OTHER_LN_EPS,
    TORCH,
    BertAttention,
    attention_bias,
    dense,
    gelu,
    layer_norm,
)

Dtype = Any
MASK_LOGITS_VALUE = -1e4


def mask_logits(x, mask):
    """The original `mask_logits`: x * m + (1 - m) * (-1e4) (not a -inf fill)."""
    mask = mask.astype(x.dtype)
    return x * mask + (1.0 - mask) * MASK_LOGITS_VALUE


class LMHead(nn.Module):
    """dense -> GELU -> LN -> decoder tied to the word embeddings + free bias."""
    config: HeroConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, word_table):
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = dense(cfg.hidden_size, ('embed', 'mlp'), name='dense', config=cfg, **kw)(x)
        x = layer_norm(OTHER_LN_EPS, name='LayerNorm', **kw)(gelu(x))
        bias = self.param('bias', nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                               ('vocab',)),
                          (cfg.vocab_size,), self.param_dtype)
        logits = jnp.einsum('...d,vd->...v', x, word_table) + bias.astype(self.dtype)
        logits = logits[..., :cfg.logit_vocab_size]
        return nn.with_logical_constraint(logits, ('act_batch', 'act_vocab'))


class MLPHead(nn.Module):
    """Linear -> GELU -> LN -> Linear. Submodule names are parameters because the original uses
    `net.0/2/3` for feat_regress and `linear_1/LayerNorm/linear_2` for fom_output."""
    config: HeroConfig
    hidden: int
    out: int
    out_axis: str
    names: tuple[str, str, str] = ('linear_1', 'LayerNorm', 'linear_2')
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        kw = dict(config=cfg, dtype=self.dtype, param_dtype=self.param_dtype)
        first, norm, last = self.names
        x = gelu(dense(self.hidden, ('embed', 'mlp'), name=first, **kw)(x))
        x = layer_norm(OTHER_LN_EPS, name=norm, dtype=self.dtype, param_dtype=self.param_dtype)(x)
        return dense(self.out, ('mlp', self.out_axis), name=last, **kw)(x)


def feat_regress(config: HeroConfig, **kw) -> MLPHead:
    """MFM head: 768 -> 768 -> GELU -> LN -> 4352 (`v_encoder.feat_regress.net.{0,2,3}`)."""
    return MLPHead(config, config.hidden_size, config.vfeat_dim, 'feat',
                   names=('net_0', 'net_2', 'net_3'), **kw)


def fom_output(config: HeroConfig, **kw) -> MLPHead:
    """FOM classifier: 768 -> 1536 -> GELU -> LN -> 100 classes (always 100, spec §1.7)."""
    return MLPHead(config, 2 * config.hidden_size, config.fom_num_classes, 'classes', **kw)


class LinearLayer(nn.Module):
    """LN -> dropout -> Linear -> ReLU (`frame_transform`, `query_input_proj`)."""
    config: HeroConfig
    in_axis: str
    style: str = BERT
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, deterministic: bool):
        cfg = self.config
        x = layer_norm(OTHER_LN_EPS, name='LayerNorm', dtype=self.dtype,
                       param_dtype=self.param_dtype)(x.astype(self.dtype))
        x = nn.Dropout(cfg.hidden_dropout)(x, deterministic=deterministic)
        x = dense(cfg.hidden_size, (self.in_axis, 'embed'), name='net_1', config=cfg,
                  style=self.style, fan_in=x.shape[-1], dtype=self.dtype,
                  param_dtype=self.param_dtype)(x)
        return nn.with_logical_constraint(jax.nn.relu(x), ('act_batch', 'act_len', 'act_embed'))


class QueryFeatEncoder(nn.Module):
    """`q_feat_attn`: projection, positions, one attention block (no FFN), modular pooling.

    Turns the f-TRM outputs of a `[CLS] + query` sequence into one query vector.
    """
    config: HeroConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, mask, deterministic: bool):
        """x (N, T, H) f-TRM text outputs, mask (N, T) -> (N, H)."""
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        # square 768 x 768: the input side takes 'mlp' so no axis name repeats
        x = LinearLayer(cfg, 'mlp', style=TORCH, name='query_input_proj', **kw)(
            x, deterministic)
        x = PositionOnlyEmbeddings(cfg, cfg.q_max_position_embeddings, init_std=1.0,
                                   name='query_pos_embed', **kw)(x, deterministic)
        x = BertAttention(cfg, deterministic, style=TORCH, name='query_self_attention',
                          **kw)(x, attention_bias(mask))
        scores = dense(1, ('embed', None), name='modular_vector_mapping', config=cfg,
                       style=TORCH, fan_in=cfg.hidden_size, use_bias=False, **kw)(x)[..., 0]
        weights = jax.nn.softmax(mask_logits(scores.astype(jnp.float32), mask), axis=-1)
        return jnp.einsum('nt,ntd->nd', weights.astype(self.dtype), x)


class SpanConv(nn.Module):
    """Conv1d(1 -> 1, kernel 5, padding 2, no bias) over the frame axis (VSM start/end).

    Written as a sum of 5 shifted copies (cross-correlation, like PyTorch and Flax) so that the
    parameter is a single `kernel` of Flax Conv shape (5, 1, 1) under the module's own name.
    """
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        """x (..., L) -> (..., L)."""
        kernel = self.param('kernel', nn.with_logical_partitioning(
            nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform'), ('conv', None, None)),
            (5, 1, 1), self.param_dtype)
        weights = kernel[:, 0, 0].astype(self.dtype)
        length = x.shape[-1]
        padded = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(2, 2)])
        return sum(weights[k] * padded[..., k:k + length] for k in range(5))
