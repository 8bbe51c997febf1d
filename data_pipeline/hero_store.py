"""HERO feature store: one TFRecord example per video (spec hero §3.1, §3.2), its schema, the
frame-to-subtitle alignment computed once at write time, and the store writer.

Layout of a store directory::

    meta.json                    store-wide facts (below)
    train00000of00004.tfrecord   shards (data_pipeline/shards.py names; atomic, resumable)
    index/<shard>.json           per shard: records, bytes, per-video outcome
    dataset_info.json, features.json   TFDS metadata (tfds.builder_from_directory reads it)
    summary.json                 what the writer did: written / skipped videos with reasons

Example schema (``FEATURES``; lists are VarLen, ``parse_example`` gives numpy arrays):

=================  ========  ===============================================================
key                type      meaning
=================  ========  ===============================================================
vid                bytes     video id (file stem, or the LMDB key)
num_frames         int64     n, clip-level feature rows (before any max_clip_len cut)
feat_dim           int64     D
feat_dtype         bytes     'float16' (own extraction) or the source dtype (LMDB import)
features           bytes     n x D little-endian rows, C order
frame_interval     float     seconds per feature row (1.5 by default)
duration           float     video length in seconds (n * frame_interval for imports)
sub/ids            int64[]   token ids of all subtitles, concatenated (no special tokens)
sub/lens           int64[]   tokens per subtitle
sub/start, sub/end float[]   subtitle times in seconds
align/sub          int64[]   unique_sub2frames after the max_clip_len cut: subtitle index ...
align/count        int64[]   ... and number of frames of each entry ...
align/frames       int64[]   ... and their frame indices, concatenated
unmatched          int64[]   frames no subtitle covers (< max_clip_len)
pseudo             int64     1 when the subtitles are pseudo-subtitles (video had none)
=================  ========  ===============================================================

``meta.json``: ``format`` ('hero_store'), ``version``, ``frame_interval``, ``feat_dim``,
``max_clip_len`` (the cut applied to ``align/*``; readers may cut further, the rule composes),
``tokenizer`` (what made ``sub/ids``), ``vocab_size`` and ``special_ids``.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence

import numpy as np

from data_pipeline import shards

FORMAT = 'hero_store'
VERSION = 1
DEFAULT_INTERVAL = 1.5
DEFAULT_MAX_CLIP_LEN = 100
LAST_SUB_MAX_SECONDS = 16.0      # spec §3.2 rule 1: a longer last subtitle ...
LAST_SUB_FRAMES = 11             # ... keeps its first 11 frames
PSEUDO_SUB_FRAMES = 5            # spec §3.2 rule 3
DATASET_NAME = 'hero_store'
INT_LISTS = ('sub/ids', 'sub/lens', 'align/sub', 'align/count', 'align/frames', 'unmatched')
FLOAT_LISTS = ('sub/start', 'sub/end')


# ------------------------------------------------------------------------------ alignment

def align_subtitles(starts: Sequence[float], ends: Sequence[float], num_frames: int,
                    interval: float = DEFAULT_INTERVAL):
    """Spec §3.2 rules 1-2 -> (kept subtitle indices, unique_sub2frames, unmatched frames).

    Times are seconds; frame f spans [f, f + 1) in units of ``interval``. Subtitle i covers
    frames floor(start) .. ceil(end) - 1 (clipped to the video); subtitles starting after the
    video's end are skipped; the last subtitle, if longer than 16 s, covers only its first 11
    frames (its IoU still uses its real times: the spec leaves this open). Each covered frame
    goes to the covering subtitle with the highest IoU of [f, f + 1] and [start, end], the
    first one on ties. ``unique_sub2frames`` is ``[(sub index, sorted frames)]`` for every
    kept subtitle, frames possibly empty.
    """
    duration = num_frames          # in frame units, as the original's `duration`
    kept = [i for i, s in enumerate(starts) if s / interval <= duration]
    best: dict[int, tuple[float, int]] = {}
    for rank, i in enumerate(kept):
        st, ed = starts[i] / interval, ends[i] / interval
        first, stop = math.floor(st), math.ceil(ed)
        if rank == len(kept) - 1 and ends[i] - starts[i] > LAST_SUB_MAX_SECONDS:
            stop = min(stop, first + LAST_SUB_FRAMES)
        for f in range(max(first, 0), min(stop, num_frames)):
            inter = min(f + 1, ed) - max(f, st)
            iou = inter / (max(f + 1, ed) - min(f, st))
            if f not in best or iou > best[f][0]:
                best[f] = (iou, i)
    owned: dict[int, list[int]] = {i: [] for i in kept}
    for f in sorted(best):
        owned[best[f][1]].append(f)
    unmatched = [f for f in range(num_frames) if f not in best]
    return kept, [(i, owned[i]) for i in kept], unmatched


def pseudo_subtitles(num_frames: int, interval: float = DEFAULT_INTERVAL):
    """Rule 3: a video without subtitles gets one empty subtitle per 5-frame chunk ->
    (starts, ends, unique_sub2frames)."""
    chunks = [list(range(a, min(a + PSEUDO_SUB_FRAMES, num_frames)))
              for a in range(0, num_frames, PSEUDO_SUB_FRAMES)]
    starts = [c[0] * interval for c in chunks]
    ends = [(c[-1] + 1) * interval for c in chunks]
    return starts, ends, list(enumerate(chunks))


def truncate_alignment(sub2frames, unmatched, max_clip_len: int):
    """Rule 4 (`SubTokLmdb`): drop frames >= max_clip_len. Subtitles are scanned in order;
    the first one owning a frame past the limit keeps its in-range frames (or is dropped if
    none) and every later subtitle is discarded; frame-less subtitles before it stay.
    Applying it with limit a then b <= a equals applying it with b."""
    out = []
    for sub, frames in sub2frames:
        if any(f >= max_clip_len for f in frames):
            inside = [f for f in frames if f < max_clip_len]
            if inside:
                out.append((sub, inside))
            break
        out.append((sub, list(frames)))
    return out, [f for f in unmatched if f < max_clip_len]


# ------------------------------------------------------------------------------ examples

def make_example(vid: str, features: np.ndarray, sub_ids: Sequence[Sequence[int]],
                 starts: Sequence[float], ends: Sequence[float],
                 interval: float = DEFAULT_INTERVAL, duration: float | None = None,
                 max_clip_len: int = DEFAULT_MAX_CLIP_LEN, alignment=None) -> dict:
    """One video -> the example dict (numpy values, keys of FEATURES).

    ``alignment`` = (unique_sub2frames, unmatched) given by an import (the LMDB's own); by
    default it is computed here. Subtitles skipped by the alignment are dropped (indices in
    ``align/sub`` refer to the stored subtitle list).
    """
    features = np.asarray(features)
    if features.ndim != 2 or features.dtype.kind != 'f':
        raise ValueError(f'{vid}: features must be float [frames, dim], got '
                         f'{features.dtype} {features.shape}')
    n = features.shape[0]
    pseudo = 0
    if alignment is None:
        if len(sub_ids) != len(starts) or len(starts) != len(ends):
            raise ValueError(f'{vid}: {len(sub_ids)} token lists for {len(starts)} subtitles')
        kept, sub2frames, unmatched = align_subtitles(starts, ends, n, interval)
        if not kept:
            starts, ends, sub2frames = pseudo_subtitles(n, interval)
            sub_ids, unmatched, pseudo = [[] for _ in starts], [], 1
        else:
            remap = {old: new for new, old in enumerate(kept)}
            sub_ids = [sub_ids[i] for i in kept]
            starts, ends = [starts[i] for i in kept], [ends[i] for i in kept]
            sub2frames = [(remap[s], f) for s, f in sub2frames]
    else:
        sub2frames, unmatched = alignment
    sub2frames, unmatched = truncate_alignment(sub2frames, unmatched, max_clip_len)
    ids = [int(t) for s in sub_ids for t in s]
    return {
        'vid': vid.encode(),
        'num_frames': n, 'feat_dim': features.shape[1],
        'feat_dtype': features.dtype.name.encode(),
        'features': np.ascontiguousarray(features.astype(features.dtype.newbyteorder('<')))
        .tobytes(),
        'frame_interval': float(interval),
        'duration': float(n * interval if duration is None else duration),
        'sub/ids': np.asarray(ids, np.int64),
        'sub/lens': np.asarray([len(s) for s in sub_ids], np.int64),
        'sub/start': np.asarray(starts, np.float32),
        'sub/end': np.asarray(ends, np.float32),
        'align/sub': np.asarray([s for s, _ in sub2frames], np.int64),
        'align/count': np.asarray([len(f) for _, f in sub2frames], np.int64),
        'align/frames': np.asarray([x for _, f in sub2frames for x in f], np.int64),
        'unmatched': np.asarray(unmatched, np.int64),
        'pseudo': pseudo,
    }


def serialize(example: dict) -> bytes:
    import tensorflow as tf

    def feature(value):
        if isinstance(value, bytes):
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
        value = np.asarray(value)
        if value.dtype.kind == 'f':
            return tf.train.Feature(float_list=tf.train.FloatList(value=value.reshape(-1)))
        return tf.train.Feature(int64_list=tf.train.Int64List(value=value.reshape(-1)))
    return tf.train.Example(features=tf.train.Features(
        feature={k: feature(v) for k, v in example.items()})).SerializeToString()


def parse_example(serialized: bytes) -> dict:
    """Serialized example -> dict of numpy values (scalars as Python numbers, ``features`` as a
    float array [num_frames, feat_dim] of the stored dtype, ``vid`` as str)."""
    from tensorflow.core.example import example_pb2
    ex = example_pb2.Example.FromString(serialized)
    f = ex.features.feature
    out: dict = {}
    for key in INT_LISTS:
        out[key] = np.asarray(f[key].int64_list.value, np.int64)
    for key in FLOAT_LISTS:
        out[key] = np.asarray(f[key].float_list.value, np.float32)
    for key in ('num_frames', 'feat_dim', 'pseudo'):
        out[key] = int(f[key].int64_list.value[0])
    for key in ('frame_interval', 'duration'):
        out[key] = float(f[key].float_list.value[0])
    out['vid'] = f['vid'].bytes_list.value[0].decode()
    dtype = np.dtype(f['feat_dtype'].bytes_list.value[0].decode()).newbyteorder('<')
    out['features'] = np.frombuffer(f['features'].bytes_list.value[0], dtype).reshape(
        out['num_frames'], out['feat_dim'])
    return out


def subtitles(example: dict) -> list[np.ndarray]:
    """The stored token lists, one array per subtitle."""
    return np.split(example['sub/ids'], np.cumsum(example['sub/lens'])[:-1]) \
        if len(example['sub/lens']) else []


def sub2frames(example: dict) -> list[tuple[int, list[int]]]:
    """The stored unique_sub2frames (after the store's max_clip_len cut)."""
    frames = np.split(example['align/frames'], np.cumsum(example['align/count'])[:-1]) \
        if len(example['align/count']) else []
    return [(int(s), [int(x) for x in f]) for s, f in zip(example['align/sub'], frames)]


def tfds_features():
    import tensorflow as tf
    import tensorflow_datasets as tfds
    scalar = {'vid': tf.string, 'num_frames': tf.int64, 'feat_dim': tf.int64,
              'feat_dtype': tf.string, 'features': tf.string, 'frame_interval': tf.float32,
              'duration': tf.float32, 'pseudo': tf.int64}
    tree: dict = {k: tfds.features.Tensor(shape=(), dtype=d) for k, d in scalar.items()}
    for key in INT_LISTS + FLOAT_LISTS:
        parent, leaf = key.split('/') if '/' in key else (None, key)
        node = tree.setdefault(parent, {}) if parent else tree
        node[leaf] = tfds.features.Tensor(shape=(None,), dtype=tf.int64 if key in INT_LISTS
                                          else tf.float32)
    return tfds.features.FeaturesDict(tree)


# ------------------------------------------------------------------------------ the store

def read_meta(store: str) -> dict:
    path = os.path.join(store, 'meta.json')
    if not os.path.exists(path):
        raise FileNotFoundError(f'{store} is not a HERO feature store (no meta.json)')
    with open(path) as f:
        meta = json.load(f)
    if meta.get('format') != FORMAT:
        raise ValueError(f'{path}: format {meta.get("format")!r}, expected {FORMAT!r}')
    return meta


def shard_files(store: str, split: str = 'train') -> list[str]:
    """The finished shards of a split, in shard order."""
    infos = shards.complete_splits(store).get(split)
    if not infos:
        raise FileNotFoundError(f'{store}: no complete {split!r} split')
    return [os.path.join(store, info['file']) for info in infos]


class StoreWriter:
    """Deals examples to ``num_shards`` shards (example k -> shard k % num_shards) and writes
    each shard atomically when all its examples are in; finished shards of an earlier run are
    skipped by ``wants``. ``finish`` writes meta.json, TFDS metadata and summary.json."""

    def __init__(self, out_dir: str, num_items: int, num_shards: int, meta: dict,
                 split: str = 'train'):
        os.makedirs(out_dir, exist_ok=True)
        shards.remove_stale_temporaries(out_dir)
        self.out_dir, self.split, self.meta = out_dir, split, dict(meta)
        self.num_shards = max(1, min(num_shards, num_items))
        self.expected = [len(range(s, num_items, self.num_shards))
                         for s in range(self.num_shards)]
        self.pending: dict[int, list[tuple[int, bytes | None, dict]]] = {}
        self.summary = {'written': 0, 'skipped': {}, 'skipped_videos': [],
                        'resumed_shards': sum(not self.wants(s)
                                              for s in range(self.num_shards))}

    def wants(self, item: int) -> bool:
        return not shards.is_finished(self.out_dir, self.split, item % self.num_shards,
                                      self.num_shards)

    def add(self, item: int, record: bytes | None, outcome: dict) -> None:
        """``record`` None = skipped; ``outcome`` holds vid and, if skipped, ``reason``."""
        shard = item % self.num_shards
        if record is None:
            reason = outcome.get('reason', 'unknown')
            self.summary['skipped'][reason] = self.summary['skipped'].get(reason, 0) + 1
            self.summary['skipped_videos'].append(outcome)
        entries = self.pending.setdefault(shard, [])
        entries.append((item, record, outcome))
        if len(entries) == self.expected[shard]:
            entries.sort(key=lambda e: e[0])
            records = [r for _, r, _ in entries if r is not None]
            shards.write_shard(self.out_dir, self.split, shard, self.num_shards, records,
                               dict(split=self.split, shard=shard, num_shards=self.num_shards,
                                    videos=[o for _, _, o in entries]))
            self.summary['written'] += len(records)
            del self.pending[shard]

    def finish(self, extra_summary: dict | None = None) -> dict:
        if self.pending:
            raise RuntimeError(f'shards {sorted(self.pending)} did not receive all examples')
        meta = dict(self.meta, format=FORMAT, version=VERSION)
        shards.write_json_atomic(os.path.join(self.out_dir, 'meta.json'), meta)
        complete = shards.complete_splits(self.out_dir)
        if complete:
            shards.write_tfds_metadata(
                self.out_dir, tfds_features(),
                {s: [i['num_records'] for i in infos] for s, infos in complete.items()},
                DATASET_NAME, 'HERO clip-level features + subtitles (data_pipeline/hero_store.py)')
        summary = dict(self.summary, **(extra_summary or {}))
        summary['shards'] = self.num_shards
        shards.write_json_atomic(os.path.join(self.out_dir, 'summary.json'), summary)
        return summary


def write_store(out_dir: str, examples: Iterable[dict], meta: dict, num_shards: int = 1,
                split: str = 'train') -> dict:
    """Small helper for in-memory example lists (tests, demo)."""
    examples = list(examples)
    writer = StoreWriter(out_dir, len(examples), num_shards, meta, split)
    for i, ex in enumerate(examples):
        if writer.wants(i):
            writer.add(i, serialize(ex), {'vid': ex['vid'].decode()})
    return writer.finish()
