"""MERLOT Reserve pretraining records: raw videos + transcripts -> TFRecord shards (spec §3.1-3.2).

    python -m data_pipeline.mreserve_records --videos 'raw/*.mp4' raw/more/ \\
        --transcripts raw/captions/ --out records/ --num-shards 32 \\
        --tokenizer bpe:../shared/tokenizers/mreserve_lowercase_bpe.json \\
        [--metadata raw/info/] [--text-corpus text.txt] [--split train] [--workers K] [--seed S]

Videos (any container PyAV decodes) are sorted by path and dealt to shards like the
original's id CSV (video ``k`` goes to shard ``k % num_shards``). Each video is processed in
a worker process by :func:`process_video`; when all videos of a shard are back, the shard's
chunks are grouped into 16-chunk records (:func:`group_chunks`), shuffled, given their random
text and written atomically (:mod:`data_pipeline.shards`). Everything random comes from
``--seed`` and the video id (file stem) or shard number, so output does not depend on
``--workers`` or on resuming. Per video, following §3.1:

- **Inputs.** A transcript is matched by file stem (``abc.mp4`` <- ``abc.json`` / ``abc.vtt`` /
  ``abc.srt`` / ``abc.stm``, preferred in that order; ``abc.en.vtt`` also matches), optional
  metadata by ``--metadata DIR/abc.json`` (or ``abc.info.json[.gz]``: yt-dlp's info file, whose
  title / description / tags become token ids and whose channel_id, view_count,
  average_rating, upload_date, categories go into ``meta``).
- **Rejections** (counted in ``summary.json`` with their reason): no audio stream; no video
  stream; a corrupt or truncated file; no transcript or one without words (unless
  ``--allow-no-transcript``, which keeps the video with empty token lists); a transcript with
  < 60% "good" words (not all-caps) or a word-length variance > 10 (turn off with
  ``--no-transcript-filter``, e.g. for upper-case STM transcripts); a video of <= 1 s.
- **ASR timing fix (§3.1.2): skipped.** The original's offset MLP has no released weights,
  so word times are used as the transcript gives them.
- **Chunks** (:func:`plan_chunks`): start at the first word - U(0, 2.5) s (>= 0); speeds 1,
  2, 3 with the stopping rules of §3.1.3; no chunk starts in the last second (duration - 1 s),
  the last one may run past the end (its audio is zero-padded, its frame is the last frame).
  A video without words always uses speed 1 (the rules only make sense for speech).
- **Frames / audio / tokens** come from :mod:`media`, :mod:`spectrogram` and the tokenizer:
  the frame nearest each chunk midpoint, black bars trimmed over all of the video's chunk
  frames, resized and JPEG q75; 22050 Hz mono audio divided by max|x|, ``5·sr·speed``
  samples from the chunk start, 64 x 188 log-mel JPEG and its magic number; each word is
  BPE-encoded on its own and all its pieces share its times, relative to the chunk start
  and divided by the speed.

Where §3.1 is vague, this module chooses (and the HERO writer may reuse the same choices):

- **Grouping** (§3.1.6): full runs of 16 from the front of each video become records; the
  rest of a video waits in a buffer of up to 160 partial videos; over that (and at the end
  of the shard) a record is made from the longest partial video topped up by the next
  longest ones; a piece cut from a longer partial video comes from its front with p = 0.8,
  else its back. Chunks left over at the end of a shard (< 16) are dropped and counted.
- **Shuffling** (§3.1.9): the records of a shard are shuffled as a whole (the original's
  10,000-record buffer holds a whole shard of ~2,400 records). The §3.1.7 frame filter
  (MobileNetV2 on COCO) is not applied: no weights.
- **Random text** (§3.1.8): ``--text-corpus`` is plain text, documents separated by blank
  lines, whitespace collapsed; the ``START + ids + END`` stream is cut into 1536-token rows
  (the last partial row is dropped; a corpus shorter than one row is repeated). Record ``r``
  of shard ``s`` takes rows ``s + N·2r`` and ``s + N·(2r + 1)`` modulo the row count, N the
  number of shards. Without a corpus, ``random_text`` is empty everywhere.
- **Metadata**: ``tags`` are joined with ", " before tokenising; ``youtube_id`` is the file
  stem (not necessarily 11 characters).

Output: ``{split}{shard:05d}of{num_shards:05d}.tfrecord`` (the original names, which TFDS
reads through a custom file template), ``index/<shard>.json`` per shard,
``dataset_info.json`` + ``features.json`` (``tfds.builder_from_directory(out)``) once a split
is complete, and ``summary.json``. Each record holds the keys of :data:`FEATURES` (spec
§3.2), the video index written as both ``video_src_idx`` (original writer) and
``video_src_index`` (original reader). Parse with
``tf.io.parse_single_example(serialized, FEATURES)``; list-valued keys come back sparse.

Re-running skips finished shards; it assumes the same videos and ``--num-shards`` (a
warning names finished shards made from other videos). A shard's chunks stay in memory
until it is written (~40 KB a chunk), so pick ``--num-shards`` for shards of at most a few
thousand records (the original: ~2,400).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import glob
import gzip
import hashlib
import json
import multiprocessing
import os
import sys
import time
import zlib
from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow as tf

from data_pipeline import media, shards, spectrogram
from data_pipeline.tokenizer import END, START, BPETokenizer, SentencePieceTokenizer, Tokenizer
from data_pipeline.tokenizer import load_tokenizer as _load_tokenizer_file
from data_pipeline.transcripts import (
    EmptyTranscriptError,
    TranscriptError,
    Word,
    parse_transcript,
)

CHUNKS_PER_RECORD = 16
CHUNK_SECONDS = spectrogram.SEGMENT_SECONDS   # MEGA_WINDOW_SIZE = 5
SPEEDS = (1, 2, 3)
MAX_START_JITTER = 2.5        # first chunk starts at the first word - U(0, 2.5) s
WORDS_TO_STOP = 8             # stop speeding up once the window holds this many words ...
NEXT_WORDS_TO_STOP = 16       # ... or the next 5 s would hold this many
SPEED_STOP_PROB = 0.1         # ... or with this probability
END_MARGIN = 1.0              # no chunk starts in the last second
GOOD_WORD_FRACTION = 0.6
MAX_WORD_LENGTH_VARIANCE = 10.0
GROUP_BUFFER = 160
FRONT_PROB = 0.8
RANDOM_TEXT_LEN = 1536
RANDOM_TEXT_ROWS = 2          # stored in chunks 0 and 1
FRAME_BATCH = 128             # frames held in memory at once (see stored_frames)
VIDEO_EXTENSIONS = ('.mp4', '.webm', '.ogv', '.mkv', '.mov', '.avi', '.m4v', '.flv', '.mpg')
TRANSCRIPT_EXTENSIONS = ('.json', '.vtt', '.srt', '.stm')     # preference order
META_KEYS = ('channel_id', 'view_count', 'average_rating', 'upload_date', 'categories')
DATASET_NAME = 'mreserve_records'

# Spec §3.2, per chunk: key -> (dtype, is a list). Lists are VarLenFeatures (may be empty).
CHUNK_SCHEMA = {
    'image/encoded': (tf.string, False),
    'image/height': (tf.int64, False),
    'image/width': (tf.int64, False),
    'image/key/sha256': (tf.string, False),
    'image/format': (tf.string, False),
    'spectrogram/encoded': (tf.string, False),
    'spectrogram/height': (tf.int64, False),
    'spectrogram/width': (tf.int64, False),
    'spectrogram/magic_number': (tf.float32, False),
    'spectrogram/key/sha256': (tf.string, False),
    'spectrogram/format': (tf.string, False),
    'youtube_id': (tf.string, False),
    'video_src_idx': (tf.int64, False),
    'video_src_index': (tf.int64, False),
    'title': (tf.int64, True),
    'description': (tf.int64, True),
    'tags': (tf.int64, True),
    'meta': (tf.string, False),
    'playback_speed': (tf.int64, False),
    'start_time': (tf.float32, False),
    'end_time': (tf.float32, False),
    'tok_ids': (tf.int64, True),
    'tok_start_times': (tf.float32, True),
    'tok_end_times': (tf.float32, True),
    'random_text': (tf.int64, True),
}


def chunk_key(i: int, key: str) -> str:
    return f'c{i:02d}/{key}'


# The parsing schema of one record: what the reader passes to tf.io.parse_single_example.
FEATURES = {
    chunk_key(i, key): tf.io.VarLenFeature(dtype) if is_list else tf.io.FixedLenFeature([], dtype)
    for i in range(CHUNKS_PER_RECORD) for key, (dtype, is_list) in CHUNK_SCHEMA.items()}


def tfds_features():
    """The same schema as a nested ``tfds.features.FeaturesDict`` (TFDS joins keys with ``/``)."""
    import tensorflow_datasets as tfds
    tree: dict = {}
    for key, (dtype, is_list) in CHUNK_SCHEMA.items():
        *parents, leaf = key.split('/')
        for i in range(CHUNKS_PER_RECORD):
            node = tree.setdefault(f'c{i:02d}', {})
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = tfds.features.Tensor(shape=(None,) if is_list else (), dtype=dtype)
    return tfds.features.FeaturesDict(tree)


# ----------------------------------------------------------------------------- chunking

@dataclasses.dataclass(frozen=True)
class ChunkPlan:
    start: float
    end: float                      # start + 5 * speed
    speed: int
    word_indices: tuple[int, ...]   # into the word list given to plan_chunks

    @property
    def midpoint(self) -> float:
        return (self.start + self.end) / 2


def plan_chunks(words: Sequence[Word], duration: float,
                rng: np.random.Generator) -> list[ChunkPlan]:
    """5 s windows sped up x2 / x3 where speech is sparse (§3.1.3).

    For each chunk the speed grows until the window holds >= 8 unused words, or the next
    5 s would hold >= 16, or the window reaches the end (duration - 1 s), or a 10% coin
    fires. The chunk takes every unused word whose centre lies before its end.
    """
    centres = np.array([(w.start + w.end) / 2 for w in words], dtype=np.float64)
    order = np.argsort(centres, kind='stable')
    sorted_centres = centres[order]
    limit = duration - END_MARGIN
    t = max(words[0].start - rng.uniform(0, MAX_START_JITTER), 0.0) if len(words) else 0.0
    used, plans = 0, []
    while t < limit:
        speeds = SPEEDS if len(words) else SPEEDS[:1]
        for speed in speeds:
            end = t + CHUNK_SECONDS * speed
            taken = int(np.searchsorted(sorted_centres, end, side='left'))
            upcoming = int(np.searchsorted(sorted_centres, end + CHUNK_SECONDS, side='left'))
            coin = rng.random() < SPEED_STOP_PROB
            if (taken - used >= WORDS_TO_STOP or upcoming - taken >= NEXT_WORDS_TO_STOP
                    or end >= limit or coin):
                break
        plans.append(ChunkPlan(t, end, speed, tuple(int(i) for i in order[used:taken])))
        used, t = taken, end
    return plans


def transcript_rejection(words: Sequence[Word]) -> str | None:
    """The original's transcript quality filters (§3.1.1); None when the words pass."""
    good = np.mean([not w.word.isupper() and not any(c.isspace() for c in w.word)
                    for w in words])
    if good < GOOD_WORD_FRACTION:
        return f'transcript: only {good:.0%} good (not all-caps) words, needs 60%'
    variance = float(np.var([len(w.word) for w in words]))
    if variance > MAX_WORD_LENGTH_VARIANCE:
        return f'transcript: word-length variance {variance:.1f} > 10'
    return None


