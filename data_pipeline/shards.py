"""Sharded TFRecord output shared by the record writers (MERLOT Reserve, HERO).

- **Names.** ``{split}{shard:05d}of{num_shards:05d}.tfrecord``: the original MERLOT Reserve
  name (spec mreserve §3.1.9), which is also a TFDS file template
  (:data:`TFDS_FILENAME_TEMPLATE`), so one set of files serves both. TFDS widens the numbers
  past 5 digits for more than 99,999 shards; :func:`shard_filename` follows it.
- **Atomic shards.** A shard is written to a hidden temporary name in the same folder and
  renamed when complete: a shard whose final file exists is finished, and a re-run skips it.
  Its index (``index/<shard name>.json``: records, bytes, per-input outcome) is renamed into
  place just before the shard, so every finished shard has one.
- **TFDS metadata.** :func:`write_tfds_metadata` writes ``dataset_info.json`` and
  ``features.json`` with split example counts and shard lengths, after which
  ``tfds.builder_from_directory(out_dir).as_dataset(split=...)`` reads the shards.
- **Run bookkeeping.** CPU seconds of this process and its reaped children, and a progress
  bar (tqdm) that degrades to a plain line on stderr.
"""
from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections.abc import Iterable

TFDS_FILENAME_TEMPLATE = '{SPLIT}{SHARD_INDEX}of{NUM_SHARDS}.{FILEFORMAT}'
INDEX_DIR = 'index'


def shard_filename(split: str, index: int, num_shards: int) -> str:
    """``train00003of00032.tfrecord`` (numbers as wide as TFDS makes them, at least 5)."""
    width = max(5, len(str(num_shards)))
    return f'{split}{index:0{width}d}of{num_shards:0{width}d}.tfrecord'


def index_path(out_dir: str, split: str, index: int, num_shards: int) -> str:
    return os.path.join(out_dir, INDEX_DIR, shard_filename(split, index, num_shards) + '.json')


def is_finished(out_dir: str, split: str, index: int, num_shards: int) -> bool:
    return os.path.exists(os.path.join(out_dir, shard_filename(split, index, num_shards)))


def _tmp_name(path: str) -> str:
    folder, name = os.path.split(path)
    return os.path.join(folder, f'.{name}.{os.getpid()}.tmp')


def remove_stale_temporaries(out_dir: str) -> list[str]:
    """Deletes temporaries left by writers that died (their process id is gone)."""
    removed = []
    for folder in (out_dir, os.path.join(out_dir, INDEX_DIR)):
        for name in os.listdir(folder) if os.path.isdir(folder) else []:
            parts = name.split('.')
            if not (name.startswith('.') and name.endswith('.tmp') and parts[-2].isdigit()):
                continue
            try:
                os.kill(int(parts[-2]), 0)
                continue                      # its writer is still running
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
            os.remove(os.path.join(folder, name))
            removed.append(name)
    return removed


def write_json_atomic(path: str, obj) -> None:
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    tmp = _tmp_name(path)
    with open(tmp, 'w') as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.write('\n')
    os.replace(tmp, path)


def write_shard(out_dir: str, split: str, index: int, num_shards: int,
                records: Iterable[bytes], info: dict) -> dict:
    """Writes one TFRecord shard and its index atomically; returns the index (``info`` plus
    ``file``, ``num_records`` and ``num_bytes``)."""
    import tensorflow as tf
    path = os.path.join(out_dir, shard_filename(split, index, num_shards))
    tmp = _tmp_name(path)
    count = 0
    try:
        with tf.io.TFRecordWriter(tmp) as writer:
            for record in records:
                writer.write(record)
                count += 1
        with open(tmp, 'rb') as f:
            os.fsync(f.fileno())
        info = dict(info, file=os.path.basename(path), num_records=count,
                    num_bytes=os.path.getsize(tmp))
        write_json_atomic(index_path(out_dir, split, index, num_shards), info)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return info


def read_index(out_dir: str, split: str, index: int, num_shards: int) -> dict:
    """The index of a finished shard; rebuilt by counting records if it went missing."""
    path = index_path(out_dir, split, index, num_shards)
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    import tensorflow as tf
    shard = os.path.join(out_dir, shard_filename(split, index, num_shards))
    count = sum(1 for _ in tf.data.TFRecordDataset(shard))
    return dict(file=os.path.basename(shard), num_records=count,
                num_bytes=os.path.getsize(shard), index_missing=True)


def complete_splits(out_dir: str) -> dict[str, list[dict]]:
    """``{split: [shard index, ...]}`` for every split whose shards are all finished, found
    from the index files (so splits written by earlier runs are kept in the metadata)."""
    folder = os.path.join(out_dir, INDEX_DIR)
    found: dict[tuple[str, int], dict[int, dict]] = {}
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if not name.endswith('.tfrecord.json'):
            continue
        with open(os.path.join(folder, name)) as f:
            info = json.load(f)
        if {'split', 'shard', 'num_shards'} <= info.keys() and \
                is_finished(out_dir, info['split'], info['shard'], info['num_shards']):
            found.setdefault((info['split'], info['num_shards']), {})[info['shard']] = info
    splits = {}
    for (split, num_shards), shards in found.items():
        if len(shards) == num_shards:
            splits[split] = [shards[i] for i in range(num_shards)]
    return splits


def write_tfds_metadata(out_dir: str, features, splits: dict[str, list[int]], name: str,
                        description: str, version: str = '1.0.0') -> None:
    """``dataset_info.json`` + ``features.json`` for ``splits`` (``{split: shard lengths}``).

    ``features`` is a ``tfds.features.FeaturesDict`` whose serialised keys are the record keys.
    """
    import tensorflow_datasets as tfds
    split_infos = []
    for split, lengths in splits.items():
        template = tfds.core.ShardedFileTemplate(
            data_dir=out_dir, template=TFDS_FILENAME_TEMPLATE, dataset_name=name, split=split,
            filetype_suffix='tfrecord')
        num_bytes = sum(os.path.getsize(p) for p in template.sharded_filepaths(len(lengths)))
        split_infos.append(tfds.core.SplitInfo(name=split, shard_lengths=list(lengths),
                                               num_bytes=num_bytes, filename_template=template))
    template = tfds.core.ShardedFileTemplate(data_dir=out_dir, template=TFDS_FILENAME_TEMPLATE,
                                             dataset_name=name, filetype_suffix='tfrecord')
    tfds.folder_dataset.write_metadata(
        data_dir=out_dir, features=features, split_infos=split_infos, version=version,
        filename_template=template, check_data=False, description=description)


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its children that have been reaped."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


class Progress:
    """``tqdm`` when installed and stderr is a terminal or ``force`` is set; otherwise a
    plain ``done/total`` line at most every ``interval`` seconds."""

    def __init__(self, total: int, desc: str, interval: float = 10.0):
        self.total, self.desc, self.interval = total, desc, interval
        self.done, self.last, self.postfix = 0, 0.0, ''
        self.start = time.time()
        try:
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=desc, unit='video', file=sys.stderr,
                            disable=not sys.stderr.isatty())
        except ImportError:
            self.bar = None

    def update(self, n: int = 1, postfix: str = '') -> None:
        self.done += n
        self.postfix = postfix or self.postfix
        if self.bar is not None and not self.bar.disable:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix_str(postfix)
        elif time.time() - self.last >= self.interval or self.done == self.total:
            self.last = time.time()
            print(f'{self.desc}: {self.done}/{self.total} videos, '
                  f'{time.time() - self.start:.0f}s {self.postfix}', file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
