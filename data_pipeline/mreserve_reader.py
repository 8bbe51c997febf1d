"""tf.data reader of MERLOT Reserve pretraining records (spec mreserve §3.2, §3.3, §2.1).

Reads the 16-chunk records (keys ``c{i:02d}/...``), decodes and augments frames and
spectrograms as the original loader does, and builds the token sequences with
:mod:`data_pipeline.mreserve_masking`. Host batches are dicts of numpy arrays, leading axis
= the host's examples (``global_batch // process_count``); per example:

==============================  =========================================  =======
key                             shape (tiny / base)                        dtype
==============================  =========================================  =======
images                          [S·h·w, 768]  (96 / 3840)                  float32
audio_clips                     [S·3·60, 65]  (720 / 2880)                 float32
text2audio{,/audio_ptr,/text_ptr}   [groups, lang_seq_len] (2x64 / 2x160)  int32
audio2text{,/audio_ptr,/text_ptr}   [groups, lang_seq_len]                 int32
audio_text_matching{,...}       [1, seq_len]  (1x76 / 1x640)               int32
random_text{,...}               [1, seq_len]                               int32
text_spans                      [2·n_trg + text_span_budget, 15] (10 / 62) int32
video_src_index                 [S]                                        int32
==============================  =========================================  =======

(:func:`make_batch_spec` gives the same table for any config.)

Determinism. Each host reads ``files[process_index::process_count]`` (or, for a TFDS
directory, ``tfds.split_for_jax_process``'s sub-split). Epoch e reads the host's files in a
stateless shuffled order seeded by (seed, e), interleaves them deterministically and
shuffles records in a buffer seeded by (seed, e); epochs are concatenated endlessly. Record n
of the host stream is augmented and masked with randomness seeded by (seed, process_index, n)
only (stateless TF ops for the images and audio, a Philox numpy generator for the
sequences). Step k is records [k·B, (k+1)·B) of the stream, B = host batch.

Resume cost. ``train_batches(k, ...)`` must reproduce the uninterrupted stream, so it skips
k·B *serialized* records (read, not parsed or decoded). When the number of records per
host-epoch E is known (TFDS metadata; or counted once from the files, a pass over the host's
records without parsing) it starts directly at epoch ⌊k·B / E⌋ and skips only the rest:
resuming costs at most one counting pass plus one epoch of reads, never the decode.

Corrupt records. A record that fails its checksums or is cut short stops the reader with an
error naming the file, the record and its byte offset; with ``data.skip_corrupt`` it is skipped
(with the rest of its file when that cannot be framed) and counted (the engine writes the count
as ``data/corrupt_records_skipped``). Skipping is deterministic: the stream stays a function of
the seed and the step, and resuming reproduces it.

Implementation notes. Frames and spectrograms are decoded with TF ops inside the tf.data
map; the token sequences are built per example by numpy code (`tf.numpy_function`, about
1 ms of the ~35 CPU-ms an example costs at base shapes). The antialiased resize is
recomputed as banded matmuls with ScaleAndTranslate's own weights (equal to
`tf.image.resize(..., antialias=True)` to 5e-7, tested), because the TF op alone made the
reader image-bound at ~20 examples/s per core. The parse spec is defined here from the
spec's §3.2 table (tests check it against the writer's `CHUNK_SCHEMA`). The shuffle buffer
holds serialized records (~0.5 MB each at 288x512): 4096 of them are ~2 GB of host memory.
"""
from __future__ import annotations

import dataclasses
import glob
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from data_pipeline import mreserve_masking as masking
from data_pipeline import tfrecord_io

NUM_CHUNKS = 16               # chunks per record written by the writer (spec §3.2)
PATCH = 16
SPEC_FRAMES = 60              # spectrogram frames per audio window
SPEC_SPARE = 8                # 188 − 3·60 frames left for the random gaps
RESIZE_METHODS = ('area', 'bicubic', 'bilinear', 'gaussian', 'lanczos3', 'lanczos5',
                  'mitchellcubic', 'nearest')
SCALE_RANGE = (1.05, 1.1)
SEQUENCE_KEYS = ('audio2text', 'audio_text_matching', 'random_text', 'text2audio')


# ---------------------------------------------------------------------------------------------
# Configuration and batch layout