# ----------------------------------------------------------------------------- one video

@dataclasses.dataclass(frozen=True)
class VideoJob:
    path: str
    video_id: str
    transcript: str | None
    metadata: str | None
    seed: int
    allow_no_transcript: bool = False
    transcript_filter: bool = True


class Skip(Exception):
    """The video is left out for the reason given."""


def _video_rng(seed: int, video_id: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(video_id.encode())])


def load_metadata(path: str | None) -> dict:
    if path is None:
        return {}
    opener = gzip.open if path.endswith('.gz') else open
    with opener(path, 'rt', encoding='utf-8') as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError(f'{path}: metadata must be a JSON object')
    return data


def _metadata_fields(meta: dict, tokenizer: Tokenizer | None, extra: dict) -> dict:
    def ids(text) -> list[int]:
        if isinstance(text, (list, tuple)):
            text = ', '.join(str(t) for t in text)
        return tokenizer.encode(str(text)) if text and tokenizer is not None else []
    info = {k: meta[k] for k in META_KEYS if k in meta}
    info.update(extra)
    return {'title': ids(meta.get('title')), 'description': ids(meta.get('description')),
            'tags': ids(meta.get('tags')), 'meta': json.dumps(info, sort_keys=True).encode()}


def process_video(job: VideoJob, tokenizer: Tokenizer | None) -> dict:
    """Decodes, chunks and encodes one video; returns its outcome (see :func:`_outcome`).

    ``chunks`` holds one dict per chunk with every :data:`CHUNK_SCHEMA` key except the
    per-record ones (``video_src_idx``, ``video_src_index``, ``random_text``).
    """
    cpu0 = time.process_time()
    try:
        chunks, stats = _process(job, tokenizer)
        status, reason = 'done', None
    except Skip as e:
        chunks, stats, status, reason = [], {}, 'skipped', str(e)
    except media.MediaError as e:
        chunks, stats, status, reason = [], {}, 'skipped', e.reason
    except TranscriptError as e:
        chunks, stats, status, reason = [], {}, 'skipped', f'bad transcript: {e}'
    except Exception as e:  # a bad file never stops the run
        chunks, stats, status, reason = [], {}, 'skipped', f'{type(e).__name__}: {e}'
    return dict(path=job.path, id=job.video_id, status=status, reason=reason, chunks=chunks,
                cpu_seconds=time.process_time() - cpu0, **stats)


