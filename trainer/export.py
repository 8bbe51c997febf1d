"""Export the parameters of a training checkpoint for evaluation, finetuning or zero-shot use.

    python -m trainer.export --workdir DIR --out DIR [--step N] [--dtype bfloat16]

Writes `OUT/params` (params only, no optimizer state) and `OUT/config.json` (the run's resolved
config), the format `init_from`, evaluation and the zero-shot APIs read (trainer/params_io.py).
"""
from __future__ import annotations

import json
import os
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import app, flags

from trainer import params_io

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'training work directory (has checkpoints/ and config.json)')
flags.DEFINE_string('out', None, 'output directory')
flags.DEFINE_integer('step', -1, 'checkpoint step (default: the latest)')
flags.DEFINE_string('dtype', '', 'cast floating parameters, e.g. bfloat16')


def read_checkpoint_params(workdir: str, step: int | None = None):
    """(step, params) of a training checkpoint, as host arrays, whatever mesh wrote it."""
    root = os.path.join(os.path.abspath(workdir), 'checkpoints')
    steps = sorted(int(d) for d in os.listdir(root) if d.isdigit()) if os.path.isdir(root) else []
    if not steps:
        raise FileNotFoundError(f'no checkpoints in {root}')
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise FileNotFoundError(f'no checkpoint for step {step} in {root} (have {steps})')
    path = os.path.join(root, str(step), 'state')
    device = jax.sharding.SingleDeviceSharding(jax.local_devices(backend='cpu')[0])
    meta = params_io.stored_metadata(path)
    target = {'params': jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), meta['params'])}
    with ocp.PyTreeCheckpointer() as checkpointer:
        # partial_restore reads only the params subtree, never the optimizer state.
        restored = checkpointer.restore(path, args=ocp.args.PyTreeRestore(
            item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
            partial_restore=True))
    return step, jax.tree.map(np.asarray, restored['params'])


def export(workdir: str, out: str, step: int | None = None, dtype: str = '') -> str:
    step, params = read_checkpoint_params(workdir, step)
    config_path = os.path.join(workdir, 'config.json')
    config = None
    if os.path.exists(config_path):
        with open(config_path) as f:
            config = json.load(f)
    if config is not None:
        config['exported_from'] = {'workdir': os.path.abspath(workdir), 'step': step,
                                   'dtype': dtype or 'as trained'}
    return params_io.save_params(out, params, config, dtype=dtype or None)


def main(argv):
    del argv
    if not FLAGS.workdir or not FLAGS.out:
        print('export needs --workdir and --out', file=sys.stderr)
        sys.exit(2)
    out = export(FLAGS.workdir, FLAGS.out, None if FLAGS.step < 0 else FLAGS.step, FLAGS.dtype)
    print(f'exported params to {out}')


if __name__ == '__main__':
    app.run(main)
