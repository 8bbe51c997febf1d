"""Start a downstream model from pretrained HERO parameters (spec §1.9 "Downstream").

The engine's `init_from` wants a tree that matches the model exactly, but QA / VIOLIN add heads
that no pretraining checkpoint has (and drop pretraining heads they do not use). So finetuning
first merges: every parameter of the freshly initialised downstream model whose path and shape
exist in the pretrained tree (a `trainer.export` of a HERO pretraining run, or an original
checkpoint converted by hero/convert.py: both are DIR/params) is taken from it, the rest keeps
its fresh init. The merged tree is written as a params-only checkpoint in the work directory,
and `init_from` is pointed at it.
"""
from __future__ import annotations

import logging
import os

import flax.linen as nn
import jax
import numpy as np

from trainer import params_io

log = logging.getLogger(__name__)
MERGED_DIR = 'pretrained_merged'


def _flatten(tree) -> dict[tuple[str, ...], object]:
    return {tuple(str(getattr(k, 'key', k)) for k in path): leaf
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def merge_pretrained(fresh, pretrained):
    """(fresh params, pretrained params) -> (merged, report). Both plain (unboxed) trees.

    report: 'copied' / 'kept_fresh' / 'unused' path lists; a path present in both with
    different shapes raises ValueError (a wrong model size, not a missing head)."""
    have = _flatten(pretrained)
    copied, kept = [], []

    def pick(path, leaf):
        key = tuple(str(getattr(k, 'key', k)) for k in path)
        if key not in have:
            kept.append('/'.join(key))
            return leaf
        value = np.asarray(have[key])
        if value.shape != tuple(leaf.shape):
            raise ValueError(f'pretrained parameter {"/".join(key)} has shape {value.shape}, '
                             f'the downstream model expects {tuple(leaf.shape)}')
        copied.append('/'.join(key))
        return value.astype(leaf.dtype)
    merged = jax.tree_util.tree_map_with_path(pick, fresh)
    used = set(copied)
    unused = sorted('/'.join(k) for k in have if '/'.join(k) not in used)
    return merged, {'copied': copied, 'kept_fresh': kept, 'unused': unused}


def fresh_params(init_fn, seed: int):
    """Unboxed host copy of `init_fn(rng)` (the Task's init with a dummy batch)."""
    params = jax.jit(init_fn)(jax.random.key(seed))
    return jax.tree.map(np.asarray, nn.meta.unbox(params))


def load_into(init_fn, seed: int, pretrained_dir: str):
    """Fresh downstream params with every matching pretrained parameter copied in."""
    return merge_pretrained(fresh_params(init_fn, seed), params_io.load_params(pretrained_dir))


def prepare_init_from(config, workdir: str, init_fn) -> str:
    """If `config.init_from` names a pretrained checkpoint and the work directory has no
    training checkpoint yet, write the merged tree to WORKDIR/pretrained_merged and return that
    path (the engine then loads it exactly); otherwise return `config.init_from` unchanged."""
    source = config.init_from
    if not source or os.path.abspath(source) == os.path.abspath(os.path.join(workdir,
                                                                              MERGED_DIR)):
        return source
    ckpts = os.path.join(workdir, 'checkpoints')
    if os.path.isdir(ckpts) and any(d.isdigit() for d in os.listdir(ckpts)):
        return source            # resuming: the engine ignores init_from
    out = os.path.join(workdir, MERGED_DIR)
    if jax.process_index() == 0:
        merged, report = load_into(init_fn, int(config.seed), source)
        log.info('pretrained %s: %d parameters copied, %d freshly initialised (%s), %d unused',
                 source, len(report['copied']), len(report['kept_fresh']),
                 ', '.join(sorted({k.split('/')[0] for k in report['kept_fresh']})),
                 len(report['unused']))
        params_io.save_params(out, merged, {'merged_from': os.path.abspath(source)})
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices('hero_pretrained_merged')
    return out