def _process(job: VideoJob, tokenizer: Tokenizer | None) -> tuple[list[dict], dict]:
    info = media.probe(job.path)
    if not info.has_audio:
        raise Skip('no audio')
    if not info.has_video:
        raise Skip('no video')
    words: list[Word] = []
    if job.transcript is None:
        missing = 'no transcript'
    else:
        missing = None
        try:
            words = parse_transcript(job.transcript)
        except EmptyTranscriptError:
            missing = 'empty transcript'
    if missing and not job.allow_no_transcript:
        raise Skip(missing)
    if words and job.transcript_filter:
        rejection = transcript_rejection(words)
        if rejection:
            raise Skip(rejection)
    if words and tokenizer is None:
        raise ValueError('a tokenizer is needed for transcripts')

    plans = plan_chunks(words, info.duration, _video_rng(job.seed, job.video_id))
    if not plans:
        raise Skip(f'too short ({info.duration:.2f}s, no chunk starts before duration - 1 s)')
    wav = media.load_audio(job.path)
    frames = stored_frames(job.path, [p.midpoint for p in plans])
    word_ids = tokenizer.encode_batch([w.word for w in words]) if words else []

    stats = dict(duration=info.duration, words=len(words), no_transcript=bool(missing),
                 tokens=sum(len(i) for i in word_ids))
    first = _metadata_fields(load_metadata(job.metadata), tokenizer, dict(
        duration=round(info.duration, 3), num_words=len(words), source=os.path.basename(job.path)))
    chunks = []
    for n, (plan, frame) in enumerate(zip(plans, frames)):
        image = media.resize_for_storage(frame)
        image_jpeg = media.encode_jpeg(image)
        spec_jpeg, magic = spectrogram.segment_spectrogram(wav, plan.start, plan.speed)
        tok_ids, tok_start, tok_end = [], [], []
        for i in plan.word_indices:
            w = words[i]
            tok_ids += word_ids[i]
            tok_start += [(w.start - plan.start) / plan.speed] * len(word_ids[i])
            tok_end += [(w.end - plan.start) / plan.speed] * len(word_ids[i])
        chunk = {
            'image/encoded': image_jpeg, 'image/height': image.shape[0],
            'image/width': image.shape[1],
            'image/key/sha256': hashlib.sha256(image_jpeg).hexdigest().encode(),
            'image/format': b'jpeg',
            'spectrogram/encoded': spec_jpeg, 'spectrogram/height': spectrogram.N_MELS,
            'spectrogram/width': spectrogram.NUM_FRAMES, 'spectrogram/magic_number': magic,
            'spectrogram/key/sha256': hashlib.sha256(spec_jpeg).hexdigest().encode(),
            'spectrogram/format': b'jpeg',
            'youtube_id': job.video_id.encode(), 'playback_speed': plan.speed,
            'start_time': plan.start, 'end_time': plan.end,
            'tok_ids': tok_ids, 'tok_start_times': tok_start, 'tok_end_times': tok_end,
        }
        chunk.update(first if n == 0 else {'title': [], 'description': [], 'tags': [],
                                           'meta': b''})
        chunks.append(chunk)
    return chunks, stats


