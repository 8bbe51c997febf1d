"""HERO pretraining losses under a (data, fsdp, model) mesh and the mixed-task loss."""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from configs.common import DEFAULT_RULES
from configs.hero.pretrain import get_config
from hero import pretrain, synthetic
from hero.modeling import init_params
from hero.task import HeroPretraining
from hero.vsm import VsmSettings

FAST_COMPILE = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}


def random_params(model, seed=0):
    boxed = jax.eval_shape(lambda r: init_params(model, r), jax.random.key(0))
    rng = np.random.default_rng(seed)
    params = jax.tree.map(lambda s: rng.normal(0, 0.05, s.shape).astype(np.float32),
                          nn.meta.unbox(boxed))
    return params, nn.get_partition_spec(boxed)


def test_vsm_loss_sharded_over_data_fsdp_model():
    """Parameters sharded by the logical rules, batch over (data, fsdp): same loss as 1 device."""
    if len(jax.devices()) < 8:
        pytest.skip('needs 8 (fake) devices')
    hero = HeroPretraining.from_config(get_config('variant=tiny'))
    params, specs = random_params(hero.model)
    batch = synthetic.video_batch(0, hero.model.config, videos=4)
    settings = VsmSettings(drop_svmr_prob=0.0, hard_negative_start_step=0)

    def loss(p, b):
        return pretrain.vsm_loss(hero.model, p, b, jax.random.key(0), 0, settings,
                                 deterministic=True)[0]

    expected = jax.jit(loss).lower(params, batch).compile(FAST_COMPILE)(params, batch)
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(2, 2, 2), ('data', 'fsdp', 'model'))
    param_sharding = nn.logical_to_mesh_sharding(specs, mesh, DEFAULT_RULES)
    batch_sharding = jax.tree.map(
        lambda x: NamedSharding(mesh, P(('data', 'fsdp'), *[None] * (x.ndim - 1))), batch)
    with jax.set_mesh(mesh), nn.logical_axis_rules(DEFAULT_RULES):
        params_s = jax.device_put(params, param_sharding)
        batch_s = jax.device_put(batch, batch_sharding)
        word = params_s['v_encoder']['f_encoder']['embeddings']['word_embeddings']['embedding']
        assert not word.sharding.is_fully_replicated
        actual = jax.jit(loss).lower(params_s, batch_s).compile(FAST_COMPILE)(params_s, batch_s)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_mixed_loss_draws_tasks_and_trains():
    config = get_config('variant=tiny')
    hero = HeroPretraining.from_config(config)
    model_cfg = hero.model.config
    video = synthetic.video_batch(0, model_cfg, videos=4)
    rng = np.random.default_rng(0)
    mlm = dict(frame_feats=rng.normal(size=(6, 3, model_cfg.vfeat_dim)).astype(np.float32),
               frame_mask=np.ones((6, 3), np.int32),
               txt_ids=rng.integers(4, 95, (6, 7)).astype(np.int32),
               txt_mask=np.ones((6, 7), np.int32))
    mlm['txt_ids'][:, 0] = 0
    batch = {**{f'mlm.{k}': v for k, v in mlm.items()},
             **{f'video.{k}': video[k] for k in ('frame_feats', 'frame_mask', 'sub_ids',
                                                 'sub_mask', 'sub_frames')},
             **{f'vsm.{k}': v for k, v in video.items()}}
    params, _ = random_params(hero.model)
    step_fn = jax.jit(jax.value_and_grad(hero.mixed_loss, has_aux=True))
    drawn = set()
    for step in range(12):
        (loss, metrics), grads = step_fn(params, batch, jax.random.key(step), jnp.int32(step))
        drawn.add(int(metrics['task']))
        assert np.isfinite(float(loss))
        assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
    assert drawn == {0, 1, 2, 3}
    # the draw depends on seed and step only
    assert int(hero.sample_task(5)) == int(dataclasses.replace(hero).sample_task(5))


def test_build_task_batches_are_host_sliced_and_match_the_spec():
    from hero.task import build_task
    config = get_config('variant=tiny')
    config.data.synthetic = True   # host slicing of one global batch; the store shards files
    task = build_task(config)
    single = next(task.train_batches(3, 0, 1))
    halves = [next(task.train_batches(3, p, 2)) for p in range(2)]
    assert set(single) == set(task.batch_spec)
    for key, spec in task.batch_spec.items():
        assert single[key].shape == spec.shape and single[key].dtype == spec.dtype, key
        np.testing.assert_array_equal(np.concatenate([h[key] for h in halves]), single[key])
    assert not np.array_equal(next(task.train_batches(4, 0, 1))['video.frame_feats'],
                              single['video.frame_feats'])
