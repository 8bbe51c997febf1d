"""HERO pretraining batches from a feature store (data_pipeline/hero_store.py), in the layout
hero/task.py consumes (hero/modeling.py per-video layout; spec §3.4 semantics).

Masking (MLM tokens, MFM frames) and FOM shuffling happen on device in hero/task.py, so every
part holds clean features and tokens. A host batch has three parts, ``B`` = the host's videos
(``global_batch // process_count``), each part from its own videos:

=====================  ======================  ======  =========================================
key                    shape                   dtype   meaning
=====================  ======================  ======  =========================================
{part}.frame_feats     [B, L, D]               feat    clip-level features, zero-padded
{part}.frame_mask      [B, L]                  int32   1 on real frames
{part}.sub_frames      [B, S, F]               int32   frames of each aligned subtitle, -1 = none
mlm.txt_ids            [B, S, T]               int32   [CLS] + ids (MLM examples, spec §2.1)
mlm.txt_mask           [B, S, T]               int32
video|vsm.sub_ids      [B, S, T]               int32   [SEP] + ids (video collate, §1.4)
video|vsm.sub_mask     [B, S, T]               int32
vsm.query_ids          [B, Q, Tq]              int32   [CLS] + ids of 5 query subtitles (§2.3)
vsm.query_mask         [B, Q, Tq]              int32
vsm.query_targets      [B, Q, 2]               int32   first / last frame (inclusive)
=====================  ======================  ======  =========================================

part = mlm | video (MFM and FOM) | vsm. L = data.max_clip_len, S = data.subs_per_video,
F = data.frames_per_sub, T = (sub_ctx_len + 1) * max_txt_len + 1, Tq = max_txt_len + 1,
Q = data.query_per_video, feat = data.feat_dtype (float16: the stored precision; the loss
up-casts, as the original does on read). Ids: [CLS] 0, <pad> 1, [SEP] 2 (spec §1.1).

Static shapes, where the original is dynamic (counted in ``ReaderStats``): a video keeps its
first S aligned subtitles, a subtitle its first F frames in f-TRM (all frames stay in t-TRM),
video-batch text is cut to T - 1 tokens (the original does not cut there, §1.1).
The alignment is the store's, cut again at L by the same rule 4 (it composes).

Determinism. Host p of P reads shards ``files[p::P]``. Its record stream is endless: epoch e
visits its shards in an order drawn from (seed, p, e) and each shard's records in an order
drawn from (seed, p, e, shard). Step k uses stream records [3kB, 3(k+1)B): B for mlm, B for
video, B for vsm; or, when the caller says which part step k's task needs (hero/task.py draws
the task on the host), records [kB, (k+1)B) for that part only, the other parts being zeros.
VSM query sampling of stream record n uses (seed, p, n). Resuming at step k jumps to its
position through the shard record counts (no decoding of earlier records).

Corrupt records. Shards are read with their checksums verified (data_pipeline/tfrecord_io.py):
a record that fails them or that a truncated shard cuts short stops the reader with an error
naming the file, the record and its byte offset; with ``skip_corrupt`` (``data.skip_corrupt``)
it is skipped (with the rest of the shard when that cannot be framed) and counted. The stream
then holds the readable records only; a resumed run counts them in the shards it jumps over
(reading those shards once) so that it still sees exactly the records it would have seen.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator

import numpy as np

from data_pipeline import hero_store, shards, tfrecord_io

CLS_ID, PAD_ID, SEP_ID = 0, 1, 2
PARTS = ('mlm', 'video', 'vsm')


@dataclasses.dataclass(frozen=True)
class Sizes:
    max_clip_len: int = 100
    subs_per_video: int = 48
    frames_per_sub: int = 16
    max_txt_len: int = 60
    query_per_video: int = 5
    sub_ctx_len: int = 0
    feat_dim: int = 4352
    feat_dtype: str = 'float16'

    @property
    def txt_len(self) -> int:
        return (self.sub_ctx_len + 1) * self.max_txt_len + 1

    @property
    def query_len(self) -> int:
        return self.max_txt_len + 1

    @classmethod
    def from_config(cls, config) -> Sizes:
        data = config.data
        return cls(max_clip_len=data.max_clip_len, subs_per_video=data.subs_per_video,
                   frames_per_sub=data.frames_per_sub, max_txt_len=data.max_txt_len,
                   query_per_video=data.query_per_video, sub_ctx_len=data.sub_ctx_len,
                   feat_dim=config.model.vfeat_dim, feat_dtype=data.feat_dtype)


def batch_shapes(sizes: Sizes, batch: int) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """{key: (shape, dtype)} of a batch of `batch` videos per part (the table above)."""
    b, n, s, f = batch, sizes.max_clip_len, sizes.subs_per_video, sizes.frames_per_sub
    t, q, tq = sizes.txt_len, sizes.query_per_video, sizes.query_len
    i32 = np.dtype(np.int32)
    out = {}
    for part in PARTS:
        out[f'{part}.frame_feats'] = ((b, n, sizes.feat_dim), np.dtype(sizes.feat_dtype))
        out[f'{part}.frame_mask'] = ((b, n), i32)
        out[f'{part}.sub_frames'] = ((b, s, f), i32)
        text = ('txt_ids', 'txt_mask') if part == 'mlm' else ('sub_ids', 'sub_mask')
        for key in text:
            out[f'{part}.{key}'] = ((b, s, t), i32)
    out['vsm.query_ids'] = ((b, q, tq), i32)
    out['vsm.query_mask'] = ((b, q, tq), i32)
    out['vsm.query_targets'] = ((b, q, 2), i32)
    return out


@dataclasses.dataclass
class ReaderStats:
    """What the static shapes cut (counts over the examples built so far)."""
    subs_dropped: int = 0         # aligned subtitles beyond S
    frames_dropped: int = 0       # subtitle frames beyond F (still in t-TRM)
    tokens_cut: int = 0           # subtitles whose text was cut
    no_query_videos: int = 0      # VSM videos without a subtitle with frames


# ------------------------------------------------------------------------------ one video

@dataclasses.dataclass
class Video:
    feats: np.ndarray                     # [n <= L, D]
    subs: list[np.ndarray]                # stored token lists
    sub2frames: list[tuple[int, list[int]]]   # after the L cut and the S cut


def prepare(example: dict, sizes: Sizes, stats: ReaderStats) -> Video:
    if example['feat_dim'] != sizes.feat_dim:
        raise ValueError(f"{example['vid']}: feature dim {example['feat_dim']} != model "
                         f'vfeat_dim {sizes.feat_dim}')
    feats = example['features'][:sizes.max_clip_len]
    aligned, _ = hero_store.truncate_alignment(hero_store.sub2frames(example), [],
                                               sizes.max_clip_len)
    stats.subs_dropped += max(0, len(aligned) - sizes.subs_per_video)
    return Video(feats, hero_store.subtitles(example), aligned[:sizes.subs_per_video])


def _text(video: Video, sub: int, sizes: Sizes) -> list[int]:
    """Previous sub_ctx_len subtitles + this one, each cut to max_txt_len (spec §1.4)."""
    ids: list[int] = []
    for i in range(max(sub - sizes.sub_ctx_len, 0), sub + 1):
        ids += video.subs[i][:sizes.max_txt_len].tolist()
    return ids


def _put_text(ids_row, mask_row, prefix: int, ids: list[int], stats: ReaderStats):
    room = len(ids_row) - 1
    if len(ids) > room:
        stats.tokens_cut += 1
        ids = ids[:room]
    ids_row[:len(ids) + 1] = [prefix, *ids]
    mask_row[:len(ids) + 1] = 1


def video_example(video: Video, sizes: Sizes, stats: ReaderStats, prefix: int = SEP_ID,
                  text_key: str = 'sub', no_text: frozenset = frozenset()) -> dict:
    """The generic video collate for one video; subtitles in `no_text` keep only the prefix."""
    n, s, f, t = sizes.max_clip_len, sizes.subs_per_video, sizes.frames_per_sub, sizes.txt_len
    out = {'frame_feats': np.zeros((n, sizes.feat_dim), sizes.feat_dtype),
           'frame_mask': np.zeros(n, np.int32),
           'sub_frames': np.full((s, f), -1, np.int32),
           f'{text_key}_ids': np.full((s, t), PAD_ID, np.int32),
           f'{text_key}_mask': np.zeros((s, t), np.int32)}
    count = len(video.feats)
    out['frame_feats'][:count] = video.feats
    out['frame_mask'][:count] = 1
    for j, (sub, frames) in enumerate(video.sub2frames):
        stats.frames_dropped += max(0, len(frames) - f)
        out['sub_frames'][j, :min(len(frames), f)] = frames[:f]
        ids = [] if j in no_text else _text(video, sub, sizes)
        _put_text(out[f'{text_key}_ids'][j], out[f'{text_key}_mask'][j], prefix, ids, stats)
    return out


def mlm_example(video: Video, sizes: Sizes, stats: ReaderStats) -> dict:
    """Every aligned subtitle as an MLM example: [CLS] + text with its frames (spec §2.1)."""
    return video_example(video, sizes, stats, prefix=CLS_ID, text_key='txt')


def vsm_example(video: Video, sizes: Sizes, stats: ReaderStats,
                rng: np.random.Generator) -> dict:
    """Video batch without the query subtitles' text + Q queries (spec §2.3): up to Q distinct
    subtitles with frames, in subtitle order, the last repeated to reach Q."""
    q, tq = sizes.query_per_video, sizes.query_len
    candidates = [j for j, (_, frames) in enumerate(video.sub2frames) if frames]
    if candidates:
        picks = sorted(rng.choice(len(candidates), min(q, len(candidates)), replace=False))
        picks = [candidates[i] for i in picks]
    else:     # no subtitle owns a frame: the first subtitle (or nothing) against frame 0
        stats.no_query_videos += 1
        picks = [0] if video.sub2frames else []
    out = video_example(video, sizes, stats, no_text=frozenset(picks))
    out['query_ids'] = np.full((q, tq), PAD_ID, np.int32)
    out['query_mask'] = np.zeros((q, tq), np.int32)
    out['query_targets'] = np.zeros((q, 2), np.int32)
    count = len(video.feats)
    picks = picks + [picks[-1]] * (q - len(picks)) if picks else []
    for k, j in enumerate(picks):
        sub, frames = video.sub2frames[j]
        ids = video.subs[sub][:sizes.max_txt_len].tolist()
        out['query_ids'][k, :len(ids) + 1] = [CLS_ID, *ids]
        out['query_mask'][k, :len(ids) + 1] = 1
        st = frames[0] if frames else 0
        last = frames[-1] if frames else 0
        out['query_targets'][k] = (st, min(max(st + 1, last), count - 1))
    if not picks:
        out['query_mask'][:, 0] = 1
        out['query_ids'][:, 0] = CLS_ID
        out['query_targets'][:] = (0, min(1, count - 1))
    return out


# ------------------------------------------------------------------------------ the stream

def read_tfrecords(path: str, skip_corrupt: bool = False,
                   counter: tfrecord_io.CorruptionCounter | None = None) -> list[bytes]:
    """All records of a TFRecord file, checksums verified: a corrupt or cut-short record raises
    tfrecord_io.CorruptRecordError naming the file and byte offset, or is skipped and counted
    with `skip_corrupt`."""
    return list(tfrecord_io.read_records(path, skip_corrupt, counter))


def check_store(store: str, split: str = 'train') -> None:
    """Start-up check: FileNotFoundError or ValueError naming the store when it is missing, is
    not a feature store, or its split holds no records."""
    hero_store.read_meta(store)
    infos = shards.complete_splits(store).get(split)
    if not infos:
        raise FileNotFoundError(f'{store}: no complete {split!r} split')
    if not sum(i['num_records'] for i in infos):
        raise ValueError(f'{store}: the {split!r} split holds no records ({len(infos)} shards)')


def host_files(store: str, process_index: int, process_count: int,
               split: str = 'train') -> list[tuple[str, int]]:
    """(path, records) of this host's shards: files[process_index::process_count]."""
    infos = shards.complete_splits(store).get(split)
    if not infos:
        raise FileNotFoundError(f'{store}: no complete {split!r} split')
    mine = infos[process_index::process_count]
    if not mine or not sum(i['num_records'] for i in mine):
        raise ValueError(f'{store}: {len(infos)} shards cannot feed {process_count} hosts '
                         f'(host {process_index} gets no records)')
    return [(os.path.join(store, i['file']), i['num_records']) for i in mine]