def stored_frames(path: str, times: Sequence[float],
                  batch: int = FRAME_BATCH) -> Iterator[np.ndarray]:
    """Frames at ``times`` with the black bars of all of them trimmed (§3.1.4), in order.

    Up to ``batch`` frames are held at once: for more, a first pass finds the video-wide box
    batch by batch (it is the outermost of the batch boxes) and a second decodes again.
    """
    if len(times) <= batch:
        yield from media.trim_black_bars(media.extract_frames(path, times))
        return
    batches = [times[i:i + batch] for i in range(0, len(times), batch)]
    boxes = np.array([media.detect_black_bars(media.extract_frames(path, b)) for b in batches])
    box = (boxes[:, 0].min(), boxes[:, 1].max(), boxes[:, 2].min(), boxes[:, 3].max())
    for b in batches:
        yield from media.trim_black_bars(media.extract_frames(path, b), box)


# ----------------------------------------------------------------------------- records

def group_chunks(videos: Sequence[Sequence], rng: np.random.Generator,
                 size: int = CHUNKS_PER_RECORD, buffer_size: int = GROUP_BUFFER,
                 front_prob: float = FRONT_PROB) -> tuple[list[list[list]], int]:
    """``grouped_iterator`` (§3.1.6): the chunks of each video (in order) -> records.

    Returns ``(records, dropped)``: each record is a list of pieces (consecutive chunks of
    one video; a piece's position is its ``video_src_idx``) holding ``size`` chunks in all;
    ``dropped`` counts the chunks left over at the end.
    """
    records, buffer = [], []                  # buffer: [[chunks of one partial video], ...]
    for chunks in videos:
        chunks = list(chunks)
        full = len(chunks) // size * size
        records += [[chunks[k:k + size]] for k in range(0, full, size)]
        if full < len(chunks):
            buffer.append(chunks[full:])
        while len(buffer) > buffer_size:
            records.append(_drain_one(buffer, rng, size, front_prob))
    while sum(len(b) for b in buffer) >= size:
        records.append(_drain_one(buffer, rng, size, front_prob))
    return records, sum(len(b) for b in buffer)


