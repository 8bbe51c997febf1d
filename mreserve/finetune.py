"""MERLOT Reserve finetuning entry point (TVQA, VCR, video classification; spec §7).

    python -m mreserve.finetune --config configs/mreserve/tvqa.py:variant=tiny --workdir DIR \
        [--config.init_from=PRETRAINED]

PRETRAINED is a params directory (a `trainer.export` of pretraining, or an original checkpoint
converted by mreserve.convert) or a pretraining work directory (its latest checkpoint). The
downstream tree differs from the pretraining one (no `head` / `span_encoder`, VCR no
`audio_encoder`, a new `proj` / `classifier`), so every downstream parameter whose path exists
in the pretrained tree is taken from it (shapes must match) and the rest keeps its fresh init;
the merged tree is written to WORKDIR/pretrained_merged and the engine starts from it.
"""
from __future__ import annotations

import logging
import os

import flax.linen as nn
import jax
import numpy as np
from absl import flags

from trainer import cli, params_io
from trainer.loop import build_task_from_config
from trainer.state import init_batch

log = logging.getLogger(__name__)
MERGED_DIR = 'pretrained_merged'


def _flat(tree) -> dict[str, object]:
    return {'/'.join(str(getattr(k, 'key', k)) for k in path): leaf
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def read_pretrained(path: str):
    """Params of a params directory or of a training work directory's latest checkpoint."""
    if os.path.isdir(os.path.join(path, 'params')):
        return params_io.load_params(path)
    from trainer.export import read_checkpoint_params
    return read_checkpoint_params(path)[1]


def merge_pretrained(fresh, pretrained) -> tuple[object, dict]:
    """-> (fresh tree with every pretrained leaf of the same path, report)."""
    have = _flat(pretrained)
    copied, fresh_paths = [], []

    def pick(path, leaf):
        name = '/'.join(str(getattr(k, 'key', k)) for k in path)
        if name not in have:
            fresh_paths.append(name)
            return leaf
        value = np.asarray(have[name])
        if value.shape != tuple(leaf.shape):
            raise ValueError(f'pretrained parameter {name} has shape {value.shape}, the '
                             f'downstream model expects {tuple(leaf.shape)}')
        copied.append(name)
        return value.astype(leaf.dtype)
    merged = jax.tree_util.tree_map_with_path(pick, fresh)
    unused = sorted(set(have) - set(copied))
    return merged, {'copied': copied, 'fresh': fresh_paths, 'unused': unused}


def prepare_init_from(config, workdir: str, task) -> str:
    """Write the merged tree to WORKDIR/pretrained_merged (unless resuming) and return it."""
    source = config.init_from
    out = os.path.join(workdir, MERGED_DIR)
    if not source or os.path.abspath(source) == os.path.abspath(out):
        return source
    ckpts = os.path.join(workdir, 'checkpoints')
    if os.path.isdir(ckpts) and any(d.isdigit() for d in os.listdir(ckpts)):
        return source            # resuming: the engine ignores init_from
    if jax.process_index() == 0:
        batch = init_batch(task)
        fresh = jax.tree.map(np.asarray, nn.meta.unbox(
            jax.jit(lambda r: task.init(r, batch))(jax.random.key(int(config.seed)))))
        merged, report = merge_pretrained(fresh, read_pretrained(source))
        log.info('pretrained %s: %d parameters copied, %d fresh (%s), %d unused (%s)', source,
                 len(report['copied']), len(report['fresh']),
                 ', '.join(sorted({k.split('/')[0] for k in report['fresh']})),
                 len(report['unused']), ', '.join(sorted({k.split('/')[0]
                                                          for k in report['unused']})))
        params_io.save_params(out, merged, {'merged_from': os.path.abspath(source)})
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices('mreserve_pretrained_merged')
    return out


def build_with_pretrained(config):
    task = build_task_from_config(config)
    config.init_from = prepare_init_from(config, flags.FLAGS.workdir, task)
    return task


def main():
    cli.train_main(build_with_pretrained)


if __name__ == '__main__':
    main()
