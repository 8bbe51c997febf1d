"""MERLOT Reserve pretraining as an engine Task (trainer/task.py).

The loss runs on the global batch under the engine's `jax.jit` over the mesh: the contrastive
negatives are simply every row of the global arrays (XLA inserts the collectives), and span
selection picks `num_text_spans_to_include` spans per example across the global batch.
Batches come from the TFRecord reader (data_pipeline/mreserve_reader.py) when
`data.train_path` is set, else from random structurally valid batches (mreserve/synthetic.py).
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from mreserve.losses import MAX_LOG_SCALE, SCALE_NAMES, pretrain_losses
from mreserve.model_config import ModelConfig
from mreserve.params import init_params
from mreserve.pretrain_model import MerlotReservePretrainer
from mreserve.synthetic import batch_shapes, random_batch
from trainer.mesh import rules_from_config
from trainer.task import BatchSpec, Task


def flops_per_example(c: ModelConfig) -> float:
    """Approximate training FLOPs per example (3x the forward matmuls: dense + attention)."""
    h = c.hidden_size

    def encoder(n_seqs, length, layers):
        return n_seqs * layers * (24 * h * h * length + 4 * length * length * h)

    frames, patches = c.num_segments, c.output_grid[0] * c.output_grid[1]
    joint_rows = 2 * c.num_segment_groups + 2
    forward = (encoder(frames, patches + 1, c.vit_num_layers) + 2 * frames * patches * 768 * h
               + encoder(c.num_audio_spans, c.audio_tokens + 1, c.audio_num_layers)
               + encoder(joint_rows, c.seq_len, c.joint_num_layers)
               + 2 * joint_rows * c.seq_len * h * h
               + encoder(c.num_text_spans_to_include, c.text_span_length + 1,
                         c.span_num_layers))
    return 3.0 * forward


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
    train_batches, eval_batches = batches(int(config.seed)), None
    if config.data.get('train_path'):
        from data_pipeline import mreserve_reader  # imports TensorFlow: only when needed
        train_batches, eval_batches = mreserve_reader.make_batch_functions(config)
        if not config.data.get('eval_path'):
            eval_batches = None
    return Task(name=f'mreserve_pretrain_{config.get("variant", "custom")}', init=init,
                loss=loss, batch_spec=spec, train_batches=train_batches,
                eval_batches=eval_batches, flops_per_example=flops_per_example(model_config))