def _drain_one(buffer: list[list], rng, size: int, front_prob: float) -> list[list]:
    buffer.sort(key=len, reverse=True)       # stable: equal lengths keep their arrival order
    record, have, i = [], 0, 0
    while have < size:
        need = size - have
        if len(buffer[i]) <= need:
            piece = buffer.pop(i)
        else:
            if rng.random() < front_prob:
                piece, buffer[i] = buffer[i][:need], buffer[i][need:]
            else:
                piece, buffer[i] = buffer[i][-need:], buffer[i][:-need]
            i += 1
        record.append(piece)
        have += len(piece)
    return record


def random_text_rows(path: str, tokenizer: Tokenizer, length: int = RANDOM_TEXT_LEN) -> np.ndarray:
    """``int64 [rows, length]``: the corpus as a ``START + ids + END`` stream cut into rows."""
    with open(path, encoding='utf-8') as f:
        docs = [' '.join(d.split()) for d in f.read().split('\n\n')]
    docs = [d for d in docs if d]
    stream: list[int] = []
    for start in range(0, len(docs), 256):
        for ids in tokenizer.encode_batch(docs[start:start + 256]):
            stream += [START] + ids + [END]
    if not stream:
        raise ValueError(f'{path}: the text corpus is empty')
    if len(stream) < length:
        stream = stream * -(-length // len(stream))
    rows = len(stream) // length
    return np.asarray(stream[:rows * length], np.int64).reshape(rows, length)


def make_example(chunks: Sequence[dict]) -> bytes:
    """One serialised ``tf.train.Example`` from 16 complete chunk dicts."""
    feature = {}
    for i, chunk in enumerate(chunks):
        for key, (dtype, is_list) in CHUNK_SCHEMA.items():
            values = chunk[key] if is_list else [chunk[key]]
            if dtype == tf.string:
                f = tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
            elif dtype == tf.int64:
                f = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))
            else:
                f = tf.train.Feature(float_list=tf.train.FloatList(value=[float(v)
                                                                          for v in values]))
            feature[chunk_key(i, key)] = f
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def shard_records(results: Sequence[dict], shard: int, num_shards: int, seed: int,
                  text_rows: np.ndarray | None) -> tuple[list[bytes], int, int]:
    """Groups, shuffles and serialises one shard: (records, chunks in records, dropped)."""
    grouped, dropped = group_chunks([r['chunks'] for r in results],
                                    np.random.default_rng([seed, 1, shard]))
    order = np.random.default_rng([seed, 2, shard]).permutation(len(grouped))
    records = []
    for r, k in enumerate(order):
        chunks = [dict(c, video_src_idx=j, video_src_index=j, random_text=[])
                  for j, piece in enumerate(grouped[k]) for c in piece]
        if text_rows is not None:
            for j in range(RANDOM_TEXT_ROWS):
                row = (shard + num_shards * (RANDOM_TEXT_ROWS * r + j)) % len(text_rows)
                chunks[j]['random_text'] = text_rows[row]
        records.append(make_example(chunks))
    return records, len(grouped) * CHUNKS_PER_RECORD, dropped


