"""Helpers for the HERO fine-tuning tests: tiny configs, a fast in-process fine-tuning loop
(one low-optimisation compile) and a small on-disk dataset in the released formats."""
from __future__ import annotations

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from hero import finetune_data, finetune_tasks

FAST_COMPILE = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}


def tiny_config(kind: str, arg: str = 'variant=tiny'):
    from configs.hero import tvqa, tvr, violin
    return {'tvr': tvr, 'tvqa': tvqa, 'violin': violin}[kind].get_config(arg)


def fast_finetune(config, kind: str, steps: int, lr: float = 1e-3, seed: int = 0):
    """AdamW fine-tuning of the task's loss on the train split -> (params, last metrics)."""
    ds = finetune_tasks.make_downstream(config, kind)
    videos, items = finetune_data.load_split(config, kind, 'train')
    params = nn.meta.unbox(jax.jit(ds.init, compiler_options=FAST_COMPILE)(
        jax.random.key(seed)))
    optimizer = optax.adamw(lr, b2=0.98, weight_decay=0.01)

    def step(p, s, batch, rng, i):
        (loss, metrics), g = jax.value_and_grad(
            lambda q: ds.loss(q, batch, rng, i), has_aux=True)(p)
        updates, s = optimizer.update(g, s, p)
        return optax.apply_updates(p, updates), s, dict(metrics, loss=loss)

    state = optimizer.init(params)
    size = int(config.train.global_batch)

    def batch_at(i):
        return ds.make_batch(videos, [items[finetune_tasks.example_index(seed, i, r, size,
                                                                         len(items))]
                                      for r in range(size)])
    compiled = jax.jit(step).lower(params, state, batch_at(0), jax.random.key(0),
                                   jnp.int32(0)).compile(FAST_COMPILE)
    metrics = {}
    for i in range(steps):
        params, state, metrics = compiled(params, state, batch_at(i), jax.random.key(i),
                                          jnp.int32(i))
    return params, {k: float(v) for k, v in metrics.items()}


def write_files_dataset(root, kind: str, vfeat: int = 32, vocab: int = 96) -> dict:
    """A synthetic corpus written in the released formats: annotation jsonl per split, the
    subtitle jsonl, DIR/{vid}.npz features and a word-level `tokenizers` JSON whose word
    `w{id}` is token id `id`. Returns the data.* overrides."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    from hero import downstream_data as dd
    os.makedirs(os.path.join(root, 'videos'), exist_ok=True)
    vocab_map = {f'w{i}': i for i in range(4, vocab)}
    vocab_map['[UNK]'] = 3
    tok = Tokenizer(models.WordLevel(vocab_map, unk_token='[UNK]'))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(os.path.join(root, 'tokenizer.json'))

    def words(ids):
        return ' '.join(f'w{i}' for i in ids)
    subtitle_rows = {}
    overrides = dict(source='files', subtitles=os.path.join(root, 'subs.jsonl'),
                     video_dir=os.path.join(root, 'videos'),
                     tokenizer=os.path.join(root, 'tokenizer.json'))
    for split in ('train', 'val'):
        corpus = dd.synthetic_corpus(0, vfeat, vocab, split=split, videos=4, queries=8)
        names = [f'{split}_vid{v}' for v in range(len(corpus.videos))]
        for name, video in zip(names, corpus.videos):
            np.savez(os.path.join(root, 'videos', f'{name}.npz'), features=video.feats)
            subs = [{'text': words(ids), 'start': 1.5 * fr[0], 'end': 1.5 * (fr[-1] + 1)}
                    for ids, fr in video.subs if fr]
            subtitle_rows[name] = {'vid_name': name, 'sub': subs}
        rows = []
        for k, item in enumerate({'tvr': corpus.queries, 'tvqa': corpus.qa,
                                  'violin': corpus.violin}[kind]):
            if kind == 'tvr':
                rows.append(dict(desc_id=k, desc=words(item.ids), vid_name=names[item.video],
                                 duration=1.5 * len(corpus.videos[item.video].feats),
                                 ts=list(item.window), type='v'))
            elif kind == 'tvqa':
                rows.append(dict(qid=k, q=words(item.question), answer_idx=item.answer,
                                 ts=f'{item.window[0]}-{item.window[1]}',
                                 vid_name=names[item.video],
                                 **{f'a{i}': words(a) for i, a in enumerate(item.answers)}))
            else:
                for statement, label in zip(item.statements, item.labels):
                    rows.append(dict(desc_id=f'{split}{k}-{label}', desc=words(statement),
                                     vid_name=names[item.video]))
        path = os.path.join(root, f'{kind}_{split}.jsonl')
        with open(path, 'w') as f:
            f.writelines(json.dumps(r) + '\n' for r in rows)
        overrides[f'{split}_annotations'] = path
    with open(overrides['subtitles'], 'w') as f:
        f.writelines(json.dumps(r) + '\n' for r in subtitle_rows.values())
    return overrides
