"""The one BERT post-LN transformer layer of HERO, plus the small building blocks around it.

Every transformer in HERO (f-TRM, t-TRM, the query encoder's attention block) is the BERT/RoBERTa
post-LN layer of spec §1.3. Module names mirror the original PyTorch state-dict names
(`attention.self.query`, `intermediate.dense`, `output.LayerNorm`, `layer.N` -> `layer_N`) so the
converter can map checkpoints by rule instead of by a hand-written table.

Two initialisation styles exist because the original re-initialises only `v_encoder` (BERT style,
N(0, 0.02), zero biases) while the top-level VSM modules keep PyTorch defaults (spec §1.9).
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from hero.config import HeroConfig

Dtype = Any
TRANSFORMER_LN_EPS = 1e-12   # the two LNs inside every transformer layer (spec §1.2)
OTHER_LN_EPS = 1e-5          # every other LayerNorm
ATTENTION_MASK_VALUE = -10000.0
BERT = 'bert'
TORCH = 'torch'


def gelu(x):
    """Exact erf GELU, as the original `gelu` (not the tanh approximation)."""
    return jax.nn.gelu(x, approximate=False)


def torch_uniform_bias_init(fan_in: int):
    """PyTorch's default Linear/Conv bias init U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)
    return init


def kernel_init(style: str, std: float):
    """N(0, std) for BERT-style modules; PyTorch's kaiming-uniform(a=sqrt(5)) otherwise."""
    if style == TORCH:
        return nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')
    return nn.initializers.normal(std)


def dense(features: int, axes: tuple[str | None, str | None], *, config: HeroConfig,
          dtype: Dtype, param_dtype: Dtype, style: str = BERT, fan_in: int | None = None,
          use_bias: bool = True, name: str | None = None) -> nn.Dense:
    """nn.Dense with logical axis names on kernel and bias and the requested init style."""
    if style == TORCH and use_bias:
        bias_init = torch_uniform_bias_init(fan_in)
    else:
        bias_init = nn.initializers.zeros_init()
    return nn.Dense(
        features, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, name=name,
        kernel_init=nn.with_logical_partitioning(kernel_init(style, config.initializer_range),
                                                 axes),
        bias_init=nn.with_logical_partitioning(bias_init, (axes[1],)))


def layer_norm(eps: float, *, dtype: Dtype, param_dtype: Dtype,
               name: str | None = None) -> nn.LayerNorm:
    """Affine LayerNorm with biased two-pass variance (PyTorch/apex numerics)."""
    return nn.LayerNorm(
        epsilon=eps, dtype=dtype, param_dtype=param_dtype, name=name, use_fast_variance=False,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ('norm',)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ('norm',)))


def attention_bias(mask):
    """Key-padding mask (N, L) -> additive bias (N, 1, 1, L) with -10000 on padding."""
    return (1.0 - mask.astype(jnp.float32))[:, None, None, :] * ATTENTION_MASK_VALUE


class BertSelfAttention(nn.Module):
    """Q/K/V projections, scaled dot-product over heads, dropout on the probabilities."""
    config: HeroConfig
    deterministic: bool
    style: str = BERT
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, bias):
        cfg = self.config
        kw = dict(config=cfg, dtype=self.dtype, param_dtype=self.param_dtype, style=self.style,
                  fan_in=cfg.hidden_size)
        n, length, _ = x.shape

        def heads(name):
            y = dense(cfg.hidden_size, ('embed', 'heads'), name=name, **kw)(x)
            return y.reshape(n, length, cfg.num_heads, cfg.head_dim)

        q, k, v = heads('query'), heads('key'), heads('value')
        scores = jnp.einsum('bqhd,bkhd->bhqk', q, k) / math.sqrt(cfg.head_dim)
        scores = nn.with_logical_constraint(scores, ('act_batch', 'act_heads', None, None))
        probs = jax.nn.softmax(scores.astype(jnp.float32) + bias, axis=-1).astype(self.dtype)
        probs = nn.Dropout(cfg.attention_dropout)(probs, deterministic=self.deterministic)
        context = jnp.einsum('bhqk,bkhd->bqhd', probs, v).reshape(n, length, cfg.hidden_size)
        return nn.with_logical_constraint(context, ('act_batch', 'act_len', 'act_embed'))


