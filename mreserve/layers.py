"""Transformer pieces shared by the four MERLOT Reserve towers (spec §1.1, §1.2).

Every detail here that looks odd is there for checkpoint compatibility with the original:
the rotary "oddity", quick-GELU, `pre_ln` on the input embeddings, no bias on `attn_proj` and
`mlp_layer/out`, the [q | k | v] head order of `qkv` and the −1e10 attention bias.
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mreserve.attention import attention

Dtype = Any
LN_EPS = 1e-5
ROTARY_HSIZE = 32
ROTARY_MAX_FREQ = 10.0


# ------------------------------------------------------------------------------------------
# Initialisers with logical axis names.


def kernel_init(key, shape, dtype=jnp.float32):
    """Truncated normal on [-2, 2] (not re-normalised) times min(18 / in_size, 0.02) / sqrt(2).

    `in_size` is shape[0], or shape[0] * shape[1] for a 3-D kernel whose first axis is
    shorter than its last (`attn_proj` [nh, 64, H], the audio Conv kernel [2, 65, H]).
    """
    in_size = shape[0]
    if len(shape) == 3 and shape[0] < shape[2]:
        in_size = shape[0] * shape[1]
    std = min(18.0 / in_size, 0.02) / math.sqrt(2.0)
    return jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype) * std


def named(init, *axes: str | None):
    """Attach logical axis names to an initialiser (one name per parameter axis)."""
    return nn.with_logical_partitioning(init, tuple(axes))


ZEROS = nn.initializers.zeros_init()
ONES = nn.initializers.ones_init()


def layer_norm(name: str, dtype: Dtype, param_dtype: Dtype) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=LN_EPS, dtype=dtype, param_dtype=param_dtype, name=name,
                        scale_init=named(ONES, 'norm'), bias_init=named(ZEROS, 'norm'))


def constrain(x: jax.Array, *axes: str | None) -> jax.Array:
    """Logical sharding constraint on an activation; a no-op outside a mesh. Inside a mesh
    the caller must set `nn.logical_axis_rules` (mreserve/task.py does), otherwise flax
    constrains every named axis to be replicated."""
    return nn.with_logical_constraint(x, tuple(axes))


def quick_gelu(x: jax.Array) -> jax.Array:
    return x * jax.nn.sigmoid(1.702 * x)


# ------------------------------------------------------------------------------------------
# Rotary coordinates and the rotary "oddity".


def rotary_coords_1d(n: int, center_origin: bool = True) -> np.ndarray:
    """[-n//2, ..., -1, 1, ..., n - n//2] (zero skipped) if centred, else [1, ..., n]."""
    if not center_origin:
        return np.arange(1, n + 1, dtype=np.float32)
    x = np.arange(n, dtype=np.int64) - n // 2
    return np.where(x >= 0, x + 1, x).astype(np.float32)


def rotary_coords_2d(h: int, w: int) -> np.ndarray:
    """[h*w, 2] (row coord, column coord), both centred and scaled by 1 / (max(h, w) + 1)."""
    scale = 1.0 / (max(h, w) + 1)
    ys = rotary_coords_1d(h) * scale
    xs = rotary_coords_1d(w) * scale
    grid = np.stack(np.meshgrid(ys, xs, indexing='ij'), -1)
    return grid.reshape(h * w, 2).astype(np.float32)


def rotary_sinusoids(coords: jax.Array, rotary_hsize: int = ROTARY_HSIZE,
                     max_freq: float = ROTARY_MAX_FREQ) -> jax.Array:
    """coords [*, L, D] -> [*, 2, L, rotary_hsize]: (cos, sin), each value repeated twice."""
    n_axes = coords.shape[-1]
    n_freqs = rotary_hsize // (2 * n_axes)
    freqs = 2.0 ** jnp.linspace(0.0, math.log2(max_freq / 2), n_freqs, dtype=jnp.float32)
    theta = coords.astype(jnp.float32)[..., None] * freqs * jnp.pi
    theta = theta.reshape(*coords.shape[:-1], n_axes * n_freqs)
    sinusoids = jnp.stack([jnp.cos(theta), jnp.sin(theta)], axis=-3)
    return jnp.repeat(sinusoids, 2, axis=-1)


def apply_rotary(x: jax.Array, sinusoids: jax.Array) -> jax.Array:
    """The original's rotary on x [B, L, heads, head_dim] with sinusoids [B, 2, L, R].

    As released, the cos/sin names are swapped and "rotate half" is [-x0, x1, -x2, x3, ...],
    so pair (2i, 2i+1) becomes x[2i](sin - cos), x[2i+1](sin + cos): an element-wise scaling.
    Only the first R dims of each head are touched. Released checkpoints need exactly this.
    """
    rot, dim = sinusoids.shape[-1], x.shape[-1]
    cos_theta, sin_theta = sinusoids[:, 0], sinusoids[:, 1]
    sign = jnp.tile(jnp.array([-1.0, 1.0], sinusoids.dtype), rot // 2)
    # One multiply by [sin - cos, sin + cos, ..., 1, 1, ...]: no slicing or concatenation of x.
    factor = jnp.pad(sin_theta + sign * cos_theta, ((0, 0), (0, 0), (0, dim - rot)),
                     constant_values=1.0)
    return x * factor[:, :, None, :].astype(x.dtype)


# ------------------------------------------------------------------------------------------
# Layers.


class Projection(nn.Module):
    """flax DenseGeneral's computation and parameter layout, minus its kernel flattening.

    DenseGeneral initialises a multi-axis kernel as a flattened 2-D array and unboxes it
    inside init; under logical axis rules that applies the 3-axis sharding constraint to the
    2-D array and fails. Here the initialiser sees the true shape, so it needs `in_axes`.
    Contracts the last `n_in` input axes; kernel = those axes + `features`.
    """
    features: tuple[int, ...]
    kernel_axes: tuple[str | None, ...]
    kernel_init: Any
    n_in: int = 1
    use_bias: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        in_shape = x.shape[x.ndim - self.n_in:]
        kernel = self.param('kernel', named(self.kernel_init, *self.kernel_axes),
                            tuple(in_shape) + tuple(self.features), self.param_dtype)
        bias = None
        if self.use_bias:
            bias = self.param('bias', named(ZEROS, *self.kernel_axes[self.n_in:]),
                              tuple(self.features), self.param_dtype)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        contract = (tuple(range(x.ndim - self.n_in, x.ndim)), tuple(range(self.n_in)))
        y = jax.lax.dot_general(x, kernel, (contract, ((), ())))
        return y if bias is None else y + bias


class AttentionLayer(nn.Module):
    """Multi-head self-attention; qkv head order [q heads | k heads | v heads].

    `schedule` picks how the attention core runs (mreserve/attention.py); same values."""
    hidden_size: int
    size_per_head: int
    schedule: str = 'auto'
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, sinusoids, mask):
        """x [B, L, H], sinusoids [B, 2, L, R] or None, mask [B, 1, L, L] bool or None."""
        nh = self.hidden_size // self.size_per_head
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=kernel_init)
        qkv = Projection((3 * nh, self.size_per_head), ('embed', 'heads', 'kv'), name='qkv',
                         **kw)(x)
        qk, v = qkv[:, :, :2 * nh], qkv[:, :, 2 * nh:]
        if sinusoids is not None:
            qk = apply_rotary(qk, sinusoids)
        q, k = qk[:, :, :nh], qk[:, :, nh:]
        q = constrain(q, 'act_batch', 'act_len', 'act_heads', None)
        out = attention(q, k, v, None if mask is None else mask[:, 0], self.schedule)
        return Projection((self.hidden_size,), ('heads', 'kv', 'embed'), n_in=2, use_bias=False,
                          name='attn_proj', **kw)(out)


