"""trainer.aot compiles the real train step for a TPU topology on this CPU machine (needs the
`tpu` extra: libtpu)."""
import importlib.util
import json

import pytest
from engine_utils import run_module

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _need_libtpu():
    if importlib.util.find_spec('libtpu') is None:
        pytest.skip("libtpu is not installed (pip install -e '.[tpu]')")


def test_aot_tiny_lm_on_v5e_2x2():
    proc = run_module('trainer.aot', ['--config', 'configs/examples/lm.py', '--topology',
                                      'v5e:2x2', '--config.mesh.fsdp=2'],
                      env={'TPU_SKIP_MDS_QUERY': '1'})
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result['devices'] == 4 and result['device_kind'].startswith('TPU v5')
    assert result['mesh'] == {'data': 2, 'fsdp': 2, 'model': 1}
    for key in ('params_bytes_per_device', 'optimizer_bytes_per_device',
                'temporaries_bytes_per_device', 'total_bytes_per_device',
                'xla_flops_per_device_step', 'roofline_step_time_s', 'roofline_mfu'):
        assert result[key] > 0, key
    # 74,816 f32 parameters split over fsdp=2 (norms and biases partly replicated).
    assert 74_816 * 4 / 2 <= result['params_bytes_per_device'] < 74_816 * 4
    assert result['fits'] is True
    # the roofline never claims more than the peak (scanned layers: the analytic FLOPs)
    assert result['roofline_flops_source'] in ('xla', 'analytic')
    assert 0 < result['roofline_mfu'] <= 1
    assert 'HBM per device' in proc.stdout


def test_aot_v4_compiles_for_megacore_devices():
    # a v4 TPU VM shows one device per chip (both TensorCores, the chip's 32 GiB)
    proc = run_module('trainer.aot', ['--config', 'configs/examples/lm.py', '--topology',
                                      'v4:2x2x1'], env={'TPU_SKIP_MDS_QUERY': '1'})
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result['devices'] == 4 and result['device_kind'] == 'TPU v4'
    assert result['hbm_bytes_per_device'] == 32 * 1024**3


def test_aot_config_error_exits_2():
    proc = run_module('trainer.aot', ['--config', 'configs/examples/lm.py', '--topology',
                                      'v5e:2x2', '--config.mesh.fsdp=8'], check=False)
    assert proc.returncode == 2 and 'mesh' in proc.stderr
