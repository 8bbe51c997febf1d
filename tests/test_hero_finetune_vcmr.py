"""TVR / VCMR fine-tuning: a tiny model learns the synthetic retrieval task (video class and
moment encoded in features and query words) and is evaluated end to end with VCMR / SVMR / VR
recall; the slow test runs the `hero.finetune` / `hero.evaluate` entry points on files in the
released formats."""
import json
import os

import numpy as np
import pytest
from engine_utils import run_module
from hero_finetune_utils import FAST_COMPILE, fast_finetune, tiny_config, write_files_dataset

from hero import evaluate


def test_vcmr_few_steps_then_evaluate():
    config = tiny_config('tvr')
    params, metrics = fast_finetune(config, 'tvr', steps=3)
    assert np.isfinite(metrics['vsm_loss'])
    out = evaluate.evaluate(config, params, 'val', FAST_COMPILE)
    assert out['num_queries'] == config.data.synthetic_items
    assert set(out['VCMR']) == {f'{t}-r{k}' for t in (0.5, 0.7) for k in (1, 5, 10, 100)}
    assert set(out['VR']) == {'r1', 'r5', 'r10', 'r100'} and out['VR']['r100'] == 100.0
    assert all(len(p) <= 100 for p in out['predictions'])


@pytest.mark.slow
def test_vcmr_finetune_beats_chance():
    config = tiny_config('tvr')
    params, _ = fast_finetune(config, 'tvr', steps=100)
    out = evaluate.evaluate(config, params, 'val', FAST_COMPILE)
    chance_r1 = 100.0 / config.data.synthetic_videos
    print('VR', out['VR'], 'VCMR', out['VCMR'], 'SVMR', out['SVMR'], 'chance VR r1', chance_r1)
    assert out['VR']['r1'] >= 3 * chance_r1
    assert out['SVMR']['0.5-r5'] > 25.0


def test_files_source_matches_synthetic(tmp_path):
    from hero import finetune_data
    config = tiny_config('tvr')
    for key, value in write_files_dataset(tmp_path, 'tvr').items():
        config.data[key] = value
    videos, queries = finetune_data.load_split(config, 'tvr', 'val')
    assert len(videos) == 4 and len(queries) == 8
    assert all(q.ids and 0 <= q.video < 4 for q in queries)
    assert all(v.subs and all(fr for _, fr in v.subs) for v in videos)


def test_store_source_reads_the_hero_feature_store(tmp_path):
    """data.source=store: features, subtitle ids and alignment from a HERO feature store
    written with data_pipeline/hero_store.py equal the files source's."""
    from data_pipeline import annotations, hero_store
    from hero import finetune_data
    config = tiny_config('tvr')
    for key, value in write_files_dataset(tmp_path, 'tvr').items():
        config.data[key] = value
    tokenize = finetune_data.make_tokenizer(config.data.tokenizer)
    subs = annotations.read_subtitles(config.data.subtitles)
    examples = []
    for name, rows in sorted(subs.items()):
        feats = finetune_data.read_features(config.data.video_dir, name)
        examples.append(hero_store.make_example(
            name, feats, [tokenize(t) for t, _, _ in rows], [s for _, s, _ in rows],
            [e for _, _, e in rows], max_clip_len=config.data.max_clip_len))
    hero_store.write_store(str(tmp_path / 'store'), examples, dict(
        frame_interval=1.5, max_clip_len=config.data.max_clip_len, feat_dim=32))
    files_videos, files_queries = finetune_data.load_split(config, 'tvr', 'val')
    config.data.source, config.data.store = 'store', str(tmp_path / 'store')
    store_videos, store_queries = finetune_data.load_split(config, 'tvr', 'val')
    assert [q.ids for q in store_queries] == [q.ids for q in files_queries]
    for a, b in zip(store_videos, files_videos):
        np.testing.assert_array_equal(a.feats[:config.data.max_clip_len], b.feats)
        assert [(list(i), list(f)) for i, f in a.subs] == [(list(i), list(f))
                                                           for i, f in b.subs]


@pytest.mark.slow
def test_finetune_and_evaluate_entry_points_on_files(tmp_path):
    overrides = write_files_dataset(tmp_path / 'data', 'tvr')
    workdir = str(tmp_path / 'run')
    args = ['--config', 'configs/hero/tvr.py:variant=tiny', '--workdir', workdir,
            '--config.train.steps=4', '--config.optim.warmup_steps=1', '--config.train.log_every=1',
            '--config.train.async_ckpt=False', '--config.mesh.data=1',
            *[f'--config.data.{k}={v}' for k, v in overrides.items()]]
    run_module('hero.finetune', args, devices=1)
    assert os.path.isdir(os.path.join(workdir, 'checkpoints', '4'))
    run_module('hero.evaluate', ['--config', 'configs/hero/tvr.py:variant=tiny',
                                 '--checkpoint', workdir, '--split', 'val',
                                 *[f'--config.data.{k}={v}' for k, v in overrides.items()]],
               devices=1)
    with open(os.path.join(workdir, 'metrics_val_step4.json')) as f:
        metrics = json.load(f)
    assert metrics['num_queries'] == 8 and 'r1' in metrics['VR']
    assert os.path.exists(os.path.join(workdir, 'predictions_val_step4.json'))
