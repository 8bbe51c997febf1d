"""Config mistakes exit with status 2 and name the key, before any compute."""
import pytest
from engine_utils import run_module

BASE = ['--config', 'configs/examples/lm.py', '--workdir']

CASES = {
    'unknown key': (['--config.optim.lrr=0.1'], 'lrr'),
    'wrong type': (['--config.optim.lr=fast'], 'optim.lr'),
    'unknown variant argument': (['--config', 'configs/examples/lm.py:stepz=3'], 'stepz'),
    'bad choice': (['--config.optim.decay=cubic'], 'optim.decay'),
    'mesh too large': (['--config.mesh.fsdp=16'], 'mesh'),
    'batch not divisible': (['--config.train.global_batch=12'], 'train.global_batch'),
    'micro-batches': (['--config.train.micro_batches=3'], 'train.micro_batches'),
    'compiler options': (['--config.train.compiler_options=xla_cpu_use_fusion_emitters'],
                         'train.compiler_options'),
}


@pytest.mark.parametrize('case', CASES)
def test_config_error_exits_2(tmp_path, case):
    extra, key = CASES[case]
    proc = run_module('trainer.examples.lm', BASE + [str(tmp_path)] + extra, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert key in proc.stderr, proc.stderr[-2000:]
    assert 'train step compiled' not in proc.stdout + proc.stderr     # before any compute
    assert not (tmp_path / 'checkpoints').exists()
