"""Test setup: 8 fake CPU devices (set before jax is imported) and the shared test assets."""
import os
import pathlib

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / 'shared'


@pytest.fixture(scope='session')
def shared_dir() -> pathlib.Path:
    """../shared next to the checkout; tests that need it skip cleanly when it is absent."""
    if not SHARED.is_dir():
        pytest.skip('../shared is not present next to the checkout')
    return SHARED


@pytest.fixture(scope='session')
def media_dir(shared_dir) -> pathlib.Path:
    path = shared_dir / 'media'
    if not path.is_dir():
        pytest.skip('../shared/media is not present')
    return path