# ----------------------------------------------------------------------------- inputs

def expand_videos(patterns: Sequence[str]) -> list[str]:
    """Files (taken as they are), folders (searched recursively) and globs -> sorted paths.

    Folders and globs yield files with a video extension only (so transcripts stored next
    to the videos are not taken for videos), unless the glob itself names the extension.
    """
    found = set()
    for pattern in patterns:
        if os.path.isdir(pattern):
            for root, _, files in os.walk(pattern):
                found.update(os.path.join(root, f) for f in files
                             if f.lower().endswith(VIDEO_EXTENSIONS))
        elif os.path.exists(pattern):
            found.add(pattern)
        else:
            found.update(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p) and (
                p.lower().endswith(VIDEO_EXTENSIONS)
                or os.path.splitext(p)[1].lower() in pattern.lower()))
    return sorted(found)


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def index_files(sources: Sequence[str] | None, extensions: Sequence[str]) -> dict[str, str]:
    """``{stem: path}`` of files with ``extensions`` in folders / file lists; with several
    formats for one stem the earliest extension wins; ``abc.en.vtt`` also answers to ``abc``."""
    paths = []
    for source in sources or []:
        if os.path.isdir(source):
            paths += [os.path.join(source, f) for f in sorted(os.listdir(source))]
        else:
            paths += sorted(glob.glob(source)) or [source]
    rank = {ext: i for i, ext in enumerate(extensions)}
    best: dict[str, tuple[int, int, str]] = {}
    for path in paths:
        name = os.path.basename(path)
        ext = next((e for e in sorted(extensions, key=len, reverse=True)
                    if name.lower().endswith(e)), None)
        if ext is None:
            continue
        stem = name[:-len(ext)]
        for exactness, key in ((0, stem), (1, stem.split('.')[0])):
            candidate = (exactness, rank[ext], path)
            if key not in best or candidate < best[key]:
                best[key] = candidate
    return {stem: path for stem, (_, _, path) in best.items()}


def load_tokenizer(spec: str | None) -> Tokenizer | None:
    """``bpe:PATH`` (tokenizers JSON), ``sp:PATH`` (sentencepiece) or a path by extension."""
    if spec is None:
        return None
    kind, _, path = spec.partition(':')
    if kind == 'bpe' and path:
        return BPETokenizer(path)
    if kind == 'sp' and path:
        return SentencePieceTokenizer(path)
    return _load_tokenizer_file(spec)


# ----------------------------------------------------------------------------- running

_WORKER: dict = {}


def _init_worker(tokenizer_spec: str | None, single_thread: bool = False) -> None:
    if _WORKER.get('spec', ()) == tokenizer_spec:
        return
    if single_thread:       # one video per core: no intra-op thread pools on top
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    _WORKER.update(spec=tokenizer_spec, tokenizer=load_tokenizer(tokenizer_spec))


def _run_job(job: VideoJob) -> dict:
    return process_video(job, _WORKER['tokenizer'])


def _run_jobs(jobs: list[tuple[object, VideoJob]], workers: int, tokenizer_spec: str | None
              ) -> Iterator[tuple[object, dict]]:
    """Yields (key, outcome) as videos finish. A worker that dies (a crash inside a decoder)
    breaks the pool: the pool is rebuilt and unfinished videos retried; a video in flight
    during two breaks is skipped."""
    if workers <= 1:
        _init_worker(tokenizer_spec)
        for key, job in jobs:
            yield key, _run_job(job)
        return
    todo = list(reversed(jobs))
    attempts: dict[int, int] = {}
    ctx = multiprocessing.get_context('spawn')   # TensorFlow is loaded: never fork
    while todo:
        pool = concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_init_worker, initargs=(tokenizer_spec, True))
        running: dict = {}
        broken: list = []
        try:
            while (todo or running) and not broken:
                while todo and len(running) < 4 * workers:
                    key, job = todo.pop()
                    running[pool.submit(_run_job, job)] = (key, job)
                done, _ = concurrent.futures.wait(running, return_when='FIRST_COMPLETED')
                for future in done:
                    key, job = running.pop(future)
                    try:
                        result = future.result()
                    except concurrent.futures.process.BrokenProcessPool:
                        broken.append((key, job))
                        continue
                    yield key, result
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        for key, job in broken + list(running.values()):
            attempts[id(job)] = attempts.get(id(job), 0) + 1
            if attempts[id(job)] >= 2:
                yield key, dict(path=job.path, id=job.video_id, status='skipped',
                                reason='worker process crashed', chunks=[], cpu_seconds=0.0)
            else:
                todo.append((key, job))


