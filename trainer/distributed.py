"""Multi-host start-up. On TPU VMs `jax.distributed.initialize()` finds everything itself;
elsewhere the coordinator, process count and id come from flags or the environment
(JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID)."""
from __future__ import annotations

import os

import jax


def initialize(coordinator: str = '', num_processes: int = 0, process_id: int = -1,
               timeout_s: int = 300, heartbeat_s: int = 100) -> None:
    """Join the other processes. A process that stops sending heartbeats for `heartbeat_s`
    seconds is declared dead and every other process stops with an error instead of hanging."""
    coordinator = coordinator or os.environ.get('JAX_COORDINATOR_ADDRESS', '')
    num_processes = num_processes or int(os.environ.get('JAX_NUM_PROCESSES', '0'))
    if process_id < 0:
        process_id = int(os.environ.get('JAX_PROCESS_ID', '-1'))
    if coordinator:
        if not _on_tpu_vm():  # CPU processes need a collectives implementation
            jax.config.update('jax_cpu_collectives_implementation', 'gloo')
        jax.distributed.initialize(coordinator_address=coordinator,
                                   num_processes=num_processes, process_id=process_id,
                                   initialization_timeout=timeout_s,
                                   heartbeat_timeout_seconds=heartbeat_s)
    elif _on_tpu_vm():
        jax.distributed.initialize()


def _on_tpu_vm() -> bool:
    return bool(os.environ.get('TPU_WORKER_HOSTNAMES') or os.environ.get('TPU_ACCELERATOR_TYPE'))
