"""HERO pretraining as an engine Task: loss functions with the `trainer.task.LossFn` signature,
the per-step task draw of the 2:2:1:2 mixture, the batch layout and `build_task`.

Corruption (MLM masking, MFM frame masks, FOM shuffles) happens on device from the step's rng, so
the input pipeline only delivers clean features and tokens. One global batch holds three parts,
flattened to `part.key` names for `BatchSpec`:
  mlm.*    MLM examples: either per video (frame_feats (B, L, D), frame_mask, sub_frames
           (B, S, F), txt_ids / txt_mask (B, S, T) = [CLS] + subtitle: every subtitle of B
           videos is an example, as in the original) or flat rows (hero/batch_layout.py `mlm`
           keys without txt_labels)
  video.*  video batch for MFM and FOM (hero/modeling.py keys)
  vsm.*    video batch with 5 queries per video, query text removed from the context
  task     (B,) int32, optional: this step's task index (the reader's batches carry the draw
           made on the host, and only that task's part holds data; without it the loss draws)
Every part's first axis is split over the data-parallel mesh axes; float16 features (the
store's precision) are up-cast to float32 on device, as the original does on read.

Batches come from the HERO feature store reader (data_pipeline/hero_reader.py, its docstring
has the table of keys): `data.store` names a store; without it a small demo store is built
from the demo corpus and cached (data_pipeline/hero_demo.py, under `data.demo_dir` or
~/.cache/vidlm/hero_demo); `data.synthetic=True` uses hero/synthetic.py (unit tests).
"""
from __future__ import annotations

import contextlib
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from hero import masking, pretrain, synthetic
from hero.config import HeroConfig
from hero.flops import mixture_flops_per_example
from hero.modeling import HeroModel, gather_subtitle_frames, init_params
from hero.vsm import VsmSettings
from trainer.errors import ConfigError
from trainer.task import BatchSpec, Task

TASKS = ('mlm', 'mfm-nce', 'mffr', 'fom', 'vsm')
PART_OF = {'mlm': 'mlm', 'mfm-nce': 'video', 'mffr': 'video', 'fom': 'video', 'vsm': 'vsm'}
DRAW_BLOCK = 1024     # task draws computed on the host at a time


def split_parts(batch):
    """{'mlm.txt_ids': x, ...} -> {'mlm': {'txt_ids': x}, ...}."""
    parts: dict[str, dict] = {}
    for key, value in batch.items():
        part, name = key.split('.', 1)
        if value.dtype == jnp.float16:
            value = value.astype(jnp.float32)
        parts.setdefault(part, {})[name] = value
    return parts


def mlm_rows(batch):
    """Per-video MLM part -> flat `[frames | text]` rows, one per subtitle slot (B*S rows);
    padded subtitle slots have no text, so they get no MLM targets."""
    if 'sub_frames' not in batch:
        return batch
    sub_frames = batch['sub_frames']
    b, s, f = sub_frames.shape
    feats = gather_subtitle_frames(batch['frame_feats'], sub_frames)
    t = batch['txt_ids'].shape[-1]
    return dict(frame_feats=feats.reshape(b * s, f, -1),
                frame_mask=(sub_frames >= 0).astype(jnp.int32).reshape(b * s, f),
                txt_ids=batch['txt_ids'].reshape(b * s, t),
                txt_mask=batch['txt_mask'].reshape(b * s, t))


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
        batch = mlm_rows(batch)
        mask_rng, rng = jax.random.split(rng)
        ids, labels = masking.mask_tokens(mask_rng, batch['txt_ids'], batch['txt_mask'],
                                          mask_id=cfg.mask_id,
                                          random_id_range=tuple(cfg.random_id_range),
                                          mask_prob=cfg.mask_prob,
                                          max_predictions=cfg.max_predictions)
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

    def task_draws(self, start: int, count: int) -> np.ndarray:
        """`sample_task` of steps start .. start + count - 1, computed on the host CPU when
        JAX has it (never queued behind a running train step on the accelerator)."""
        try:
            device = jax.devices('cpu')[0]
        except RuntimeError:
            device = None
        steps = np.arange(start, start + count, dtype=np.int32)
        with jax.default_device(device) if device is not None else contextlib.nullcontext():
            return np.asarray(jax.jit(jax.vmap(self.sample_task))(steps))

    def mixed_loss(self, params, batch, rng, step):
        """The engine's LossFn: draw this step's task and run only its branch (lax.switch).

        Metrics of all tasks are returned plus `task`; those of the tasks not drawn are NaN,
        which the engine's metric writer leaves out, so each task's curve has only its steps.
        A batch with a `task` entry (the reader's: the same draw made on the host, so that
        only the drawn task's part holds data) runs that task; otherwise it is drawn here.
        """
        drawn = batch.get('task')
        parts = split_parts({k: v for k, v in batch.items() if k != 'task'})
        names = tuple(self.config.tasks.names)
        part_of = PART_OF
        shapes = {n: jax.eval_shape(self.loss_fn(n), params, parts[part_of[n]], rng, step)[1]
                  for n in names}
        template = {k: jnp.full(s.shape, jnp.nan, s.dtype) for m in shapes.values()
                    for k, s in m.items()}

        def branch(name):
            def run(p):
                loss, metrics = self.loss_fn(name)(p, parts[part_of[name]], rng, step)
                return loss, dict(template, **metrics)
            return run

        index = self.sample_task(step) if drawn is None else jnp.max(drawn)
        loss, metrics = jax.lax.switch(index, [branch(n) for n in names], params)
        return loss, dict(metrics, task=index)