class MlpLayer(nn.Module):
    """Dense H->4H (bias) -> quick-GELU -> Dense 4H->H (no bias)."""
    hidden_size: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        h = nn.Dense(4 * self.hidden_size, dtype=self.dtype, param_dtype=self.param_dtype,
                     kernel_init=named(kernel_init, 'embed', 'mlp'),
                     bias_init=named(ZEROS, 'mlp'), name='intermediate')(x)
        h = constrain(quick_gelu(h), 'act_batch', 'act_len', 'act_mlp')
        return nn.Dense(self.hidden_size, use_bias=False, dtype=self.dtype,
                        param_dtype=self.param_dtype,
                        kernel_init=named(kernel_init, 'mlp', 'embed'), name='out')(h)


class TransformerLayer(nn.Module):
    """One pre-LN layer. Returns (x, None) so that it can be used as an `nn.scan` body."""
    hidden_size: int
    size_per_head: int
    attention: str = 'auto'
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, sinusoids, mask):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = layer_norm('pre_attn_ln', **kw)(x)
        x = x + AttentionLayer(self.hidden_size, self.size_per_head, self.attention,
                               name='attention_layer', **kw)(h, sinusoids, mask)
        h = layer_norm('pre_mlp_ln', **kw)(x)
        x = x + MlpLayer(self.hidden_size, name='mlp_layer', **kw)(h)
        return constrain(x, 'act_batch', 'act_len', 'act_embed'), None


def remat_policy(name: str):
    """'full' saves nothing; any other name is a `jax.checkpoint_policies` attribute."""
    if name == 'full':
        return None
    return getattr(jax.checkpoint_policies, name)


