"""The dense-layer matmul, with a weight gradient that XLA:CPU runs on its fast path.

`dense(x, kernel, n_in)` contracts the last `n_in` axes of x with the first `n_in` axes of
the kernel (flax Dense / DenseGeneral). On TPU and GPU it is `lax.dot_general`. On CPU the
backward pass is written out: autodiff's weight gradient x^T @ dy contracts the token axis
of both operands, a form XLA:CPU's YNNPACK path does not take, so it ran as an Eigen dot
(with Eigen's operand packing and, in the MERLOT Reserve step, transposed copies of the 4H-wide
activation gradients). Here the narrower operand of x^T @ dy is transposed explicitly (an
optimisation barrier keeps XLA from folding the transpose back into the dot), so every
weight gradient is a row-major [K, M] @ [M, N] product on YNNPACK. Same values up to float
rounding. Measured on the 2-core development VM (benchmarks/README.md, session 6): the
MERLOT Reserve bench step about 4% faster (step time and CPU time).
"""
from __future__ import annotations

import math

import jax


def target_platform() -> str:
    """The platform the current computation compiles for: the mesh's, else the default."""
    mesh = jax.sharding.get_abstract_mesh()
    return jax.default_backend() if mesh.empty else mesh.abstract_device.platform


def dense(x: jax.Array, kernel: jax.Array, n_in: int = 1) -> jax.Array:
    """x [..., *in] . kernel [*in, *out] -> [..., *out]."""
    if target_platform() != 'cpu':
        contract = (tuple(range(x.ndim - n_in, x.ndim)), tuple(range(n_in)))
        return jax.lax.dot_general(x, kernel, (contract, ((), ())))
    depth = math.prod(kernel.shape[:n_in])
    y = _matmul(x.reshape(-1, depth), kernel.reshape(depth, -1))
    return y.reshape(x.shape[:x.ndim - n_in] + kernel.shape[n_in:])


def dot_general(x, kernel, dimension_numbers, precision=None, preferred_element_type=None):
    """`dense` with `lax.dot_general`'s signature, for flax's `nn.Dense(dot_general=...)`.

    An explicit precision or result type goes to `lax.dot_general` unchanged."""
    if precision is not None or preferred_element_type is not None:
        return jax.lax.dot_general(x, kernel, dimension_numbers, precision=precision,
                                   preferred_element_type=preferred_element_type)
    (contract_x, contract_k), batch = dimension_numbers
    n_in = len(contract_x)
    if (batch != ((), ()) or tuple(contract_x) != tuple(range(x.ndim - n_in, x.ndim))
            or tuple(contract_k) != tuple(range(n_in))):
        raise ValueError(f'dense matmul: unsupported dimension numbers {dimension_numbers}')
    return dense(x, kernel, n_in)


@jax.custom_vjp
def _matmul(x, w):
    return x @ w


def _matmul_fwd(x, w):
    return x @ w, (x, w)


def _matmul_bwd(residuals, dy):
    x, w = residuals
    barrier = jax.lax.optimization_barrier
    if x.shape[1] <= dy.shape[1]:
        dw = barrier(x.T) @ dy                 # [K, M] @ [M, N]
    else:
        dw = barrier(barrier(dy.T) @ x).T      # ([N, M] @ [M, K])^T, the small result copied
    return (dy @ w.T).astype(x.dtype), dw.astype(w.dtype)


_matmul.defvjp(_matmul_fwd, _matmul_bwd)

