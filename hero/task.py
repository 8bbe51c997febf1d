"""HERO pretraining as an engine Task: loss functions with the `trainer.task.LossFn` signature,
the per-step task draw of the 2:2:1:2 mixture, the batch layout and `build_task`.

Corruption (MLM masking, MFM frame masks, FOM shuffles) happens on device from the step's rng, so
the input pipeline only delivers clean features and tokens. One global batch holds three parts,
flattened to `part.key` names for `BatchSpec`:
  mlm.*    MLM examples (hero/batch_layout.py `mlm` keys without txt_labels)
  video.*  video batch for MFM and FOM (hero/modeling.py keys)
  vsm.*    video batch with 5 queries per video, query text removed from the context
Every part's first axis is split over the data-parallel mesh axes.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from hero import masking, pretrain, synthetic
from hero.config import HeroConfig
from hero.modeling import HeroModel, init_params
from hero.vsm import VsmSettings
from trainer.task import BatchSpec, Task

TASKS = ('mlm', 'mfm-nce', 'mffr', 'fom', 'vsm')


def split_parts(batch):
    """{'mlm.txt_ids': x, ...} -> {'mlm': {'txt_ids': x}, ...}."""
    parts: dict[str, dict] = {}
    for key, value in batch.items():
        part, name = key.split('.', 1)
        parts.setdefault(part, {})[name] = value
    return parts


@dataclasses.dataclass(frozen=True)
class HeroPretraining:
    """Loss functions of the pretraining tasks for a model and an experiment config."""
    model: HeroModel
    config: object   # the experiment ConfigDict (mlm, mfm, fom, vsm, tasks sections)

    @classmethod
    def from_config(cls, config, dtype=jnp.float32):
        model = HeroModel(HeroConfig.from_config_dict(config.model), dtype=dtype)
        return cls(model, config)

    @property
    def vsm_settings(self) -> VsmSettings:
        return VsmSettings(**self.config.vsm)

    def mlm(self, params, batch, rng, step):
        del step
        cfg = self.config.mlm
        mask_rng, rng = jax.random.split(rng)
        ids, labels = masking.mask_tokens(mask_rng, batch['txt_ids'], batch['txt_mask'],
                                          mask_id=cfg.mask_id,
                                          random_id_range=tuple(cfg.random_id_range),
                                          mask_prob=cfg.mask_prob)
        batch = dict(batch, txt_ids=ids, txt_labels=labels)
        return pretrain.mlm_loss(self.model, params, batch, rng,
                                 max_predictions=cfg.max_predictions)

    def _mfm_batch(self, batch, rng):
        return dict(batch, mfm_mask=masking.mask_frames(rng, batch['frame_mask'],
                                                        self.config.mfm.mask_prob))

    def mfm_nce(self, params, batch, rng, step):
        del step
        mask_rng, rng = jax.random.split(rng)
        return pretrain.mfm_nce_loss(self.model, params, self._mfm_batch(batch, mask_rng), rng,
                                     group_size=self.config.mfm.nce_group_size)

    def mffr(self, params, batch, rng, step):
        del step
        mask_rng, rng = jax.random.split(rng)
        return pretrain.mffr_loss(self.model, params, self._mfm_batch(batch, mask_rng), rng)

    def fom(self, params, batch, rng, step):
        del step
        shuffle_rng, rng = jax.random.split(rng)
        orders, targets = masking.shuffle_orders(shuffle_rng, batch['frame_mask'],
                                                 self.config.fom.reorder_prob)
        batch = dict(batch, shuffled_orders=orders, fom_targets=targets)
        return pretrain.fom_loss(self.model, params, batch, rng)

    def vsm(self, params, batch, rng, step):
        return pretrain.vsm_loss(self.model, params, batch, rng, step, self.vsm_settings)

    def loss_fn(self, name: str):
        """(params, batch_part, rng, step) -> (loss, metrics) for one task."""
        return {'mlm': self.mlm, 'mfm-nce': self.mfm_nce, 'mffr': self.mffr, 'fom': self.fom,
                'vsm': self.vsm}[name]

    def sample_task(self, step):
        """Index into config.tasks.names, drawn with probabilities proportional to the ratios
        (the original draws from [mlm, mlm, mfm-nce, mfm-nce, fom, vsm, vsm] once per optimizer
        step). A function of seed and step only, so every micro-batch and device agrees."""
        ratios = jnp.asarray(self.config.tasks.ratios, jnp.float32)
        rng = jax.random.fold_in(jax.random.key(self.config.seed), step)
        return jax.random.choice(rng, len(ratios), p=ratios / ratios.sum())

    def mixed_loss(self, params, batch, rng, step):
        """The engine's LossFn: draw this step's task and run only its branch (lax.switch).

        Metrics of all tasks are returned plus `task`; those of the tasks not drawn are NaN,
        which the engine's metric writer leaves out, so each task's curve has only its steps.
        """
        parts = split_parts(batch)
        names = tuple(self.config.tasks.names)
        part_of = {'mlm': 'mlm', 'mfm-nce': 'video', 'mffr': 'video', 'fom': 'video',
                   'vsm': 'vsm'}
        shapes = {n: jax.eval_shape(self.loss_fn(n), params, parts[part_of[n]], rng, step)[1]
                  for n in names}
        template = {k: jnp.full(s.shape, jnp.nan, s.dtype) for m in shapes.values()
                    for k, s in m.items()}

        def branch(name):
            def run(p):
                loss, metrics = self.loss_fn(name)(p, parts[part_of[name]], rng, step)
                return loss, dict(template, **metrics)
            return run

        index = self.sample_task(step)
        loss, metrics = jax.lax.switch(index, [branch(n) for n in names], params)
        return loss, dict(metrics, task=index)


def batch_sizes(config) -> dict[str, int]:
    """Static per-example sizes of the mixed batch, from the config's data section."""
    data = config.data
    return dict(frames=data.max_clip_len, subs_per_video=data.subs_per_video,
                frames_per_sub=data.frames_per_sub, txt_len=data.max_txt_len + 1,
                query_len=data.max_txt_len + 1, queries_per_video=data.query_per_video)


def build_task(config) -> Task:
    """HERO pretraining as an engine Task; batches are synthetic until the HERO reader exists."""
    dtype = jnp.dtype(config.train.dtype)
    hero = HeroPretraining.from_config(config, dtype=dtype)
    global_batch = int(config.train.global_batch)
    sizes = batch_sizes(config)

    def init(rng, batch):
        del batch   # init_params builds its own minimal inputs
        return init_params(hero.model, rng)

    def loss(params, batch, rng, step):
        return hero.mixed_loss(params, batch, rng, step)   # the engine sets the axis rules

    def iterate(start_step, process_index, process_count):
        local = global_batch // process_count
        rows = range(process_index * local, (process_index + 1) * local)
        step = start_step
        while True:
            yield synthetic.pretrain_batch(hero.model.config, sizes, int(config.seed), rows, step)
            step += 1

    example = synthetic.pretrain_batch(hero.model.config, sizes, 0, range(1), 0)
    spec = {k: BatchSpec((global_batch,) + v.shape[1:], v.dtype) for k, v in example.items()}
    return Task(name='hero_pretrain', init=init, loss=loss, batch_spec=spec,
                train_batches=iterate)
