"""Metrics out: TensorBoard events and metrics.jsonl from process 0, and a progress line."""
from __future__ import annotations

import json
import logging
import math
import os
import time

import jax
import numpy as np

log = logging.getLogger(__name__)


class MetricWriter:
    """Writes one JSON object per logged step (`step` plus every metric) and TensorBoard scalars.

    A NaN metric means "does not apply to this step" (for example the loss of a pretraining task
    that was not drawn) and is left out; non-finite losses are caught before logging.
    """

    def __init__(self, workdir: str, enabled: bool | None = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self._jsonl = None
        self._tb = None
        if self.enabled:
            os.makedirs(workdir, exist_ok=True)
            self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a')
            from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))

    def write(self, step: int, metrics: dict):
        if not self.enabled:
            return
        row = {'step': int(step)}
        for key, value in metrics.items():
            value = float(np.asarray(value))
            if math.isnan(value):
                continue
            row[key] = value
            self._tb.add_scalar(key, value, int(step))
        self._jsonl.write(json.dumps(row) + '\n')
        self._jsonl.flush()

    def close(self):
        if self.enabled:
            self._jsonl.close()
            self._tb.close()


class Progress:
    """step, loss, steps/s, examples/s and ETA, measured between logged steps."""

    def __init__(self, total_steps: int, global_batch: int, start_step: int):
        self.total = total_steps
        self.batch = global_batch
        self.last_step = start_step
        self.last_time = time.perf_counter()

    def line(self, step: int, metrics: dict) -> str:
        now = time.perf_counter()
        steps = max(step - self.last_step, 1)
        rate = steps / max(now - self.last_time, 1e-9)
        self.last_step, self.last_time = step, now
        eta = (self.total - step) / rate if rate > 0 else math.inf
        loss = float(np.asarray(metrics.get('loss', math.nan)))
        return (f'step {step}/{self.total}  loss {loss:.4f}  {rate:.2f} steps/s  '
                f'{rate * self.batch:.1f} examples/s  ETA {_fmt_seconds(eta)}')


def _fmt_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return '?'
    seconds = int(seconds)
    return f'{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}'
