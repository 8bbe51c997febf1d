"""Mesh shapes from config, -1 filling, hybrid (multi-slice) layout and clear errors."""
import jax
import ml_collections
import pytest

from configs import common
from trainer import mesh as mesh_lib
from trainer.errors import ConfigError


def _mesh_cfg(**kw):
    c = ml_collections.ConfigDict(common.base_config().mesh.to_dict())
    c.update(kw)
    return c


@pytest.mark.parametrize('kw,shape', [
    (dict(data=-1), (8, 1, 1)),
    (dict(data=1, fsdp=-1), (1, 8, 1)),
    (dict(data=2, fsdp=-1, model=2), (2, 2, 2)),
    (dict(data=-1, fsdp=2, dcn_data=2), (4, 2, 1)),
])
def test_shapes(kw, shape):
    assert mesh_lib.mesh_shape(_mesh_cfg(**kw), 8) == shape
    mesh = mesh_lib.build_mesh(_mesh_cfg(**kw))
    assert tuple(mesh.shape.values()) == shape
    assert mesh.axis_names == ('data', 'fsdp', 'model')


def test_hybrid_keeps_slices_on_data_axis():
    mesh = mesh_lib.build_mesh(_mesh_cfg(data=-1, fsdp=2, dcn_data=2))
    devices = jax.devices()
    first_slice, second_slice = set(devices[:4]), set(devices[4:])
    # The first half of the data axis is one slice, the second half the other.
    assert set(mesh.devices[:2].flat) == first_slice
    assert set(mesh.devices[2:].flat) == second_slice


@pytest.mark.parametrize('kw,key', [
    (dict(data=16), 'mesh'),
    (dict(data=-1, fsdp=-1), 'mesh.fsdp'),
    (dict(data=-1, fsdp=3), 'mesh.data'),
    (dict(data=0), 'mesh.data'),
    (dict(dcn_data=3), 'mesh.dcn_data'),
])
def test_errors_name_the_key(kw, key):
    with pytest.raises(ConfigError) as info:
        mesh_lib.mesh_shape(_mesh_cfg(**kw), 8)
    assert info.value.key == key


def test_data_parallel_size_follows_rules():
    mesh = mesh_lib.build_mesh(_mesh_cfg(data=2, fsdp=2, model=2))
    rules = mesh_lib.rules_from_config(common.DEFAULT_RULES)
    assert mesh_lib.data_parallel_size(mesh, rules) == 4
