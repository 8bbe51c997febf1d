"""The engine's smallest real model: a causal transformer LM on synthetic sequences.

It exists to exercise and test the engine (sharding, accumulation, checkpoints, multi-host)
without any model package. Each sequence is an arithmetic progression modulo the vocabulary,
(a + b*t) mod V, so the next token is predictable from the previous two and the loss falls.

    python -m trainer.examples.lm --config configs/examples/lm.py --workdir /tmp/lm
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from trainer.task import BatchSpec, Task


def _dense(features, axes, name, use_bias=True, dtype=jnp.float32):
    return nn.DenseGeneral(
        features, use_bias=use_bias, name=name, dtype=dtype,
        kernel_init=nn.with_logical_partitioning(nn.initializers.normal(0.02), axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[-1:]))


class Block(nn.Module):
    heads: int
    head_dim: int
    mlp_dim: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, mask):
        ln = lambda name: nn.LayerNorm(name=name, dtype=self.dtype, scale_init=(
            nn.with_logical_partitioning(nn.initializers.ones, ('norm',))), bias_init=(
            nn.with_logical_partitioning(nn.initializers.zeros, ('norm',))))
        width = x.shape[-1]
        h = ln('ln_attn')(x)
        # Multi-axis kernels as plain params: each axis keeps its logical name.
        w_qkv = self.param('qkv', nn.with_logical_partitioning(
            nn.initializers.normal(0.02), ('embed', None, 'heads', 'kv')),
            (width, 3, self.heads, self.head_dim))
        q, k, v = jnp.unstack(jnp.einsum('bld,dthk->tblhk', h, w_qkv.astype(self.dtype)))
        h = nn.dot_product_attention(q, k, v, mask=mask, dtype=self.dtype)
        w_out = self.param('out', nn.with_logical_partitioning(
            nn.initializers.normal(0.02), ('heads', 'kv', 'embed')),
            (self.heads, self.head_dim, width))
        x = x + jnp.einsum('blhk,hkd->bld', h, w_out.astype(self.dtype))
        h = ln('ln_mlp')(x)
        h = _dense(self.mlp_dim, ('embed', 'mlp'), 'mlp_in', dtype=self.dtype)(h)
        h = _dense(x.shape[-1], ('mlp', 'embed'), 'mlp_out', dtype=self.dtype)(nn.gelu(h))
        x = x + h
        return nn.with_logical_constraint(x, ('act_batch', 'act_len', 'act_embed'))


class TinyLM(nn.Module):
    vocab: int
    width: int
    layers: int
    heads: int
    mlp_dim: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, tokens):
        embed = self.param('embed', nn.with_logical_partitioning(
            nn.initializers.normal(0.02), ('vocab', 'embed')), (self.vocab, self.width))
        x = jnp.take(embed, tokens, axis=0).astype(self.dtype)
        x = nn.with_logical_constraint(x, ('act_batch', 'act_len', 'act_embed'))
        mask = nn.make_causal_mask(tokens)
        for i in range(self.layers):
            x = Block(self.heads, self.width // self.heads, self.mlp_dim, self.dtype,
                      name=f'layer_{i:02d}')(x, mask)
        x = nn.LayerNorm(name='final_ln', dtype=self.dtype)(x)
        return _dense(self.vocab, ('embed', 'vocab'), 'logits', dtype=self.dtype)(x)


def synthetic_batch(seed: int, step: int, examples: range, seq_len: int, vocab: int):
    """Examples `examples` of the global batch at `step`; independent of how hosts split it."""
    out = np.empty((len(examples), seq_len), np.int32)
    for row, index in enumerate(examples):
        rng = np.random.default_rng([seed, step, index])
        a, b = rng.integers(0, vocab), rng.integers(1, 8)
        out[row] = (a + b * np.arange(seq_len)) % vocab
    return {'tokens': out}


def build_task(config) -> Task:
    m = config.model
    model = TinyLM(m.vocab, m.width, m.layers, m.heads, m.mlp_dim, jnp.dtype(config.train.dtype))
    batch = config.train.global_batch

    def init(rng, b):
        return model.init(rng, b['tokens'])['params']

    def loss(params, b, rng, step):
        del rng, step
        tokens = b['tokens']
        logits = model.apply({'params': params}, tokens[:, :-1]).astype(jnp.float32)
        targets = tokens[:, 1:]
        nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], -1)[..., 0]
        accuracy = jnp.mean((jnp.argmax(logits, -1) == targets).astype(jnp.float32))
        return jnp.mean(nll), {'accuracy': accuracy}

    def train_batches(start_step, process_index, process_count):
        local = batch // process_count
        rows = range(process_index * local, (process_index + 1) * local)
        step = start_step
        while True:
            yield synthetic_batch(config.seed, step, rows, m.seq_len, m.vocab)
            step += 1

    def eval_batches(start_step, process_index, process_count):
        del start_step
        local = batch // process_count
        rows = range(process_index * local, (process_index + 1) * local)
        for step in range(2):
            yield synthetic_batch(config.seed + 1, 10**6 + step, rows, m.seq_len, m.vocab)

    # Forward + backward = 3x the forward matmuls: 2 FLOPs per weight per token, plus the
    # attention scores and mixing (2 x 2 x seq x width per token and layer).
    tokens = m.seq_len - 1
    weights = m.layers * (4 * m.width**2 + 2 * m.width * m.mlp_dim) + m.width * m.vocab
    flops = 3 * (2 * weights + m.layers * 4 * tokens * m.width) * tokens
    return Task(name='tiny_lm', init=init, loss=loss,
                batch_spec={'tokens': BatchSpec((batch, m.seq_len), np.int32)},
                train_batches=train_batches, eval_batches=eval_batches,
                flops_per_example=float(flops))


def main():
    from trainer import cli
    cli.train_main(build_task)


if __name__ == '__main__':
    main()
