"""Two processes on one machine (jax.distributed over 127.0.0.1, gloo CPU collectives, 4 fake
devices each) train, checkpoint, restore and agree with the one-process run."""
import os
import socket
import subprocess
import sys

import jax
import numpy as np
from engine_utils import ROOT, read_metrics, restore_params, run_module

ARGS = ['--config', 'configs/examples/lm.py:steps=20,batch=16', '--config.train.log_every=1',
        '--config.train.ckpt_every=10', '--config.train.eval_every=0',
        '--config.mesh.data=4', '--config.mesh.fsdp=2']


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _run_two_processes(workdir, extra=()):
    port = _free_port()
    env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2',
               XLA_FLAGS='--xla_force_host_platform_device_count=4', PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen(
        [sys.executable, '-m', 'trainer.examples.lm', *ARGS, *extra, '--workdir', str(workdir),
         '--coordinator_address', f'127.0.0.1:{port}', '--num_processes', '2',
         '--process_id', str(i), '--distributed_timeout', '60'],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-4000:]
    return outputs


def test_two_processes_match_one(tmp_path):
    single, multi = tmp_path / 'single', tmp_path / 'multi'
    run_module('trainer.examples.lm', ARGS + ['--workdir', str(single)])
    _run_two_processes(multi, ['--config.train.stop_after=10'])
    outputs = _run_two_processes(multi)
    assert 'resumed from' in outputs[0] and 'at step 10' in outputs[0]

    ref = {r['step']: r['loss'] for r in read_metrics(single)}
    got = {r['step']: r['loss'] for r in read_metrics(multi)}
    assert sorted(got) == list(range(1, 21))
    np.testing.assert_allclose([got[s] for s in range(1, 21)], [ref[s] for s in range(1, 21)],
                               rtol=2e-5, atol=2e-6)
    for a, b in zip(jax.tree.leaves(restore_params(single, 20)),
                    jax.tree.leaves(restore_params(multi, 20))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