def sequence_config(config: Mapping) -> masking.SequenceConfig:
    """The shape-defining keys of the `data` and `model` sections (dicts or ConfigDicts)."""
    values: dict[str, Any] = {}
    for section in ('model', 'data'):
        if section in config:
            values.update(dict(config[section].items()))
    names = {f.name for f in dataclasses.fields(masking.SequenceConfig)}
    c = masking.SequenceConfig(**{k: v for k, v in values.items() if k in names})
    if c.num_segments > NUM_CHUNKS:
        raise ValueError(f'data.num_segments={c.num_segments} > {NUM_CHUNKS} chunks per record')
    if c.num_segments % c.num_segment_groups:
        raise ValueError('data.num_segments must be a multiple of data.num_segment_groups')
    for key in ('num_text_seqs', 'num_text2audio_seqs', 'num_audio2text_seqs'):
        if int(values.get(key, 1)) != 1:
            raise ValueError(f'data.{key}={values[key]}: only 1 is supported')
    return c


def _grid(config) -> tuple[int, int]:
    grid = config['model']['output_grid'] if 'output_grid' in config['model'] else (12, 20)
    return int(grid[0]), int(grid[1])


def make_batch_spec(config) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Per-example {key: (shape, dtype)} of the reader's batches for `config`."""
    c = sequence_config(config)
    gh, gw = _grid(config)
    spec = {
        'images': ((c.num_segments * gh * gw, PATCH * PATCH * 3), np.dtype(np.float32)),
        'audio_clips': ((c.num_audio_spans * SPEC_FRAMES, 65), np.dtype(np.float32)),
        'video_src_index': ((c.num_segments,), np.dtype(np.int32)),
    }
    spec.update({k: (s, np.dtype(np.int32)) for k, s in c.shapes().items()})
    return dict(sorted(spec.items()))


# ---------------------------------------------------------------------------------------------
# Parsing (spec §3.2 schema, defined here from the spec's table)

def feature_spec(num_chunks: int) -> dict[str, Any]:
    """tf.io parse spec of the keys the reader uses, for the first `num_chunks` chunks."""
    spec = {}
    for i in range(num_chunks):
        p = f'c{i:02d}/'
        spec[p + 'image/encoded'] = tf.io.FixedLenFeature((), tf.string)
        spec[p + 'spectrogram/encoded'] = tf.io.FixedLenFeature((), tf.string)
        spec[p + 'spectrogram/magic_number'] = tf.io.FixedLenFeature((), tf.float32, 1.0)
        spec[p + 'playback_speed'] = tf.io.FixedLenFeature((), tf.int64, 1)
        spec[p + 'video_src_index'] = tf.io.FixedLenFeature((), tf.int64, -1)
        spec[p + 'video_src_idx'] = tf.io.FixedLenFeature((), tf.int64, -1)
        for key in ('title', 'description', 'tags', 'tok_ids'):
            spec[p + key] = tf.io.RaggedFeature(tf.int64)
        for key in ('tok_start_times', 'tok_end_times'):
            spec[p + key] = tf.io.RaggedFeature(tf.float32)
    spec['c00/random_text'] = tf.io.RaggedFeature(tf.int64)
    return spec


# ---------------------------------------------------------------------------------------------
# Decoding and augmentation (spec §3.3)

def _seed(base, *ints):
    """A stateless seed folded from `base` ([2] int64) and static ints."""
    for i in ints:
        base = tf.random.experimental.stateless_fold_in(base, i)
    return base


def _uniform(seed, shape=(), minval=0.0, maxval=1.0):
    return tf.random.stateless_uniform(shape, seed, minval=minval, maxval=maxval)


def _lanczos(radius):
    def kernel(x):
        px = np.float32(np.pi) * tf.maximum(x, 1e-3)
        value = radius * tf.sin(px) * tf.sin(px / radius) / (px * px)
        return tf.where(x > radius, 0.0, tf.where(x <= 1e-3, 1.0, value))
    return kernel


# The sampling kernels of TF's ScaleAndTranslate (tensorflow/core/kernels/image/
# sampling_kernels.h): name -> (radius, kernel of |x|).
KERNELS = {
    'bilinear': (1.0, lambda x: tf.where(x < 1.0, 1.0 - x, 0.0)),
    'bicubic': (2.0, lambda x: tf.where(x >= 2.0, 0.0, tf.where(
        x >= 1.0, ((-0.5 * x + 2.5) * x - 4.0) * x + 2.0, ((1.5 * x - 2.5) * x) * x + 1.0))),
    'mitchellcubic': (2.0, lambda x: tf.where(x >= 2.0, 0.0, tf.where(
        x >= 1.0, (((-7.0 / 18.0) * x + 2.0) * x - 10.0 / 3.0) * x + 16.0 / 9.0,
        (((7.0 / 6.0) * x - 2.0) * x) * x + 8.0 / 9.0))),
    'lanczos3': (3.0, _lanczos(3.0)),
    'lanczos5': (5.0, _lanczos(5.0)),
    'gaussian': (1.5, lambda x: tf.where(x >= 1.5, 0.0, tf.exp(-x * x / (2.0 * 0.25)))),
}
_FLT_MIN = float(np.finfo(np.float32).tiny)


