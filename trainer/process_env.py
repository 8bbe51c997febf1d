"""Process-level settings of the entry points: glibc malloc tunables and XLA:CPU's LLVM options.

Both are read once, when the process starts (GLIBC_TUNABLES by the dynamic loader, XLA_FLAGS when
the first backend is created), so `reexec` re-executes the command line with them (same pid,
same arguments, same open files) before anything else runs. Settings already in the
environment win; `TRAINER_PROCESS_ENV=off` turns this off.

- `GLIBC_TUNABLES=glibc.malloc.hugetlb=1`: XLA:CPU mallocs the temporaries of every execution
  and frees them when it ends; glibc hands the large blocks back to the kernel, so each step
  page-faults them in again, 4 KiB at a time: 1.13 M minor faults (4.6 GB) per step of the
  MERLOT Reserve bench step, 31 k per tiny step. With transparent huge pages for malloc's
  mmap'ed blocks it is ~2.5 k and ~450 faults; measured on the 2-core development VM under load
  (benchmarks/README.md): bench step 8.6 -> 7.7 s, tiny step 0.094 -> 0.066 s.
- `--xla_backend_extra_options=xla_cpu_disable_loop_unrolling` (CPU runs only): LLVM code
  generation is most of the compile time of a big step (the full-depth large MERLOT Reserve
  step with scanned layers: 13.6-14.1 -> 11.7-12.2 s under the same load) and the unrolled
  element-wise loops did not run measurably faster.
"""
from __future__ import annotations

import importlib.util
import os
import platform
import sys
from collections.abc import Mapping

MARKER = 'TRAINER_PROCESS_ENV'
GLIBC_TUNABLES = 'glibc.malloc.hugetlb=1'
XLA_CPU_EXTRA_OPTIONS = 'xla_cpu_disable_loop_unrolling'
ACCELERATOR_PLUGINS = ('libtpu', 'jax_cuda12_plugin', 'jax_cuda13_plugin', 'jax_rocm7_plugin')


def cpu_only(env: Mapping[str, str]) -> bool:
    """Will JAX run on the CPU only? (JAX_PLATFORMS=cpu, or no accelerator plugin installed.)"""
    platforms = env.get('JAX_PLATFORMS', '').strip()
    if platforms:
        return platforms == 'cpu'
    return not any(importlib.util.find_spec(name) for name in ACCELERATOR_PLUGINS)


def process_env(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with the settings above added where it has none of its own."""
    out = dict(env)
    if platform.libc_ver()[0] == 'glibc':
        out.setdefault('GLIBC_TUNABLES', GLIBC_TUNABLES)
    flags = out.get('XLA_FLAGS', '')
    if cpu_only(env) and 'xla_backend_extra_options' not in flags:
        out['XLA_FLAGS'] = f'{flags} --xla_backend_extra_options={XLA_CPU_EXTRA_OPTIONS}'.strip()
    out[MARKER] = 'on'
    return out


def reexec() -> None:
    """Re-execute this process's command line once with `process_env` (Linux only)."""
    if os.environ.get(MARKER) or not sys.platform.startswith('linux') or 'pytest' in sys.modules:
        return      # done, switched off, not Linux, or inside a test process
    env = process_env(os.environ)
    if all(env.get(key) == os.environ.get(key) for key in ('GLIBC_TUNABLES', 'XLA_FLAGS')):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable] + sys.orig_argv[1:], env)
