"""The main job's data: the demo corpus, a tokenizer trained on it and its TFRecord shards.

`prepare(demo_dir, ...)` builds, once, everything `python -m mreserve.train` needs to pretrain
without downloads (and without ../shared):

    demo_dir/corpus/        data_pipeline.demo_corpus: train/ and val/ mp4 + transcripts
    demo_dir/tokenizer.model  sentencepiece on the train transcripts + random_text.txt
    demo_dir/records/       data_pipeline.mreserve_records shards of the train split
    demo_dir/demo.json      what was built, with which settings (the cache key)

A second call with the same settings only reads `demo.json`; different settings rebuild into
the same folder (the previous outputs are removed first). Only the train split becomes
records: the val videos are held out for the zero-shot evaluation (mreserve/demo_eval.py),
which decodes them with the zero-shot preprocessing.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time

log = logging.getLogger(__name__)

MANIFEST = 'demo.json'


@dataclasses.dataclass(frozen=True)
class DemoData:
    root: str
    corpus: str          # build_corpus output (train.jsonl, val.jsonl, ...)
    tokenizer: str       # sentencepiece .model
    records: str         # folder of train*.tfrecord shards (a TFDS directory)
    settings: dict

    @property
    def val_manifest(self) -> str:
        return os.path.join(self.corpus, 'val.jsonl')


def settings_from_config(config) -> dict:
    """The demo-data settings of a config's `demo` section (the cache key)."""
    d = config.demo
    return dict(num_videos=int(d.num_videos), seed=int(d.seed),
                val_fraction=float(d.val_fraction), vocab_size=int(d.vocab_size),
                num_shards=int(d.num_shards), min_seconds=float(d.min_seconds),
                max_seconds=float(d.max_seconds),
                scene_seconds=float(d.get('scene_seconds', 0.0)),
                name_once=bool(d.get('name_once', False)))


def _paths(root: str) -> dict[str, str]:
    return dict(corpus=os.path.join(root, 'corpus'),
                tokenizer=os.path.join(root, 'tokenizer.model'),
                records=os.path.join(root, 'records'))


def load_cached(root: str, settings: dict) -> DemoData | None:
    path = os.path.join(root, MANIFEST)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        saved = json.load(f)
    if saved.get('settings') != settings:
        return None
    return DemoData(root=root, settings=settings, **_paths(root))


def prepare(root: str, num_videos: int = 160, seed: int = 0, val_fraction: float = 0.1,
            vocab_size: int = 1000, num_shards: int = 2, min_seconds: float = 20.0,
            max_seconds: float = 40.0, scene_seconds: float = 0.0, name_once: bool = False,
            workers: int | None = None) -> DemoData:
    """Builds (or reuses) the demo corpus, tokenizer and train shards under `root`
    (scene_seconds, name_once: data_pipeline/demo_corpus.py)."""
    from data_pipeline import demo_corpus
    settings = dict(num_videos=num_videos, seed=seed, val_fraction=val_fraction,
                    vocab_size=vocab_size, num_shards=num_shards,
                    min_seconds=float(min_seconds), max_seconds=float(max_seconds),
                    scene_seconds=float(scene_seconds), name_once=bool(name_once),
                    corpus_version=demo_corpus.VERSION)
    cached = load_cached(root, settings)
    if cached is not None:
        log.info('demo data: reusing %s', root)
        return cached
    from data_pipeline import mreserve_records
    from data_pipeline.tokenizer import train_sentencepiece

    paths = _paths(root)
    for stale in (os.path.join(root, MANIFEST), paths['corpus'], paths['records']):
        if os.path.isdir(stale):
            shutil.rmtree(stale)
        elif os.path.exists(stale):
            os.remove(stale)
    os.makedirs(root, exist_ok=True)
    workers = workers or min(2, os.cpu_count() or 1)
    times = {}
    t0 = time.time()
    manifest = demo_corpus.build_corpus(paths['corpus'], num_videos, seed, val_fraction,
                                        workers=workers, min_seconds=min_seconds,
                                        max_seconds=max_seconds, scene_seconds=scene_seconds,
                                        name_once=name_once)
    times['corpus_s'] = round(time.time() - t0, 1)
    log.info('demo data: %d train + %d val videos in %.1f s', len(manifest['train']),
             len(manifest['val']), times['corpus_s'])

    t0 = time.time()
    text_files = [os.path.join(paths['corpus'], name)
                  for name in ('transcripts.txt', 'random_text.txt')]
    prefix = paths['tokenizer'][:-len('.model')]
    tokenizer = train_sentencepiece(text_files, prefix, vocab_size)
    times['tokenizer_s'] = round(time.time() - t0, 1)
    log.info('demo data: sentencepiece tokenizer with %d pieces', tokenizer.vocab_size)

    t0 = time.time()
    summary = mreserve_records.main([
        '--videos', os.path.join(paths['corpus'], 'train'),
        '--transcripts', os.path.join(paths['corpus'], 'train'),
        '--out', paths['records'], '--num-shards', str(num_shards),
        '--tokenizer', f'sp:{paths["tokenizer"]}',
        '--text-corpus', os.path.join(paths['corpus'], 'random_text.txt'),
        '--workers', str(workers), '--seed', str(seed)])
    times['records_s'] = round(time.time() - t0, 1)
    log.info('demo data: %d records from %d videos in %.1f s', summary['records'],
             summary['videos_done'], times['records_s'])

    with open(os.path.join(root, MANIFEST + '.tmp'), 'w') as f:
        json.dump(dict(settings=settings, times=times, records=summary['records'],
                       chunks=summary['chunks'], train_videos=len(manifest['train']),
                       val_videos=len(manifest['val']),
                       tokenizer_pieces=tokenizer.vocab_size), f, indent=2)
    os.replace(os.path.join(root, MANIFEST + '.tmp'), os.path.join(root, MANIFEST))
    return DemoData(root=root, settings=settings, **paths)
