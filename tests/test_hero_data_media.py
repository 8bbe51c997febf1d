"""HERO features from real clips (../shared/media) with the MERLOT Reserve tiny vision tower,
the feature store they make, and HERO training steps on it through the engine."""
import functools
import json
import shutil

import numpy as np
import pytest

from data_pipeline import hero_demo, hero_features, hero_reader, hero_store


@pytest.fixture(scope='module')
def tower_checkpoint(tmp_path_factory):
    import flax.linen as nn
    import jax

    from configs.mreserve.pretrain import get_config
    from mreserve.model_config import ModelConfig
    from mreserve.params import init_params
    from trainer.params_io import save_params
    config = get_config('variant=tiny')
    model_config = ModelConfig.from_config(config)
    params = nn.unbox(jax.jit(functools.partial(init_params, model_config))(jax.random.key(0)))
    path = tmp_path_factory.mktemp('mreserve_tiny')
    save_params(str(path), params, json.loads(config.to_json_best_effort()))
    return str(path)


@pytest.fixture(scope='module')
def media_store(media_dir, tower_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp('hero_media')
    videos, subs = root / 'videos', root / 'subs'
    videos.mkdir()
    subs.mkdir()
    for name in ('lego.mp4', 'cockatoo.mp4', 'truncated.mkv'):
        shutil.copy(media_dir / name, videos / name)
    # cues from 9 s on: cockatoo (14 s) gets subtitles on its last frames, lego (5.6 s) none
    shutil.copy(media_dir / 'w3c_example.vtt', subs / 'cockatoo.vtt')
    encoder = hero_features.load_encoder('mreserve.hero_encoder:vision_tower',
                                         {'checkpoint': tower_checkpoint, 'batch_size': 8})
    out = root / 'store'
    summary = hero_features.extract_store(
        hero_features.list_videos(str(videos)), str(subs), str(out), encoder,
        hero_demo.DemoTokenizer(), 'demo-words', num_shards=2)
    return str(out), summary


def test_media_features_with_the_mreserve_tower(media_store, tower_checkpoint):
    out, summary = media_store
    assert summary['written'] == 2 and summary['videos'] == 3
    assert [v['vid'] for v in summary['skipped_videos']] == ['truncated']
    assert summary['skipped_videos'][0]['reason'].startswith('media')
    meta = hero_store.read_meta(out)
    assert meta['feat_dim'] == 64 and meta['frame_interval'] == 1.5
    got = {}
    for path in hero_store.shard_files(out):
        for record in hero_reader.read_tfrecords(path):
            ex = hero_store.parse_example(record)
            got[ex['vid']] = ex
    lego, cockatoo = got['lego'], got['cockatoo']
    assert lego['num_frames'] == 4 and cockatoo['num_frames'] == 9      # 5.6 s, 14 s / 1.5
    assert lego['features'].dtype == np.float16 and np.isfinite(lego['features']).all()
    assert lego['pseudo'] == 1 and list(lego['align/count']) == [4]
    assert cockatoo['pseudo'] == 0 and list(cockatoo['unmatched']) == [0, 1, 2, 3, 4, 5]
    assert sorted(cockatoo['align/frames']) == [6, 7, 8]
    assert cockatoo['sub/start'][0] == 9.0 and (cockatoo['sub/lens'] > 0).all()
    # the stored features are the tower's CLS of the frames at the clip centres
    from data_pipeline import media
    encoder = hero_features.load_encoder('mreserve.hero_encoder:vision_tower',
                                         {'checkpoint': tower_checkpoint, 'batch_size': 8})
    lego_path = str(media_dir_of(media_store) / 'lego.mp4')
    frames = media.extract_frames(lego_path, hero_features.clip_times(
        media.probe(lego_path).duration, 1.5))
    np.testing.assert_allclose(lego['features'].astype(np.float32), encoder(frames),
                               rtol=2e-3, atol=2e-3)


def media_dir_of(store):
    import pathlib
    return pathlib.Path(store[0]).parent / 'videos'


@pytest.mark.slow
def test_five_hero_steps_on_the_media_store(media_store, tmp_path):
    from configs.hero.pretrain import get_config
    from hero.task import build_task
    from trainer.loop import train
    out, _ = media_store
    config = get_config('variant=tiny')
    config.data.store = out
    config.model.vfeat_dim = 64
    config.train.steps = 5
    config.train.ckpt_every = 5
    config.train.log_every = 1
    result = train(config, str(tmp_path / 'work'), build_task(config))
    assert result['final_step'] == 5
    losses = [h['loss'] for h in result['history']]
    assert len(losses) == 5 and np.isfinite(losses).all()
    assert (tmp_path / 'work' / 'metrics.jsonl').exists()
    assert (tmp_path / 'work' / 'checkpoints').is_dir()
