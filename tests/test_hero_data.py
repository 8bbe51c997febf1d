"""HERO data pipeline: alignment (spec §3.2), feature store, reader, LMDB import."""
import io
import json

import numpy as np
import pytest

from data_pipeline import hero_reader, hero_store

# ------------------------------------------------------------------------------ alignment


def test_alignment_iou_ties_unmatched_and_skipped():
    # interval 1 s -> frame units = seconds. Sub 0 covers 0..2, sub 1 covers 2..4 (overlap on
    # frame 2: IoU 0.5/3 vs 0.8/2.5 -> sub 1), sub 2 starts after the end (skipped).
    kept, s2f, unmatched = hero_store.align_subtitles(
        [0.0, 2.2, 9.5], [2.5, 4.5, 10.0], num_frames=7, interval=1.0)
    assert kept == [0, 1]
    assert s2f == [(0, [0, 1]), (1, [2, 3, 4])]
    assert unmatched == [5, 6]
    # identical subtitles: the first wins every tie, the second gets no frame
    _, s2f, _ = hero_store.align_subtitles([1.0, 1.0], [3.0, 3.0], 5, 1.0)
    assert s2f == [(0, [1, 2]), (1, [])]
    # interval 1.5: frames floor(st/1.5) .. ceil(ed/1.5) - 1
    _, s2f, unmatched = hero_store.align_subtitles([1.6], [4.4], 4, 1.5)
    assert s2f == [(0, [1, 2])] and unmatched == [0, 3]


def test_alignment_long_last_subtitle_cut_to_11_frames():
    kept, s2f, _ = hero_store.align_subtitles([0.0, 2.0], [2.0, 30.0], 40, 1.0)
    assert s2f == [(0, [0, 1]), (1, list(range(2, 13)))]
    # not the last one: no cut
    _, s2f, _ = hero_store.align_subtitles([0.0, 25.0], [20.0, 26.0], 40, 1.0)
    assert s2f[0] == (0, list(range(0, 20)))


def test_pseudo_subtitles_and_example_without_subtitles():
    starts, ends, s2f = hero_store.pseudo_subtitles(12, 1.5)
    assert s2f == [(0, [0, 1, 2, 3, 4]), (1, [5, 6, 7, 8, 9]), (2, [10, 11])]
    assert starts == [0.0, 7.5, 15.0] and ends == [7.5, 15.0, 18.0]
    ex = hero_store.make_example('v', np.zeros((12, 4), np.float16), [], [], [])
    assert ex['pseudo'] == 1 and list(ex['sub/lens']) == [0, 0, 0]
    assert list(ex['align/count']) == [5, 5, 2] and len(ex['unmatched']) == 0


def test_truncation_rule_and_composition():
    s2f = [(0, [0, 1]), (1, []), (2, [2, 3, 4]), (3, [5]), (4, [])]
    out, unmatched = hero_store.truncate_alignment(s2f, [1, 6, 9], 4)
    assert out == [(0, [0, 1]), (1, []), (2, [2, 3])] and unmatched == [1]
    # the first subtitle past the limit with no frame inside is dropped, later ones too
    out, _ = hero_store.truncate_alignment([(0, [0]), (1, [5, 6]), (2, [1])], [], 4)
    assert out == [(0, [0])]
    rng = np.random.default_rng(0)
    for _ in range(50):
        starts = np.sort(rng.uniform(0, 30, 8))
        _, s2f, un = hero_store.align_subtitles(list(starts), list(starts + rng.uniform(0, 6, 8)),
                                                25, 1.0)
        a, b = rng.integers(1, 26, 2)
        big, small = max(a, b), min(a, b)
        twice = hero_store.truncate_alignment(*hero_store.truncate_alignment(s2f, un, big), small)
        assert twice == hero_store.truncate_alignment(s2f, un, small)


# ------------------------------------------------------------------------------ store + reader

def random_example(rng, vid, dim=8, max_frames=14):
    n = int(rng.integers(3, max_frames))
    count = int(rng.integers(0, 6))
    starts = np.sort(rng.uniform(0, n * 1.5, count)).round(2)
    ends = (starts + rng.uniform(0.5, 5, count)).round(2)
    ids = [list(rng.integers(10, 60, rng.integers(1, 12))) for _ in range(count)]
    return hero_store.make_example(vid, rng.normal(size=(n, dim)).astype(np.float16), ids,
                                   list(starts), list(ends), max_clip_len=12)


