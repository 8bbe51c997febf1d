"""Synthetic MERLOT Reserve records in the spec §3.2 schema, for tests and benchmarks.

Frames are smooth random images (JPEG q75, about the size of real video frames after
compression, so decode cost is realistic), spectrograms random grayscale JPEGs, transcripts
random ids with sorted times, random text in chunks 0-1. A record may hold several source
videos (`video_src_idx`/`video_src_index`, metadata on each video's first chunk).
"""
from __future__ import annotations

import hashlib
import os

import numpy as np
import tensorflow as tf

NUM_CHUNKS = 16


def _feature(values, kind):
    if kind == 'bytes':
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
    if kind == 'float':
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def smooth_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """uint8 [h, w, 3]: upsampled coarse noise plus a little fine noise."""
    coarse = rng.uniform(0, 255, (max(h // 32, 2), max(w // 32, 2), 3)).astype(np.float32)
    img = tf.image.resize(coarse[None], (h, w), method='bicubic')[0].numpy()
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_chunks(rng: np.random.Generator, frame_hw=(288, 512), portrait_prob=0.2,
                max_words=14) -> list[dict]:
    """16 chunk dicts {schema key: value (list for list-valued keys)}."""
    chunks, video, prev_video = [], 0, -1
    for i in range(NUM_CHUNKS):
        if i and rng.random() < 0.15:
            video += 1
        first_of_video = video != prev_video
        prev_video = video
        h, w = frame_hw
        if rng.random() < portrait_prob:
            h, w = w, h
        img = tf.io.encode_jpeg(smooth_image(rng, h, w), quality=75).numpy()
        spec = tf.io.encode_jpeg(rng.integers(0, 256, (64, 188, 1), dtype=np.uint8),
                                 quality=95).numpy()
        n_words = int(rng.integers(0, max_words + 1))
        starts = np.sort(rng.uniform(0, 5, n_words))
        n_meta = (5, 30, 4) if first_of_video else (0, 0, 0)
        chunks.append({
            'image/encoded': img, 'image/height': h, 'image/width': w,
            'image/key/sha256': hashlib.sha256(img).hexdigest().encode(),
            'image/format': b'jpeg',
            'spectrogram/encoded': spec, 'spectrogram/height': 64, 'spectrogram/width': 188,
            'spectrogram/magic_number': float(rng.uniform(20, 60)),
            'spectrogram/key/sha256': hashlib.sha256(spec).hexdigest().encode(),
            'spectrogram/format': b'jpeg',
            'youtube_id': b'abcdefghijk', 'video_src_idx': video, 'video_src_index': video,
            'title': rng.integers(11, 32768, n_meta[0]).tolist(),
            'description': rng.integers(11, 32768, n_meta[1]).tolist(),
            'tags': rng.integers(11, 32768, n_meta[2]).tolist(),
            'meta': b'{}' if first_of_video else b'',
            'playback_speed': int(rng.integers(1, 4)),
            'start_time': 5.0 * i, 'end_time': 5.0 * i + 5,
            'tok_ids': rng.integers(11, 32768, n_words).tolist(),
            'tok_start_times': starts.tolist(),
            'tok_end_times': (starts + rng.uniform(0.05, 0.4, n_words)).tolist(),
            'random_text': rng.integers(1, 32768, 1536 if i < 2 else 0).tolist(),
        })
    return chunks


def serialize(chunks: list[dict]) -> bytes:
    """Chunk dicts -> one serialized tf.train.Example with keys c{i:02d}/<key>."""
    feats = {}
    for i, chunk in enumerate(chunks):
        for key, value in chunk.items():
            values = value if isinstance(value, list) else [value]
            kind = ('bytes' if isinstance(value, bytes) else
                    'float' if isinstance(value, float) or (values and isinstance(values[0], float))
                    or key.endswith('_times') else 'int')
            feats[f'c{i:02d}/{key}'] = _feature(values, kind)
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


def make_record(rng: np.random.Generator, frame_hw=(288, 512), portrait_prob=0.2,
                max_words=14) -> bytes:
    """One serialized 16-chunk record."""
    return serialize(make_chunks(rng, frame_hw, portrait_prob, max_words))


def write_records(directory: str, n_files: int = 4, per_file: int = 6, seed: int = 0,
                  frame_hw=(288, 512)) -> str:
    """Writes `train{f:05d}.tfrecord` files; returns their glob."""
    rng = np.random.default_rng(seed)
    os.makedirs(directory, exist_ok=True)
    for f in range(n_files):
        with tf.io.TFRecordWriter(os.path.join(directory, f'train{f:05d}.tfrecord')) as w:
            for _ in range(per_file):
                w.write(make_record(rng, frame_hw))
    return os.path.join(directory, '*.tfrecord')
