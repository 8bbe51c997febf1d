"""MERLOT Reserve pretraining as an engine Task (trainer/task.py).

The loss runs on the global batch under the engine's `jax.jit` over the mesh: the contrastive
negatives are simply every row of the global arrays (XLA inserts the collectives), and span
selection picks `num_text_spans_to_include` spans per example across the global batch.
Batches come from the TFRecord reader (data_pipeline/mreserve_reader.py) when
`data.train_path` is set, else from random structurally valid batches (mreserve/synthetic.py).
A train or eval path with nothing to read fails here, before any compute; with
`data.skip_corrupt` the reader's count of skipped corrupt records goes into the metrics.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from mreserve.flops import train_flops_per_example
from mreserve.losses import MAX_LOG_SCALE, SCALE_NAMES, pretrain_losses
from mreserve.model_config import ModelConfig
from mreserve.params import init_params
from mreserve.pretrain_model import MerlotReservePretrainer
from mreserve.synthetic import batch_shapes, random_batch
from trainer.errors import ConfigError
from trainer.mesh import rules_from_config
from trainer.task import BatchSpec, Task


def build_task(config) -> Task:
    model_config = ModelConfig.from_config(config)
    model = MerlotReservePretrainer(model_config)
    global_batch = int(config.train.global_batch)
    rules = rules_from_config(config.mesh.rules)

    def init(rng, batch):
        del batch  # init_params builds its own minimal inputs
        return init_params(model_config, rng)

    def loss(params, batch, rng, step):
        del step
        # The activation constraints inside the model need flax's logical rules while tracing;
        # without them flax would constrain every activation to be replicated.
        with nn.logical_axis_rules(rules):
            preds = model.apply({'params': params}, batch, rng)
        losses = pretrain_losses(preds)
        metrics = {name: value for name, value in losses.items() if name != 'total'}
        for i, name in enumerate(SCALE_NAMES):
            metrics[f'logit_scale/{name}'] = jnp.exp(jnp.minimum(
                params['contrastive_scales'][i], MAX_LOG_SCALE))
        return losses['total'], metrics

    def batches(seed):
        def iterate(start_step, process_index, process_count):
            local = global_batch // process_count
            rows = range(process_index * local, (process_index + 1) * local)
            step = start_step
            while True:
                yield random_batch(model_config, seed, rows, step)
                step += 1
        return iterate

    spec = {key: BatchSpec(shape, dtype)
            for key, (shape, dtype) in batch_shapes(model_config, global_batch).items()}
    train_batches, eval_batches, data_metrics = batches(int(config.seed)), None, None
    if config.data.get('train_path'):
        # imports TensorFlow: only when needed
        from data_pipeline import mreserve_reader, tfrecord_io
        for key in ('train_path', 'eval_path'):
            if config.data.get(key):
                try:   # nothing to read is a start-up error, not an endless wait for data
                    mreserve_reader.check_path(config, train=key == 'train_path')
                except (FileNotFoundError, ValueError) as error:
                    raise ConfigError(f'data.{key}', str(error)) from error
        counter = tfrecord_io.CorruptionCounter()
        train_batches, eval_batches = mreserve_reader.make_batch_functions(config,
                                                                           counter=counter)
        if not config.data.get('eval_path'):
            eval_batches = None
        if config.data.get('skip_corrupt'):
            data_metrics = counter.metrics
    return Task(name=f'mreserve_pretrain_{config.get("variant", "custom")}', init=init,
                loss=loss, batch_spec=spec, train_batches=train_batches,
                eval_batches=eval_batches, data_metrics=data_metrics,
                flops_per_example=train_flops_per_example(model_config, global_batch))
