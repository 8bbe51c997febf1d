"""VSM with negatives gathered from 8 emulated shards equals the single-device global loss.

The original all-gathers queries, frame embeddings and masks across GPUs and its all-gather
backward keeps only the local slice (spec §2.3). Here the same `vsm_loss` runs
(a) once on the global batch, (b) per shard inside shard_map with JAX's all_gather and
(c) per shard with the original's local-slice backward. (b) must match (a) in loss and
gradients; (c) must match (a) with the hinge gradients scaled by 1/R.
"""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from configs.hero.pretrain import get_config
from hero import pretrain, synthetic
from hero.config import HeroConfig
from hero.modeling import HeroModel, init_params
from hero.vsm import VsmSettings

SHARDS = 8
SETTINGS = VsmSettings(drop_svmr_prob=0.0, hard_negative_start_step=0, hard_pool_size=5)
# compile time dominates on a small shared CPU machine; the numerics do not need optimisation
FAST_COMPILE = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}


def run_jitted(fn, *args):
    return jax.jit(fn).lower(*args).compile(FAST_COMPILE)(*args)


def random_params(model):
    """N(0, 0.1) parameters of the right shapes without running (and compiling) init."""
    shapes = nn.meta.unbox(jax.eval_shape(lambda r: init_params(model, r), jax.random.key(0)))
    rng = np.random.default_rng(0)
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.1, s.shape), jnp.float32), shapes)


@pytest.fixture(scope='module')
def results():
    """Both single-device variants in one jit and both sharded variants in one shard_map
    (compilation dominates the run time on a small CPU machine)."""
    if len(jax.devices()) < SHARDS:
        pytest.skip('needs 8 (fake) devices')
    config = HeroConfig.from_config_dict(get_config('variant=tiny').model)
    config = dataclasses.replace(config, f_layers=1, c_layers=1, hidden_dropout=0.0,
                                 attention_dropout=0.0)
    model = HeroModel(config)
    params = random_params(model)
    batch = jax.tree.map(jnp.asarray, synthetic.video_batch(1, config, videos=SHARDS, frames=6))

    def grads(p, b, settings, **kw):
        def loss(q):
            return pretrain.vsm_loss(model, q, b, jax.random.key(1), 0, settings,
                                     deterministic=True, **kw)[0]
        return jax.value_and_grad(loss)(p)

    scaled = dataclasses.replace(SETTINGS, hinge_grad_scale=1.0 / SHARDS)
    single = run_jitted(lambda p, b: (grads(p, b, SETTINGS), grads(p, b, scaled)), params, batch)

    def per_shard(p, b):
        out = [grads(p, b, SETTINGS, axis_name='data', keep_local_grad=keep)
               for keep in (False, True)]
        return jax.lax.pmean(out, 'data')

    mesh = Mesh(np.array(jax.devices()[:SHARDS]), ('data',))
    sharded = run_jitted(jax.shard_map(per_shard, mesh=mesh, in_specs=(P(), P('data')),
                                       out_specs=P(), check_vma=False), params, batch)
    return dict(global_=single[0], global_scaled=single[1], jax_gather=sharded[0],
                original_gather=sharded[1])


def assert_close(actual, expected):
    np.testing.assert_allclose(actual[0], expected[0], rtol=1e-5, atol=1e-6)
    jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-5),
                 actual[1], expected[1])
    return jax.tree.reduce(max, jax.tree.map(lambda a, e: float(jnp.max(jnp.abs(a - e))),
                                             actual[1], expected[1]))


def test_jax_all_gather_matches_global_batch(results):
    actual, expected = results['jax_gather'], results['global_']
    worst = assert_close(actual, expected)
    print(f'\nloss {float(actual[0]):.6f} vs {float(expected[0]):.6f}; max grad diff {worst:.2e}')
    hinge_grad = expected[1]['q_feat_attn']['modular_vector_mapping']['kernel']
    assert float(jnp.abs(hinge_grad).max()) > 0


def test_original_gather_backward_is_one_over_r(results):
    worst = assert_close(results['original_gather'], results['global_scaled'])
    print(f'\nmax grad diff with the 1/R hinge scale {worst:.2e}')
    assert not np.allclose(results['global_'][1]['q_feat_attn']['modular_vector_mapping']['kernel'],
                           results['original_gather'][1]['q_feat_attn']['modular_vector_mapping'][
                               'kernel'])
