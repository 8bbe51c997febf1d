"""The interface between the engine and a model package.

`trainer/` knows nothing about MERLOT Reserve or HERO. A model package hands the engine a `Task`:
how to build parameters, how to compute the loss on a global batch, what a batch looks like and
where batches come from. Everything else (mesh, sharding, optimizer, checkpoints, metrics,
multi-host) is the engine's job.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import numpy as np

Params = Any
Batch = Mapping[str, Any]
# (params, batch, rng, step) -> (scalar loss, {metric name: scalar})
LossFn = Callable[[Params, Batch, jax.Array, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]


@dataclasses.dataclass(frozen=True)
class BatchSpec:
    """Shape, dtype and logical axes of one batch entry for the *global* batch.

    The first axis is the example axis and is normally called 'act_batch' so that it is split
    over the data-parallel mesh axes; other axes are usually None (replicated).
    """
    shape: tuple[int, ...]
    dtype: Any
    axes: tuple[str | None, ...] | None = None

    def logical_axes(self) -> tuple[str | None, ...]:
        if self.axes is not None:
            return self.axes
        return ('act_batch',) + (None,) * (len(self.shape) - 1)

    def zeros(self, batch: int | None = None) -> np.ndarray:
        shape = self.shape if batch is None else (batch,) + tuple(self.shape[1:])
        return np.zeros(shape, self.dtype)


@dataclasses.dataclass(frozen=True)
class Task:
    """What a model package supplies.

    init: (rng, batch) -> params, where every leaf is wrapped with flax logical partitioning
        metadata (`nn.with_logical_partitioning`), for example
        `lambda rng, b: model.init(rng, **b)['params']`.
        It is only traced under `jax.eval_shape` and `jax.jit(out_shardings=...)`; `batch` holds
        zero arrays built from `batch_spec` with a small example count.
    loss: (params, batch, rng, step) -> (loss, metrics). Pure and jittable; params are plain
        (unboxed) arrays; batch is the global batch (a dict of jax.Arrays sharded by
        `batch_spec`); rng is already `fold_in(seed_rng, step)`.
    batch_spec: global-batch spec per key (first axis = global batch size for one optimizer step).
    train_batches: (start_step, process_index, process_count) -> iterator of host-local numpy
        batches (the host's `global_batch // process_count` examples). Order must be a function of
        the seed and the step only, so a resumed run sees exactly the batches it would have seen.
    eval_batches: optional, same signature, finite iterator.
    eval_metrics: optional (params, batch, rng) -> metrics; defaults to the loss function's metrics.
    data_metrics: optional () -> {name: number}: counters of this host's input pipeline (for
        example corrupt records skipped); summed over processes and written with the step
        metrics at every log step. They count what the reader has consumed, which may run a
        few batches ahead of the step (prefetch).
    """
    name: str
    init: Callable[[jax.Array, Batch], Params]
    loss: LossFn
    batch_spec: Mapping[str, BatchSpec]
    train_batches: Callable[[int, int, int], Iterator[Batch]]
    eval_batches: Callable[[int, int, int], Iterator[Batch]] | None = None
    eval_metrics: Callable[[Params, Batch, jax.Array], dict[str, jax.Array]] | None = None
    flops_per_example: float | None = None
    data_metrics: Callable[[], Mapping[str, float]] | None = None