_KERNEL_NAMES = tuple(KERNELS)


def _kernel(x, kernel_index):
    """The kernel `_KERNEL_NAMES[kernel_index]` (a tensor) at |x|."""
    return tf.switch_case(kernel_index, [lambda k=k: KERNELS[k][1](x) for k in _KERNEL_NAMES])


def _resize_rows(x, n_out, kernel_index, block: int = 32):
    """Antialiased resize of the rows of x [n_in, C] to n_out rows, with the weights of TF's
    ScaleAndTranslate (scale n_out/n_in, no translation) applied as a block-banded matmul:
    each block of `block` output rows reads only its band of input rows."""
    radius = tf.gather([KERNELS[k][0] for k in _KERNEL_NAMES], kernel_index)
    n_in = tf.shape(x)[0]
    inv_scale = 1.0 / (tf.cast(n_out, tf.float32) / tf.cast(n_in, tf.float32))
    kernel_scale = tf.maximum(inv_scale, 1.0)
    n_blocks = (n_out + block - 1) // block
    rows = tf.minimum(tf.range(n_blocks * block), n_out - 1)
    sample = (tf.cast(rows, tf.float32) + 0.5) * inv_scale
    start = tf.clip_by_value(tf.cast(tf.math.ceil(sample - radius * kernel_scale - 0.5),
                                     tf.int32), 0, n_in - 1)
    end = tf.clip_by_value(tf.cast(tf.floor(sample + radius * kernel_scale - 0.5), tf.int32),
                           0, n_in - 1) + 1
    sample, start, end = (tf.reshape(v, (n_blocks, block, 1)) for v in (sample, start, end))
    band_start = start[:, 0, 0]
    width = tf.reduce_max(end[:, -1, 0] - band_start)
    band_start = tf.minimum(band_start, n_in - width)
    src = band_start[:, None] + tf.range(width)[None]                    # [blocks, width]
    pos = tf.cast(src[:, None, :], tf.float32) + 0.5 - sample
    weights = _kernel(tf.abs(pos * (1.0 / kernel_scale)), kernel_index)
    in_span = (src[:, None, :] >= start) & (src[:, None, :] < end)
    weights = tf.where(in_span, weights, 0.0)
    total = tf.reduce_sum(weights, -1, keepdims=True)
    weights = tf.where(tf.abs(total) >= 1000.0 * _FLT_MIN, weights * (1.0 / total), weights)
    out = tf.matmul(weights, tf.gather(x, src))                          # [blocks, block, C]
    return tf.reshape(out, (n_blocks * block, -1))[:n_out]


def _scale_and_translate(img, size, kernel_index):
    h, w, c = tf.unstack(tf.shape(img))
    x = _resize_rows(tf.reshape(img, (h, w * c)), size[0], kernel_index)
    x = tf.transpose(tf.reshape(x, (size[0], w, c)), (1, 0, 2))
    x = _resize_rows(tf.reshape(x, (w, size[0] * c)), size[1], kernel_index)
    return tf.transpose(tf.reshape(x, (size[1], size[0], c)), (1, 0, 2))


def resize(img, size, method):
    """tf.image.resize(img, size, method, antialias=True) for [h, w, c] float images; method
    is a name or an index (tensor) into RESIZE_METHODS. The ScaleAndTranslate methods are
    recomputed as two banded matmuls (same weights, same result up to float rounding,
    ~3x faster on CPU); area and nearest go to TF (which ignores antialias for them)."""
    if isinstance(method, str):
        method = RESIZE_METHODS.index(method)
    kernel_index = tf.gather([_KERNEL_NAMES.index(m) if m in KERNELS else 0
                              for m in RESIZE_METHODS], method)
    branch = tf.gather([0 if m in KERNELS else 1 + ('area', 'nearest').index(m)
                        for m in RESIZE_METHODS], method)
    return tf.switch_case(branch, [
        lambda: _scale_and_translate(img, size, kernel_index),
        lambda: tf.image.resize(img, size, method='area', antialias=True),
        lambda: tf.image.resize(img, size, method='nearest', antialias=True)])


