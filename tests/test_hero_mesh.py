"""HERO pretraining through the engine's real train step on meshes of the 8 fake CPU devices.

Every task (MLM, MFM-NCE, MFM regression, FOM, VSM) runs one optimizer step of
`trainer.step.make_train_step` on the tiny model under one device, data=8 and fsdp=4 x model=2,
with the same global batch and rng: losses, gradient norms, the updated parameters and the
optimizer moments (Adam's first moment is linear in the gradients, so equal moments after each
step mean equal gradients) must agree. The batch is global under jax.jit over the mesh, so the
VSM negatives are the whole batch on every mesh; tests/test_hero_vsm_shards.py checks the
explicit per-shard all-gather form (loss and gradients) against the single-device loss.
"""
import dataclasses
import functools

import jax
import numpy as np
import optax
import pytest

from configs.hero.pretrain import get_config
from hero.task import TASKS, build_task
from trainer import mesh as mesh_lib
from trainer.loop import batch_shardings
from trainer.optim import make_optimizer
from trainer.state import create_state
from trainer.step import make_train_step
from trainer.task import BatchSpec

MESHES = {'single': (1, 1, 1), 'data8': (8, 1, 1), 'fsdp4_model2': (1, 4, 2)}
# compile time dominates on a small shared CPU machine; the numerics do not need optimisation
FAST_COMPILE = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}


def tiny_config():
    config = get_config('variant=tiny')
    config.data.synthetic = True
    config.tasks.names = TASKS              # one lax.switch branch per task, MFFR included
    config.tasks.ratios = (1,) * len(TASKS)
    config.optim.warmup_steps = 1           # full learning rate from the first update on
    config.model.f_layers = config.model.c_layers = 1     # compile time; 2 add nothing here
    return config


def with_task_entry(task, global_batch):
    """The Task plus a `task` batch entry (as the store reader's batches carry), so each step
    runs the task the test names instead of a random draw."""
    spec = dict(task.batch_spec, task=BatchSpec((global_batch,), np.int32))
    return dataclasses.replace(task, batch_spec=spec)


def state_close(actual, expected, what):
    """Leaf-wise rtol 1e-4, with an absolute floor of 1e-5 x the largest value of the tree:
    some gradients are float noise around an exact 0 (e.g. attention key biases, which softmax
    ignores), and their moments differ between meshes at that level. Returns the largest
    difference relative to that scale."""
    scale = max(float(np.abs(leaf).max()) for leaf in jax.tree.leaves(expected))
    worst = 0.0
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-5 * scale, err_msg=what)
        worst = max(worst, float(np.abs(np.asarray(a) - e).max()) / scale)
    return worst


@functools.lru_cache
def train_steps(name):
    """One train step per task, in TASKS order, on mesh `name`: per step the loss, the
    metrics and a host copy of the state."""
    if len(jax.devices()) < 8:
        pytest.skip('needs 8 (fake) devices')
    config = tiny_config()
    data, fsdp, model = MESHES[name]
    config.mesh.data, config.mesh.fsdp, config.mesh.model = data, fsdp, model
    mesh = mesh_lib.build_mesh(config.mesh, jax.devices()[:data * fsdp * model])
    rules = mesh_lib.rules_from_config(config.mesh.rules)
    global_batch = config.train.global_batch
    task = with_task_entry(build_task(config), global_batch)
    optimizer, schedule = make_optimizer(config.optim, config.train.steps)
    state, abstract, shardings = create_state(task, optimizer, mesh, rules, jax.random.key(0))
    bshard = batch_shardings(task, mesh, rules)
    step_fn = make_train_step(task, optimizer, 1, False, schedule, config.train.accumulate, rules)
    jitted = jax.jit(step_fn, in_shardings=(shardings, bshard, mesh_lib.replicated(mesh)),
                     out_shardings=(shardings, mesh_lib.replicated(mesh)), donate_argnums=0)
    batches = task.train_batches(0, 0, 1)
    rng = jax.random.key(1)
    out = []
    with jax.set_mesh(mesh):
        example = {k: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=bshard[k])
                   for k, s in task.batch_spec.items()}
        step = jitted.lower(abstract, example, rng).compile(FAST_COMPILE)
        for index in range(len(TASKS)):
            host = dict(next(batches), task=np.full(global_batch, index, np.int32))
            batch = {k: jax.device_put(np.asarray(host[k], s.dtype), bshard[k])
                     for k, s in task.batch_spec.items()}
            state, metrics = step(state, batch, rng)
            metrics = {k: float(v) for k, v in metrics.items()}
            out.append((metrics, jax.device_get(dict(
                params=state.params, mu=optax.tree_utils.tree_get(state.opt_state, 'mu'),
                nu=optax.tree_utils.tree_get(state.opt_state, 'nu')))))
    return out


def test_each_task_trains_on_one_device():
    for index, (metrics, _) in enumerate(train_steps('single')):
        assert int(metrics['task']) == index
        assert np.isfinite(metrics['loss']) and metrics['grad_norm'] > 0, (TASKS[index], metrics)
        assert not metrics['nonfinite']


# ~30 s (data8) and ~45 s (fsdp4_model2, slow) on an idle 2-core machine, on top of the ~30 s
# of the single-device run: SPMD compilation of the five-branch step dominates
@pytest.mark.parametrize('name', ['data8', pytest.param('fsdp4_model2', marks=pytest.mark.slow)])
def test_sharded_steps_match_one_device(name):
    single, sharded = train_steps('single'), train_steps(name)
    for task, (expected, expected_state), (actual, actual_state) in zip(TASKS, single, sharded):
        assert int(actual['task']) == int(expected['task'])
        for key in ('loss', 'grad_norm', f'{task.replace("-", "_")}_loss'):
            np.testing.assert_allclose(actual[key], expected[key], rtol=2e-5, err_msg=(task, key))
        worst = {kind: state_close(actual_state[kind], expected_state[kind], f'{task} {kind}')
                 for kind in expected_state}
        print(f'{name} {task}: loss {actual["loss"]:.6f} vs {expected["loss"]:.6f}, '
              'max |diff| / max |value| of ' + ', '.join(f'{k} {v:.1e}' for k, v in worst.items()))
