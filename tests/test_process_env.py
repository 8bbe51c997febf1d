"""trainer/process_env.py: the entry points re-execute once with malloc tunables and XLA:CPU
options, keep the user's own settings, and keep their pid and arguments."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from trainer import cli, process_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_settings_are_added_where_the_environment_has_none():
    env = process_env.process_env({'JAX_PLATFORMS': 'cpu', 'XLA_FLAGS': '--xla_foo=1'})
    if process_env.platform.libc_ver()[0] == 'glibc':
        assert env['GLIBC_TUNABLES'] == process_env.GLIBC_TUNABLES
    assert env['XLA_FLAGS'] == ('--xla_foo=1 --xla_backend_extra_options='
                                + process_env.XLA_CPU_EXTRA_OPTIONS)
    assert env[process_env.MARKER] == 'on'


def test_own_settings_win_and_accelerators_keep_their_llvm_options():
    own = {'JAX_PLATFORMS': 'cpu', 'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2',
           'XLA_FLAGS': '--xla_backend_extra_options=mine'}
    env = process_env.process_env(own)
    assert env['GLIBC_TUNABLES'] == own['GLIBC_TUNABLES']
    assert env['XLA_FLAGS'] == own['XLA_FLAGS']
    tpu = process_env.process_env({'JAX_PLATFORMS': 'tpu'})
    assert 'XLA_FLAGS' not in tpu


SCRIPT = """
import os, sys
print('start', os.getpid(), sys.argv[1:], flush=True)
from trainer import process_env
process_env.reexec()
print('env', os.environ.get('GLIBC_TUNABLES'), os.environ.get('XLA_FLAGS'), flush=True)
"""


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='Linux only')
@pytest.mark.parametrize('switch', ['', 'off'])
def test_reexec_keeps_pid_and_arguments(tmp_path, switch):
    script = tmp_path / 'entry.py'
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items()
           if k not in ('GLIBC_TUNABLES', 'XLA_FLAGS', process_env.MARKER)}
    env.update(JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
    if switch:
        env[process_env.MARKER] = switch
    out = subprocess.run([sys.executable, '-u', str(script), '--a', 'b c'], env=env, check=True,
                         capture_output=True, text=True).stdout.splitlines()
    starts = [line for line in out if line.startswith('start')]
    assert len(starts) == (1 if switch else 2)
    assert len({line.split()[1] for line in starts}) == 1          # same pid
    assert all(line.endswith("['--a', 'b c']") for line in starts)
    if not switch:
        assert f'--xla_backend_extra_options={process_env.XLA_CPU_EXTRA_OPTIONS}' in out[-1]
        if process_env.platform.libc_ver()[0] == 'glibc':
            assert process_env.GLIBC_TUNABLES in out[-1]
    else:
        assert out[-1] == 'env None None'


def test_only_the_real_command_line_reexecutes(monkeypatch):
    calls = []
    monkeypatch.setattr(process_env, 'reexec', lambda: calls.append(1))
    argv = ['prog', f'--config={ROOT}/configs/examples/lm.py', '--workdir=/tmp/x']
    from absl import flags
    if 'config' not in flags.FLAGS:
        cli.define_flags()
    cli.parse(list(argv))
    assert calls == []
    monkeypatch.setattr(sys, 'argv', argv)
    cli.parse(sys.argv)
    assert calls == [1]
