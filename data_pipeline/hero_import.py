"""HERO's released LMDB databases -> HERO feature store (data_pipeline/hero_store.py).

    python -m data_pipeline.hero_import --video-db DIR --txt-db DIR --out DIR \\
        [--interval 1.5] [--num-shards N] [--max-clip-len 100]

Input layout (spec §3.1, §3.2):

- ``--video-db``: an LMDB environment named ``{feat_version}_{frame_interval}[_compressed]``
  (e.g. ``resnet_slowfast_1.5``), or a folder holding exactly one. Key = video name; value =
  msgpack (+ msgpack-numpy) of ``{"features": float array [n_frames, D]}``, or for
  ``_compressed`` an ``np.savez_compressed`` blob with the same key. The frame interval is
  read from the name unless ``--interval`` is given.
- ``--txt-db``: an LMDB environment whose values are lz4-frame-compressed msgpack dicts per
  video: ``input_ids`` (one BPE list per subtitle), ``unique_sub2frames``
  ([(sub index, [frames])]), ``unmatched_frames``, ``sub`` ([{text, start, end}]) and more;
  ``meta.json`` next to it (tokenizer name, special ids, ``v_range``) goes into the store's
  meta.json.

The database's own alignment is kept (then cut at ``--max-clip-len`` by rule 4, which is
idempotent on an alignment the original already cut); features keep their stored dtype, so
the import round-trips every feature and subtitle exactly. A video without a txt_db entry
gets pseudo-subtitles (rule 3). Videos are streamed in key order with a progress bar; those
that cannot be decoded are skipped with their reason in summary.json.

Needs the optional dependencies ``pip install -e .[lmdb]`` (lmdb, msgpack-numpy, lz4).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import re
import sys

import numpy as np

from data_pipeline import hero_store, shards

INTERVAL_RE = re.compile(r'_(\d+(?:\.\d+)?)(?:_compressed)?$')


def _lmdb_dir(path: str) -> str:
    if os.path.exists(os.path.join(path, 'data.mdb')):
        return path
    subdirs = [os.path.join(path, d) for d in sorted(os.listdir(path))
               if os.path.exists(os.path.join(path, d, 'data.mdb'))]
    if len(subdirs) != 1:
        raise FileNotFoundError(f'{path}: expected an LMDB (data.mdb) or a folder with exactly '
                                f'one, found {len(subdirs)}')
    return subdirs[0]


def decode_video_value(value: bytes, compressed: bool) -> np.ndarray:
    if compressed:
        return np.load(io.BytesIO(value), allow_pickle=False)['features']
    import msgpack
    import msgpack_numpy
    return np.asarray(msgpack.loads(value, raw=False, object_hook=msgpack_numpy.decode)[
        'features'])


def decode_txt_value(value: bytes) -> dict:
    import lz4.frame
    import msgpack
    return msgpack.loads(lz4.frame.decompress(value), raw=False)


def example_from_dbs(vid: str, features: np.ndarray, txt: dict | None, interval: float,
                     max_clip_len: int) -> dict:
    if txt is None:
        return hero_store.make_example(vid, features, [], [], [], interval,
                                       max_clip_len=max_clip_len)
    sub2frames = [(int(s), [int(f) for f in frames])
                  for s, frames in txt.get('unique_sub2frames', [])]
    ids = [list(x) for x in txt.get('input_ids', [])]
    subs = txt.get('sub') or []
    need = max([s + 1 for s, _ in sub2frames] + [len(ids)])
    ids += [[] for _ in range(need - len(ids))]
    if subs:
        starts = [float(s['start']) for s in subs] + [0.0] * (need - len(subs))
        ends = [float(s['end']) for s in subs] + [0.0] * (need - len(subs))
    else:     # pseudo-subtitles of a video without subtitles: their 5-frame chunks
        starts = [min(f, default=0) * interval for _, f in sorted(sub2frames)]
        ends = [(max(f, default=-1) + 1) * interval for _, f in sorted(sub2frames)]
        starts += [0.0] * (need - len(starts))
        ends += [0.0] * (need - len(ends))
    example = hero_store.make_example(
        vid, features, ids, starts, ends, interval, max_clip_len=max_clip_len,
        alignment=(sub2frames, [int(f) for f in txt.get('unmatched_frames', [])]))
    example['pseudo'] = int(not subs and bool(sub2frames))
    return example


def import_dbs(video_db: str, txt_db: str | None, out_dir: str, interval: float | None = None,
               num_shards: int | None = None,
               max_clip_len: int = hero_store.DEFAULT_MAX_CLIP_LEN) -> dict:
    import lmdb
    video_path = _lmdb_dir(video_db)
    name = os.path.basename(os.path.normpath(video_path))
    compressed = name.endswith('_compressed')
    if interval is None:
        match = INTERVAL_RE.search(name)
        if not match:
            raise ValueError(f'{video_path}: cannot read the frame interval from the name; '
                             'pass --interval')
        interval = float(match.group(1))
    txt_meta = {}
    txt_env = None
    if txt_db:
        txt_path = _lmdb_dir(txt_db)
        txt_env = lmdb.open(txt_path, readonly=True, lock=False, readahead=False)
        for folder in (txt_path, os.path.dirname(os.path.normpath(txt_path))):
            if os.path.exists(os.path.join(folder, 'meta.json')):
                with open(os.path.join(folder, 'meta.json')) as f:
                    txt_meta = json.load(f)
                break
    env = lmdb.open(video_path, readonly=True, lock=False, readahead=False)
    total = env.stat()['entries']
    meta = dict(frame_interval=interval, max_clip_len=max_clip_len, feat_dim=None,
                tokenizer=txt_meta.get('tokenizer', txt_meta.get('bert', 'roberta-base')),
                vocab_size=int(txt_meta.get('vocab_size', 50265)),
                special_ids=dict(cls=0, pad=1, sep=2), txt_meta=txt_meta,
                source=f'hero_import {name}')
    writer = hero_store.StoreWriter(out_dir, total, num_shards or max(1, -(-total // 256)), meta)
    progress = shards.Progress(total, 'hero import')
    with env.begin() as vtxn:
        ttxn = txt_env.begin() if txt_env is not None else None
        for item, (key, value) in enumerate(vtxn.cursor()):
            vid = key.decode()
            if not writer.wants(item):
                progress.update(1)
                continue
            try:
                features = decode_video_value(value, compressed)
                raw = ttxn.get(key) if ttxn is not None else None
                txt = decode_txt_value(raw) if raw is not None else None
                example = example_from_dbs(vid, features, txt, interval, max_clip_len)
                if writer.meta['feat_dim'] is None:
                    writer.meta['feat_dim'] = int(example['feat_dim'])
                writer.add(item, hero_store.serialize(example),
                           dict(vid=vid, frames=example['num_frames'], txt=txt is not None))
            except Exception as error:      # noqa: BLE001 - any undecodable value is skipped
                writer.add(item, None, dict(vid=vid, reason=type(error).__name__,
                                            detail=str(error)[:300]))
            progress.update(1)
        if ttxn is not None:
            ttxn.abort()
    env.close()
    if txt_env is not None:
        txt_env.close()
    progress.close()
    return writer.finish(dict(videos=total))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--video-db', required=True)
    parser.add_argument('--txt-db', default=None)
    parser.add_argument('--out', required=True)
    parser.add_argument('--interval', type=float, default=None)
    parser.add_argument('--num-shards', type=int, default=None)
    parser.add_argument('--max-clip-len', type=int, default=hero_store.DEFAULT_MAX_CLIP_LEN)
    args = parser.parse_args(argv)
    summary = import_dbs(args.video_db, args.txt_db, args.out, args.interval, args.num_shards,
                         args.max_clip_len)
    print(json.dumps({k: v for k, v in summary.items() if k != 'skipped_videos'}),
          file=sys.stderr)
    return summary


if __name__ == '__main__':
    main()
