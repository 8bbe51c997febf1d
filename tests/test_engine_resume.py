"""Save at step 10, restart the process, continue to 20: bit-for-bit the uninterrupted run."""
import jax
import numpy as np
from engine_utils import read_metrics, restore_params, run_module

ARGS = ['--config', 'configs/examples/lm.py:steps=20,batch=16', '--config.train.log_every=1',
        '--config.train.ckpt_every=10', '--config.train.eval_every=0']


def test_restart_is_bit_exact(tmp_path):
    whole, split = tmp_path / 'whole', tmp_path / 'split'
    run_module('trainer.examples.lm', ARGS + ['--workdir', str(whole)])
    first = run_module('trainer.examples.lm',
                       ARGS + ['--workdir', str(split), '--config.train.stop_after=10'])
    assert 'step 10/20' in first.stdout
    second = run_module('trainer.examples.lm', ARGS + ['--workdir', str(split)])
    assert 'resumed from' in second.stdout and 'at step 10' in second.stdout

    expected, actual = restore_params(whole, 20), restore_params(split, 20)
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(actual)):
        np.testing.assert_array_equal(a, b)
    losses = {r['step']: r['loss'] for r in read_metrics(whole)}
    resumed = {r['step']: r['loss'] for r in read_metrics(split)}
    assert sorted(resumed) == list(range(1, 21))
    assert resumed == losses


def test_config_json_written(tmp_path):
    run_module('trainer.examples.lm', ARGS + ['--workdir', str(tmp_path),
                                              '--config.train.stop_after=1',
                                              '--config.optim.lr=0.002'])
    import json
    config = json.loads((tmp_path / 'config.json').read_text())
    assert config['optim']['lr'] == 0.002 and config['train']['steps'] == 20
