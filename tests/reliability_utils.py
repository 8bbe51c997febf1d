"""Run a training entry point as a child process and interrupt it at chosen moments."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from engine_utils import ROOT


def child_env(devices: int = 8, **extra) -> dict:
    env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2', PYTHONUNBUFFERED='1',
               XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
               PYTHONPATH=str(ROOT))
    env.update(extra)
    return env


def run_until(module: str, args: list[str], marker: str, sig: int, delay_s: float = 0.0,
              timeout: float = 240) -> tuple[int, str]:
    """Start `module`, wait for `marker` in its output, wait `delay_s`, send `sig`; return
    (exit code, output). If the run ends before the marker appears, returns its exit code."""
    proc = subprocess.Popen([sys.executable, '-m', module, *args], cwd=ROOT, env=child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        lines.append(line)
        if marker in line:
            time.sleep(delay_s)
            proc.send_signal(sig)
            break
        if time.monotonic() > deadline:
            proc.kill()
            raise TimeoutError(f'{marker!r} never appeared:\n{"".join(lines)[-3000:]}')
    rest, _ = proc.communicate(timeout=timeout)
    return proc.returncode, ''.join(lines) + (rest or '')


def sigkill_at(module: str, args: list[str], marker: str, delay_s: float = 0.0):
    return run_until(module, args, marker, signal.SIGKILL, delay_s)


def sigterm_at(module: str, args: list[str], marker: str, delay_s: float = 0.0):
    return run_until(module, args, marker, signal.SIGTERM, delay_s)