def decode_image(encoded, grid, seed, train: bool):
    """JPEG -> [h·w, 768] patches in [0, 1], depth order (dy·16 + dx)·3 + c.

    Train: portrait frames (h ≥ 4w/3) rotated 90° and padded with 4 px of 0.5; the target
    box scaled by U(1.05, 1.1); aspect-preserving resize into it (shorter side ≥ 64) with
    one of 8 TF methods and antialias; random crop. Eval: no flip, no scale, bilinear.
    Then clip to [0, 1] and zero-pad bottom/right to the grid."""
    gh, gw = grid
    th, tw = gh * PATCH, gw * PATCH
    img = tf.image.convert_image_dtype(tf.io.decode_jpeg(encoded, channels=3), tf.float32)
    if train:
        shape = tf.shape(img)
        img = tf.cond(shape[0] * 3 >= shape[1] * 4,
                      lambda: tf.pad(tf.image.rot90(img), [[4, 4], [4, 4], [0, 0]],
                                     constant_values=0.5),
                      lambda: img)
    hw = tf.cast(tf.shape(img)[:2], tf.float32)
    scale = _uniform(_seed(seed, 0), (), *SCALE_RANGE) if train else tf.constant(1.0)
    ratio = tf.minimum(th * scale / hw[0], tw * scale / hw[1])
    ratio = tf.maximum(ratio, 64.0 / tf.reduce_min(hw))
    size = tf.cast(tf.round(hw * ratio), tf.int32)
    if train:
        method = tf.random.stateless_uniform((), _seed(seed, 1), 0, len(RESIZE_METHODS),
                                             dtype=tf.int32)
        img = resize(img, size, method)
        room = tf.maximum(size - [th, tw], 0)
        offset = tf.cast(tf.floor(_uniform(_seed(seed, 2), (2,)) *
                                  tf.cast(room + 1, tf.float32)), tf.int32)
        offset = tf.minimum(offset, room)
    else:
        img = resize(img, size, 'bilinear')
        offset = tf.zeros((2,), tf.int32)
    crop = tf.minimum(size, [th, tw])
    img = tf.slice(img, tf.concat([offset, [0]], 0), tf.concat([crop, [3]], 0))
    img = tf.image.pad_to_bounding_box(tf.clip_by_value(img, 0.0, 1.0), 0, 0, th, tw)
    img = tf.reshape(img, (gh, PATCH, gw, PATCH, 3))
    return tf.reshape(tf.transpose(img, (0, 2, 1, 3, 4)), (gh * gw, PATCH * PATCH * 3))


def decode_audio(encoded, magic, speed, seed, train: bool, subsegments: int = 3):
    """Spectrogram JPEG [64 mels, 188 frames] -> ([3, 60, 65] log-mel + playback speed, the
    start frame of each window). Gaps: 4 uniform weights, normalised and cumulated, times the
    8 spare frames (train); fixed 2, 4, 6 at eval (windows [2:62], [64:124], [126:186])."""
    spec = tf.transpose(tf.cast(tf.io.decode_jpeg(encoded, channels=1)[..., 0], tf.float32))
    if train:
        weights = _uniform(seed, (subsegments + 1,))
        cum = tf.cumsum(weights / tf.reduce_sum(weights))[:subsegments]
    else:
        cum = tf.range(1, subsegments + 1, dtype=tf.float32) / (subsegments + 1)
    starts = tf.cast(cum * SPEC_SPARE, tf.int32) + SPEC_FRAMES * tf.range(subsegments)
    idx = starts[:, None] + tf.range(SPEC_FRAMES)[None]
    windows = tf.gather(spec, idx) / magic
    speed_col = tf.fill((subsegments, SPEC_FRAMES, 1), tf.cast(speed, tf.float32))
    return tf.concat([windows, speed_col], -1), starts


# ---------------------------------------------------------------------------------------------
# One example

