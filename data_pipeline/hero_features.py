"""Own videos -> HERO feature store (data_pipeline/hero_store.py).

    python -m data_pipeline.hero_features --videos DIR --subtitles DIR --out DIR \\
        --encoder package.module:function [--encoder-arg key=value ...] [--interval 1.5] \\
        [--tokenizer sp:PATH|bpe:PATH] [--num-shards N] [--batch-size 64] [--max-clip-len 100]

Each video (sorted by path) is decoded with data_pipeline/media.py at one frame per interval
(clip-level: the frame nearest the centre of clip k, t = (k + 0.5) * interval, for
n = max(1, round(duration / interval)) clips), the frames go through the frame encoder in
batches of ``--batch-size``, and the subtitles (``DIR/<stem>.srt|.vtt|.json|.stm``, parsed
into cues) are normalised as HERO's preprocessing does (``html.unescape``; an all-upper-case
line is lower-cased) and tokenised. A video without a subtitle file or with an empty one gets
pseudo-subtitles (spec §3.2 rule 3). Unreadable videos and broken subtitle files are skipped;
``summary.json`` names each with its reason. One thread decodes the next videos while the
encoder runs.

The encoder is plugged in by name, so this package imports no model code: ``function(**args)``
returns a callable ``frames uint8 [N, H, W, 3] -> features float [N, D]`` (e.g.
``mreserve.hero_encoder:vision_tower`` with ``--encoder-arg checkpoint=DIR``, or
:func:`random_projection` here for demos). Values of ``--encoder-arg`` are parsed as JSON when
they parse, else kept as strings.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import html
import importlib
import json
import os
import sys
import time

import numpy as np

from data_pipeline import hero_store, media, shards
from data_pipeline.transcripts import EmptyTranscriptError, TranscriptError, parse_transcript

VIDEO_EXTENSIONS = ('.mp4', '.webm', '.ogv', '.mkv', '.mov', '.avi', '.m4v', '.flv', '.mpg')
SUBTITLE_EXTENSIONS = ('.srt', '.vtt', '.json', '.stm')      # preference order
PREFETCH = 2                  # videos decoded ahead of the encoder (one decoding thread)


def load_encoder(spec: str, args: dict | None = None):
    """'package.module:function' + keyword arguments -> the frame encoder callable."""
    module, _, function = spec.partition(':')
    if not module or not function:
        raise ValueError(f'--encoder must be package.module:function, got {spec!r}')
    return getattr(importlib.import_module(module), function)(**(args or {}))


def parse_encoder_args(items) -> dict:
    out = {}
    for item in items or []:
        key, sep, value = item.partition('=')
        if not sep:
            raise ValueError(f'--encoder-arg expects key=value, got {item!r}')
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def load_tokenizer(spec: str):
    """'sp:PATH' (sentencepiece) or 'bpe:PATH' (tokenizers JSON)."""
    from data_pipeline.tokenizer import BPETokenizer, SentencePieceTokenizer
    kind, _, path = spec.partition(':')
    if kind == 'sp':
        return SentencePieceTokenizer(path)
    if kind == 'bpe':
        return BPETokenizer(path)
    raise ValueError(f'--tokenizer must be sp:PATH or bpe:PATH, got {spec!r}')


def normalize_subtitle(text: str) -> str:
    """Spec §1.1: html.unescape; a line entirely in upper case is lower-cased."""
    text = html.unescape(text)
    return text.lower() if text.isupper() else text


def random_projection(dim: int = 32, seed: int = 0, grid: int = 8):
    """A fixed random linear map of the frame's grid x grid mean colours (demo encoder)."""
    weights = np.random.default_rng(seed).normal(size=(grid * grid * 3, dim)) / np.sqrt(
        grid * grid * 3 / 12.0)

    def encode(frames: np.ndarray) -> np.ndarray:
        frames = np.asarray(frames, np.float32) / 255.0
        n, h, w, _ = frames.shape
        ys = np.linspace(0, h, grid + 1).astype(int)
        xs = np.linspace(0, w, grid + 1).astype(int)
        pooled = np.stack([frames[:, ys[i]:ys[i + 1], xs[j]:xs[j + 1]].mean(axis=(1, 2))
                           for i in range(grid) for j in range(grid)], axis=1)
        return ((pooled.reshape(n, -1) - 0.5) @ weights).astype(np.float32)
    return encode


def clip_times(duration: float, interval: float) -> np.ndarray:
    n = max(1, round(duration / interval))
    return np.minimum((np.arange(n) + 0.5) * interval, max(duration - 1e-3, 0.0))


def find_subtitle(subtitle_dir: str | None, stem: str) -> str | None:
    if not subtitle_dir:
        return None
    for ext in SUBTITLE_EXTENSIONS:
        for name in (stem + ext, f'{stem}.en{ext}'):
            path = os.path.join(subtitle_dir, name)
            if os.path.exists(path):
                return path
    return None


def list_videos(video_dir: str) -> list[str]:
    return sorted(os.path.join(video_dir, n) for n in os.listdir(video_dir)
                  if n.lower().endswith(VIDEO_EXTENSIONS))


def encode_frames(encoder, frames: np.ndarray, batch_size: int) -> np.ndarray:
    out = [np.asarray(encoder(frames[i:i + batch_size]), np.float32)
           for i in range(0, len(frames), batch_size)]
    return np.concatenate(out)


def decode_video(path: str, subtitle_path: str | None, interval: float):
    """-> (duration, frames uint8 [n, H, W, 3], cues). Raises MediaError / TranscriptError."""
    info = media.probe(path, require_video=True)
    cues = []
    if subtitle_path is not None:
        try:
            cues = parse_transcript(subtitle_path, cues=True)
        except EmptyTranscriptError:
            cues = []
    return info.duration, media.extract_frames(path, clip_times(info.duration, interval)), cues


