"""Bad data: corrupt and truncated TFRecords in the MERLOT Reserve and HERO readers (stop naming
the file and byte offset, or skip and count into metrics.jsonl), and data paths with nothing to
read failing at start-up with the path named."""
from __future__ import annotations

import dataclasses
import shutil
import struct

import numpy as np
import pytest
import tensorflow as tf
from engine_utils import lm_config, read_metrics, run_module

from data_pipeline import hero_reader, hero_store, tfrecord_io
from data_pipeline import mreserve_reader as reader
from data_pipeline.mreserve_synthetic import write_records
from data_pipeline.tfrecord_io import CorruptionCounter, CorruptRecordError
from trainer.errors import ConfigError


def record_offsets(path) -> list[int]:
    """Start offset of every record, from the framing of an undamaged file."""
    data, offsets, pos = open(path, 'rb').read(), [], 0
    while pos < len(data):
        offsets.append(pos)
        pos += 16 + struct.unpack_from('<Q', data, pos)[0]
    return offsets


def flip_data_byte(path, record: int) -> int:
    """Corrupts record `record`'s data (its data checksum fails); returns its offset."""
    offset = record_offsets(path)[record]
    data = bytearray(open(path, 'rb').read())
    data[offset + 12 + 5] ^= 0xFF
    open(path, 'wb').write(bytes(data))
    return offset


def flip_length_byte(path, record: int) -> int:
    offset = record_offsets(path)[record]
    data = bytearray(open(path, 'rb').read())
    data[offset] ^= 0x01
    open(path, 'wb').write(bytes(data))
    return offset


def truncate_inside(path, record: int) -> int:
    """Cuts the file in the middle of record `record`; returns its offset."""
    offset = record_offsets(path)[record]
    with open(path, 'r+b') as f:
        f.truncate(offset + 30)
    return offset


def take(it, n):
    return [next(it) for _ in range(n)]


def assert_same_batches(a, b, what=''):
    assert len(a) == len(b)
    for k, (x, y) in enumerate(zip(a, b)):
        assert sorted(x) == sorted(y)
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=f'{what} batch {k} {key}')


# ------------------------------------------------------------------------------ tfrecord_io

def test_read_records_names_skips_and_resynchronises(tmp_path):
    clean = str(tmp_path / 'clean.tfrecord')
    with tf.io.TFRecordWriter(clean) as w:
        for i in range(5):
            w.write(bytes([65 + i]) * (50 + i))
    assert list(tfrecord_io.read_records(clean)) == list(
        tf.data.TFRecordDataset(clean).as_numpy_iterator())
    cases = {  # damage -> records that survive skipping (by first letter)
        'data checksum': (flip_data_byte, b'ABDE'),    # only the damaged record is lost
        'length checksum': (flip_length_byte, b'AB'),  # nothing after it can be framed
        'truncated': (truncate_inside, b'AB'),
    }
    for name, (damage, survivors) in cases.items():
        path = str(tmp_path / f'{name}.tfrecord')
        shutil.copy(clean, path)
        offset = damage(path, 2)
        with pytest.raises(CorruptRecordError) as info:
            list(tfrecord_io.read_records(path))
        error = info.value
        assert (error.path, error.index, error.offset) == (path, 2, offset), name
        assert f'{path}: record 2 at byte offset {offset}' in str(error)
        assert 'data.skip_corrupt=True' in str(error)
        if name == 'truncated':
            assert 'truncated' in error.reason
        counter = CorruptionCounter()
        kept = list(tfrecord_io.read_records(path, skip_corrupt=True, counter=counter))
        assert bytes(r[0] for r in kept) == survivors, name
        assert counter.count == 1 and counter.last.offset == offset
        assert counter.metrics() == {'data/corrupt_records_skipped': 1.0}
    assert tfrecord_io.find_corruption([clean, str(tmp_path / 'truncated.tfrecord')]).index == 2
    assert tfrecord_io.find_corruption([clean]) is None


# ------------------------------------------------------------------------------ MERLOT Reserve

TINY = dict(num_segments=4, num_segment_groups=2, num_audio_subsegments=3, lang_seq_len=64,
            seq_len=76, mask_rate=0.25, text_span_budget=4, use_audio_token_prob=0.5,
            num_text_seqs=1, num_text_seqs_in_record=1)


def mreserve_config(path, **extra):
    data = dict(TINY, train_path=path, shuffle_buffer=8, cycle_length=2, num_threads=1)
    data.update(extra)
    return {'seed': 3, 'train': {'global_batch': 2},
            'model': {'output_grid': (4, 6), 'vocab_size': 32768}, 'data': data}


@pytest.fixture(scope='module')
def records(tmp_path_factory):
    """Two files of 4 records each: clean, one with a bad data checksum in file 1 record 1,
    one with file 0 cut inside record 2."""
    root = tmp_path_factory.mktemp('mreserve_bad')
    clean = root / 'clean'
    write_records(str(clean), n_files=2, per_file=4, frame_hw=(64, 96))
    out = {'clean': str(clean / '*.tfrecord')}
    for name, (damage, file, record) in {'crc': (flip_data_byte, 1, 1),
                                         'truncated': (truncate_inside, 0, 2)}.items():
        shutil.copytree(clean, root / name)
        path = str(root / name / f'train{file:05d}.tfrecord')
        out[name] = (str(root / name / '*.tfrecord'), path, damage(path, record))
    return out