class ExampleBuilder:
    """serialized record + per-example seed -> one example dict (static shapes)."""

    def __init__(self, config, token_is_valid: np.ndarray, train: bool):
        self.c = sequence_config(config)
        self.grid = _grid(config)
        self.train = train
        self.token_is_valid = np.asarray(token_is_valid, bool)
        self.spec = make_batch_spec(config)
        self.pieces = examples_per_record(config)
        self.features = feature_spec(self.c.num_segments * self.pieces)

    def _sequences(self, seed, tok_ids, tok_start, tok_end, tok_lens, starts, video,
                   title, title_lens, desc, desc_lens, tags, tags_lens, random_text):
        def first_nonempty(values, lens):
            ends = np.cumsum(lens)
            for e, n in zip(ends, lens):
                if n:
                    return values[e - n:e]
            return values[:0]
        rng = np.random.Generator(np.random.Philox(key=np.asarray(seed, np.int64).view(np.uint64)))
        meta = tuple(first_nonempty(v, n) for v, n in
                     ((title, title_lens), (desc, desc_lens), (tags, tags_lens)))
        out = masking.build_sequences(
            self.c, tok_ids=tok_ids, tok_start=tok_start, tok_end=tok_end, tok_lens=tok_lens,
            window_starts=starts, video_src=video, meta=meta, random_text=random_text,
            token_is_valid=self.token_is_valid, rng=rng)
        return [out[k] for k in self.sequence_keys]

    @property
    def sequence_keys(self):
        return [k for k in self.spec if k not in ('images', 'audio_clips', 'video_src_index')]

    def decode_images(self, f, seed):
        """Parsed features -> images [S·h·w, 768] (one traced body for all chunks)."""
        c = self.c
        encoded = tf.stack([f[f'c{i:02d}/image/encoded'] for i in range(c.num_segments)])
        images = tf.map_fn(
            lambda a: decode_image(a[0], self.grid, _seed(seed, a[1]), self.train),
            (encoded, tf.range(c.num_segments)),
            fn_output_signature=tf.TensorSpec((self.grid[0] * self.grid[1], PATCH * PATCH * 3),
                                              tf.float32))
        return tf.reshape(images, (-1, PATCH * PATCH * 3))

    def decode_audio(self, f, seed):
        """Parsed features -> (audio_clips [S·3·60, 65], window start frames [S, 3])."""
        c = self.c
        chunks = lambda key: tf.stack([f[f'c{i:02d}/{key}'] for i in range(c.num_segments)])
        clips, starts = tf.map_fn(
            lambda a: decode_audio(a[0], a[1], a[2], _seed(seed, a[3]), self.train,
                                   c.num_audio_subsegments),
            (chunks('spectrogram/encoded'), chunks('spectrogram/magic_number'),
             chunks('playback_speed'), tf.range(c.num_segments)),
            fn_output_signature=(tf.TensorSpec((c.num_audio_subsegments, SPEC_FRAMES, 65),
                                               tf.float32),
                                 tf.TensorSpec((c.num_audio_subsegments,), tf.int32)))
        return tf.reshape(clips, (-1, 65)), starts

    def _piece(self, f, piece):
        """The chunks [piece·S, (piece+1)·S) of a parsed record, renamed c00..c{S-1}."""
        c, out = self.c, {'c00/random_text': f['c00/random_text']}
        for key in f:
            chunk, name = int(key[1:3]), key[4:]
            if chunk < c.num_segments and name != 'random_text':
                options = [f[f'c{k * c.num_segments + chunk:02d}/{name}']
                           for k in range(self.pieces)]
                out[key] = tf.switch_case(piece, [lambda v=v: v for v in options])
        return out

    def __call__(self, index, serialized, seed, piece=None):
        """index: int64 position in the host stream; seed: [2] int64 (seed, process);
        piece: which S-chunk piece of the record (see examples_per_record), default 0."""
        f = tf.io.parse_single_example(serialized, self.features)
        if self.pieces > 1:
            f = self._piece(f, tf.constant(0, tf.int32) if piece is None else piece)
        ex_seed = _seed(seed, index)
        c = self.c
        get = lambda i, key: f[f'c{i:02d}/{key}']
        images = self.decode_images(f, _seed(ex_seed, 1))
        clips, starts = self.decode_audio(f, _seed(ex_seed, 2))
        video = tf.stack([tf.where(get(i, 'video_src_index') >= 0, get(i, 'video_src_index'),
                                   tf.maximum(get(i, 'video_src_idx'), 0))
                          for i in range(c.num_segments)])
        ragged = {}
        for key in ('tok_ids', 'tok_start_times', 'tok_end_times', 'title', 'description',
                    'tags'):
            parts = [get(i, key) for i in range(c.num_segments)]
            ragged[key] = (tf.concat(parts, 0), tf.stack([tf.size(p) for p in parts]))
        seqs = tf.numpy_function(
            self._sequences,
            [_seed(ex_seed, 3), ragged['tok_ids'][0], ragged['tok_start_times'][0],
             ragged['tok_end_times'][0], ragged['tok_ids'][1], starts, video,
             *ragged['title'], *ragged['description'], *ragged['tags'],
             f['c00/random_text']],
            [tf.int32] * len(self.sequence_keys), stateful=False)
        out = {
            'images': images,
            'audio_clips': clips,
            'video_src_index': tf.cast(video, tf.int32),
        }
        out.update(zip(self.sequence_keys, seqs))
        for key, (shape, _) in self.spec.items():
            out[key] = tf.ensure_shape(out[key], shape)
        return out


# ---------------------------------------------------------------------------------------------
# Record sources: plain TFRecord globs or a TFDS directory