class RecordStream:
    """The host's endless, seeded record stream (module docstring), startable anywhere."""

    def __init__(self, files: list[tuple[str, int]], seed: int, process_index: int,
                 skip_corrupt: bool = False,
                 counter: tfrecord_io.CorruptionCounter | None = None):
        self.files, self.seed, self.process_index = files, seed, process_index
        self.skip_corrupt, self.counter = skip_corrupt, counter
        self._cache: tuple[str, list[bytes]] | None = None
        self._readable: dict[str, int] = {}

    def _records(self, path: str) -> list[bytes]:
        if self._cache is None or self._cache[0] != path:
            self._cache = (path, read_tfrecords(path, self.skip_corrupt, self.counter))
            self._readable[path] = len(self._cache[1])
        return self._cache[1]

    def _count(self, path: str, indexed: int) -> int:
        """Records of a shard: the index's count, or when corrupt records are skipped the
        readable ones (the shard is read once to count them)."""
        if not self.skip_corrupt:
            return indexed
        if path not in self._readable:
            self._records(path)
        return self._readable[path]

    def _epoch_size(self) -> int:
        size = sum(self._count(p, n) for p, n in self.files)
        if not size:
            raise ValueError(f'no readable records in {[p for p, _ in self.files]}')
        return size

    def iterate(self, start: int) -> Iterator[bytes]:
        epoch, offset = 0, start
        if start:
            epoch, offset = divmod(start, self._epoch_size())
        while True:
            if self._readable and not any(self._readable.values()):
                self._epoch_size()           # every record was skipped: raise, never spin
            rng = np.random.default_rng([self.seed, self.process_index, epoch])
            for file_index in rng.permutation(len(self.files)):
                path, count = self.files[file_index]
                count = self._count(path, count) if offset else count
                if offset >= count:
                    offset -= count
                    continue
                records = self._records(path)
                order = np.random.default_rng(
                    [self.seed, self.process_index, epoch, int(file_index)]).permutation(
                    len(records))
                for i in order[offset:]:
                    yield records[i]
                offset = 0
            epoch += 1