def _warn_if_inputs_changed(out: str, split: str, n: int, videos: list[str],
                            pending: list[int]) -> None:
    """Resuming assumes the same videos and --num-shards: say so when a finished shard was
    made from other videos than the ones it would get now."""
    for s in sorted(set(range(n)) - set(pending)):
        paths = [v['path'] for v in shards.read_index(out, split, s, n).get('videos', [])]
        if paths != videos[s::n]:
            print(f'warning: {shards.shard_filename(split, s, n)} was written from other '
                  f'videos than it would get now; it is kept (delete it to redo it)',
                  file=sys.stderr)


def _video_entry(result: dict) -> dict:
    keys = ('path', 'id', 'status', 'reason', 'duration', 'words', 'tokens', 'no_transcript',
            'cpu_seconds')
    entry = {k: result[k] for k in keys if k in result}
    entry['cpu_seconds'] = round(entry['cpu_seconds'], 3)
    entry['chunks'] = len(result['chunks'])
    return entry


def run(args: argparse.Namespace) -> dict:
    """Writes the missing shards of ``args.split``, the TFDS metadata and ``summary.json``."""
    wall0, cpu0 = time.time(), shards.cpu_seconds()
    videos = expand_videos(args.videos)
    if not videos:
        raise SystemExit(f'error: no video files match {args.videos}')
    transcripts = {stem: path for stem, path in
                   index_files(args.transcripts, TRANSCRIPT_EXTENSIONS).items()
                   if not path.endswith('.info.json')}          # yt-dlp metadata, not words
    metadata = index_files([args.metadata] if args.metadata else [],
                           ('.v2.info.json.gz', '.info.json.gz', '.info.json', '.json'))
    needs_tokens = bool(transcripts or metadata or args.text_corpus)
    if needs_tokens and args.tokenizer is None:
        raise SystemExit('error: --tokenizer bpe:PATH or sp:PATH is needed to tokenise '
                         'transcripts, metadata and --text-corpus')
    tokenizer = load_tokenizer(args.tokenizer)
    _WORKER.update(spec=args.tokenizer, tokenizer=tokenizer)     # for --workers 1
    text_rows = random_text_rows(args.text_corpus, tokenizer) if args.text_corpus else None
    os.makedirs(args.out, exist_ok=True)

    shards.remove_stale_temporaries(args.out)
    n = args.num_shards
    pending = [s for s in range(n) if not shards.is_finished(args.out, args.split, s, n)]
    _warn_if_inputs_changed(args.out, args.split, n, videos, pending)
    jobs, expected = [], {}
    for s in pending:
        members = videos[s::n]
        expected[s] = len(members)
        for pos, path in enumerate(members):
            stem = _stem(path)
            jobs.append(((s, pos), VideoJob(
                path=path, video_id=stem, transcript=transcripts.get(stem),
                metadata=metadata.get(stem), seed=args.seed,
                allow_no_transcript=args.allow_no_transcript,
                transcript_filter=args.transcript_filter)))
    results: dict[int, dict[int, dict]] = {s: {} for s in pending}
    progress = shards.Progress(len(jobs), f'{args.split}: {len(pending)}/{n} shards to write')
    run_seconds = 0.0
    worker_cpu = 0.0

    def finish_shard(s: int) -> None:
        by_position = results.pop(s)
        outcomes = [by_position[pos] for pos in range(expected[s])]
        records, in_records, dropped = shard_records(outcomes, s, n, args.seed, text_rows)
        shards.write_shard(args.out, args.split, s, n, records, dict(
            split=args.split, shard=s, num_shards=n, seed=args.seed,
            chunks_in_records=in_records, chunks_dropped=dropped,
            videos=[_video_entry(r) for r in outcomes]))

    for s in [s for s in pending if expected[s] == 0]:
        finish_shard(s)
    for (s, pos), result in _run_jobs(jobs, args.workers, args.tokenizer):
        results[s][pos] = result
        worker_cpu += result['cpu_seconds']
        if result['status'] == 'done':
            run_seconds += result['duration']
        if len(results[s]) == expected[s]:
            finish_shard(s)
        progress.update(1, f'{result["status"]} {os.path.basename(result["path"])}')
    progress.close()

    splits = shards.complete_splits(args.out)
    if args.split in splits:
        shards.write_tfds_metadata(
            args.out, tfds_features(),
            {name: [i['num_records'] for i in infos] for name, infos in splits.items()},
            name=DATASET_NAME, description=__doc__.split('\n')[0])
    summary = _summary(args, splits.get(args.split), pending, dict(
        videos_processed=len(jobs), video_seconds=round(run_seconds, 3),
        cpu_seconds=round(shards.cpu_seconds() - cpu0, 3),
        worker_cpu_seconds=round(worker_cpu, 3), wall_seconds=round(time.time() - wall0, 3),
        workers=args.workers))
    shards.write_json_atomic(os.path.join(args.out, 'summary.json'), summary)
    return summary