def batch_sizes(config) -> dict[str, int]:
    """Static per-example sizes of the mixed batch, from the config's data section."""
    data = config.data
    return dict(frames=data.max_clip_len, subs_per_video=data.subs_per_video,
                frames_per_sub=data.frames_per_sub, txt_len=data.max_txt_len + 1,
                query_len=data.max_txt_len + 1, queries_per_video=data.query_per_video)


def reader_batches(config, hero: HeroPretraining, global_batch: int, counter=None):
    """(train_batches, batch_spec) from the feature store reader; the demo store if no
    `data.store` is given. The host draws each step's task (`task_draws`), the reader fills
    only that task's part (the others are zeros) and the batch carries the draw as `task`.
    A missing or empty store fails here, before any compute; with `data.skip_corrupt`
    corrupt records are skipped and counted in `counter` (a tfrecord_io.CorruptionCounter)."""
    model_config = hero.model.config
    from data_pipeline import hero_demo, hero_reader, hero_store
    data = config.data
    store = data.store
    if not store:
        store = hero_demo.build_demo_store(data.demo_dir or None, num_videos=data.demo_videos,
                                           dim=model_config.vfeat_dim)
    try:
        hero_reader.check_store(store)
        meta = hero_store.read_meta(store)
    except (FileNotFoundError, ValueError) as error:
        raise ConfigError('data.store', str(error)) from error
    if meta.get('feat_dim') != model_config.vfeat_dim:
        raise ConfigError('model.vfeat_dim', f"{model_config.vfeat_dim} but the store {store} "
                          f"has {meta.get('feat_dim')}-d features")
    if meta.get('vocab_size', 0) > model_config.vocab_size:
        raise ConfigError('model.vocab_size', f"{model_config.vocab_size} < the store's "
                          f"tokenizer vocabulary {meta['vocab_size']} ({meta.get('tokenizer')})")
    sizes = hero_reader.Sizes.from_config(config)
    names = tuple(config.tasks.names)
    draws: dict[int, np.ndarray] = {}

    def task_of(step: int) -> int:
        block = step // DRAW_BLOCK
        if block not in draws:
            draws.clear()
            draws[block] = hero.task_draws(block * DRAW_BLOCK, DRAW_BLOCK)
        return int(draws[block][step % DRAW_BLOCK])

    try:
        read = hero_reader.make_train_batches(store, sizes, global_batch, int(config.seed),
                                              part_of_step=lambda k: PART_OF[names[task_of(k)]],
                                              skip_corrupt=bool(data.get('skip_corrupt')),
                                              counter=counter)
    except ValueError as error:
        raise ConfigError('data.max_clip_len', str(error)) from error

    def iterate(start_step, process_index, process_count):
        local = global_batch // process_count
        for step, batch in enumerate(read(start_step, process_index, process_count),
                                     start_step):
            yield dict(batch, task=np.full(local, task_of(step), np.int32))

    spec = {k: BatchSpec(shape, dtype)
            for k, (shape, dtype) in hero_reader.batch_shapes(sizes, global_batch).items()}
    spec['task'] = BatchSpec((global_batch,), np.int32)
    return iterate, spec


def build_task(config) -> Task:
    """HERO pretraining as an engine Task, fed by the feature store reader (or synthetic
    batches with `data.synthetic`)."""
    dtype = jnp.dtype(config.train.dtype)
    hero = HeroPretraining.from_config(config, dtype=dtype)
    global_batch = int(config.train.global_batch)
    sizes = batch_sizes(config)

    def init(rng, batch):
        del batch   # init_params builds its own minimal inputs
        return init_params(hero.model, rng)

    def loss(params, batch, rng, step):
        return hero.mixed_loss(params, batch, rng, step)   # the engine sets the axis rules

    def synthetic_batches(start_step, process_index, process_count):
        local = global_batch // process_count
        rows = range(process_index * local, (process_index + 1) * local)
        step = start_step
        while True:
            yield synthetic.pretrain_batch(hero.model.config, sizes, int(config.seed), rows, step)
            step += 1

    data_metrics = None
    if config.data.synthetic:
        example = synthetic.pretrain_batch(hero.model.config, sizes, 0, range(1), 0)
        spec = {k: BatchSpec((global_batch,) + v.shape[1:], v.dtype) for k, v in example.items()}
        iterate = synthetic_batches
    else:
        from data_pipeline import tfrecord_io
        counter = tfrecord_io.CorruptionCounter()
        iterate, spec = reader_batches(config, hero, global_batch, counter)
        if config.data.get('skip_corrupt'):
            data_metrics = counter.metrics
    return Task(name='hero_pretrain', init=init, loss=loss, batch_spec=spec,
                data_metrics=data_metrics,
                train_batches=iterate, flops_per_example=mixture_flops_per_example(config, sizes))