def make_train_batches(store: str, sizes: Sizes, global_batch: int, seed: int,
                       split: str = 'train', stats: ReaderStats | None = None,
                       part_of_step: Callable[[int], str] | None = None,
                       skip_corrupt: bool = False,
                       counter: tfrecord_io.CorruptionCounter | None = None):
    """train_batches(start_step, process_index, process_count) of trainer/task.py.

    With `part_of_step` (step -> 'mlm' | 'video' | 'vsm': the part of the task drawn for that
    step) only that part is read, B records per step, and the other parts are zeros (the
    same read-only arrays every step); without it every part is read, 3B records per step.
    `skip_corrupt` skips corrupt records, counting them in `counter` (module docstring)."""
    check_store(store, split)
    meta = hero_store.read_meta(store)
    if sizes.max_clip_len > meta['max_clip_len']:
        raise ValueError(f'data.max_clip_len {sizes.max_clip_len} > the store\'s alignment cut '
                         f"{meta['max_clip_len']} ({store}/meta.json)")
    stats = stats if stats is not None else ReaderStats()

    def iterate(start_step: int, process_index: int, process_count: int):
        local = global_batch // process_count
        stream = RecordStream(host_files(store, process_index, process_count, split), seed,
                              process_index, skip_corrupt, counter)
        position = start_step * (1 if part_of_step else len(PARTS)) * local
        records = stream.iterate(position)
        zeros = {}
        if part_of_step is not None:
            for key, (shape, dtype) in batch_shapes(sizes, local).items():
                zeros[key] = np.zeros(shape, dtype)
                zeros[key].flags.writeable = False
        step = start_step
        while True:
            batch: dict[str, np.ndarray] = dict(zeros)
            for part in (part_of_step(step),) if part_of_step else PARTS:
                rows = []
                for _ in range(local):
                    video = prepare(hero_store.parse_example(next(records)), sizes, stats)
                    if part == 'mlm':
                        rows.append(mlm_example(video, sizes, stats))
                    elif part == 'video':
                        rows.append(video_example(video, sizes, stats))
                    else:
                        rng = np.random.default_rng([seed, process_index, position])
                        rows.append(vsm_example(video, sizes, stats, rng))
                    position += 1
                for key in rows[0]:
                    batch[f'{part}.{key}'] = np.stack([r[key] for r in rows])
            step += 1
            yield batch

    return iterate
