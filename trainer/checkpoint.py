"""One Orbax CheckpointManager wrapper for every run.

A checkpoint holds the full train state (restored straight onto the target shardings) and the
data-iterator position (a small JSON item). Saves are asynchronous, every `every` steps plus
forced saves (end of run, preemption), keeping the last `keep`. Restore walks back from the
newest checkpoint and skips any that cannot be read completely, warning with the reason, so a
truncated or half-written checkpoint never loads partial state.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from trainer import params_io

log = logging.getLogger(__name__)


class CheckpointWriteError(OSError):
    """Writing a checkpoint failed (for example no space left); older ones are untouched."""


class Checkpointer:
    def __init__(self, directory: str, every: int, keep: int, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        self.every = max(every, 1)
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=max(every, 1), max_to_keep=keep, create=True,
            enable_async_checkpointing=async_save)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=('state', 'data'))

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def should_save(self, step: int) -> bool:
        return step % self.every == 0

    def save(self, step: int, state: Any, data_state: dict, force: bool = False) -> bool:
        try:
            return self.manager.save(
                step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                              data=ocp.args.JsonSave(data_state)),
                force=force)
        except Exception as error:
            raise self._write_error(step, error) from error

    def _write_error(self, step, error) -> CheckpointWriteError:
        return CheckpointWriteError(
            f'writing checkpoint {step} to {self.directory} failed: {type(error).__name__}: '
            f'{error}. Earlier checkpoints are intact: {self.steps()}')

    def restore(self, abstract_state: Any, step: int | None = None):
        """Restore the newest readable checkpoint (or `step`): (step, state, data_state) or None.

        `abstract_state` is a pytree of jax.ShapeDtypeStruct with shardings; every array comes
        back already sharded that way.
        """
        candidates = [step] if step is not None else sorted(self.steps(), reverse=True)
        for candidate in candidates:
            self._check_shapes(candidate, abstract_state)
            try:
                restored = self.manager.restore(
                    candidate, args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract_state),
                        data=ocp.args.JsonRestore()))
            except Exception as error:  # noqa: BLE001 - any unreadable checkpoint is skipped
                if step is not None:
                    raise
                log.warning('checkpoint %s/%d is unusable (%s: %s); trying an older one',
                            self.directory, candidate, type(error).__name__, error)
                self._set_aside(candidate)
                continue
            return candidate, restored['state'], dict(restored['data'] or {})
        return None

    def _set_aside(self, step: int) -> None:
        """Move an unusable checkpoint out of the manager's sight (kept for inspection), so
        it is never tried again and the run can save that step anew."""
        if jax.process_index() == 0:
            aside = self.directory + '_unusable'
            os.makedirs(aside, exist_ok=True)
            target = os.path.join(aside, f'{step}.{int(time.time())}')
            os.rename(os.path.join(self.directory, str(step)), target)
            log.warning('moved unusable checkpoint %d to %s', step, target)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f'set_aside_{step}')
        self.manager.reload()

    def _check_shapes(self, step: int, abstract_state: Any) -> None:
        """A checkpoint from another config is an error, not a reason to fall back: name the
        first mismatching path. Unreadable metadata is left to the restore attempt."""
        path = os.path.join(self.directory, str(step), 'state')
        try:
            stored = params_io.stored_metadata(path)['params']
        except Exception:  # noqa: BLE001 - unreadable: handled (and reported) by restore
            return
        try:  # the params decide; the optimizer state follows them
            params_io.check_shapes(abstract_state.params, stored)
        except ValueError as error:
            raise ValueError(f'checkpoint {path} does not fit this model: {error}') from None

    def wait(self):
        try:
            self.manager.wait_until_finished()
        except Exception as error:
            raise self._write_error(self.latest_step(), error) from error

    def close(self):
        self.wait()
        self.manager.close()


def abstract_like(tree, shardings):
    """ShapeDtypeStructs with shardings, for restoring a tree shaped like `tree`."""
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        tree, shardings)