@pytest.mark.parametrize('damage', ['crc', 'truncated'])
def test_mreserve_reader_stops_naming_file_and_offset(records, damage):
    glob_path, bad_file, offset = records[damage]
    with pytest.raises(CorruptRecordError) as info:
        take(reader.train_batches(mreserve_config(glob_path), 0, 0, 1), 8)
    assert info.value.path == bad_file and info.value.offset == offset
    assert f'{bad_file}: record' in str(info.value) and f'byte offset {offset}' in str(info.value)
    # resuming needs the host's record count: the counting pass names the file too
    with pytest.raises(CorruptRecordError, match=f'byte offset {offset}'):
        reader.train_batches(mreserve_config(glob_path), 3, 0, 1)


@pytest.mark.parametrize('damage,readable', [('crc', 7), ('truncated', 6)])
def test_mreserve_reader_skips_counts_and_resumes(records, damage, readable):
    glob_path, _, _ = records[damage]
    config = mreserve_config(glob_path, skip_corrupt=True)
    source = reader.RecordSource(glob_path, 0, 1, skip_corrupt=True)
    assert source.count() == readable
    counter = CorruptionCounter()
    full = take(reader.train_batches(config, 0, 0, 1, counter=counter), 9)  # > 2 epochs
    assert counter.count >= 2         # met once per epoch
    for k in (2, 5):                  # resume inside epoch 0 and in epoch 1
        resumed = take(reader.train_batches(config, k, 0, 1), 3)
        assert_same_batches(full[k:k + 3], resumed, f'{damage} resumed at {k}')


def test_mreserve_skip_switch_keeps_clean_data_order(records):
    plain = take(reader.train_batches(mreserve_config(records['clean']), 0, 0, 1), 5)
    counter = CorruptionCounter()
    checked = take(reader.train_batches(mreserve_config(records['clean'], skip_corrupt=True),
                                        0, 0, 1, counter=counter), 5)
    assert_same_batches(plain, checked, 'skip_corrupt on clean data')
    assert counter.count == 0


def _mreserve_task_config(path, **data):
    from configs.mreserve.pretrain import get_config
    config = get_config('variant=tiny')
    config.data.train_path = path
    for key, value in data.items():
        config.data[key] = value
    return config


def test_mreserve_missing_or_empty_paths_fail_at_build_time(tmp_path, records):
    from mreserve.task import build_task
    empty_dir = tmp_path / 'empty_dir'
    empty_dir.mkdir()
    empty_file = tmp_path / 'empty' / 'train00000.tfrecord'
    empty_file.parent.mkdir()
    empty_file.write_bytes(b'')
    cases = [('train_path', str(tmp_path / 'nowhere' / '*.tfrecord'), 'no TFRecord files match'),
             ('train_path', str(empty_dir), 'no TFRecord files match'),
             ('train_path', str(empty_file), 'hold no records'),
             ('eval_path', str(tmp_path / 'no_eval*.tfrecord'), 'no TFRecord files match')]
    for key, path, words in cases:
        config = _mreserve_task_config(records['clean'])
        config.data[key] = path
        with pytest.raises(ConfigError, match=words) as info:
            build_task(config)
        assert f'data.{key}' in str(info.value) and path in str(info.value)
    task = build_task(_mreserve_task_config(records['clean'], skip_corrupt=True))
    assert task.data_metrics() == {'data/corrupt_records_skipped': 0.0}
    assert build_task(_mreserve_task_config(records['clean'])).data_metrics is None


def test_mreserve_cli_missing_path_exits_before_compute(tmp_path):
    missing = str(tmp_path / 'nowhere' / 'train*.tfrecord')
    proc = run_module('mreserve.train', [
        '--config', 'configs/mreserve/pretrain.py:variant=tiny',
        f'--config.data.train_path={missing}', '--workdir', str(tmp_path / 'run')],
        devices=1, check=False)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"'data.train_path': no TFRecord files match {missing!r}" in proc.stderr
    assert not (tmp_path / 'run' / 'checkpoints').exists()


# ------------------------------------------------------------------------------ HERO

SIZES = hero_reader.Sizes(max_clip_len=10, subs_per_video=4, frames_per_sub=3, max_txt_len=6,
                          query_per_video=5, feat_dim=8)


def hero_example(rng, vid):
    n = int(rng.integers(3, 14))
    count = int(rng.integers(1, 6))
    starts = np.sort(rng.uniform(0, n * 1.5, count)).round(2)
    ends = (starts + rng.uniform(0.5, 5, count)).round(2)
    ids = [list(rng.integers(10, 60, rng.integers(1, 12))) for _ in range(count)]
    return hero_store.make_example(vid, rng.normal(size=(n, 8)).astype(np.float16), ids,
                                   list(starts), list(ends), max_clip_len=12)


