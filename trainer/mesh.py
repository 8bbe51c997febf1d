"""Device mesh and logical-axis sharding, built from the config.

The mesh always has the axes ('data', 'fsdp', 'model'). Pure data parallelism, FSDP and tensor
parallelism are config changes: model code only names logical axes ('embed', 'mlp', 'act_batch',
...) and `config.mesh.rules` maps them onto mesh axes.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from trainer.errors import ConfigError

AXES = ('data', 'fsdp', 'model')


def mesh_shape(mesh_cfg, num_devices: int) -> tuple[int, int, int]:
    """Resolve the (data, fsdp, model) sizes; one axis may be -1 to take the remaining devices.

    `mesh_cfg.dcn_data` slices multiply the data axis (ICI x DCN hybrid mesh), so the sizes here
    are the per-slice ones times the slice count on 'data'.
    """
    sizes = {axis: int(mesh_cfg[axis]) for axis in AXES}
    slices = int(mesh_cfg.get('dcn_data', 1))
    if slices < 1 or num_devices % slices:
        raise ConfigError('mesh.dcn_data', f'{slices} slices do not divide {num_devices} devices')
    per_slice = num_devices // slices
    free = [axis for axis, size in sizes.items() if size == -1]
    if len(free) > 1:
        raise ConfigError(f'mesh.{free[1]}', 'only one mesh axis may be -1')
    for axis, size in sizes.items():
        if size == 0 or size < -1:
            raise ConfigError(f'mesh.{axis}', f'size must be positive or -1, got {size}')
    fixed = math.prod(size for size in sizes.values() if size != -1)
    if free:
        if per_slice % fixed:
            raise ConfigError(f'mesh.{free[0]}',
                              f'cannot fill: {per_slice} devices per slice are not divisible '
                              f'by the other axes ({fixed})')
        sizes[free[0]] = per_slice // fixed
    total = math.prod(sizes.values())
    if total > per_slice:
        raise ConfigError('mesh', f'mesh {sizes} needs {total} devices per slice but only '
                                  f'{per_slice} are available')
    if total != per_slice:
        raise ConfigError('mesh', f'mesh {sizes} uses {total} of {per_slice} devices per slice; '
                                  'set one axis to -1 or make the product match')
    sizes['data'] *= slices
    return sizes['data'], sizes['fsdp'], sizes['model']


def build_mesh(mesh_cfg, devices: Sequence[jax.Device] | None = None) -> Mesh:
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(mesh_cfg, len(devices))
    slices = int(mesh_cfg.get('dcn_data', 1))
    if slices > 1:
        device_array = _hybrid_device_array(shape, slices, devices)
    else:
        try:
            device_array = mesh_utils.create_device_mesh(shape, devices)
        except (ValueError, NotImplementedError, AssertionError):
            device_array = np.asarray(devices).reshape(shape)
    return Mesh(device_array, AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(AXES))


def _hybrid_device_array(shape, slices: int, devices) -> np.ndarray:
    """ICI x DCN mesh: 'data' spans the slices (DCN), everything else stays inside a slice.

    TPU devices know their slice; elsewhere each process is a slice when there are enough
    processes, and on a single process the device list is cut into `slices` equal groups (so
    the layout can be tested on a CPU).
    """
    ici = (shape[0] // slices, shape[1], shape[2])
    if all(hasattr(d, 'slice_index') for d in devices):
        return mesh_utils.create_hybrid_device_mesh(ici, (slices, 1, 1), devices)
    if len({d.process_index for d in devices}) == slices:
        return mesh_utils.create_hybrid_device_mesh(ici, (slices, 1, 1), devices,
                                                    process_is_granule=True)
    groups = np.asarray(devices).reshape((slices,) + ici)
    return groups.reshape(shape)


def rules_from_config(rules) -> tuple[tuple[str, str | tuple[str, ...] | None], ...]:
    out = []
    for rule in rules:
        name, target = rule
        if isinstance(target, list):
            target = tuple(target)
        out.append((name, target))
    return tuple(out)


def logical_sharding(mesh: Mesh, rules, axes: Sequence[str | None]) -> NamedSharding:
    """NamedSharding for an array whose dimensions carry the given logical names."""
    spec = nn.logical_to_mesh_axes(tuple(axes), rules)
    return NamedSharding(mesh, spec)


def tree_shardings(mesh: Mesh, rules, boxed_abstract_tree):
    """Shardings for a pytree whose leaves carry flax logical-partitioning metadata.

    Leaves without metadata (step counters, scalars) are replicated.
    """
    specs = nn.get_partition_spec(boxed_abstract_tree)
    return nn.logical_to_mesh_sharding(specs, mesh, rules)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def data_parallel_size(mesh: Mesh, rules) -> int:
    """How many ways the example axis is split (product of the mesh axes of 'act_batch')."""
    spec = nn.logical_to_mesh_axes(('act_batch',), rules)[0]
    if spec is None:
        return 1
    names = (spec,) if isinstance(spec, str) else spec
    return math.prod(mesh.shape[name] for name in names)