@pytest.fixture(scope='module')
def small_store(tmp_path_factory):
    rng = np.random.default_rng(0)
    out = str(tmp_path_factory.mktemp('store'))
    examples = [random_example(rng, f'v{i:02d}') for i in range(20)]
    hero_store.write_store(out, examples, dict(frame_interval=1.5, max_clip_len=12, feat_dim=8,
                                               vocab_size=64, tokenizer='test'), num_shards=4)
    return out, examples


SIZES = hero_reader.Sizes(max_clip_len=10, subs_per_video=4, frames_per_sub=3, max_txt_len=6,
                          query_per_video=5, feat_dim=8)


def test_store_round_trip_and_tfds_metadata(small_store):
    out, examples = small_store
    by_vid = {}
    for path in hero_store.shard_files(out):
        for record in hero_reader.read_tfrecords(path):
            ex = hero_store.parse_example(record)
            by_vid[ex['vid']] = ex
    assert len(by_vid) == len(examples)
    for want in examples:
        got = by_vid[want['vid'].decode()]
        np.testing.assert_array_equal(np.frombuffer(want['features'], np.float16),
                                      got['features'].reshape(-1))
        for key in hero_store.INT_LISTS + hero_store.FLOAT_LISTS:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    import tensorflow_datasets as tfds
    builder = tfds.builder_from_directory(out)
    assert builder.info.splits['train'].num_examples == len(examples)


def test_reader_batches_layout_and_semantics(small_store):
    out, _ = small_store
    iterate = hero_reader.make_train_batches(out, SIZES, global_batch=4, seed=3)
    batch = next(iterate(0, 0, 1))
    shapes = hero_reader.batch_shapes(SIZES, 4)
    assert set(batch) == set(shapes)
    for key, (shape, dtype) in shapes.items():
        assert batch[key].shape == shape and batch[key].dtype == dtype, key
    for part, prefix, text in (('mlm', 0, 'txt'), ('video', 2, 'sub'), ('vsm', 2, 'sub')):
        ids, mask = batch[f'{part}.{text}_ids'], batch[f'{part}.{text}_mask']
        sub_real = mask[..., 0] == 1
        assert (ids[..., 0][sub_real] == prefix).all()
        assert (ids[mask == 0] == hero_reader.PAD_ID).all()
        frames = batch[f'{part}.sub_frames']
        n = batch[f'{part}.frame_mask'].sum(-1)
        assert (frames < n[:, None, None]).all()
        assert (frames[~sub_real] == -1).all()
    # VSM: query targets inside the video, query text removed from its subtitle slot
    targets, n = batch['vsm.query_targets'], batch['vsm.frame_mask'].sum(-1)
    assert (targets[..., 0] <= targets[..., 1]).all() or (n == 1).any()
    assert (targets[..., 1] < n[:, None]).all()
    for b in range(4):
        qtexts = {tuple(r[m == 1][1:]) for r, m in zip(batch['vsm.query_ids'][b],
                                                       batch['vsm.query_mask'][b])}
        for s in range(SIZES.subs_per_video):
            if batch['vsm.sub_mask'][b, s].sum() == 1 and batch['vsm.sub_frames'][b, s, 0] >= 0:
                continue      # a query subtitle: [SEP] only
            text = tuple(batch['vsm.sub_ids'][b, s][batch['vsm.sub_mask'][b, s] == 1][1:])
            assert text not in qtexts or not text


def test_reader_resume_reproduces_and_hosts_disjoint(small_store):
    out, _ = small_store
    iterate = hero_reader.make_train_batches(out, SIZES, global_batch=4, seed=1)
    stream = iterate(0, 0, 1)
    run = [next(stream) for _ in range(9)]      # > 2 epochs of 20 videos (12 per step)
    resumed = iterate(5, 0, 1)
    for k in range(5, 9):
        got = next(resumed)
        for key in run[k]:
            np.testing.assert_array_equal(got[key], run[k][key], err_msg=f'step {k} {key}')
    assert not np.array_equal(run[0]['video.frame_feats'], run[1]['video.frame_feats'])
    other_seed = next(hero_reader.make_train_batches(out, SIZES, 4, seed=2)(0, 0, 1))
    assert not np.array_equal(other_seed['mlm.frame_feats'], run[0]['mlm.frame_feats'])
    # two hosts: 2 videos each per part, from disjoint shards
    files = [{p for p, _ in hero_reader.host_files(out, i, 2)} for i in range(2)]
    assert not files[0] & files[1]
    half = next(iterate(0, 1, 2))
    assert half['video.frame_feats'].shape[0] == 2
    # one part per step (the caller's draw): B records per step, resumable the same way
    parts = ['vsm', 'mlm', 'video', 'mlm', 'vsm', 'video', 'mlm']
    one = hero_reader.make_train_batches(out, SIZES, 4, seed=1, part_of_step=parts.__getitem__)
    run = [b for _, b in zip(range(7), one(0, 0, 1))]
    for k, batch in enumerate(run):
        for part in hero_reader.PARTS:
            assert batch[f'{part}.frame_mask'].any() == (part == parts[k])
    resumed = next(one(5, 0, 1))
    for key in resumed:
        np.testing.assert_array_equal(resumed[key], run[5][key])


