"""Helpers for engine tests: the example LM config and running entry points as processes."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]


def lm_config(steps=20, batch=16, **train):
    from configs.examples import lm
    config = lm.get_config(f'steps={steps},batch={batch}')
    config.train.log_every = 1
    config.train.ckpt_every = 10
    config.train.eval_every = 0
    config.train.async_ckpt = False
    for key, value in train.items():
        config.train[key] = value
    return config


def run_module(module: str, args: list[str], devices: int = 8, env: dict | None = None,
               timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2',
                    XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
                    PYTHONPATH=str(ROOT))
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, '-m', module, *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f'{module} {args} exited {proc.returncode}\n'
                             f'stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}')
    return proc


def read_metrics(workdir) -> list[dict]:
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
        return [json.loads(line) for line in f]


def restore_params(workdir, step: int):
    """The params of checkpoint `step` of a work directory, as numpy arrays."""
    import jax
    import orbax.checkpoint as ocp
    path = os.path.join(os.path.abspath(workdir), 'checkpoints', str(step), 'state')
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    from trainer.params_io import stored_metadata
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                          stored_metadata(path))
    with ocp.StandardCheckpointer() as checkpointer:
        state = checkpointer.restore(path, target)
    return jax.tree.map(np.asarray, state['params'])
