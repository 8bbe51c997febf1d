"""The `python -m <model>.evaluate` command line shared by both models: load params from a
params directory (trainer.export) or a work directory's checkpoint, run the model's
`evaluate(config, params, split)`, write `metrics_{split}[_stepN].json` (and the predictions)
next to the checkpoint."""
from __future__ import annotations

import json
import os
import sys

from absl import flags


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


def evaluate_main(evaluate, argv=None, checkpoint_help: str = 'params directory or work '
                  'directory'):
    from ml_collections import config_flags

    from trainer import cli
    from trainer.cli import config_error
    config_flags.DEFINE_config_file('config', None, 'config file[:arg]', lock_config=True)
    flags.DEFINE_string('checkpoint', None, checkpoint_help)
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
