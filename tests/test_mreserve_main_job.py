"""The main job: `python -m mreserve.train --config configs/mreserve/pretrain.py:variant=tiny`.

Fast: the demo-data preparation (corpus, tokenizer, shards, cache reuse) on a few short
videos, and the zero-shot scoring of mreserve/demo_eval.py on a random tiny model.
Slow: the real command in a subprocess, trained (zero-shot accuracy >= 2x chance) and with
0 steps (the untrained init, near chance).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs.mreserve.pretrain import get_config
from data_pipeline.tokenizer import AUDIOSPAN, MASK, MASKAUDIO, load_tokenizer
from mreserve import demo_data, demo_eval
from mreserve.model_config import ModelConfig
from mreserve.params import init_params

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# 5 train videos of 20-25 s: one 16-chunk record
SMALL_DEMO = dict(num_videos=7, seed=1, val_fraction=0.29, vocab_size=300, num_shards=1,
                  min_seconds=19.0, max_seconds=24.0, scene_seconds=5.0, name_once=True)


@pytest.fixture(scope='module')
def small_demo(tmp_path_factory):
    return demo_data.prepare(str(tmp_path_factory.mktemp('demo')), workers=1, **SMALL_DEMO)


def test_demo_data_is_built_once_and_reused(small_demo):
    with open(os.path.join(small_demo.root, demo_data.MANIFEST)) as f:
        manifest = json.load(f)
    assert manifest['settings'] == demo_data.prepare(small_demo.root, **SMALL_DEMO).settings
    assert manifest['train_videos'] == 5 and manifest['val_videos'] == 2
    assert os.path.exists(small_demo.tokenizer)
    assert any(name.startswith('train') and name.endswith('.tfrecord')
               for name in os.listdir(small_demo.records))
    assert len(demo_eval.load_val_entries(small_demo.corpus)) == 2
    # Cached: nothing is rebuilt (the manifest file is untouched).
    before = os.path.getmtime(os.path.join(small_demo.root, demo_data.MANIFEST))
    demo_data.prepare(small_demo.root, **SMALL_DEMO)
    assert os.path.getmtime(os.path.join(small_demo.root, demo_data.MANIFEST)) == before


def test_zero_shot_scoring_on_a_random_tiny_model(small_demo):
    config = ModelConfig.from_config(get_config('variant=tiny'))
    params = jax.device_get(jax.tree.map(lambda x: getattr(x, 'value', x),
                                         init_params(config, jax.random.key(0)),
                                         is_leaf=lambda x: hasattr(x, 'value')))
    cache = {}
    result = demo_eval.evaluate(params, config, small_demo.tokenizer, small_demo.corpus,
                                cache=cache)
    assert {'accuracy', 'chance', 'num_examples', 'tasks'} <= set(result)
    assert result['chance'] == pytest.approx(1 / len(demo_eval.OPTIONS['colour']))
    assert result['num_examples'] > 0 and 0.0 <= result['accuracy'] <= 1.0
    # the name_once corpus never names the shape: no shape questions, no shape tasks
    assert set(result['tasks']) == {'colour/text2audio', 'colour/audio2text'}
    assert result['headline'] == 'colour/text2audio'
    json.dumps(result)

    videos = next(iter(cache.values()))
    tokenizer = load_tokenizer(small_demo.tokenizer)
    grid = config.output_grid[0] * config.output_grid[1]
    groups = config.segments_per_group
    for mode in ('text2audio', 'audio2text'):
        questions = [q for v in videos for q in demo_eval.build_questions(
            v, 'colour', tokenizer, config.lang_seq_len, mode, groups)]
        assert len(questions) == result['num_examples']
        for q in questions:
            assert q['images'].shape == (groups, grid, 768)
            assert q['audio_clips'].shape == (3 * groups, 60, 65)
            assert np.sum(q['tokens'] == MASK) == 1
            assert np.sum(q['tokens'] == MASKAUDIO) == (mode == 'text2audio')
            if mode == 'audio2text':   # every other sub-segment row is its audio
                assert np.sum(q['tokens'] == AUDIOSPAN) == 6 * (3 * groups - 1)
            else:
                assert np.abs(q['audio_clips']).max() == 0
            # the options: the masked row's words, differing only in the colour word
            options = [o.split() for o in q['options']]
            assert len(options) == 8 and len({len(o) for o in options}) == 1
            differ = [i for i in range(len(options[0])) if len({o[i] for o in options}) > 1]
            assert [o[differ[0]] for o in options] == list(demo_eval.OPTIONS['colour'])
            assert 0 <= q['answer'] < 8


def test_reader_cuts_records_into_examples(small_demo):
    """data.examples_per_record=4 (tiny): chunks [4k, 4k+4) of each record are example k;
    example 0 is what the original reader makes of the record (its first 4 chunks)."""
    from data_pipeline import mreserve_reader
    config = get_config('variant=tiny')
    config.data.tokenizer = small_demo.tokenizer
    config.data.tfds_eval_split = 'train'         # one ordered, unaugmented pass
    streams = {}
    for pieces in (1, 4):
        config.data.examples_per_record = pieces
        ds = mreserve_reader.make_dataset(config, train=False, path=small_demo.records,
                                          batch_size=1)
        streams[pieces] = [{k: v[0] for k, v in b.items()} for b in ds.as_numpy_iterator()]
    one, four = streams[1], streams[4]
    assert len(one) >= 1 and len(four) == 4 * len(one)
    for key in one[0]:
        np.testing.assert_array_equal(four[0][key], one[0][key], err_msg=key)
    frames = {four[k]['images'].tobytes() for k in range(4)}
    assert len(frames) == 4                       # four different sets of chunks


def _main_job(workdir, demo_dir, *overrides):
    env = {k: v for k, v in os.environ.items() if k != 'JAX_PLATFORMS'}
    env['JAX_PLATFORMS'] = 'cpu'   # the venv may hold libtpu; the job itself needs no setting
    cmd = [sys.executable, '-m', 'mreserve.train',
           '--config', 'configs/mreserve/pretrain.py:variant=tiny', '--workdir', str(workdir),
           f'--config.demo.dir={demo_dir}', *overrides]
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, timeout=1500)
    with open(os.path.join(workdir, 'zero_shot.json')) as f:
        return json.load(f)


@pytest.fixture(scope='module')
def main_job_runs(tmp_path_factory):
    """The real main job twice on one demo cache: 0 steps (untrained init) and the default."""
    root = tmp_path_factory.mktemp('main_job')
    untrained = _main_job(root / 'untrained', root / 'demo', '--config.train.steps=0')
    trained = _main_job(root / 'trained', root / 'demo')
    return root, untrained, trained


@pytest.mark.slow
def test_main_job_runs_end_to_end(main_job_runs):
    root, untrained, trained = main_job_runs
    for result in (untrained, trained):
        assert {'accuracy', 'chance', 'num_examples', 'tasks', 'job_cpu_s'} <= set(result)
    assert untrained['step'] == 0 and trained['step'] > 0
    assert untrained['num_examples'] == trained['num_examples'] >= 50
    assert untrained['accuracy'] < 2 * untrained['chance']          # near chance
    assert os.path.isdir(root / 'trained' / 'checkpoints')
    assert os.path.exists(root / 'trained' / 'metrics.jsonl')


@pytest.mark.slow
def test_main_job_zero_shot_at_least_twice_chance(main_job_runs):
    # Measured with the default config (3000 steps, demo corpus version 2), chance 0.125:
    # seeds 0-4 0.432 / 0.943 / 1.000 / 0.761 / 0.898 on 1 CPU device, seed 0 0.455 under
    # 8 fake devices as here (conftest's XLA_FLAGS reach the subprocess); this test in a
    # full CI run: 0.989.
    _, _, trained = main_job_runs
    assert trained['accuracy'] >= 2 * trained['chance'], trained