def _is_tfds_dir(path: str) -> bool:
    return os.path.isdir(path) and os.path.exists(os.path.join(path, 'dataset_info.json'))


class RecordSource:
    """The host's share of the records: a list of (filename, skip, take) shards.

    A missing path, or one whose files hold nothing, is an error naming it. With
    `skip_corrupt` each file is read by data_pipeline/tfrecord_io.py, which skips (and counts
    in `counter`) records that fail their checksums or are cut short; otherwise by
    `tf.data.TFRecordDataset`, whose data-loss errors `name_corrupt_file` turns into one naming
    the file and the record's byte offset. (TFDS sub-splits are record ranges of files: with
    skipped records they shift by the records lost.)"""

    def __init__(self, path: str, process_index: int, process_count: int, split: str = 'train',
                 skip_corrupt: bool = False,
                 counter: tfrecord_io.CorruptionCounter | None = None):
        self.num_records = None
        self.skip_corrupt, self.counter = skip_corrupt, counter
        if _is_tfds_dir(path):
            import tensorflow_datasets as tfds
            builder = tfds.builder_from_directory(path)
            sub = tfds.split_for_jax_process(split, process_index=process_index,
                                             process_count=process_count)
            info = builder.info.splits[sub]
            self.shards = [(_get(fi, 'filename'), int(_get(fi, 'skip')), int(_get(fi, 'take')))
                           for fi in info.file_instructions]
            self.shards = [(f if os.path.isabs(f) else os.path.join(path, f), s, t)
                           for f, s, t in self.shards]
            self.num_records = int(info.num_examples)
            if not self.num_records:
                raise ValueError(f'{path!r}: split {sub!r} holds no records')
            if skip_corrupt:
                self.num_records = None      # the metadata cannot know what will be skipped
        else:
            files = sorted(glob.glob(path)) if not os.path.isdir(path) else sorted(
                glob.glob(os.path.join(path, '*.tfrecord*')))
            if not files:
                raise FileNotFoundError(f'no TFRecord files match {path!r}')
            files = files[process_index::process_count]
            if not files:
                raise ValueError(f'{path!r}: {process_count} hosts but fewer files')
            if not any(os.path.getsize(f) for f in files):
                raise ValueError(f'{path!r}: the TFRecord files of host {process_index} hold no '
                                 f'records ({len(files)} empty files, e.g. {files[0]})')
            self.shards = [(f, 0, -1) for f in files]

    def count(self) -> int:
        """Records of this host (TFDS: from metadata; else one read pass, no parsing)."""
        if self.num_records is None:
            ds = self.dataset(None, ordered=True)
            try:
                self.num_records = int(ds.reduce(np.int64(0), lambda n, _: n + 1))
            except tf.errors.DataLossError as error:
                self.name_corrupt_file(error)
                raise
        return self.num_records

    def name_corrupt_file(self, error: Exception) -> None:
        """TF's data-loss error names a byte offset but not the file: raise the
        CorruptRecordError of the first corrupt record in this host's files (if one is found,
        else return and let the caller re-raise)."""
        found = tfrecord_io.find_corruption(f for f, _, _ in self.shards)
        if found is not None:
            raise found from error

    def _read(self, name, skip, take) -> tf.data.Dataset:
        """Records [skip, skip + take) of one file."""
        if not self.skip_corrupt:
            return tf.data.TFRecordDataset(name).skip(skip).take(take)
        records = tf.data.Dataset.from_generator(
            lambda path: tfrecord_io.read_records(path.decode(), True, self.counter),
            args=(name,), output_signature=tf.TensorSpec((), tf.string))
        return records.skip(skip).take(take)

    def dataset(self, seed, cycle_length: int = 16, ordered: bool = False) -> tf.data.Dataset:
        """Serialized records of one epoch; `seed` ([2] int64 tensor) shuffles the shard
        order, None keeps it."""
        names, skips, takes = (tf.constant(list(v), dtype) for v, dtype in
                               zip(zip(*self.shards), (tf.string, tf.int64, tf.int64)))
        order = tf.range(len(self.shards))
        if seed is not None:
            order = tf.random.experimental.stateless_shuffle(order, seed)
        shards = tf.data.Dataset.from_tensor_slices(
            (tf.gather(names, order), tf.gather(skips, order), tf.gather(takes, order)))
        if ordered:
            return shards.flat_map(self._read)
        return shards.interleave(self._read, cycle_length=min(cycle_length, len(self.shards)),
                                 block_length=1, num_parallel_calls=tf.data.AUTOTUNE,
                                 deterministic=True)


def _get(obj, name):
    return obj[name] if isinstance(obj, Mapping) else getattr(obj, name)


