"""The dense matmul (mreserve/matmul.py): lax.dot_general's values and gradients, and on CPU
weight gradients that are row-major products (no dot contracting the token axis of both)."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mreserve import matmul


def plain(x, kernel, n_in):
    contract = (tuple(range(x.ndim - n_in, x.ndim)), tuple(range(n_in)))
    return jax.lax.dot_general(x, kernel, (contract, ((), ())))


def loss_and_grads(fn, x, kernel, n_in, g):
    return jax.jit(jax.value_and_grad(lambda x, k: jnp.sum(fn(x, k, n_in) * g), (0, 1)))(
        x, kernel)


@pytest.mark.parametrize('x_shape,k_shape,n_in', [
    ((2, 7, 16), (16, 48), 1),          # widening: x^T transposed for the weight gradient
    ((2, 7, 48), (48, 16), 1),          # narrowing: dy^T transposed, the product copied
    ((3, 5, 4, 8), (4, 8, 16), 2),      # attention output projection (heads, head_dim) -> H
    ((3, 5, 16), (16, 6, 8), 1),        # qkv projection H -> (3 heads, head_dim)
])
def test_values_and_gradients_equal_dot_general(x_shape, k_shape, n_in):
    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], x_shape)
    kernel = jax.random.normal(keys[1], k_shape)
    out_shape = x_shape[:len(x_shape) - n_in] + k_shape[n_in:]
    g = jax.random.normal(keys[2], out_shape)
    got = loss_and_grads(matmul.dense, x, kernel, n_in, g)
    want = loss_and_grads(plain, x, kernel, n_in, g)
    assert matmul.dense(x, kernel, n_in).shape == out_shape
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize('width', [64, 16])
def test_cpu_weight_gradient_is_a_row_major_product(width):
    x = jnp.ones((4, 96, 32))
    kernel = jnp.ones((32, width))

    def compiled_grad(fn):
        grad = jax.grad(lambda x, k: jnp.sum(jnp.sin(fn(x, k, 1))), (0, 1))
        return jax.jit(grad).lower(x, kernel).compile().as_text()

    token_contracting = re.compile(r' dot\(.*lhs_contracting_dims=\{0\}')
    assert token_contracting.search(compiled_grad(plain))       # what autodiff gives XLA:CPU
    assert not token_contracting.search(compiled_grad(matmul.dense))


def test_flax_dot_general_rejects_other_contractions():
    with pytest.raises(ValueError, match='dimension numbers'):
        matmul.dot_general(jnp.ones((2, 3)), jnp.ones((2, 4)), (((0,), (0,)), ((), ())))
