"""HERO downstream fine-tuning as engine Tasks: TVR (VCMR), TVQA / How2QA, VIOLIN (spec §4).

`config.task` names one of `build_tvr_task`, `build_tvqa_task`, `build_violin_task`
(`kind_of(config)` recovers the kind from that name). Examples
come from hero/finetune_data.py and are turned into numpy batches by hero/downstream_data.py;
the step's examples are a function of (seed, step) only (a per-epoch permutation), so a
resumed run sees the batches it would have seen.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from hero import downstream, finetune_data
from hero import downstream_data as dd
from hero.config import HeroConfig
from hero.modeling import HeroModel
from hero.modeling import init_params as hero_init_params
from hero.vsm import VsmSettings
from trainer.task import BatchSpec, Task

CANDIDATES = {'tvqa': 5, 'violin': 2}


@dataclasses.dataclass(frozen=True)
class Downstream:
    """Model, init, loss and batch builder of one downstream kind."""
    kind: str
    model: object
    init: Callable            # rng -> boxed params
    loss: Callable            # (params, batch, rng, step, deterministic) -> (loss, metrics)
    make_batch: Callable      # (videos, items) -> numpy batch


def make_downstream(config, kind: str) -> Downstream:
    dtype = jnp.dtype(config.train.dtype)
    model_cfg = HeroConfig.from_config_dict(config.model)
    sizes = dd.Sizes.from_config(config.data)
    interval = float(config.data.frame_interval)
    if kind == 'tvr':
        model = HeroModel(model_cfg, dtype=dtype)
        settings = VsmSettings(**config.vsm)

        def loss(params, batch, rng, step, deterministic=False):
            return downstream.vcmr_loss(model, params, batch, rng, step, settings,
                                        deterministic)
        return Downstream(kind, model, lambda rng: hero_init_params(model, rng), loss,
                          lambda v, items: dd.vcmr_batch(v, items, sizes, interval))
    if kind == 'tvqa':
        model = downstream.HeroForVideoQA(model_cfg, dtype=dtype)
        loss_fn, make = downstream.qa_loss, lambda v, i: dd.qa_batch(v, i, sizes, interval)
    elif kind == 'violin':
        model = downstream.HeroForViolin(model_cfg, dtype=dtype)
        loss_fn, make = downstream.violin_loss, lambda v, i: dd.violin_batch(v, i, sizes)
    else:
        raise ValueError(f'unknown downstream kind {kind!r}')

    def qa_like_loss(params, batch, rng, step, deterministic=False):
        del step
        return loss_fn(model, params, batch, rng, deterministic)
    return Downstream(kind, model,
                      lambda rng: downstream.init_params(model, rng, CANDIDATES[kind]),
                      qa_like_loss, make)


def example_index(seed: int, step: int, row: int, global_batch: int, n: int) -> int:
    """Item for global row `row` of step `step`: walk a fresh permutation every epoch."""
    position = step * global_batch + row
    epoch, offset = divmod(position, n)
    return int(np.random.default_rng([seed, epoch]).permutation(n)[offset])


def build_task(config, kind: str) -> Task:
    """Engine Task for downstream `kind` with training data from data.source."""
    ds = make_downstream(config, kind)
    global_batch = int(config.train.global_batch)
    seed = int(config.seed)
    videos, items = finetune_data.load_split(config, ds.kind, 'train')
    if not items:
        raise ValueError('the training split has no examples')

    def iterate(start_step, process_index, process_count):
        local = global_batch // process_count
        rows = range(process_index * local, (process_index + 1) * local)
        step = start_step
        while True:
            picked = [items[example_index(seed, step, r, global_batch, len(items))]
                      for r in rows]
            yield ds.make_batch(videos, picked)
            step += 1

    def eval_batches(start_step, process_index, process_count):
        del start_step
        val_videos, val_items = finetune_data.load_split(config, ds.kind, 'val')
        local = global_batch // process_count
        for first in range(0, len(val_items), global_batch):
            chunk = [val_items[(first + r) % len(val_items)] for r in range(global_batch)]
            yield ds.make_batch(val_videos, chunk[process_index * local:
                                                  (process_index + 1) * local])

    def eval_metrics(params, batch, rng):
        loss, metrics = ds.loss(params, batch, rng, jnp.zeros((), jnp.int32), True)
        return dict(metrics, loss=loss)

    example = ds.make_batch(videos, items[:1])
    spec = {k: BatchSpec((global_batch,) + v.shape[1:], v.dtype) for k, v in example.items()}
    return Task(name=f'hero_{ds.kind}', init=lambda rng, batch: ds.init(rng),
                loss=lambda p, b, r, s: ds.loss(p, b, r, s), batch_spec=spec,
                train_batches=iterate, eval_batches=eval_batches, eval_metrics=eval_metrics)


def build_tvr_task(config) -> Task:
    return build_task(config, 'tvr')


def build_tvqa_task(config) -> Task:
    return build_task(config, 'tvqa')


def build_violin_task(config) -> Task:
    return build_task(config, 'violin')


def kind_of(config) -> str:
    name = config.task.rpartition(':')[2]
    for kind in ('tvr', 'tvqa', 'violin'):
        if name == f'build_{kind}_task':
            return kind
    raise ValueError(f'config.task {config.task!r} is not a HERO downstream task')


def jitted_forward(ds: Downstream, compiler_options=None):
    """Deterministic forward for evaluation: QA -> (answer logits, st, ed); VIOLIN -> logits."""
    return jax.jit(lambda params, batch: ds.model.apply({'params': params}, batch, True),
                   compiler_options=compiler_options)