@pytest.fixture(scope='module')
def hero_stores(tmp_path_factory):
    """A 2-shard store of 10 videos, a copy with a bad checksum in shard 0 record 2 and a
    copy with shard 1 cut inside record 3."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp('hero_bad')
    clean = str(root / 'clean')
    hero_store.write_store(clean, [hero_example(rng, f'v{i:02d}') for i in range(10)],
                           dict(frame_interval=1.5, max_clip_len=12, feat_dim=8, vocab_size=64,
                                tokenizer='test'), num_shards=2)
    out = {'clean': clean}
    for name, (damage, shard, record) in {'crc': (flip_data_byte, 0, 2),
                                          'truncated': (truncate_inside, 1, 3)}.items():
        shutil.copytree(clean, root / name)
        path = hero_store.shard_files(str(root / name))[shard]
        out[name] = (str(root / name), path, damage(path, record))
    return out


def hero_stream(store, start=0, **kwargs):
    return hero_reader.make_train_batches(store, SIZES, 2, seed=5, **kwargs)(start, 0, 1)


@pytest.mark.parametrize('damage', ['crc', 'truncated'])
def test_hero_reader_stops_naming_file_and_offset(hero_stores, damage):
    store, bad_file, offset = hero_stores[damage]
    with pytest.raises(CorruptRecordError) as info:
        take(hero_stream(store), 4)                # 3 parts x 2 videos per step: > 1 epoch
    assert info.value.path == bad_file and info.value.offset == offset
    assert f'byte offset {offset}' in str(info.value)
    with pytest.raises(CorruptRecordError, match=f'byte offset {offset}'):
        hero_reader.read_tfrecords(bad_file)       # the fine-tuning readers use this too


@pytest.mark.parametrize('damage,readable', [('crc', 9), ('truncated', 8)])
def test_hero_reader_skips_counts_and_resumes(hero_stores, damage, readable):
    store, bad_file, _ = hero_stores[damage]
    assert len(hero_reader.read_tfrecords(bad_file, skip_corrupt=True)) == readable - 5
    counter = CorruptionCounter()
    full = take(hero_stream(store, skip_corrupt=True, counter=counter), 7)   # 42 records
    assert counter.count >= 1                     # (each time the shard is read again)
    for k in (1, 4):                              # epoch 0, and past the corrupt shard twice
        resumed = take(hero_stream(store, k, skip_corrupt=True), 3)
        assert_same_batches(full[k:k + 3], resumed, f'{damage} resumed at {k}')


def test_hero_skip_switch_keeps_clean_data_order(hero_stores):
    counter = CorruptionCounter()
    assert_same_batches(take(hero_stream(hero_stores['clean']), 4),
                        take(hero_stream(hero_stores['clean'], skip_corrupt=True,
                                         counter=counter), 4), 'skip_corrupt on clean data')
    assert counter.count == 0


def _hero_task_config(store, **data):
    from configs.hero.pretrain import get_config
    config = get_config('variant=tiny')
    config.data.store = store
    config.data.max_clip_len = 10
    config.model.vfeat_dim = 8
    config.train.global_batch = 2
    for key, value in data.items():
        config.data[key] = value
    return config


def test_hero_missing_or_empty_store_fails_at_build_time(tmp_path, hero_stores):
    from hero.task import build_task
    empty = str(tmp_path / 'empty_store')
    hero_store.write_store(empty, [], dict(frame_interval=1.5, max_clip_len=12, feat_dim=8,
                                           vocab_size=64, tokenizer='test'), num_shards=1)
    not_a_store = tmp_path / 'not_a_store'
    not_a_store.mkdir()
    for path, words in ((str(tmp_path / 'nowhere'), 'no meta.json'),
                        (str(not_a_store), 'no meta.json'), (empty, "no complete 'train' split")):
        with pytest.raises(ConfigError, match=words) as info:
            build_task(_hero_task_config(path))
        assert 'data.store' in str(info.value) and path in str(info.value)
    store, _, _ = hero_stores['crc']
    task = build_task(_hero_task_config(store, skip_corrupt=True))
    batches = task.train_batches(0, 0, 1)
    take(batches, 6)                  # 6 steps x 2 videos: past the corrupt record
    assert task.data_metrics()['data/corrupt_records_skipped'] >= 1
    assert build_task(_hero_task_config(store)).data_metrics is None


# ------------------------------------------------------------------------------ engine

def test_data_metrics_reach_metrics_jsonl(tmp_path):
    from trainer.examples.lm import build_task
    from trainer.loop import train
    config = lm_config(steps=4)
    config.train.log_every = 2
    counter = CorruptionCounter()
    task = dataclasses.replace(build_task(config), data_metrics=counter.metrics)
    counter.add(CorruptRecordError('f.tfrecord', 0, 0, 'test'))
    train(config, str(tmp_path), task)
    rows = read_metrics(tmp_path)
    assert [r['step'] for r in rows] == [2, 4]
    assert all(r['data/corrupt_records_skipped'] == 1.0 for r in rows)
