"""Evaluate a finetuned MERLOT Reserve checkpoint on a split and write the metrics as JSON.

    python -m mreserve.evaluate --config configs/mreserve/tvqa.py:variant=tiny --checkpoint DIR \
        [--split val] [--checkpoint_step N]

DIR is a params directory (DIR/params, e.g. a trainer.export) or a finetuning work directory
(DIR/checkpoints/N). Metrics go to DIR/metrics_{split}.json (work directory:
metrics_{split}_step{N}.json), predictions to DIR/predictions_{split}*.json.
TVQA: accuracy from the summed audio + text softmaxes (and each pass alone); VCR: Q->A, QA->R,
Q->AR accuracy; classification: top-1 / top-5 (all in percent).
"""
from __future__ import annotations

import json
import os
import sys

import flax.linen as nn
import jax
import numpy as np
from absl import flags

from mreserve import finetune_sources, finetune_tasks
from trainer.mesh import rules_from_config


def _chunks(n: int, size: int):
    """Fixed-size index chunks (the last wraps around): the forward compiles once."""
    for first in range(0, n, size):
        yield np.arange(first, first + size) % n, min(size, n - first)


def predict(config, params, split: str = 'val', chunk: int = 8, compiler_options=None):
    """-> (logits [N, ...], targets [N, ...], example ids)."""
    kind = finetune_tasks.kind_of(config)
    ds = finetune_tasks.make_downstream(config, kind)
    source = finetune_sources.load_split(config, kind, split)
    rules = rules_from_config(config.mesh.rules)

    def forward(p, batch):
        with nn.logical_axis_rules(rules):
            return ds.forward(p, batch)
    forward = jax.jit(forward, compiler_options=compiler_options)
    target_key = 'labels' if kind == 'vcr' else 'label'
    logits, targets, ids = [], [], []
    for idx, count in _chunks(len(source), chunk):
        examples = [source.example(int(i)) for i in idx]
        batch = ds.make_batch(examples, None)
        inputs = {k: v for k, v in batch.items() if k not in finetune_tasks.TARGET_KEYS}
        logits.append(np.asarray(forward(params, inputs))[:count])
        targets.append(batch[target_key][:count])
        ids += [str(ex.get('id', int(i))) for ex, i in zip(examples[:count], idx[:count])]
    return np.concatenate(logits), np.concatenate(targets), ids


def evaluate(config, params, split: str = 'val', compiler_options=None) -> dict:
    """Metrics of `params` on `split` plus per-example predictions under 'predictions'."""
    kind = finetune_tasks.kind_of(config)
    logits, targets, ids = predict(config, params, split, compiler_options=compiler_options)
    metrics = finetune_tasks.METRICS[kind](logits, targets)
    if kind == 'tvqa':
        preds = finetune_tasks.tvqa_prediction(logits).tolist()
    elif kind == 'vcr':
        preds = logits.argmax(-1).tolist()
    else:
        preds = np.argsort(-logits, -1, kind='stable')[:, :5].tolist()
    metrics['predictions'] = [dict(id=i, prediction=p, target=np.asarray(t).tolist())
                              for i, p, t in zip(ids, preds, targets)]
    return metrics


def load_checkpoint(directory: str, step: int | None = None):
    """-> (params, tag): a params directory or a training work directory's checkpoint."""
    from trainer import export, params_io
    if os.path.isdir(os.path.join(directory, 'params')):
        return params_io.load_params(directory), ''
    step, params = export.read_checkpoint_params(directory, step)
    return params, f'_step{step}'


def write_metrics(metrics: dict, directory: str, split: str, tag: str) -> str:
    metrics = dict(metrics)
    predictions = metrics.pop('predictions', None)
    path = os.path.join(directory, f'metrics_{split}{tag}.json')
    with open(path, 'w') as f:
        json.dump(metrics, f, indent=2, sort_keys=True)
    if predictions is not None:
        with open(os.path.join(directory, f'predictions_{split}{tag}.json'), 'w') as f:
            json.dump(predictions, f)
    return path


def main(argv=None):
    from ml_collections import config_flags

    from trainer import cli
    from trainer.cli import config_error
    config_flags.DEFINE_config_file('config', None, 'config file[:arg]', lock_config=True)
    flags.DEFINE_string('checkpoint', None, 'params directory or finetuning work directory')
    flags.DEFINE_string('split', 'val', 'split to evaluate')
    flags.DEFINE_integer('checkpoint_step', -1,
                         'checkpoint step of a work directory (default: the latest)')
    config = cli.parse(sys.argv if argv is None else argv)
    if not flags.FLAGS.checkpoint:
        config_error("flag 'checkpoint' is required")
    cli.setup_logging()
    step = None if flags.FLAGS.checkpoint_step < 0 else flags.FLAGS.checkpoint_step
    params, tag = load_checkpoint(flags.FLAGS.checkpoint, step)
    metrics = evaluate(config, params, flags.FLAGS.split)
    path = write_metrics(metrics, flags.FLAGS.checkpoint, flags.FLAGS.split, tag)
    print(json.dumps({k: v for k, v in metrics.items() if k != 'predictions'}, indent=1))
    print(f'wrote {path}')


if __name__ == '__main__':
    main()