class TransformerEncoder(nn.Module):
    """CLS (optional) -> pre_ln -> layers -> final_ln; `cls_proj` on the CLS output.

    Layers are `layer_00`, `layer_01`, ... as in the original, or, with `scan_layers`, one
    `layers` subtree whose parameters carry a leading 'layers' axis (see mreserve/params.py).
    `remat` is 'none' or a policy name for `nn.remat`; `attention` the attention schedule.
    """
    hidden_size: int
    size_per_head: int
    num_layers: int
    add_cls_token: bool = False
    scan_layers: bool = False
    remat: str = 'none'
    attention: str = 'auto'
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, rotary_coords, attention_mask=None, is_valid=None):
        """x [B, L, H], rotary_coords [B or 1, L, D]; a mask [B, L, L] or is_valid [B, L].

        Returns {'seq': [B, L, H]} plus {'cls': [B, H]} with a CLS token.
        """
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        batch = x.shape[0]
        x = x.astype(self.dtype)
        if self.add_cls_token:
            cls = self.param('cls', named(nn.initializers.normal(0.02), 'embed'),
                             (self.hidden_size,), self.param_dtype)
            x = jnp.concatenate([jnp.broadcast_to(cls.astype(self.dtype),
                                                  (batch, 1, self.hidden_size)), x], 1)
            rotary_coords = jnp.concatenate(
                [jnp.zeros_like(rotary_coords[:, :1]), rotary_coords], 1)
            if is_valid is not None:
                is_valid = jnp.concatenate([jnp.ones_like(is_valid[:, :1]), is_valid], 1)
        if is_valid is not None:
            attention_mask = is_valid[:, :, None] & is_valid[:, None, :]
        mask = None if attention_mask is None else attention_mask[:, None]
        sinusoids = rotary_sinusoids(rotary_coords)
        sinusoids = jnp.broadcast_to(sinusoids, (batch,) + sinusoids.shape[1:])

        x = layer_norm('pre_ln', **kw)(x)
        x = constrain(x, 'act_batch', 'act_len', 'act_embed')
        layer_cls = TransformerLayer
        if self.remat != 'none':
            layer_cls = nn.remat(layer_cls, policy=remat_policy(self.remat),
                                 prevent_cse=not self.scan_layers)
        layer_kw = dict(hidden_size=self.hidden_size, size_per_head=self.size_per_head,
                        attention=self.attention, **kw)
        if self.scan_layers:
            stack = nn.scan(layer_cls, variable_axes={'params': 0}, split_rngs={'params': True},
                            in_axes=(nn.broadcast, nn.broadcast), length=self.num_layers,
                            metadata_params={nn.PARTITION_NAME: 'layers'})
            x, _ = stack(name='layers', **layer_kw)(x, sinusoids, mask)
        else:
            for i in range(self.num_layers):
                x, _ = layer_cls(name=f'layer_{i:02d}', **layer_kw)(x, sinusoids, mask)
        x = layer_norm('final_ln', **kw)(x)
        if not self.add_cls_token:
            return {'seq': x}
        cls_out = nn.Dense(self.hidden_size, name='cls_proj',
                           kernel_init=named(kernel_init, 'embed', 'mlp'),
                           bias_init=named(ZEROS, 'mlp'), **kw)(x[:, 0])
        return {'seq': x[:, 1:], 'cls': cls_out}


class AttentionPool(nn.Module):
    """Pools windows [N, W, H] -> [N, H] with the window mean as the only query.

    Same parameters and computation as the flax MultiHeadDotProductAttention the original
    used (`query/key/value` [H, nh, hd] + bias, `out` [nh, hd, H] + bias, lecun-normal init
    with fan-in H, not the tower init), built from `Projection` to carry logical axes.
    """
    hidden_size: int
    size_per_head: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, windows):
        heads = (self.hidden_size // self.size_per_head, self.size_per_head)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        in_init = nn.initializers.lecun_normal(in_axis=0, out_axis=(1, 2))
        project = lambda name, x: Projection(heads, ('embed', 'heads', 'kv'), in_init,
                                             name=name, **kw)(x)
        query = project('query', windows.mean(axis=1, keepdims=True))
        key, value = project('key', windows), project('value', windows)
        out = nn.dot_product_attention(query, key, value, dtype=self.dtype)
        out_init = nn.initializers.lecun_normal(in_axis=(0, 1), out_axis=2)
        out = Projection((self.hidden_size,), ('heads', 'kv', 'embed'), out_init, n_in=2,
                         name='out', **kw)(out)
        return out[:, 0]


def dense(features: int, name: str, in_axis: str, out_axis: str, dtype: Dtype,
          param_dtype: Dtype, use_bias: bool = True) -> nn.Dense:
    """A Dense with the tower kernel init and named axes."""
    return nn.Dense(features, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype,
                    kernel_init=named(kernel_init, in_axis, out_axis),
                    bias_init=named(ZEROS, out_axis), name=name)


def l2_normalize(x: jax.Array, eps: float = 1e-5) -> jax.Array:
    """x / sqrt(sum(x^2) + eps): eps inside the sqrt, so an all-zero row stays zero."""
    return x / jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True) + eps)
