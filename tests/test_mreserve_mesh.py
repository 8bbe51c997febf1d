"""MERLOT Reserve pretraining on meshes of the 8 fake CPU devices: the same losses as on one
device, parameters sharded by the logical-axis rules, and contrastive negatives drawn from the
whole global batch (not from each shard). The base and large parameter counts are printed by
tests/test_mreserve_model.py::test_param_count_full_size."""
import functools

import flax.linen as nn
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from configs.mreserve.pretrain import get_config
from mreserve.task import build_task
from trainer import mesh as mesh_lib
from trainer.loop import batch_shardings
from trainer.optim import make_optimizer
from trainer.state import create_state
from trainer.step import make_train_step

STEPS = 3
MESHES = {'single': (1, 1, 1), 'data8': (8, 1, 1), 'fsdp4_model2': (1, 4, 2)}


def tiny_config(**data):
    config = get_config('variant=tiny,batch=8')
    config.optim.warmup_steps = 1      # real updates from the second step on
    for key, value in data.items():
        config.data[key] = value
    return config


def make_mesh(config, name):
    data, fsdp, model = MESHES[name]
    config.mesh.data, config.mesh.fsdp, config.mesh.model = data, fsdp, model
    return mesh_lib.build_mesh(config.mesh, jax.devices()[:data * fsdp * model])


def initial_state(name):
    config = tiny_config()
    task = build_task(config)
    mesh = make_mesh(config, name)
    rules = mesh_lib.rules_from_config(config.mesh.rules)
    optimizer, schedule = make_optimizer(config.optim, config.train.steps)
    state, _, shardings = create_state(task, optimizer, mesh, rules, jax.random.key(0))
    return config, task, mesh, rules, optimizer, schedule, state, shardings


@functools.lru_cache
def train_steps(name):
    """STEPS train steps of the tiny task on mesh `name`: (losses, final state)."""
    config, task, mesh, rules, optimizer, schedule, state, shardings = initial_state(name)
    bshard = batch_shardings(task, mesh, rules)
    step = jax.jit(make_train_step(task, optimizer, 1, False, schedule, config.train.accumulate,
                                   rules),
                   in_shardings=(shardings, bshard, mesh_lib.replicated(mesh)),
                   out_shardings=(shardings, mesh_lib.replicated(mesh)), donate_argnums=0)
    batches = task.train_batches(0, 0, 1)
    losses = []
    with jax.set_mesh(mesh):
        for _ in range(STEPS):
            host = next(batches)
            batch = {k: jax.device_put(np.asarray(v), bshard[k]) for k, v in host.items()}
            state, metrics = step(state, batch, jax.random.key(1))
            losses.append(float(metrics['loss']))
    return losses, state


@pytest.mark.slow     # ~1 min each on an idle 2-core machine (8 fake devices compile slowly)
@pytest.mark.parametrize('name', ['data8', 'fsdp4_model2'])
def test_sharded_training_matches_one_device(name):
    single, _ = train_steps('single')
    sharded, _ = train_steps(name)
    assert np.all(np.isfinite(single)) and single[0] != single[-1]
    np.testing.assert_allclose(sharded, single, rtol=2e-5)


def test_parameters_are_sharded_by_the_rules():
    state = initial_state('fsdp4_model2')[6]
    params = state.params
    joint = params['joint_transformer']['layer_00']
    expected = {
        # (embed, mlp) -> (fsdp, model)
        ('mlp_layer', 'intermediate', 'kernel'): P('fsdp', 'model'),
        ('mlp_layer', 'out', 'kernel'): P('model', 'fsdp'),
        # (embed, heads, kv) -> (fsdp, model, None)
        ('attention_layer', 'qkv', 'kernel'): P('fsdp', 'model', None),
        ('attention_layer', 'attn_proj', 'kernel'): P('model', None, 'fsdp'),
        ('pre_attn_ln', 'scale'): P(None),
    }
    for path, spec in expected.items():
        leaf = functools.reduce(lambda t, k: t[k], path, joint)
        assert leaf.sharding.spec == spec, (path, leaf.sharding.spec)
    table = params['token_encoder']['Embed_0']['embedding']      # (vocab, embed)
    assert table.sharding.spec == P('model', 'fsdp')
    assert table.sharding.shard_shape(table.shape) == (32768 // 2, 64 // 4)
    qkv = joint['attention_layer']['qkv']['kernel']
    assert qkv.sharding.shard_shape(qkv.shape) == (64 // 4, 6 // 2, 32)
    # The optimizer moments follow their parameters.
    moments = [leaf for leaf in jax.tree.leaves(state.opt_state)
               if getattr(leaf, 'shape', None) == table.shape]
    assert moments and all(m.sharding.spec == P('model', 'fsdp') for m in moments)


def test_negatives_come_from_the_global_batch():
    # No random parts: no video-source split, and every span of every example selected
    # (10 spans per tiny example), so the loss must not depend on the order of examples.
    config = tiny_config(augment_video_src_idx_prob=0.0, num_text_spans_to_include=10)
    task = build_task(config)
    params = jax.jit(lambda r: nn.unbox(task.init(r, None)))(jax.random.key(0))
    batch = next(task.train_batches(0, 0, 1))
    loss = jax.jit(lambda p, b: task.loss(p, b, jax.random.key(5), 0)[0])

    mesh = make_mesh(config, 'data8')
    shard = batch_shardings(task, mesh, mesh_lib.rules_from_config(config.mesh.rules))
    with jax.set_mesh(mesh):
        sharded = loss(params, {k: jax.device_put(v, shard[k]) for k, v in batch.items()})
        order = np.array([3, 7, 0, 5, 1, 6, 2, 4])    # every example moves to another shard
        permuted = loss(params, {k: jax.device_put(v[order], shard[k])
                                 for k, v in batch.items()})
    np.testing.assert_allclose(permuted, sharded, rtol=1e-5)
    np.testing.assert_allclose(sharded, loss(params, batch), rtol=1e-5)

    # Each shard alone (one example: its own negatives only) gives a clearly lower loss:
    # at init each loss is about ln(number of candidates), 8x fewer candidates per shard.
    local = np.mean([loss(params, {k: v[i:i + 1] for k, v in batch.items()})
                     for i in range(8)])
    assert float(sharded) - local > 3.0, (float(sharded), local)
