"""A small HERO feature store built from the demo corpus (data_pipeline/demo_corpus.py), for
`python -m hero.train` without data flags and for tests.

The videos are rendered, decoded and encoded through the same path as own videos
(data_pipeline/hero_features.py): one frame per 1.5 s, a fixed random projection of the
frame's 8x8 mean colours to `dim` features (colour, size and position of the shape are linear
in it), subtitles from the YouTube-style WebVTT cues, and a word-level tokenizer over the
corpus' closed vocabulary (ids 4.., so they fit the tiny model's 96-row table with [MASK] 95).
So frames, subtitle words and the order of scenes agree, and all four tasks have something to
learn. The store is cached: a directory that already holds a complete store is reused; a new
one is built in a temporary sibling and renamed into place (safe with several processes).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile

from data_pipeline import demo_corpus, hero_features, hero_store

FIRST_ID = 4


class DemoTokenizer:
    """Word-level ids over the demo corpus' words; unknown words -> 3."""

    def __init__(self):
        words = set()
        for group in (demo_corpus.COLOURS, demo_corpus.SHAPES, demo_corpus.BACKGROUNDS,
                      demo_corpus.SIZES, ('left', 'right', 'up', 'down')):
            words.update(group)
        for text in demo_corpus.TEMPLATES + demo_corpus.FILLERS:
            words.update(w for w in text.split() if not w.startswith('{'))
        self.words = sorted(words)
        self.ids = {w: FIRST_ID + i for i, w in enumerate(self.words)}
        self.vocab_size = FIRST_ID + len(self.words)

    def encode(self, text: str) -> list[int]:
        return [self.ids.get(w, 3) for w in text.lower().split()]


def default_cache_dir() -> str:
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return os.path.join(base, 'vidlm', 'hero_demo')


def store_dir(cache_dir: str, **settings) -> str:
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    return os.path.join(cache_dir, f'store_{key}')


def is_complete(path: str) -> bool:
    try:
        hero_store.read_meta(path)
        hero_store.shard_files(path)
        return True
    except (FileNotFoundError, ValueError):
        return False


def build_demo_store(cache_dir: str | None = None, num_videos: int = 64, seed: int = 0,
                     dim: int = 32, num_shards: int = 4, interval: float = 1.5,
                     min_seconds: float = 12.0, max_seconds: float = 24.0) -> str:
    """Path of a demo store with these settings under `cache_dir` (built if missing)."""
    cache_dir = cache_dir or default_cache_dir()
    settings = dict(num_videos=num_videos, seed=seed, dim=dim, num_shards=num_shards,
                    interval=interval, min_seconds=min_seconds, max_seconds=max_seconds,
                    version=1)
    path = store_dir(cache_dir, **settings)
    if is_complete(path):
        return path
    os.makedirs(cache_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix='.build_', dir=cache_dir)
    try:
        corpus = os.path.join(work, 'corpus')
        manifest = demo_corpus.build_corpus(
            corpus, num_videos, seed, val_fraction=0.0, workers=1, width=96, height=64,
            fps=4, min_seconds=min_seconds, max_seconds=max_seconds)
        videos = [os.path.join(corpus, e['video']) for e in manifest['train']]
        store = os.path.join(work, 'store')
        summary = hero_features.extract_store(
            videos, os.path.join(corpus, 'train'), store,
            hero_features.random_projection(dim, seed), DemoTokenizer(), 'demo-words',
            interval=interval, num_shards=num_shards, quiet=True)
        if summary['written'] != len(videos):
            raise RuntimeError(f'demo store: {summary}')
        try:
            os.rename(store, path)
        except OSError:      # another process finished first
            if not is_complete(path):
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return path
