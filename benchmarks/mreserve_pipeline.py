"""MERLOT Reserve reader throughput at the base config's shapes, and which stage bounds it.

    .venv/bin/python benchmarks/mreserve_pipeline.py [--examples 96] [--threads N]

Writes synthetic base-shape records (16 chunks, 288x512 JPEG frames, 64x188 spectrograms,
transcripts, random text) to a temporary folder, then times, on the same records:

  parse      tf.io.parse_single_example only
  jpeg       parse + the 16 frame JPEG decodes only
  images     parse + 16 frame decodes/augmentations (resize, crop, space-to-depth)
  images_tf_resize   the same with tf.image.resize(antialias=True) instead of the banded
             matmul resize (what the banded resize saves)
  audio      parse + 16 spectrogram decodes and windows
  sequences  the numpy sequence builder alone (one Python thread)
  full       the reader's tf.data pipeline (`make_dataset`), batches of --batch

Throughput per core is examples per CPU-second of this process (all its threads), which
stays meaningful on a machine shared with other jobs; wall-clock rates are reported too.
The stage with the largest CPU cost per example is `bound_by`. The JSON is the last line.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import emit  # noqa: E402
from data_pipeline import mreserve_masking as masking  # noqa: E402
from data_pipeline import mreserve_reader as reader  # noqa: E402
from data_pipeline.mreserve_synthetic import write_records  # noqa: E402

BASE_DATA = dict(num_segments=16, num_segment_groups=2, num_audio_subsegments=3,
                 lang_seq_len=160, seq_len=640, mask_rate=0.25, text_span_budget=38,
                 use_audio_token_prob=0.5)


def timed(fn):
    """(result, wall seconds, process CPU seconds)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def drain(ds, n_elements):
    it = iter(ds)
    next(it)                                   # warm-up: graph tracing, first file opens
    _, wall, cpu = timed(lambda: [next(it) for _ in range(n_elements)])
    return wall, cpu


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--examples', type=int, default=96, help='examples timed per stage')
    parser.add_argument('--records', type=int, default=32, help='distinct records written')
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--threads', type=int, default=os.cpu_count() or 1)
    parser.add_argument('--dir', default='', help='records folder (default: a temp dir)')
    args = parser.parse_args(argv)

    tmp = None
    if not args.dir:
        tmp = tempfile.TemporaryDirectory()
        args.dir = tmp.name
    path = os.path.join(args.dir, '*.tfrecord')
    if not tf.io.gfile.glob(path):
        write_records(args.dir, n_files=4, per_file=max(args.records // 4, 1))
    config = {'seed': 0, 'train': {'global_batch': args.batch},
              'model': {'output_grid': (12, 20), 'vocab_size': 32768},
              'data': dict(BASE_DATA, train_path=path, shuffle_buffer=64, cycle_length=4,
                           num_threads=args.threads)}
    builder = reader.ExampleBuilder(config, reader.default_token_is_valid(), train=True)
    seed = tf.constant([0, 0], tf.int64)
    options = tf.data.Options()
    options.threading.private_threadpool_size = args.threads
    raw = tf.data.TFRecordDataset(tf.io.gfile.glob(path)).cache().repeat()
    parse = lambda r: tf.io.parse_single_example(r, builder.features)
    jpeg = lambda f: tf.stack([tf.io.decode_jpeg(f[f'c{k:02d}/image/encoded'])[0, 0]
                               for k in range(16)])

    def images_tf_resize(i, r):
        """The image stage with TF's own tf.image.resize(antialias=True) (ScaleAndTranslate)."""
        ours = reader.resize
        reader.resize = lambda img, size, method: tf.switch_case(method, [
            lambda m=m: tf.image.resize(img, size, method=m, antialias=True)
            for m in reader.RESIZE_METHODS])
        try:
            return builder.decode_images(parse(r), reader._seed(seed, i))
        finally:
            reader.resize = ours

    stage_fns = {
        'parse': lambda i, r: parse(r)['c00/image/encoded'],
        'jpeg': lambda i, r: jpeg(parse(r)),
        'images_tf_resize': images_tf_resize,
        'images': lambda i, r: builder.decode_images(parse(r), reader._seed(seed, i)),
        'audio': lambda i, r: builder.decode_audio(parse(r), reader._seed(seed, i))[0],
    }
    results = {}
    for name, fn in stage_fns.items():
        ds = (raw.enumerate().map(fn, num_parallel_calls=tf.data.AUTOTUNE)
              .batch(args.batch).prefetch(2).with_options(options))
        wall, cpu = drain(ds, args.examples // args.batch)
        results[name] = dict(cpu_ms_per_example=1e3 * cpu / args.examples,
                             wall_examples_per_s=args.examples / wall)

    # The numpy sequence builder on its own (it runs under the GIL inside the pipeline).
    rng = np.random.default_rng(0)
    c = reader.sequence_config(config)
    valid = reader.default_token_is_valid()
    n = args.examples
    inputs = []
    for _ in range(n):
        lens = rng.integers(0, 15, c.num_segments)
        k = int(lens.sum())
        starts = np.sort(rng.uniform(0, 5, k))
        inputs.append(dict(tok_ids=rng.integers(11, 32768, k), tok_start=starts,
                           tok_end=starts + 0.2, tok_lens=lens,
                           window_starts=np.tile([2, 64, 126], (c.num_segments, 1)),
                           video_src=np.zeros(c.num_segments, int),
                           meta=(np.arange(11, 16), np.arange(11, 41), np.arange(11, 15)),
                           random_text=rng.integers(1, 32768, 1536)))
    _, wall, cpu = timed(lambda: [masking.build_sequences(
        c, token_is_valid=valid, rng=np.random.default_rng(i), **x)
        for i, x in enumerate(inputs)])
    results['sequences'] = dict(cpu_ms_per_example=1e3 * cpu / n,
                                wall_examples_per_s=n / wall)

    ds = reader.make_dataset(config, 0, 1, batch_size=args.batch)
    wall, cpu = drain(ds, args.examples // args.batch)
    results['full'] = dict(cpu_ms_per_example=1e3 * cpu / args.examples,
                           wall_examples_per_s=args.examples / wall)
    for name, r in results.items():
        r['examples_per_s_per_core'] = 1e3 / r['cpu_ms_per_example']
        print(f"{name:17s} {r['cpu_ms_per_example']:7.1f} CPU-ms/example  "
              f"{r['examples_per_s_per_core']:6.1f} examples/s/core  "
              f"{r['wall_examples_per_s']:6.1f} examples/s wall")
    parse_ms = results['parse']['cpu_ms_per_example']
    costs = {'parse': parse_ms,
             'images': results['images']['cpu_ms_per_example'] - parse_ms,
             'of which jpeg decode': results['jpeg']['cpu_ms_per_example'] - parse_ms,
             'audio': results['audio']['cpu_ms_per_example'] - parse_ms,
             'sequences': results['sequences']['cpu_ms_per_example']}
    if tmp is not None:
        tmp.cleanup()
    emit({'benchmark': 'mreserve_pipeline', 'shapes': 'base', 'threads': args.threads,
          'batch': args.batch, 'examples': args.examples,
          'examples_per_s_per_core': results['full']['examples_per_s_per_core'],
          'wall_examples_per_s': results['full']['wall_examples_per_s'],
          'bound_by': max(('parse', 'images', 'audio', 'sequences'), key=costs.get),
          'stage_cpu_ms_per_example': {k: round(v, 2) for k, v in costs.items()},
          'stages': results, 'target_examples_per_s_per_core': 15})


if __name__ == '__main__':
    main()
