"""A NaN loss stops the run naming the step and leaves the last good checkpoint alone; with
`train.nonfinite=skip` the bad update is skipped instead."""
import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from engine_utils import lm_config, restore_params

from trainer.errors import NonFiniteError
from trainer.examples.lm import build_task
from trainer.loop import train


def _nan_at(task, bad_step):
    def loss(params, batch, rng, step):
        value, metrics = task.loss(params, batch, rng, step)
        return jnp.where(step == bad_step - 1, jnp.nan, value), metrics
    return dataclasses.replace(task, loss=loss)


def test_nan_stops_with_step_and_keeps_checkpoint(tmp_path):
    config = lm_config(steps=20, ckpt_every=5)
    task = _nan_at(build_task(config), bad_step=7)
    with pytest.raises(NonFiniteError, match='step 7'):
        train(config, str(tmp_path), task)
    assert sorted(int(d) for d in os.listdir(tmp_path / 'checkpoints')) == [5]
    params = restore_params(tmp_path, 5)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


def test_nan_step_is_skipped_when_configured(tmp_path):
    config = lm_config(steps=8, ckpt_every=4, nonfinite='skip')
    result = train(config, str(tmp_path), _nan_at(build_task(config), bad_step=3))
    flags = [row['nonfinite'] for row in result['history']]
    assert flags == [0, 0, 1, 0, 0, 0, 0, 0]
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(result['state'].params))
    assert int(result['state'].step) == 8
