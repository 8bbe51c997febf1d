"""Where downstream examples come from: `load_split(config, kind, split) -> (videos, items)`.

  data.source = 'synthetic'  the learnable corpus of hero/downstream_data.py (smoke runs, tests)
  data.source = 'files'      the user's local copy: annotation jsonl per split
                             (data.{train,val,test}_annotations, parsed by
                             data_pipeline/annotations.py), the subtitle jsonl of the original
                             preprocessing (data.subtitles: vid_name, sub [{text, start, end}]),
                             frame features per video as DIR/{vid_name}.npz with key `features`
                             (n, vfeat) (data.video_dir; the HERO feature store adapter plugs in
                             here), and a RoBERTa `tokenizers` JSON (data.tokenizer).
  data.source = 'store'      as 'files', but features, subtitle ids and their alignment come
                             from the HERO feature store (data_pipeline/hero_store.py) at
                             data.store, split data.store_split; data.tokenizer must be the
                             tokenizer the store was written with (it encodes the queries).

kind is 'tvr' (items = hero.downstream_data.Query), 'tvqa' (QAItem) or 'violin' (ViolinItem).
"""
from __future__ import annotations

import html
import os

import numpy as np

from data_pipeline import annotations
from hero import downstream_data as dd


def load_split(config, kind: str, split: str):
    data = config.data
    if data.source == 'synthetic':
        corpus = dd.synthetic_corpus(
            int(data.synthetic_seed), config.model.vfeat_dim, config.model.vocab_size,
            split=split, videos=int(data.synthetic_videos), queries=int(data.synthetic_items),
            frames=(max(4, data.max_clip_len - 4), data.max_clip_len),
            interval=float(data.frame_interval))
        items = {'tvr': corpus.queries, 'tvqa': corpus.qa, 'violin': corpus.violin}[kind]
        return corpus.videos, items
    if data.source in ('files', 'store'):
        return load_files_split(config, kind, split)
    raise ValueError(f'data.source must be synthetic, files or store, got {data.source!r}')


def make_tokenizer(path: str):
    """Text -> RoBERTa BPE ids without special tokens; strings entirely upper-case are
    lower-cased first (spec §1.1)."""
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(path)

    def encode(text: str) -> list[int]:
        if text.isupper():
            text = text.lower()
        return tok.encode(text, add_special_tokens=False).ids
    return encode


def read_features(video_dir: str, vid_name: str) -> np.ndarray:
    """Features as stored (float16 stays float16 in memory; batches are float32)."""
    with np.load(os.path.join(video_dir, f'{vid_name}.npz')) as f:
        return np.asarray(f['features'])


def store_videos(store: str, split: str, names) -> dict[str, dd.Video]:
    """Videos `names` of a HERO feature store split (features in the stored dtype, the stored
    subtitle ids and spec §3.2 alignment)."""
    from data_pipeline import hero_reader, hero_store
    hero_store.read_meta(store)
    wanted, out = set(names), {}
    for path in hero_store.shard_files(store, split):
        for record in hero_reader.read_tfrecords(path):
            ex = hero_store.parse_example(record)
            if ex['vid'] in wanted:
                ids = hero_store.subtitles(ex)
                subs = [(ids[k].tolist(), frames) for k, frames in hero_store.sub2frames(ex)]
                out[ex['vid']] = dd.Video(np.array(ex['features']), subs)
    missing = sorted(wanted - set(out))
    if missing:
        raise KeyError(f'{len(missing)} annotated videos are not in {store} ({split}): '
                       f'{missing[:5]}')
    return out


def files_videos(data, tokenize, names) -> dict[str, dd.Video]:
    subtitles = annotations.read_subtitles(data.subtitles)
    out = {}
    for name in names:
        feats = read_features(data.video_dir, name)[:data.max_clip_len]
        subs = subtitles.get(name, [])
        frames = dd.align_subtitles([(s, e) for _, s, e in subs], len(feats),
                                    data.frame_interval)
        out[name] = dd.Video(feats, [(tokenize(html.unescape(t)), fr)
                                     for (t, _, _), fr in zip(subs, frames)])
    return out


def load_files_split(config, kind: str, split: str):
    data = config.data
    path = data[f'{split}_annotations']
    if not path:
        raise ValueError(f'data.{split}_annotations is not set')
    tokenize = make_tokenizer(data.tokenizer)
    records = {'tvr': annotations.read_tvr, 'tvqa': annotations.read_tvqa,
               'violin': annotations.read_violin}[kind](path)
    names = sorted({r.vid_name for r in records})
    index = {name: i for i, name in enumerate(names)}
    max_q = int(data.max_txt_len)
    if data.source == 'store':
        table = store_videos(data.store, data.store_split, names)
    else:
        table = files_videos(data, tokenize, names)
    videos = [table[name] for name in names]
    if kind == 'tvr':
        items = [dd.Query(tokenize(r.desc)[:max_q], index[r.vid_name], r.ts or (0.0, 0.0),
                          r.type, r.desc_id) for r in records]
    elif kind == 'tvqa':
        items = [dd.QAItem(tokenize(r.q), [tokenize(a) for a in r.answers], r.answer_idx or 0,
                           index[r.vid_name], r.ts, r.qid) for r in records]
    else:
        items = [dd.ViolinItem([tokenize(a.desc), tokenize(b.desc)], [a.label, b.label],
                               index[a.vid_name], a.desc_id)
                 for a, b in annotations.pair_statements(records)]
    return videos, items
