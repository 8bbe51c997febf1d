"""Loading and checking configs before any compute.

Config files are Python modules with `get_config(arg)`; the argument after ':' selects a variant
(`configs/mreserve/pretrain.py:variant=tiny,steps=20`). Command-line overrides
(`--config.optim.lr=1e-4`) come from ml_collections' config_flags. Everything that can be checked
without devices is checked here; combinations that need the mesh are checked by
`validate_engine_config` right after the mesh is built, still before any compute.
"""
from __future__ import annotations

import jax

from trainer import mesh as mesh_lib
from trainer.compile import compiler_options
from trainer.errors import ConfigError

_CHOICES = {
    'optim.decay': ('cosine', 'linear', 'constant'),
    'optim.mu_dtype': ('float32', 'bfloat16'),
    'train.nonfinite': ('stop', 'skip'),
    'train.dtype': ('float32', 'bfloat16'),
    'train.accumulate': ('mean', 'sum'),
}


def _get(config, dotted: str):
    node = config
    for part in dotted.split('.'):
        node = node[part]
    return node


def validate_static(config) -> None:
    """Checks that need no devices: enumerations and positive sizes."""
    for key, choices in _CHOICES.items():
        try:
            value = _get(config, key)
        except (KeyError, AttributeError):
            continue
        if value not in choices:
            raise ConfigError(key, f'{value!r} is not one of {choices}')
    for key in ('train.steps', 'train.global_batch', 'train.micro_batches', 'train.log_every',
                'train.ckpt_every', 'train.keep_ckpts'):
        if _get(config, key) <= 0:
            raise ConfigError(key, f'must be positive, got {_get(config, key)}')
    if config.optim.lr < 0:
        raise ConfigError('optim.lr', f'must not be negative, got {config.optim.lr}')
    if config.optim.warmup_steps < 0 or config.optim.warmup_steps > config.train.steps:
        raise ConfigError('optim.warmup_steps',
                          f'{config.optim.warmup_steps} is outside 0..train.steps')
    if config.train.stop_after < 0:
        raise ConfigError('train.stop_after', f'must be >= 0, got {config.train.stop_after}')
    try:
        compiler_options(config.train.get('compiler_options', ''), jax.default_backend())
    except ValueError as error:
        raise ConfigError('train.compiler_options', str(error)) from None
    mesh_lib.mesh_shape(config.mesh, jax.device_count())


def validate_engine_config(config, mesh, rules, task) -> None:
    """Checks that need the mesh: the batch must split evenly over processes, data shards and
    micro-batches, and the task's batch spec must agree with the configured global batch."""
    batch = int(config.train.global_batch)
    micro = int(config.train.micro_batches)
    shards = mesh_lib.data_parallel_size(mesh, rules)
    if batch % jax.process_count():
        raise ConfigError('train.global_batch',
                          f'{batch} is not divisible by the {jax.process_count()} processes')
    if batch % micro:
        raise ConfigError('train.micro_batches',
                          f'global batch {batch} is not divisible into {micro} micro-batches')
    if (batch // micro) % shards:
        raise ConfigError('train.global_batch',
                          f'micro-batch of {batch // micro} examples is not divisible by the '
                          f'{shards} data-parallel shards of mesh {dict(mesh.shape)}')
    for key, spec in task.batch_spec.items():
        if spec.shape[0] != batch:
            raise ConfigError('train.global_batch',
                              f'task {task.name} batch entry {key!r} has {spec.shape[0]} '
                              f'examples, config says {batch}')
