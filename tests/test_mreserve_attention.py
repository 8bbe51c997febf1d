"""The two attention schedules (mreserve/attention.py) compute the same thing: values and
gradients, with padded keys and a fully masked row, alone and per device under a mesh."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from configs.common import DEFAULT_RULES
from mreserve import attention as attention_lib
from trainer import mesh as mesh_lib


def inputs(batch=4, length=24, heads=4, depth=8):
    keys = jax.random.split(jax.random.key(0), 4)
    q, k, v, g = (jax.random.normal(key, (batch, length, heads, depth)) for key in keys)
    valid = np.ones((batch, length), bool)
    valid[1, length - 5:] = False                       # padded keys
    mask = valid[:, None, :] & valid[:, :, None]
    mask[2, 3] = False                                  # a row that attends to nothing
    return q, k, v, g, jnp.asarray(mask)


def value_and_grads(schedule, q, k, v, g, mask):
    def loss(q, k, v):
        return jnp.sum(attention_lib.attention(q, k, v, mask, schedule) * g)
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(q, k, v)


def assert_close(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-5, atol=2e-5)


def test_blocked_equals_all_at_once(monkeypatch):
    args = inputs()
    reference = value_and_grads('xla', *args)
    assert_close(value_and_grads('blocked', *args), reference)
    # Several loop iterations, and blocks that span several sequences.
    for block_bytes in (24 * 24 * 4, 24 * 24 * 4 * 6):
        monkeypatch.setattr(attention_lib, 'BLOCK_BYTES', block_bytes)
        assert_close(value_and_grads('blocked', *args), reference)


def test_blocked_under_a_mesh_equals_one_device(monkeypatch):
    monkeypatch.setattr(attention_lib, 'BLOCK_BYTES', 24 * 24 * 4)   # loop on each device
    monkeypatch.setattr(attention_lib, 'MIN_BLOCK_ROWS', 1)
    q, k, v, g, mask = inputs(batch=4, heads=4)
    reference = value_and_grads('xla', q, k, v, g, mask)
    mesh = mesh_lib.build_mesh(_mesh_config(data=2, fsdp=2, model=2), jax.devices()[:8])
    rules = mesh_lib.rules_from_config(DEFAULT_RULES)
    act = NamedSharding(mesh, PartitionSpec(('data', 'fsdp'), None, 'model', None))
    placed = [jax.device_put(x, act) for x in (q, k, v, g)]
    mask = jax.device_put(mask, NamedSharding(mesh, PartitionSpec(('data', 'fsdp'))))
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        result = value_and_grads('auto', *placed, mask)
        text = jax.jit(lambda *a: attention_lib.attention(*a, 'auto')).lower(
            *placed[:3], mask).as_text()
    assert 'shard_map' in text or 'manual' in text     # per-device loop, not a gathered one
    assert 'while' in text
    assert_close(result, reference)


def test_unknown_schedule_is_an_error():
    q, k, v, _, mask = inputs()
    with pytest.raises(ValueError, match='flash'):
        attention_lib.attention(q, k, v, mask, 'flash')


def _mesh_config(**sizes):
    import ml_collections
    return ml_collections.ConfigDict(sizes)