# ------------------------------------------------------------------------------ LMDB import

def test_lmdb_import_round_trip(tmp_path):
    lmdb = pytest.importorskip('lmdb')
    msgpack = pytest.importorskip('msgpack')
    msgpack_numpy = pytest.importorskip('msgpack_numpy')
    lz4_frame = pytest.importorskip('lz4.frame')
    from data_pipeline import hero_import

    rng = np.random.default_rng(0)
    videos = {}
    for i in range(7):
        n = int(rng.integers(3, 20))
        dtype = np.float16 if i % 2 else np.float32
        feats = rng.normal(size=(n, 12)).astype(dtype)
        if i == 6:      # no subtitles: pseudo-subtitles written by the original preprocessing
            subs, ids = [], [[], []]
            s2f = [[0, list(range(min(5, n)))], [1, list(range(5, n))]]
            unmatched = []
        else:
            count = int(rng.integers(1, 5))
            starts = np.sort(rng.uniform(0, n * 1.5, count))
            subs = [dict(text=f'line {k}', start=float(s), end=float(s + 2)) for k, s in
                    enumerate(starts)]
            ids = [[int(x) for x in rng.integers(4, 50000, rng.integers(0, 9))]
                   for _ in range(count)]
            _, s2f, unmatched = hero_store.align_subtitles(
                [s['start'] for s in subs], [s['end'] for s in subs], n, 1.5)
            s2f = [[s, f] for s, f in s2f]
        videos[f'vid{i}'] = (feats, dict(input_ids=ids, unique_sub2frames=s2f, sub=subs,
                                         unmatched_frames=unmatched, duration=n))
    vdb = tmp_path / 'video_db' / 'tv' / 'resnet_slowfast_1.5'
    cdb = tmp_path / 'video_db' / 'tv' / 'resnet_slowfast_1.5_compressed'
    tdb = tmp_path / 'txt_db' / 'tv_subtitles.db'
    for path in (vdb, cdb, tdb):
        path.mkdir(parents=True)

    def write_db(path, items):
        env = lmdb.open(str(path), map_size=1 << 26)
        with env.begin(write=True) as txn:
            for key, value in items:
                txn.put(key.encode(), value)
        env.close()

    def savez(feats):
        buf = io.BytesIO()
        np.savez_compressed(buf, features=feats)
        return buf.getvalue()

    write_db(vdb, [(vid, msgpack.dumps({'features': f}, default=msgpack_numpy.encode))
                   for vid, (f, _) in videos.items()])
    write_db(cdb, [(vid, savez(f)) for vid, (f, _) in videos.items()])
    write_db(tdb, [(vid, lz4_frame.compress(msgpack.dumps(txt)))
                   for vid, (_, txt) in videos.items() if vid != 'vid5'])   # vid5: no text
    (tdb / 'meta.json').write_text(json.dumps({'tokenizer': 'roberta-base', 'mask': 50264}))

    for source in (vdb, cdb.parent / cdb.name):
        out = tmp_path / f'store_{source.name}'
        summary = hero_import.main(['--video-db', str(source), '--txt-db', str(tdb),
                                    '--out', str(out), '--num-shards', '3',
                                    '--max-clip-len', '1000'])
        assert summary['written'] == 7 and not summary['skipped']
        meta = hero_store.read_meta(str(out))
        assert meta['frame_interval'] == 1.5 and meta['feat_dim'] == 12
        got = {}
        for path in hero_store.shard_files(str(out)):
            for record in hero_reader.read_tfrecords(path):
                ex = hero_store.parse_example(record)
                got[ex['vid']] = ex
        for vid, (feats, txt) in videos.items():
            ex = got[vid]
            assert ex['features'].dtype == feats.dtype
            np.testing.assert_array_equal(ex['features'], feats)
            if vid == 'vid5':
                assert ex['pseudo'] == 1
                continue
            assert [list(s) for s in hero_store.subtitles(ex)] == txt['input_ids']
            assert hero_store.sub2frames(ex) == [(s, f) for s, f in txt['unique_sub2frames']]
            assert list(ex['unmatched']) == txt['unmatched_frames']
            if txt['sub']:
                np.testing.assert_allclose(ex['sub/start'], [s['start'] for s in txt['sub']],
                                           rtol=1e-6)
            else:
                assert ex['pseudo'] == 1


