"""Crash, preemption and resume of the real models' tiny variants, through their training CLIs
in child processes (issue 9; the engine-level proofs with the example LM are in
test_reliability_engine.py).

Each test runs an uninterrupted reference, then the same run in another work directory
interrupted again and again: SIGKILL while an asynchronous checkpoint write is in flight,
SIGKILL at random steps and (MERLOT Reserve) SIGTERM, the preemption notice, each followed by a
restart. Every restart must resume from the newest complete checkpoint; after the planned steps
the parameters must be bit-for-bit those of the reference. The children share a persistent
compilation cache, so only the first one compiles the train step.
"""
from __future__ import annotations

import os
import random
import re
import signal

import jax
import numpy as np
import pytest
from engine_utils import restore_params, run_module
from reliability_utils import child_env, sigkill_at, sigkill_during_checkpoint_write, sigterm_at

STEPS = 12


def committed(workdir) -> list[int]:
    directory = os.path.join(workdir, 'checkpoints')
    return sorted(int(d) for d in os.listdir(directory) if d.isdigit()) if os.path.isdir(
        directory) else []


def resumed_at(output: str) -> int:
    found = re.search(r'resumed from \S+ at step (\d+)', output)
    return int(found.group(1)) if found else 0


class Interrupted:
    """Runs of one work directory; checks that each start resumes from the newest complete
    checkpoint."""

    def __init__(self, module: str, args: list[str], workdir, env: dict):
        self.module, self.args, self.workdir, self.env = module, args, str(workdir), env
        self.log: list[str] = []

    def _expect_resume(self, output: str, newest: int, how: str):
        assert resumed_at(output) == newest, (
            f'{how}: resumed at {resumed_at(output)}, newest complete checkpoint {newest}\n'
            f'{output[-3000:]}')
        self.log.append(f'{how}: started at step {newest}')

    def kill_during_checkpoint_write(self):
        newest = max(committed(self.workdir), default=0)
        code, out, uncommitted = sigkill_during_checkpoint_write(
            self.module, self.args, os.path.join(self.workdir, 'checkpoints'), self.env)
        assert code == -signal.SIGKILL and uncommitted, (code, uncommitted, out[-3000:])
        self._expect_resume(out, newest, f'SIGKILL while writing {uncommitted}')

    def kill_at(self, step: int, delay: float):
        newest = max(committed(self.workdir), default=0)
        code, out = sigkill_at(self.module, self.args, f'step {step}/{STEPS}', delay, self.env)
        assert code == -signal.SIGKILL, out[-3000:]
        self._expect_resume(out, newest, f'SIGKILL at step {step} + {delay:.2f} s')

    def terminate_at(self, step: int) -> int:
        newest = max(committed(self.workdir), default=0)
        code, out = sigterm_at(self.module, self.args, f'step {step}/{STEPS}', 0.0, self.env)
        assert code == 0 and 'SIGTERM received' in out, out[-3000:]
        stopped = int(re.search(r'stopping at step (\d+) after SIGTERM', out).group(1))
        assert step <= stopped < STEPS and stopped in committed(self.workdir)
        self._expect_resume(out, newest, f'SIGTERM at step {step}, saved {stopped}')
        return stopped

    def finish(self):
        newest = max(committed(self.workdir), default=0)
        proc = run_module(self.module, self.args, env=self.env)
        self._expect_resume(proc.stdout, newest, 'final restart')


def assert_same_params(a_dir, b_dir, step: int = STEPS):
    a, b = restore_params(a_dir, step), restore_params(b_dir, step)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)


def env_for(tmp_path) -> dict:
    return child_env(devices=2, JAX_COMPILATION_CACHE_DIR=str(tmp_path / 'jax_cache'),
                     JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')


@pytest.mark.slow
def test_mreserve_tiny_kill_preempt_resume_is_bit_exact(tmp_path):
    """Synthetic batches (`demo.enabled=False` without `data.train_path`: no demo corpus)."""
    def args(workdir):
        return ['--config', f'configs/mreserve/pretrain.py:variant=tiny,steps={STEPS},batch=4',
                '--config.demo.enabled=False', '--config.optim.warmup_steps=2',
                '--config.train.ckpt_every=3', '--config.train.log_every=1',
                '--config.train.keep_ckpts=20', '--workdir', str(workdir)]
    env = env_for(tmp_path)
    whole, crashed = tmp_path / 'whole', tmp_path / 'crashed'
    run_module('mreserve.train', args(whole), env=env)
    rng = random.Random(9)
    run = Interrupted('mreserve.train', args(crashed), crashed, env)
    run.kill_during_checkpoint_write()
    run.kill_at(rng.randint(5, 6), rng.uniform(0, 0.2))
    stopped = run.terminate_at(rng.randint(7, 8))
    run.kill_at(rng.randint(stopped + 1, STEPS - 1), rng.uniform(0, 0.2))
    run.finish()
    print('\n'.join(run.log))
    assert_same_params(whole, crashed)


@pytest.mark.slow
def test_hero_tiny_kill_resume_is_bit_exact(tmp_path):
    """Synthetic batches (`data.synthetic`); the train step compiled at a low optimisation
    level (the same executable for every run, from the shared cache)."""
    def args(workdir):
        return ['--config', 'configs/hero/pretrain.py:variant=tiny',
                f'--config.train.steps={STEPS}', '--config.train.global_batch=4',
                '--config.data.synthetic=True', '--config.optim.warmup_steps=2',
                '--config.train.ckpt_every=3', '--config.train.log_every=1',
                '--config.train.keep_ckpts=20',
                '--config.train.compiler_options=xla_backend_optimization_level=0,'
                'xla_llvm_disable_expensive_passes=true,xla_cpu_use_fusion_emitters=false',
                '--workdir', str(workdir)]
    env = env_for(tmp_path)
    whole, crashed = tmp_path / 'whole', tmp_path / 'crashed'
    run_module('hero.train', args(whole), env=env, timeout=400)
    rng = random.Random(9)
    run = Interrupted('hero.train', args(crashed), crashed, env)
    run.kill_during_checkpoint_write()
    run.kill_at(rng.randint(5, 8), rng.uniform(0, 0.2))
    run.finish()
    print('\n'.join(run.log))
    assert_same_params(whole, crashed)