class BertResidualOutput(nn.Module):
    """dense -> dropout -> LN_1e-12(x + residual): BERT's SelfOutput and Output blocks."""
    config: HeroConfig
    deterministic: bool
    in_axis: str = 'heads'
    style: str = BERT
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, residual):
        cfg = self.config
        y = dense(cfg.hidden_size, (self.in_axis, 'embed'), name='dense', config=cfg,
                  dtype=self.dtype, param_dtype=self.param_dtype, style=self.style,
                  fan_in=x.shape[-1])(x)
        y = nn.Dropout(cfg.hidden_dropout)(y, deterministic=self.deterministic)
        y = layer_norm(TRANSFORMER_LN_EPS, name='LayerNorm', dtype=self.dtype,
                       param_dtype=self.param_dtype)(y + residual)
        return nn.with_logical_constraint(y, ('act_batch', 'act_len', 'act_embed'))


class BertAttention(nn.Module):
    """Self-attention + output block (no FFN); also the QueryFeatEncoder's attention block."""
    config: HeroConfig
    deterministic: bool
    style: str = BERT
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, bias):
        kw = dict(config=self.config, deterministic=self.deterministic, style=self.style,
                  dtype=self.dtype, param_dtype=self.param_dtype)
        context = BertSelfAttention(name='self', **kw)(x, bias)
        return BertResidualOutput(name='output', **kw)(context, x)


class BertLayer(nn.Module):
    """Post-LN BERT layer. Returns (x, None) so it can be the body of nn.scan."""
    config: HeroConfig
    deterministic: bool
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, bias):
        cfg = self.config
        kw = dict(config=cfg, deterministic=self.deterministic, dtype=self.dtype,
                  param_dtype=self.param_dtype)
        x = BertAttention(name='attention', **kw)(x, bias)
        hidden = IntermediateDense(cfg, dtype=self.dtype, param_dtype=self.param_dtype,
                                   name='intermediate')(x)
        x = BertResidualOutput(name='output', in_axis='mlp', **kw)(hidden, x)
        return x, None


class IntermediateDense(nn.Module):
    """dense 768 -> 3072 and GELU (`intermediate.dense`)."""
    config: HeroConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        y = dense(cfg.intermediate_size, ('embed', 'mlp'), name='dense', config=cfg,
                  dtype=self.dtype, param_dtype=self.param_dtype)(x)
        return nn.with_logical_constraint(gelu(y), ('act_batch', 'act_len', 'act_mlp'))


def remat_policy(name: str):
    """Config name -> jax.checkpoint policy ('full' = save nothing)."""
    if name == 'full':
        return None
    return getattr(jax.checkpoint_policies, name)


class BertEncoder(nn.Module):
    """A stack of `num_layers` BertLayers, optionally scanned and/or rematerialised.

    Unscanned parameters live under `layer_0`, `layer_1`, ...; scanned ones under `layer` with a
    leading 'layers' axis (the converter stacks the per-layer tensors).
    """
    config: HeroConfig
    num_layers: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, mask, deterministic: bool):
        cfg = self.config
        bias = attention_bias(mask)
        layer_cls = BertLayer
        if cfg.remat_policy != 'none':
            layer_cls = nn.remat(layer_cls, policy=remat_policy(cfg.remat_policy),
                                 prevent_cse=not cfg.scan_layers)
        kw = dict(config=cfg, deterministic=deterministic, dtype=self.dtype,
                  param_dtype=self.param_dtype)
        if cfg.scan_layers:
            stack = nn.scan(layer_cls, variable_axes={'params': 0},
                            split_rngs={'params': True, 'dropout': True},
                            in_axes=nn.broadcast, length=self.num_layers,
                            metadata_params={nn.PARTITION_NAME: 'layers'})
            x, _ = stack(name='layer', **kw)(x, bias)
            return x
        for i in range(self.num_layers):
            x, _ = layer_cls(name=f'layer_{i}', **kw)(x, bias)
        return x


class Pooler(nn.Module):
    """BERT pooler (dense + tanh on token 0). Never used by a loss (spec §8.12), kept so the
    parameter tree and count match the original."""
    config: HeroConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        y = dense(self.config.hidden_size, ('embed', 'mlp'), name='dense', config=self.config,
                  dtype=self.dtype, param_dtype=self.param_dtype)(x[:, 0])
        return jnp.tanh(y)
