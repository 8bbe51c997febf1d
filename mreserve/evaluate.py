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

import flax.linen as nn
import jax
import numpy as np

from mreserve import finetune_sources, finetune_tasks
from trainer.evaluate_cli import evaluate_main
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


def main(argv=None):
    evaluate_main(evaluate, argv, 'params directory or finetuning work directory')


if __name__ == '__main__':
    main()