# ------------------------------------------------------------------------------ hero.task


def test_task_reads_the_store_with_the_spec_and_resumes(small_store):
    from configs.hero.pretrain import get_config
    from hero.task import build_task
    from trainer.errors import ConfigError
    out, _ = small_store
    config = get_config('variant=tiny')
    config.data.store = out
    config.data.max_clip_len = 10
    config.model.vfeat_dim = 8
    config.train.global_batch = 4
    task = build_task(config)
    stream = task.train_batches(0, 0, 1)
    run = [next(stream) for _ in range(4)]
    assert set(run[0]) == set(task.batch_spec)
    for key, spec in task.batch_spec.items():
        assert run[0][key].shape == spec.shape and run[0][key].dtype == spec.dtype, key
    resumed = next(task.train_batches(3, 0, 1))
    for key in resumed:
        np.testing.assert_array_equal(resumed[key], run[3][key])
    # the host draw is the loss's draw; only the drawn task's part holds data
    from hero.task import PART_OF, HeroPretraining
    hero = HeroPretraining.from_config(config)
    draws = hero.task_draws(0, 4)
    assert [int(hero.sample_task(k)) for k in range(4)] == draws.tolist()
    for k, batch in enumerate(run):
        assert (batch['task'] == draws[k]).all()
        part = PART_OF[config.tasks.names[draws[k]]]
        for name in ('mlm', 'video', 'vsm'):
            assert batch[f'{name}.frame_mask'].any() == (name == part), (k, name)
    config.model.vfeat_dim = 16
    with pytest.raises(ConfigError, match='vfeat_dim'):
        build_task(config)
    config.model.vfeat_dim = 8
    config.data.max_clip_len = 20        # the store cut its alignment at 12
    with pytest.raises(ConfigError, match='max_clip_len'):
        build_task(config)


# ------------------------------------------------------------------------------ CLIs


def test_hero_features_cli_and_resume(tmp_path, shared_dir):
    from data_pipeline import demo_corpus, hero_features
    bpe = shared_dir / 'tokenizers' / 'mreserve_lowercase_bpe.json'
    if not bpe.exists():
        pytest.skip('../shared/tokenizers/mreserve_lowercase_bpe.json is not present')
    corpus = tmp_path / 'corpus'
    demo_corpus.build_corpus(str(corpus), 3, seed=1, val_fraction=0.0, workers=1, width=64,
                             height=48, fps=2, min_seconds=6.0, max_seconds=9.0)
    (corpus / 'train' / 'broken.mp4').write_bytes(b'not a video')
    argv = ['--videos', str(corpus / 'train'), '--subtitles', str(corpus / 'train'),
            '--out', str(tmp_path / 'store'), '--encoder',
            'data_pipeline.hero_features:random_projection', '--encoder-arg', 'dim=16',
            '--tokenizer', f'bpe:{bpe}', '--num-shards', '2']
    summary = hero_features.main(argv)
    assert summary['written'] == 3 and summary['skipped_videos'][0]['vid'] == 'broken'
    meta = hero_store.read_meta(str(tmp_path / 'store'))
    assert meta['feat_dim'] == 16 and meta['vocab_size'] == 32768
    files = hero_store.shard_files(str(tmp_path / 'store'))
    records = [hero_store.parse_example(r) for p in files for r in hero_reader.read_tfrecords(p)]
    assert all(r['features'].shape[1] == 16 and len(r['sub/lens']) > 0 for r in records)
    again = hero_features.main(argv)            # finished shards are not redone
    assert again['resumed_shards'] == 2 and again['written'] == 0
