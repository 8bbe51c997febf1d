"""HERO input pipeline throughput: feature-store reader and feature extraction.

    python -m benchmarks.hero_pipeline [--videos 32] [--batch 8] [--steps 6]
        [--encoder package.module:function --encoder-arg key=value ...] [--demo-videos 4]

reader: a synthetic store at base shapes (4352-d float16 features, 100 frames, ~30
subtitles of ~12 tokens per video, spec §1.1) read by data_pipeline/hero_reader.py with the
base config's static sizes; examples = videos built into batches (3 parts per step), per
CPU-second of this process (= per host core, the reader is single-threaded).
extraction: demo-corpus videos through data_pipeline/hero_features.py (decode at 1.5 s,
encode, write the store; decoding overlaps encoding); frames/s over the wall time, and of
the encoder alone, after one warm-up call (compilation excluded; the encoder
defaults to the demo random projection; pass mreserve.hero_encoder:vision_tower with
checkpoint=DIR for the MERLOT Reserve tower).
The last output line is the JSON result.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from benchmarks.common import emit, peak_rss_bytes
from data_pipeline import hero_demo, hero_features, hero_reader, hero_store


def synthetic_store(out: str, videos: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    examples = []
    for i in range(videos):
        n = int(rng.integers(60, 101))
        count = int(rng.integers(20, 40))
        starts = np.sort(rng.uniform(0, n * 1.5, count))
        ends = starts + rng.uniform(1, 5, count)
        ids = [list(rng.integers(4, 50000, rng.integers(4, 20))) for _ in range(count)]
        feats = rng.normal(size=(n, 4352)).astype(np.float16)
        examples.append(hero_store.make_example(f'v{i}', feats, ids, list(starts), list(ends)))
    hero_store.write_store(out, examples, dict(frame_interval=1.5, max_clip_len=100,
                                               feat_dim=4352, vocab_size=50265,
                                               tokenizer='synthetic'), num_shards=2)


def bench_reader(store: str, batch: int, steps: int) -> dict:
    sizes = hero_reader.Sizes()          # base: L 100, S 48, F 16, 60 tokens, 4352-d
    stats = hero_reader.ReaderStats()
    batches = hero_reader.make_train_batches(store, sizes, batch, seed=0, stats=stats)(0, 0, 1)
    next(batches)                        # file read and first parse
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        next(batches)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    examples = steps * batch * len(hero_reader.PARTS)
    return dict(reader_examples_per_s=round(examples / wall, 2),
                reader_examples_per_cpu_s=round(examples / cpu, 2),
                reader_batch_mb=round(sum(v.nbytes for v in next(batches).values()) / 2**20, 1),
                reader_stats=vars(stats))


def bench_extraction(videos: int, encoder_spec: str | None, encoder_args: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        manifest = hero_demo.demo_corpus.build_corpus(
            os.path.join(tmp, 'corpus'), videos, 0, val_fraction=0.0, workers=1,
            min_seconds=20.0, max_seconds=30.0)
        paths = [os.path.join(tmp, 'corpus', e['video']) for e in manifest['train']]
        encoder = (hero_features.load_encoder(encoder_spec, encoder_args) if encoder_spec
                   else hero_features.random_projection(32))
        for run in ('warmup', 'timed'):     # the first run compiles every batch size
            wall = time.perf_counter()
            summary = hero_features.extract_store(
                paths, os.path.join(tmp, 'corpus', 'train'), os.path.join(tmp, run), encoder,
                hero_demo.DemoTokenizer(), 'demo-words', quiet=True)
            wall = time.perf_counter() - wall
    return dict(extraction_encoder=encoder_spec or 'random_projection',
                extraction_frames=summary['frames'],
                extraction_frames_per_s=round(summary['frames'] / wall, 2),
                extraction_encode_frames_per_s=summary['encode_frames_per_second'])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--videos', type=int, default=32)
    parser.add_argument('--batch', type=int, default=8, help='videos per part per step')
    parser.add_argument('--steps', type=int, default=6)
    parser.add_argument('--demo-videos', type=int, default=4)
    parser.add_argument('--encoder', default=None)
    parser.add_argument('--encoder-arg', action='append', default=[])
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        synthetic_store(tmp, args.videos)
        result = bench_reader(tmp, args.batch, args.steps)
    result.update(bench_extraction(args.demo_videos, args.encoder,
                                   hero_features.parse_encoder_args(args.encoder_arg)))
    result['peak_rss_mb'] = round(peak_rss_bytes() / 2**20, 1)
    emit(result)


if __name__ == '__main__':
    main()