def make_video_example(vid: str, decoded, encoder, tokenizer, interval: float,
                       batch_size: int, max_clip_len: int) -> dict:
    """Decoded video -> store example (features through the encoder, subtitles tokenised)."""
    duration, frames, cues = decoded
    feats = encode_frames(encoder, frames, batch_size)
    if feats.ndim != 2 or len(feats) != len(frames):
        raise ValueError(f'encoder returned {feats.shape} for {len(frames)} frames')
    ids = [tokenizer.encode(normalize_subtitle(c.text)) for c in cues]
    return hero_store.make_example(
        vid, feats.astype(np.float16), ids, [c.start for c in cues], [c.end for c in cues],
        interval=interval, duration=duration, max_clip_len=max_clip_len)


def extract_store(videos: list[str], subtitle_dir: str | None, out_dir: str, encoder,
                  tokenizer, tokenizer_name: str, interval: float = hero_store.DEFAULT_INTERVAL,
                  num_shards: int | None = None, batch_size: int = 64,
                  max_clip_len: int = hero_store.DEFAULT_MAX_CLIP_LEN,
                  quiet: bool = False) -> dict:
    """Writes the store; returns the summary (also in out_dir/summary.json)."""
    num_shards = num_shards or max(1, -(-len(videos) // 256))
    meta = dict(frame_interval=interval, max_clip_len=max_clip_len, tokenizer=tokenizer_name,
                vocab_size=int(getattr(tokenizer, 'vocab_size', 0)), feat_dim=None,
                special_ids=dict(cls=0, pad=1, sep=2), source='hero_features')
    writer = hero_store.StoreWriter(out_dir, len(videos), num_shards, meta)
    progress = shards.Progress(len(videos), 'hero features', interval=5.0 if quiet else 10.0)
    t0, cpu0, frames_done, encode_s = time.time(), shards.cpu_seconds(), 0, 0.0
    todo = [(item, path) for item, path in enumerate(videos) if writer.wants(item)]
    if len(todo) < len(videos):
        progress.update(len(videos) - len(todo))
    pool = concurrent.futures.ThreadPoolExecutor(1)     # decodes the next video meanwhile

    def decode(path):
        vid = os.path.splitext(os.path.basename(path))[0]
        return pool.submit(decode_video, path, find_subtitle(subtitle_dir, vid), interval)
    pending = [decode(path) for _, path in todo[:PREFETCH]]
    for k, (item, path) in enumerate(todo):
        if k + PREFETCH < len(todo):
            pending.append(decode(todo[k + PREFETCH][1]))
        vid = os.path.splitext(os.path.basename(path))[0]
        try:
            decoded = pending[k].result()
            pending[k] = None
            t = time.time()
            example = make_video_example(vid, decoded, encoder, tokenizer, interval,
                                         batch_size, max_clip_len)
            encode_s += time.time() - t
            n = example['num_frames']
            frames_done += n
            if writer.meta['feat_dim'] is None:
                writer.meta['feat_dim'] = int(example['feat_dim'])
            elif writer.meta['feat_dim'] != example['feat_dim']:
                raise ValueError(f"feature dim {example['feat_dim']} != "
                                 f"{writer.meta['feat_dim']}")
            writer.add(item, hero_store.serialize(example),
                       dict(vid=vid, frames=n, subtitles=int(len(example['sub/lens'])),
                            pseudo=example['pseudo']))
        except (media.MediaError, TranscriptError, ValueError, OSError) as error:
            reason = type(error).__name__ if not isinstance(error, media.MediaError) \
                else 'media: ' + error.reason.split(' (')[0]
            if isinstance(error, TranscriptError):
                reason = 'bad subtitles'
            writer.add(item, None, dict(vid=vid, path=path, reason=reason, detail=str(error)))
        progress.update(1, f'{frames_done} frames')
    pool.shutdown()
    progress.close()
    seconds = time.time() - t0
    return writer.finish(dict(videos=len(videos), frames=frames_done, seconds=round(seconds, 2),
                              cpu_seconds=round(shards.cpu_seconds() - cpu0, 2),
                              encode_frames_per_second=round(frames_done / max(encode_s, 1e-9),
                                                             2)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--videos', required=True, help='directory of videos')
    parser.add_argument('--subtitles', default=None, help='directory of subtitle files')
    parser.add_argument('--out', required=True)
    parser.add_argument('--encoder', required=True, help='package.module:function')
    parser.add_argument('--encoder-arg', action='append', default=[], metavar='KEY=VALUE')
    parser.add_argument('--interval', type=float, default=hero_store.DEFAULT_INTERVAL)
    parser.add_argument('--tokenizer', default=None, help='sp:PATH or bpe:PATH')
    parser.add_argument('--num-shards', type=int, default=None)
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--max-clip-len', type=int, default=hero_store.DEFAULT_MAX_CLIP_LEN)
    args = parser.parse_args(argv)
    if args.tokenizer is None:
        parser.error('--tokenizer sp:PATH|bpe:PATH is required')
    encoder = load_encoder(args.encoder, parse_encoder_args(args.encoder_arg))
    summary = extract_store(list_videos(args.videos), args.subtitles, args.out, encoder,
                            load_tokenizer(args.tokenizer), args.tokenizer, args.interval,
                            args.num_shards, args.batch_size, args.max_clip_len)
    print(json.dumps({k: v for k, v in summary.items() if k != 'skipped_videos'}),
          file=sys.stderr)
    return summary


if __name__ == '__main__':
    main()
