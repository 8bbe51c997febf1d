"""Run a training entry point as a child process and interrupt it at chosen moments."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from engine_utils import ROOT


def child_env(devices: int = 8, **extra) -> dict:
    env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2', PYTHONUNBUFFERED='1',
               XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
               PYTHONPATH=str(ROOT))
    env.update(extra)
    return env


def run_until(module: str, args: list[str], marker: str, sig: int, delay_s: float = 0.0,
              timeout: float = 240, env: dict | None = None) -> tuple[int, str]:
    """Start `module`, wait for `marker` in its output, wait `delay_s`, send `sig`; return
    (exit code, output). If the run ends before the marker appears, returns its exit code.
    `env`: the child's environment (default `child_env()`)."""
    proc = subprocess.Popen([sys.executable, '-m', module, *args], cwd=ROOT,
                            env=env or child_env(),
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


def sigkill_at(module: str, args: list[str], marker: str, delay_s: float = 0.0,
               env: dict | None = None):
    return run_until(module, args, marker, signal.SIGKILL, delay_s, env=env)


def sigterm_at(module: str, args: list[str], marker: str, delay_s: float = 0.0,
               env: dict | None = None):
    return run_until(module, args, marker, signal.SIGTERM, delay_s, env=env)


def uncommitted_checkpoints(checkpoint_dir) -> list[str]:
    """Orbax checkpoints being written (temporary names until the commit renames them)."""
    if not os.path.isdir(checkpoint_dir):
        return []
    return sorted(d for d in os.listdir(checkpoint_dir) if 'orbax-checkpoint-tmp' in d)


def sigkill_during_checkpoint_write(module: str, args: list[str], checkpoint_dir,
                                    env: dict | None = None, timeout: float = 240
                                    ) -> tuple[int, str, list[str]]:
    """Start `module` and SIGKILL it the moment an asynchronous checkpoint write is seen in
    flight (an uncommitted directory in `checkpoint_dir`); returns (exit code, output, the
    uncommitted directories left behind)."""
    proc = subprocess.Popen([sys.executable, '-m', module, *args], cwd=ROOT,
                            env=env or child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []

    def drain():
        for line in proc.stdout:
            lines.append(line)
    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if uncommitted_checkpoints(checkpoint_dir):
            proc.kill()
            break
        if time.monotonic() > deadline:
            proc.kill()
            raise TimeoutError(f'no checkpoint write seen:\n{"".join(lines)[-3000:]}')
        time.sleep(0.002)
    proc.wait(timeout=timeout)
    reader.join(timeout=30)
    return proc.returncode, ''.join(lines), uncommitted_checkpoints(checkpoint_dir)
