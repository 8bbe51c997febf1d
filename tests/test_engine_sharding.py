"""The engine gives the same training on 1 device and on 8 devices under several meshes, and
parameters really are sharded the way the logical-axis rules say."""
import jax
import numpy as np
import pytest
from engine_utils import lm_config
from jax.sharding import PartitionSpec as P

from trainer.examples.lm import build_task
from trainer.loop import train

MESHES = {
    'data8': dict(data=8, fsdp=1, model=1),
    'fsdp8': dict(data=1, fsdp=8, model=1),
    'data2_fsdp2_model2': dict(data=2, fsdp=2, model=2),
}


def _run(tmp_path, name, mesh, devices):
    config = lm_config(steps=20)
    config.mesh.update(mesh)
    return train(config, str(tmp_path / name), build_task(config), devices=devices)


@pytest.fixture(scope='module')
def single_device(tmp_path_factory):
    return _run(tmp_path_factory.mktemp('one'), 'one', dict(data=1, fsdp=1, model=1),
                jax.devices()[:1])


@pytest.mark.parametrize('name', MESHES)
def test_same_losses_as_one_device(tmp_path, single_device, name):
    result = _run(tmp_path, name, MESHES[name], jax.devices())
    ref = [row['loss'] for row in single_device['history']]
    got = [row['loss'] for row in result['history']]
    assert len(got) == len(ref) == 20
    np.testing.assert_allclose(got, ref, rtol=2e-5, atol=2e-6)
    assert ref[-1] < ref[0] - 0.5, 'the example model must learn'

    params = result['state'].params
    kernel = params['layer_00']['mlp_in']['kernel']          # logical ('embed', 'mlp')
    qkv = params['layer_00']['qkv']                # ('embed', None, 'heads', 'kv')
    norm = params['layer_00']['ln_attn']['scale']            # ('norm',)
    mesh = MESHES[name]
    assert kernel.sharding.spec == P('fsdp', 'model')
    assert qkv.sharding.spec == P('fsdp', None, 'model', None)
    shard = kernel.addressable_shards[0].data.shape
    assert shard == (64 // mesh['fsdp'], 128 // mesh['model'])
    assert qkv.addressable_shards[0].data.shape == (64 // mesh['fsdp'], 3,
                                                    4 // mesh['model'], 16)
    assert norm.addressable_shards[0].data.shape == (64,)
    # Adam moments follow their parameters.
    mu = result['state'].opt_state[0].mu['layer_00']['mlp_in']['kernel']
    assert mu.sharding.spec == kernel.sharding.spec


def test_micro_batches_match_full_batch(tmp_path):
    config = lm_config(steps=5)
    full = train(config, str(tmp_path / 'full'), build_task(config))
    config.train.micro_batches = 2
    micro = train(config, str(tmp_path / 'micro'), build_task(config))
    np.testing.assert_allclose([r['loss'] for r in micro['history']],
                               [r['loss'] for r in full['history']], rtol=1e-5)


def test_sum_accumulation_doubles_the_gradient(tmp_path):
    config = lm_config(steps=1)
    config.train.micro_batches = 2
    mean = train(config, str(tmp_path / 'mean'), build_task(config))
    config.train.accumulate = 'sum'
    summed = train(config, str(tmp_path / 'sum'), build_task(config))
    np.testing.assert_allclose(summed['history'][0]['grad_norm'],
                               2 * mean['history'][0]['grad_norm'], rtol=1e-5)
