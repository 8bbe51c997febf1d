"""Engine-level reliability: crashes, preemption, broken checkpoints, full disk, dead host.

Each scenario drives the example LM through the real CLI in child processes."""
import os
import pathlib
import random
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from engine_utils import ROOT, lm_config, restore_params, run_module
from reliability_utils import child_env, sigkill_at, sigterm_at

from trainer.checkpoint import Checkpointer, CheckpointWriteError
from trainer.examples.lm import build_task
from trainer.loop import train

MODULE = 'trainer.examples.lm'


def _args(workdir, steps=24, ckpt_every=4, extra=()):
    return ['--config', f'configs/examples/lm.py:steps={steps},batch=16',
            '--config.train.log_every=1', f'--config.train.ckpt_every={ckpt_every}',
            '--config.train.eval_every=0', '--config.train.keep_ckpts=10',
            '--workdir', str(workdir), *extra]


def _assert_same_params(a_dir, b_dir, step):
    for a, b in zip(jax.tree.leaves(restore_params(a_dir, step)),
                    jax.tree.leaves(restore_params(b_dir, step))):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_is_bit_exact(tmp_path):
    whole, crashed = tmp_path / 'whole', tmp_path / 'crashed'
    run_module(MODULE, _args(whole))
    rng = random.Random(1234)
    # Kill right after a checkpoint step is logged (the async write is in flight) and at
    # random other steps; every restart resumes from the last complete checkpoint.
    kill_points = [(4, 0.0), (rng.randint(9, 11), rng.uniform(0, 0.2)), (16, 0.0),
                   (rng.randint(18, 22), rng.uniform(0, 0.2))]
    for step, delay in kill_points:
        code, out = sigkill_at(MODULE, _args(crashed), f'step {step}/24', delay)
        assert code == -signal.SIGKILL, out[-2000:]
    run_module(MODULE, _args(crashed))
    _assert_same_params(whole, crashed, 24)


def test_sigterm_saves_at_next_step_and_resumes(tmp_path):
    code, out = sigterm_at(MODULE, _args(tmp_path, steps=400, ckpt_every=1000), 'step 5/400')
    assert code == 0, out[-3000:]
    assert 'SIGTERM received' in out and 'stopping at step' in out
    saved = [int(d) for d in os.listdir(tmp_path / 'checkpoints') if d.isdigit()]
    assert len(saved) == 1 and 5 <= saved[0] < 400
    resumed = run_module(MODULE, _args(tmp_path, steps=400, ckpt_every=1000,
                                       extra=['--config.train.stop_after=' +
                                              str(saved[0] + 2)]))
    assert f'at step {saved[0]}' in resumed.stdout


def _damage(step_dir: pathlib.Path, how: str):
    files = sorted((p for p in step_dir.rglob('*') if p.is_file()), key=lambda p: p.stat().st_size)
    if how == 'truncated':
        biggest = files[-1]
        biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 3])
    elif how == 'missing files':
        for path in files:
            if 'state' in path.parts:
                path.unlink()
    elif how == 'uncommitted':
        step_dir.rename(step_dir.with_name(f'{step_dir.name}.orbax-checkpoint-tmp-1'))


@pytest.mark.parametrize('how', ['truncated', 'missing files', 'uncommitted'])
def test_broken_latest_checkpoint_falls_back(tmp_path, how, caplog):
    config = lm_config(steps=12, ckpt_every=4, keep_ckpts=5)
    train(config, str(tmp_path), build_task(config))
    _damage(tmp_path / 'checkpoints' / '12', how)
    config.train.steps = 16
    with caplog.at_level('WARNING'):
        result = train(config, str(tmp_path), build_task(config))
    assert result['start_step'] == 8
    if how != 'uncommitted':
        assert 'checkpoint' in caplog.text and '/12' in caplog.text and 'unusable' in caplog.text
    # What it trained from step 8 equals the uninterrupted run.
    reference = lm_config(steps=16, ckpt_every=4, keep_ckpts=5)
    ref = train(reference, str(tmp_path / 'ref'), build_task(reference))
    np.testing.assert_array_equal([r['loss'] for r in result['history']],
                                  [r['loss'] for r in ref['history']][8:])


def test_checkpoint_from_other_config_names_the_path(tmp_path):
    config = lm_config(steps=4, ckpt_every=4)
    train(config, str(tmp_path), build_task(config))
    config.model.width = 32
    config.model.mlp_dim = 64
    with pytest.raises(ValueError, match=r"does not fit this model: .*parameter 'embed'"):
        train(config, str(tmp_path), build_task(config))


def _mount_tmpfs(path: pathlib.Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which('mount') is None:
        return False
    proc = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(path)],
                          capture_output=True)
    return proc.returncode == 0


def test_full_disk_raises_and_keeps_earlier_checkpoints(tmp_path):
    disk = tmp_path / 'small'
    if not _mount_tmpfs(disk, '4m'):
        pytest.skip('cannot mount a tmpfs here (needs root)')
    try:
        config = lm_config(steps=40, ckpt_every=1, keep_ckpts=100)  # ~1 MB per checkpoint
        with pytest.raises(CheckpointWriteError, match='failed') as info:
            train(config, str(disk), build_task(config))
        assert 'Earlier checkpoints are intact' in str(info.value)
        checkpointer = Checkpointer(str(disk / 'checkpoints'), 1, 100)
        steps = checkpointer.steps()
        assert steps, 'no checkpoint survived'
        from trainer import mesh as mesh_lib
        from trainer.optim import make_optimizer
        from trainer.state import state_shardings
        rules = mesh_lib.rules_from_config(config.mesh.rules)
        mesh = mesh_lib.build_mesh(config.mesh)
        abstract, _ = state_shardings(build_task(config), make_optimizer(config.optim, 40)[0],
                                      mesh, rules)
        step, state, _ = checkpointer.restore(abstract, steps[-1])
        assert step == steps[-1]
        checkpointer.close()
    finally:
        subprocess.run(['umount', '-l', str(disk)], capture_output=True)


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_dead_host_stops_the_survivor(tmp_path):
    port = _free_port()
    procs = []
    for i in range(2):
        args = _args(tmp_path, steps=100000, ckpt_every=100000, extra=[
            '--config.mesh.data=4', '--config.mesh.fsdp=2',
            '--coordinator_address', f'127.0.0.1:{port}', '--num_processes', '2',
            '--process_id', str(i), '--heartbeat_timeout', '10'])
        procs.append(subprocess.Popen([sys.executable, '-m', MODULE, *args], cwd=ROOT,
                                      env=child_env(devices=4), stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    for line in procs[0].stdout:
        if 'step 3/' in line:
            break
    procs[1].kill()
    start = time.monotonic()
    try:
        out, _ = procs[0].communicate(timeout=120)
    except subprocess.TimeoutExpired:
        procs[0].kill()
        pytest.fail('the surviving process hung after its peer died')
    elapsed = time.monotonic() - start
    assert procs[0].returncode != 0
    assert elapsed < 90
    assert any(word in out.lower() for word in ('heartbeat', 'unavailable', 'connection',
                                                'coordination', 'peer', 'gloo')), out[-3000:]