# ---------------------------------------------------------------------------------------------
# The pipeline

def _data(config, key, default):
    data = config['data']
    return data[key] if key in data else default


def examples_per_record(config) -> int:
    """data.examples_per_record: 1 (the original: the first num_segments chunks of each
    record) or more: record pieces [k·S, (k+1)·S) are separate examples, up to 16 // S."""
    pieces = int(_data(config, 'examples_per_record', 1))
    if not 1 <= pieces * sequence_config(config).num_segments <= NUM_CHUNKS:
        raise ValueError(f'data.examples_per_record={pieces} x data.num_segments '
                         f'> {NUM_CHUNKS} chunks per record')
    return pieces


def host_batch_size(config, process_count: int) -> int:
    batch = int(config['train']['global_batch'])
    if batch % process_count:
        raise ValueError(f'train.global_batch={batch} is not a multiple of {process_count} hosts')
    return batch // process_count


def make_dataset(config, process_index: int = 0, process_count: int = 1, *, start_step: int = 0,
                 train: bool = True, token_is_valid: np.ndarray | None = None,
                 path: str | None = None, batch_size: int | None = None,
                 counter: tfrecord_io.CorruptionCounter | None = None) -> tf.data.Dataset:
    """Host-local batches (dicts of tensors) starting at `start_step`.

    Data keys used (all optional but the path): data.train_path / data.eval_path (glob,
    directory of *.tfrecord* files, or TFDS directory), data.token_is_valid / data.tokenizer
    (see resolve_token_is_valid), data.shuffle_buffer (4096 as the original),
    data.cycle_length (16), data.tfds_split ('train') / data.tfds_eval_split ('val', the
    writer's name), data.num_threads (cores), data.eval_steps (see eval_steps),
    data.skip_corrupt (False: a corrupt record stops the run naming the file and offset; True:
    skipped and counted in `counter`, see RecordSource).
    Train: endless, shuffled, augmented. Eval: one ordered pass, no augmentation, fixed
    randomness for the sequences (independent of `seed`), the same number of batches on
    every host."""
    if path is None:
        path = _data(config, 'train_path' if train else 'eval_path', '')
        if not path:
            raise ValueError(f'set data.{"train" if train else "eval"}_path')
    batch_size = batch_size or host_batch_size(config, process_count)
    token_is_valid = resolve_token_is_valid(config, token_is_valid)
    split = (_data(config, 'tfds_split', 'train') if train
             else _data(config, 'tfds_eval_split', 'val'))
    source = RecordSource(path, process_index, process_count, split,
                          bool(_data(config, 'skip_corrupt', False)), counter)
    seed = int(config['seed']) if (train and 'seed' in config) else 0
    builder = ExampleBuilder(config, token_is_valid, train)
    cycle = int(_data(config, 'cycle_length', 16))
    pieces = builder.pieces

    def split(ds):                       # record -> (piece, record) for each piece
        if pieces == 1:
            return ds.map(lambda r: (tf.constant(0, tf.int32), r))
        return ds.flat_map(lambda r: tf.data.Dataset.range(pieces, output_type=tf.int32).map(
            lambda k: (k, r)))

    if train:
        buffer = int(_data(config, 'shuffle_buffer', 4096))
        start = start_step * batch_size
        epoch0 = 0
        if start:
            per_epoch = source.count() * pieces
            epoch0, start = divmod(start, per_epoch)
            first_index = epoch0 * per_epoch
        else:
            first_index = 0

        def epoch(e):
            s = tf.stack([tf.constant(seed, tf.int64), e])
            return split(source.dataset(s, cycle)).shuffle(buffer, seed=seed * 1_000_003 + e)

        records = tf.data.Dataset.counter(epoch0).flat_map(epoch)
        records = records.enumerate(first_index).skip(start)
    else:
        records = split(source.dataset(None, cycle)).enumerate()
    base = tf.constant([seed, process_index if train else 0], tf.int64)
    ds = records.map(lambda i, kr: builder(i, kr[1], base, kr[0]),
                     num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=True)
    if not train:
        ds = ds.take(eval_steps(config, path, split, batch_size, process_count))
    ds = ds.prefetch(2)
    options = tf.data.Options()
    options.deterministic = True
    threads = int(_data(config, 'num_threads', os.cpu_count() or 1))
    options.threading.private_threadpool_size = threads
    options.autotune.enabled = True
    options.experimental_optimization.map_parallelization = True
    return ds.with_options(options)