def _summary(args, infos: list[dict] | None, written: list[int], this_run: dict) -> dict:
    n = args.num_shards
    infos = infos or [shards.read_index(args.out, args.split, s, n) for s in range(n)
                      if shards.is_finished(args.out, args.split, s, n)]
    entries = [v for info in infos for v in info.get('videos', [])]
    done = [v for v in entries if v['status'] == 'done']
    cpu = this_run['cpu_seconds']
    this_run['video_seconds_per_cpu_second'] = round(this_run['video_seconds'] / cpu, 3) \
        if cpu else None
    return dict(
        split=args.split, num_shards=n, shards_finished=len(infos),
        shards_written=len(written), shards_resumed=n - len(written),
        tfds_metadata=len(infos) == n,
        videos=len(entries), videos_done=len(done), videos_skipped=len(entries) - len(done),
        skipped={v['path']: v['reason'] for v in entries if v['status'] != 'done'},
        videos_without_transcript=[v['path'] for v in done if v.get('no_transcript')],
        chunks=sum(v['chunks'] for v in done),
        chunks_in_records=sum(i.get('chunks_in_records', 0) for i in infos),
        chunks_dropped=sum(i.get('chunks_dropped', 0) for i in infos),
        records=sum(i['num_records'] for i in infos),
        video_seconds=round(sum(v['duration'] for v in done), 3),
        video_seconds_per_cpu_second=this_run['video_seconds_per_cpu_second'],
        this_run=this_run, files={v['path']: v for v in entries})


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--videos', nargs='+', required=True, help='video files, folders or globs')
    p.add_argument('--transcripts', nargs='*', default=[],
                   help='folders or files of .json/.vtt/.srt/.stm transcripts, matched by stem')
    p.add_argument('--out', required=True)
    p.add_argument('--num-shards', type=int, required=True)
    p.add_argument('--tokenizer', default=None, help='bpe:PATH.json or sp:PATH.model')
    p.add_argument('--metadata', default=None, help='folder of STEM.json / STEM.info.json[.gz]')
    p.add_argument('--text-corpus', default=None, help='plain text for random_text')
    p.add_argument('--split', default='train')
    p.add_argument('--workers', type=int, default=os.cpu_count() or 1)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--allow-no-transcript', action='store_true',
                   help='keep videos without a transcript (empty token lists)')
    p.add_argument('--no-transcript-filter', dest='transcript_filter', action='store_false',
                   help='skip the all-caps / word-length quality filters')
    args = p.parse_args(argv)
    if args.num_shards < 1 or args.workers < 1:
        p.error('--num-shards and --workers must be >= 1')
    if not args.split.isidentifier():
        p.error('--split must be a plain name such as train or val')
    return args


def main(argv=None) -> dict:
    summary = run(parse_args(argv))
    print(json.dumps({k: summary[k] for k in (
        'split', 'shards_written', 'shards_resumed', 'videos_done', 'videos_skipped', 'chunks',
        'records', 'video_seconds_per_cpu_second')}), file=sys.stdout)
    return summary


if __name__ == '__main__':
    main()
