"""Evaluate a fine-tuned HERO checkpoint on a split and write the metrics as JSON.

    python -m hero.evaluate --config configs/hero/tvr.py:variant=tiny --checkpoint DIR \
        [--split val] [--checkpoint_step N]

DIR is a params directory (DIR/params, e.g. a trainer.export) or a training work directory
(DIR/checkpoints/N). The metrics go to DIR/metrics_{split}.json (work directory:
metrics_{split}_step{N}.json). TVR: VCMR / SVMR / VR recall (hero/vcmr_eval.py, in percent)
plus the ranked VCMR moments per query in DIR/predictions_{split}*.json; TVQA: accuracy;
VIOLIN: accuracy.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from hero import downstream, finetune_data, finetune_tasks, vcmr_eval
from hero import downstream_data as dd
from hero.config import CLS_ID
from hero.modeling import HeroModel
from hero.vsm import video_query_scores
from trainer.evaluate_cli import evaluate_main

CHUNK = 16


def _chunks(n: int, size: int):
    """Fixed-size index chunks (the last one wraps around) so each jitted function compiles
    once; callers keep the first `count` rows."""
    for first in range(0, n, size):
        count = min(size, n - first)
        yield np.arange(first, first + size) % n, count


def vcmr_outputs(model: HeroModel, params, videos, queries, sizes, settings, chunk=CHUNK,
                 compiler_options=None):
    """Per-query dicts for vcmr_eval.evaluate_queries (corpus = `videos`)."""
    def jit(fn):
        return jax.jit(fn, compiler_options=compiler_options)
    packed = dd.stack([dd.pack_video(v, sizes) for v in videos])
    encode_video = jit(lambda p, b: model.apply({'params': p}, b, method='encode_video'))
    encode_query = jit(lambda p, i, m: model.apply({'params': p}, i, m, method='encode_query'))
    span = jit(lambda p, q, v, m: model.apply({'params': p}, q[:, None], v, m,
                                              method='own_span_logits'))
    frames = []
    for idx, count in _chunks(len(videos), chunk):
        frames.append(np.asarray(encode_video(params, {k: x[idx] for k, x in packed.items()}))
                      [:count])
    frames = np.concatenate(frames)
    frame_mask = packed['frame_mask']
    slots = [dd.text_slots(q.ids, sizes.query_len, CLS_ID) for q in queries]
    q_ids, q_mask = np.stack([s[0] for s in slots]), np.stack([s[1] for s in slots])
    qvec = []
    for idx, count in _chunks(len(queries), chunk):
        qvec.append(np.asarray(encode_query(params, q_ids[idx], q_mask[idx]))[:count])
    qvec = np.concatenate(qvec)
    scores = np.asarray(jit(video_query_scores)(qvec, frames, frame_mask))
    k = min(settings.max_vcmr_video, len(videos))
    out = []
    # span logits against the top-k videos and the GT video (column k) in one call
    for idx, count in _chunks(len(queries), max(1, chunk // (k + 1))):
        top = np.argsort(-scores[idx], axis=1, kind='stable')[:, :k]          # (n, k)
        gt = np.array([queries[i].video for i in idx])
        cols = np.concatenate([top, gt[:, None]], axis=1).reshape(-1)
        st, ed = span(params, np.repeat(qvec[idx], k + 1, axis=0), frames[cols],
                      frame_mask[cols])
        st = np.asarray(st)[:, 0].reshape(len(idx), k + 1, -1)
        ed = np.asarray(ed)[:, 0].reshape(len(idx), k + 1, -1)
        for r in range(count):
            q = queries[idx[r]]
            out.append(dict(gt_video=q.video, gt_window=tuple(q.window), type=q.qtype,
                            video_scores=scores[idx[r]], cand_videos=top[r], cand_st=st[r, :k],
                            cand_ed=ed[r, :k], gt_st=st[r, k], gt_ed=ed[r, k]))
    return out


def evaluate_tvr(config, params, split: str, compiler_options=None):
    ds = finetune_tasks.make_downstream(config, 'tvr')
    videos, queries = finetune_data.load_split(config, 'tvr', split)
    settings = vcmr_eval.VcmrSettings(**config.vcmr, interval=float(config.data.frame_interval))
    rows = vcmr_outputs(ds.model, params, videos, queries,
                        dd.Sizes.from_config(config.data), settings,
                        compiler_options=compiler_options)
    return vcmr_eval.evaluate_queries(rows, settings)


def evaluate_classification(config, params, kind: str, split: str, chunk: int = 8,
                            compiler_options=None):
    """TVQA: argmax over the 5 candidates; VIOLIN: sigmoid > 0.5 per statement."""
    ds = finetune_tasks.make_downstream(config, kind)
    videos, items = finetune_data.load_split(config, kind, split)
    forward = finetune_tasks.jitted_forward(ds, compiler_options)
    logits, targets = [], []
    for idx, count in _chunks(len(items), chunk):
        batch = ds.make_batch(videos, [items[i] for i in idx])
        inputs = {k: jnp.asarray(v) for k, v in batch.items()
                  if k not in ('answer', 'span', 'labels')}
        out = forward(params, inputs)
        logits.append(np.asarray(out[0] if kind == 'tvqa' else out)[:count])
        targets.append(batch['answer' if kind == 'tvqa' else 'labels'][:count])
    logits, targets = np.concatenate(logits), np.concatenate(targets)
    if kind == 'tvqa':
        return {'qa_accuracy': 100.0 * float(downstream.qa_accuracy(logits, targets)),
                'num_examples': len(targets)}
    return {'violin_accuracy': 100.0 * float(downstream.violin_accuracy(logits, targets)),
            'num_examples': int(targets.size)}


def evaluate(config, params, split: str = 'val', compiler_options=None) -> dict:
    """Metrics of `params` on `split`; `compiler_options` go to every jax.jit (tests use
    low-optimisation settings to compile faster)."""
    kind = finetune_tasks.kind_of(config)
    if kind == 'tvr':
        return evaluate_tvr(config, params, split, compiler_options)
    return evaluate_classification(config, params, kind, split,
                                   compiler_options=compiler_options)


def main(argv=None):
    evaluate_main(evaluate, argv, 'params directory or training work directory')


if __name__ == '__main__':
    main()