def eval_steps(config, path: str, split: str, batch_size: int, process_count: int) -> int:
    """Eval batches per host, equal on every host (a multi-host eval step is collective):
    data.eval_steps if set (> 0), else the smallest host share // batch. Hosts learn the
    other shares from TFDS metadata, or by counting every eval file once (no parsing)."""
    steps = int(_data(config, 'eval_steps', 0))
    if steps > 0:
        return steps
    if process_count == 1:
        return -1                                            # everything (drop_remainder)
    counts = [RecordSource(path, i, process_count, split).count() for i in range(process_count)]
    return min(counts) * examples_per_record(config) // batch_size


def host_source(config, train: bool, process_index: int = 0,
                process_count: int = 1) -> RecordSource:
    """The host's RecordSource of data.train_path (train) or data.eval_path; raises naming the
    path when it matches no TFRecord files or only empty ones (`check_path`)."""
    key = 'train_path' if train else 'eval_path'
    path = _data(config, key, '')
    if not path:
        raise ValueError(f'set data.{key}')
    split = (_data(config, 'tfds_split', 'train') if train
             else _data(config, 'tfds_eval_split', 'val'))
    return RecordSource(path, process_index, process_count, split)


def check_path(config, train: bool = True) -> None:
    """Start-up check of data.train_path / data.eval_path: FileNotFoundError or ValueError
    naming the path when there is nothing to read (a run would otherwise wait forever for
    its first batch)."""
    host_source(config, train)


def _as_numpy(ds, source: Callable[[], RecordSource]) -> Iterator[dict[str, np.ndarray]]:
    try:
        yield from ds.as_numpy_iterator()
    except tf.errors.DataLossError as error:
        source().name_corrupt_file(error)
        raise


def train_batches(config, start_step: int, process_index: int, process_count: int, *,
                  token_is_valid: np.ndarray | None = None,
                  counter: tfrecord_io.CorruptionCounter | None = None
                  ) -> Iterator[dict[str, np.ndarray]]:
    """The trainer contract (trainer/task.py): host-local numpy batches k = start_step, ..."""
    ds = make_dataset(config, process_index, process_count, start_step=start_step,
                      token_is_valid=token_is_valid, counter=counter)
    return _as_numpy(ds, lambda: host_source(config, True, process_index, process_count))


def eval_batches(config, start_step: int, process_index: int, process_count: int, *,
                 token_is_valid: np.ndarray | None = None,
                 counter: tfrecord_io.CorruptionCounter | None = None
                 ) -> Iterator[dict[str, np.ndarray]]:
    """One deterministic pass over data.eval_path (start_step is ignored)."""
    del start_step
    ds = make_dataset(config, process_index, process_count, train=False,
                      token_is_valid=token_is_valid, counter=counter)
    return _as_numpy(ds, lambda: host_source(config, False, process_index, process_count))


def make_batch_functions(config, token_is_valid: np.ndarray | None = None,
                         counter: tfrecord_io.CorruptionCounter | None = None):
    """(train_batches, eval_batches) with the (start_step, process_index, process_count)
    signature of trainer.task.Task; with data.skip_corrupt, `counter` counts the corrupt
    records both skip."""
    def train_fn(start_step, process_index, process_count):
        return train_batches(config, start_step, process_index, process_count,
                             token_is_valid=token_is_valid, counter=counter)

    def eval_fn(start_step, process_index, process_count):
        return eval_batches(config, start_step, process_index, process_count,
                            token_is_valid=token_is_valid, counter=counter)
    return train_fn, eval_fn


def default_token_is_valid(vocab_size: int = 32768) -> np.ndarray:
    """Fallback TOKEN_IS_VALID table when no tokenizer table is given: every id > 10 valid
    (pass `Tokenizer.valid_token_mask()` for the spec's rule)."""
    table = np.ones(vocab_size, bool)
    table[:11] = False
    return table


def resolve_token_is_valid(config, token_is_valid: np.ndarray | None = None) -> np.ndarray:
    """The TOKEN_IS_VALID table (spec §4): the argument if given; else data.token_is_valid
    (a .npy bool file); else data.tokenizer (a tokenizer file: the table is computed once
    here, so batches never call the tokenizer); else every id > 10 (default_token_is_valid)."""
    if token_is_valid is not None:
        return np.asarray(token_is_valid, bool)
    table_path = _data(config, 'token_is_valid', '')
    if table_path:
        return np.load(table_path).astype(bool)
    tokenizer_path = _data(config, 'tokenizer', '')
    if tokenizer_path:
        from data_pipeline.tokenizer import load_tokenizer
        return load_tokenizer(tokenizer_path).valid_token_mask()
    model = config['model']
    return default_token_is_valid(int(model['vocab_size']) if 'vocab_size' in model else 32768)
