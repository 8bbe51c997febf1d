"""The MERLOT Reserve pretraining reader on synthetic records in the spec §3.2 schema."""
from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf

from data_pipeline import mreserve_masking as masking
from data_pipeline import mreserve_reader as reader
from data_pipeline.mreserve_synthetic import write_records

TINY = dict(num_segments=4, num_segment_groups=2, num_audio_subsegments=3, lang_seq_len=64,
            seq_len=76, mask_rate=0.25, text_span_budget=4, use_audio_token_prob=0.5,
            num_text_seqs=1, num_text_seqs_in_record=1)
BASE = dict(TINY, num_segments=16, lang_seq_len=160, seq_len=640, text_span_budget=38)


def make_config(data, grid, path, batch=4, seed=0, **extra):
    data = dict(data, train_path=path, eval_path=path, shuffle_buffer=8, cycle_length=2,
                num_threads=2)
    data.update(extra)
    return {'seed': seed, 'train': {'global_batch': batch},
            'model': {'output_grid': grid, 'vocab_size': 32768}, 'data': data}


@pytest.fixture(scope='module')
def tiny_path(tmp_path_factory):
    return write_records(str(tmp_path_factory.mktemp('mreserve_records')), frame_hw=(64, 96))


def take(it, n):
    return [next(it) for _ in range(n)]


def check_invariants(batch, c: masking.SequenceConfig):
    n_trg = c.num_targets
    for b in range(batch['images'].shape[0]):
        ptr_count = {}
        for key in reader.SEQUENCE_KEYS:
            tok, aptr, tptr = (batch[key][b], batch[key + '/audio_ptr'][b],
                               batch[key + '/text_ptr'][b])
            for row_t, row_a, row_p in zip(tok, aptr, tptr):
                is_mask = row_t == masking.MASK
                assert (row_p[is_mask] >= 0).all(), key
                if key != 'text2audio':
                    assert (row_p[~is_mask] == -1).all(), key
                else:   # the MASKAUDIO after a MASK shares its text_ptr
                    assert (row_p[~is_mask & (row_t != masking.MASKAUDIO)] == -1).all()
                for p in row_p[is_mask]:
                    ptr_count[p] = ptr_count.get(p, 0) + 1
                # AUDIOSPAN: complete runs of 6 with one audio_ptr each, in order
                pos = np.flatnonzero(row_t == masking.AUDIOSPAN)
                assert len(pos) % 6 == 0, key
                for run in pos.reshape(-1, 6):
                    assert (np.diff(run) == 1).all(), key
                    assert len(set(row_a[run])) == 1 and row_a[run[0]] >= 0, key
                if key != 'random_text':   # (the matching sequence's metadata prefix: -1)
                    body = np.arange(len(row_t)) >= np.argmax(row_t == masking.LTOVPOOL)
                    valid = row_a[(row_t != 0) & (body if key == 'audio_text_matching' else True)]
                    assert ((valid >= 0) & (valid < c.num_audio_spans)).all(), key
                # padding is (0, -1, -1) and only at the end
                pad = row_t == 0
                if pad.any():
                    assert pad[np.argmax(pad):].all(), key
                    assert (row_a[pad] == -1).all() and (row_p[pad] == -1).all(), key
            if key in ('text2audio', 'audio2text'):
                # group g only holds rows of its own segments
                rpg = c.rows_per_group
                for g in range(c.num_segment_groups):
                    a = aptr[g][tok[g] != 0]
                    assert ((a >= g * rpg) & (a < (g + 1) * rpg)).all()
        assert all(v == 1 for v in ptr_count.values()), ptr_count    # one MASK per span
        spans = batch['text_spans'][b]
        for p in ptr_count:
            assert 0 <= p < c.num_text_spans
            if p >= 2 * n_trg:
                assert spans[p].any(), 'random-text MASK points at an empty span'
        # T2A/A2T MASKs with a non-empty text point at non-empty spans and vice versa
        t2a = batch['text2audio'][b]
        maskaudio_ptr = batch['text2audio/audio_ptr'][b][t2a == masking.MASKAUDIO]
        assert len(set(maskaudio_ptr.tolist())) == len(maskaudio_ptr)
        atm = batch['audio_text_matching'][b][0]
        assert (atm == masking.LTOVPOOL).sum() <= c.num_segments


def test_tiny_batch_shapes_dtypes_and_invariants(tiny_path):
    config = make_config(TINY, (4, 6), tiny_path)
    batches = take(reader.train_batches(config, 0, 0, 1), 3)
    batch = batches[0]
    spec = reader.make_batch_spec(config)
    assert sorted(batch) == sorted(spec)
    for key, (shape, dtype) in spec.items():
        assert batch[key].shape == (4,) + shape, key
        assert batch[key].dtype == dtype, key
    assert spec['images'][0] == (96, 768) and spec['text_spans'][0] == (10, 15)
    assert spec['text2audio'][0] == (2, 64) and spec['random_text'][0] == (1, 76)
    assert 0.0 <= batch['images'].min() and batch['images'].max() <= 1.0
    speed = batch['audio_clips'][..., -1]
    assert set(np.unique(speed)) <= {1.0, 2.0, 3.0}
    c = reader.sequence_config(config)
    for b in batches:
        check_invariants(b, c)


def test_batch_spec_matches_model_layout():
    """Same keys/shapes as the model package's synthetic batch (tests may import mreserve)."""
    pytest.importorskip('flax')
    from mreserve.model_config import ModelConfig
    from mreserve.synthetic import batch_shapes
    for data, grid in ((TINY, (4, 6)), (BASE, (12, 20))):
        config = make_config(data, grid, '')
        spec = reader.make_batch_spec(config)
        theirs = batch_shapes(ModelConfig.from_config(config), 3)
        assert sorted(spec) == sorted(theirs)
        for key, (shape, dtype) in theirs.items():
            assert (3,) + spec[key][0] == shape and spec[key][1] == np.dtype(dtype), key


def test_resume_reproduces_the_stream(tiny_path):
    config = make_config(TINY, (4, 6), tiny_path, batch=4)
    full = take(reader.train_batches(config, 0, 0, 1), 8)    # 6 steps per epoch
    one_thread = make_config(TINY, (4, 6), tiny_path, batch=4, num_threads=1)
    for k, n, cfg in ((4, 3, config), (7, 1, one_thread)):   # across epochs; from epoch 1
        resumed = take(reader.train_batches(cfg, k, 0, 1), n)
        for a, b in zip(full[k:], resumed):
            for key in a:
                np.testing.assert_array_equal(a[key], b[key], err_msg=f'step {k} {key}')
    other_seed = next(reader.train_batches(make_config(TINY, (4, 6), tiny_path, seed=1),
                                           0, 0, 1))
    assert not np.array_equal(other_seed['images'], full[0]['images'])


def test_two_hosts_read_disjoint_files(tiny_path):
    sources = [reader.RecordSource(tiny_path, i, 2) for i in range(2)]
    files = [{f for f, _, _ in s.shards} for s in sources]
    assert files[0] and files[1] and not files[0] & files[1]
    assert len(files[0] | files[1]) == 4
    config = make_config(TINY, (4, 6), tiny_path, batch=4)
    b0, b1 = (next(reader.train_batches(config, 0, i, 2)) for i in range(2))
    assert b0['images'].shape[0] == 2
    assert not np.array_equal(b0['images'], b1['images'])


def test_eval_is_deterministic(tiny_path):
    config = make_config(TINY, (4, 6), tiny_path)
    runs = [list(reader.eval_batches(c, 0, 0, 1)) for c in (config, dict(config, seed=5))]
    assert len(runs[0]) == 24 // 4
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            for key in a:
                np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_base_shapes(tmp_path):
    path = write_records(str(tmp_path), n_files=1, per_file=2)
    config = make_config(BASE, (12, 20), path, batch=2)
    batch = next(reader.train_batches(config, 0, 0, 1))
    for key, (shape, dtype) in reader.make_batch_spec(config).items():
        assert batch[key].shape == (2,) + shape and batch[key].dtype == dtype, key
    assert batch['images'].shape == (2, 3840, 768) and batch['text_spans'].shape == (2, 62, 15)
    check_invariants(batch, reader.sequence_config(config))
    # the random-text sequence is filled back towards seq_len
    assert (batch['random_text'] != 0).sum(-1).min() > 500


def test_meta_prefix_ids_match_the_bpe():
    path = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'tokenizers',
                        'mreserve_lowercase_bpe.json')
    if not os.path.exists(path):
        pytest.skip('BPE tokenizer JSON not available')
    pytest.importorskip('tokenizers')
    from data_pipeline.tokenizer import BPETokenizer
    tok = BPETokenizer(path)
    assert [tuple(tok.encode(s)) for s in ('title:', 'description:', 'tags:')] == list(
        masking.META_PREFIX_IDS)


def test_space_to_depth_order():
    """Patch (0, 1) of the grid, depth (dy·16 + dx)·3 + c, from an image with known pixels."""
    ys, xs = np.meshgrid(np.arange(64), np.arange(96), indexing='ij')
    img = np.stack([ys, xs, np.zeros_like(ys)], -1).astype(np.uint8)
    encoded = tf.io.encode_png(img)       # lossless; decode_jpeg also reads PNG
    patches = reader.decode_image(encoded, (4, 6), tf.constant([0, 0], tf.int64),
                                  train=False).numpy()
    p = patches[1].reshape(16, 16, 3) * 255
    np.testing.assert_allclose(p[..., 0], np.arange(16)[:, None] * np.ones((1, 16)), atol=1)
    np.testing.assert_allclose(p[..., 1], 16 + np.arange(16)[None, :] * np.ones((16, 1)),
                               atol=1)


def test_audio_windows():
    spec = tf.io.encode_jpeg(np.full((64, 188, 1), 100, np.uint8), quality=100)
    clips, starts = reader.decode_audio(spec, 50.0, 2, tf.constant([1, 2], tf.int64),
                                        train=False)
    assert clips.shape == (3, 60, 65)
    np.testing.assert_array_equal(starts.numpy(), [2, 64, 126])
    np.testing.assert_allclose(clips[..., :64].numpy(), 2.0, atol=0.05)
    np.testing.assert_array_equal(clips[..., 64].numpy(), 2.0)
    _, starts = reader.decode_audio(spec, 50.0, 2, tf.constant([1, 2], tf.int64), train=True)
    gaps = starts.numpy() - [0, 60, 120]
    assert (np.diff(gaps) >= 0).all() and gaps.min() >= 0 and gaps.max() <= 8


@pytest.mark.parametrize('method', sorted(reader.KERNELS))
def test_banded_resize_matches_tf(method):
    rng = np.random.default_rng(1)
    for (h, w), size in (((288, 512), (194, 344)), ((50, 40), (64, 51)), ((520, 296), (200, 114))):
        img = tf.constant(rng.uniform(0, 1, (h, w, 3)).astype(np.float32))
        ref = tf.image.resize(img, size, method=method, antialias=True).numpy()
        np.testing.assert_allclose(reader.resize(img, tf.constant(size), method).numpy(), ref,
                                   atol=2e-6)


def test_tfds_directory(tmp_path):
    """A TFDS-prepared folder (dataset_info.json + sharded tfrecords of the same Examples) is
    split per host with tfds.split_for_jax_process and read raw with the same parser."""
    tfds = pytest.importorskip('tensorflow_datasets')
    from data_pipeline.mreserve_synthetic import make_record
    d = str(tmp_path / 'mreserve_records' / '1.0.0')
    os.makedirs(d)
    rng = np.random.default_rng(3)
    for s in range(4):
        name = f'mreserve_records-train.tfrecord-{s:05d}-of-00004'
        with tf.io.TFRecordWriter(os.path.join(d, name)) as w:
            for _ in range(3):
                w.write(make_record(rng, (64, 96)))
    template = tfds.core.ShardedFileTemplate(
        data_dir=d, template='{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}',
        dataset_name='mreserve_records', filetype_suffix='tfrecord')
    tfds.folder_dataset.write_metadata(
        data_dir=d, filename_template=template, check_data=False,
        features=tfds.features.FeaturesDict(
            {'c00/tok_ids': tfds.features.Tensor(shape=(None,), dtype=np.int64)}),
        split_infos=tfds.folder_dataset.compute_split_info(filename_template=template))
    sources = [reader.RecordSource(d, i, 2) for i in range(2)]
    assert [s.count() for s in sources] == [6, 6]
    assert not {f for f, _, _ in sources[0].shards} & {f for f, _, _ in sources[1].shards}
    config = make_config(TINY, (4, 6), d, batch=4)
    full = take(reader.train_batches(config, 0, 1, 2), 4)     # 6 records per host-epoch
    resumed = next(reader.train_batches(config, 3, 1, 2))
    for key in resumed:
        np.testing.assert_array_equal(full[3][key], resumed[key], err_msg=key)


def test_parse_spec_agrees_with_the_writer():
    """The reader defines its parse spec from spec §3.2; the writer's schema must agree, and
    a record serialized by the writer parses to the same example."""
    records = pytest.importorskip('data_pipeline.mreserve_records')
    from data_pipeline.mreserve_synthetic import make_chunks, serialize
    for key, feature in reader.feature_spec(16).items():
        dtype, is_list = records.CHUNK_SCHEMA[key.split('/', 1)[1]]
        assert feature.dtype == dtype and isinstance(feature, tf.io.RaggedFeature) == is_list
    chunks = make_chunks(np.random.default_rng(5), (64, 96))
    ours, theirs = serialize(chunks), records.make_example(chunks)
    config = make_config(TINY, (4, 6), '')
    builder = reader.ExampleBuilder(config, reader.default_token_is_valid(), train=False)
    seed = tf.constant([0, 0], tf.int64)
    a = builder(tf.constant(0, tf.int64), ours, seed)
    b = builder(tf.constant(0, tf.int64), theirs, seed)
    for key in a:
        np.testing.assert_array_equal(a[key].numpy(), b[key].numpy(), err_msg=key)


# --- the sequence builder (data_pipeline/mreserve_masking.py) on hand-made inputs ---------

def test_assign_rows_nearest_window_and_monotone():
    starts = np.array([[2, 64, 126], [2, 64, 126]])
    centre = lambda k: (masking.window_times(np.array(starts[0][k], float))[0] +
                        masking.window_times(np.array(starts[0][k], float))[1]) / 2
    cents = np.array([centre(0), centre(2), centre(1), centre(0) + 0.01, centre(2)])
    rows = masking.assign_rows(np.array([3, 2]), cents, starts)
    np.testing.assert_array_equal(rows, [0, 2, 2, 3, 5])    # the 3rd token is clamped by cummax


def test_reassign_and_increase_textmask():
    rng = np.random.default_rng(0)
    rows = [[(11, 0.1), (12, 0.5)], [], [(13, 4.0)]]
    masking.reassign_empty_tokens(rows, {1}, rng)
    assert rows == [[(11, 0.1)], [(12, 0.5)], [(13, 4.0)]]
    rows = [[(11, 0.1)], [], [(13, 4.0)]]
    masking.reassign_empty_tokens(rows, {1}, rng)        # no neighbour with >= 2 tokens
    assert rows[1] == []
    rows = [[(11, 0.9), (12, 1.6)], [(20, 2.0)], [(13, 3.05), (14, 3.5)]]
    masking.increase_textmask(rows, {1}, np.array([0, 1.7, 0]), np.array([0, 3.0, 0]),
                              np.array([0, 0, 0]), 0.125, rng)
    assert rows[1] == [(12, 1.6), (20, 2.0), (13, 3.05)]
    rows = [[(12, 1.6)], [(20, 2.0)], [(13, 3.05)]]
    masking.increase_textmask(rows, {1}, np.array([0, 1.8, 0]), np.array([0, 3.0, 0]),
                              np.array([0, 1, 1]), 0.125, rng)   # 1.6 too early; row 0 other video
    assert rows[1] == [(20, 2.0), (13, 3.05)]


def test_select_tokens_keeps_masks_and_audio_runs():
    rng = np.random.default_rng(0)
    for _ in range(20):
        units = []
        for r in range(24):
            kind = rng.integers(3)
            if kind == 0:
                units.append(([masking.AUDIOSPAN] * 6, [r] * 6, [-1] * 6, r, False))
            elif kind == 1:
                units += [([int(t)], [r], [-1], r, False) for t in rng.integers(11, 99, 9)]
            else:
                units.append(([masking.MASK], [r], [r], r, True))
        out = masking.select_tokens(units, 40, rng)
        tok = out[0]
        assert (tok == masking.MASK).sum() == min(sum(u[4] for u in units), 40)
        pos = np.flatnonzero(tok == masking.AUDIOSPAN)
        assert len(pos) % 6 == 0
        for run in pos.reshape(-1, 6):
            assert (np.diff(run) == 1).all() and len(set(out[1][run])) == 1
        assert (np.diff(out[1][tok != 0]) >= 0).all()          # order kept


def test_random_text_span_lengths_and_budget():
    c = masking.SequenceConfig()
    valid = reader.default_token_is_valid()
    rng = np.random.default_rng(0)
    lengths = []
    for _ in range(30):
        seq, spans = masking.random_text_sequence(c, rng.integers(11, 32768, 1536), valid, rng)
        tok, _, tptr = seq[0]
        assert (tok == masking.MASK).sum() == 38
        np.testing.assert_array_equal(tptr[tok == masking.MASK], 24 + np.arange(38))
        assert (tok != 0).sum() >= 600            # filled towards 640 from the leftovers
        lengths += [len(s) for s in spans]
    assert 1 <= min(lengths) and max(lengths) <= 15
    assert abs(np.mean(lengths) - masking.SPAN_LENGTH_MEAN) < 0.5
    # spans made only of YouTube-like tokens are preferred 5:1, and targets drop the others
    valid = np.zeros(32768, bool)
    valid[1000:] = True
    text = rng.integers(11, 32768, 1536)
    text[::7] = 50
    seq, spans = masking.random_text_sequence(c, text, valid, rng)
    assert all(50 not in s for s in spans)


def test_matching_sequence_audio_or_text():
    c = masking.SequenceConfig(use_audio_token_prob=1.0)
    seg_tokens = [[100 + s] * 3 for s in range(16)]
    seg_rows = [[3 * s] * 3 for s in range(16)]
    meta = (np.array([11, 12]), np.array([13]), np.array([14]))
    seq = masking.matching_sequence(c, seg_tokens, seg_rows, meta, np.random.default_rng(0))[0]
    tok = seq[0]
    assert (tok == masking.LTOVPOOL).sum() == 16 and (tok == masking.AUDIOSPAN).sum() == 288
    np.testing.assert_array_equal(tok[:15], [1, 3388, 35, 11, 12, 1, 2026, 35, 13, 1, 10884,
                                             35, 14, 2, masking.LTOVPOOL])
    c = masking.SequenceConfig(use_audio_token_prob=0.0)
    seq = masking.matching_sequence(c, seg_tokens, seg_rows, meta, np.random.default_rng(0))[0]
    assert (seq[0] == masking.AUDIOSPAN).sum() == 0 and (seq[0] == 115).sum() == 3


@pytest.mark.slow
def test_reader_batch_runs_through_the_pretraining_forward(tiny_path):
    """A tiny reader batch through MerlotReservePretrainer + the losses: finite, and every
    span/audio target the model gathers is present."""
    pytest.importorskip('flax')
    import flax.linen as nn
    import jax

    from configs.mreserve.pretrain import get_config
    from mreserve.losses import pretrain_losses
    from mreserve.model_config import ModelConfig
    from mreserve.params import init_params
    from mreserve.pretrain_model import MerlotReservePretrainer
    config = get_config('variant=tiny')
    config.data.train_path = tiny_path
    config.data.shuffle_buffer = 8
    config.data.cycle_length = 2
    config.data.num_threads = 2
    config.train.global_batch = 4
    batch = next(reader.train_batches(config, 0, 0, 1))
    model_config = ModelConfig.from_config(config)
    params = nn.meta.unbox(init_params(model_config, jax.random.key(0)))
    preds = jax.jit(lambda p, b: MerlotReservePretrainer(model_config).apply(
        {'params': p}, b, jax.random.key(1)))(params, batch)
    losses = pretrain_losses(preds)
    assert all(np.isfinite(float(v)) for v in losses.values()), losses
    assert preds['text_to_audio']['x'].shape[1] == model_config.num_targets
    # every T2A target's MASKAUDIO survived length control, so no x row is zero
    assert (np.abs(np.asarray(preds['text_to_audio']['x'])).sum(-1) > 0).all()


def test_token_is_valid_from_config(tmp_path):
    table = np.zeros(32768, bool)
    table[500:] = True
    np.save(tmp_path / 'valid.npy', table)
    config = make_config(TINY, (4, 6), '', token_is_valid=str(tmp_path / 'valid.npy'))
    np.testing.assert_array_equal(reader.resolve_token_is_valid(config), table)
    default = reader.resolve_token_is_valid(make_config(TINY, (4, 6), ''))
    assert not default[:11].any() and default[11:].all()


def test_eval_has_the_same_number_of_batches_on_every_host(tmp_path):
    from data_pipeline.mreserve_synthetic import make_record
    rng = np.random.default_rng(7)
    for f, n in enumerate((5, 2, 3)):                   # hosts of 2: files {0, 2} and {1}
        with tf.io.TFRecordWriter(str(tmp_path / f'val{f:05d}.tfrecord')) as w:
            for _ in range(n):
                w.write(make_record(rng, (64, 96)))
    config = make_config(TINY, (4, 6), str(tmp_path / 'val*.tfrecord'), batch=2)
    counts = [len(list(reader.eval_batches(config, 0, i, 2))) for i in range(2)]
    assert counts == [2, 2]              # host shares of 8 and 2 records, host batch 1


def test_tfds_folder_in_the_writers_layout(tmp_path):
    """The writer's output folder (train00000of00003.tfrecord ... + its TFDS metadata) is
    recognised as TFDS, split per host and read (records of 5, 4, 3)."""
    pytest.importorskip('tensorflow_datasets')
    records = pytest.importorskip('data_pipeline.mreserve_records')
    from data_pipeline import shards
    from data_pipeline.mreserve_synthetic import make_record
    rng = np.random.default_rng(9)
    lengths = [5, 4, 3]
    for i, n in enumerate(lengths):
        with tf.io.TFRecordWriter(str(tmp_path / shards.shard_filename('train', i, 3))) as w:
            for _ in range(n):
                w.write(make_record(rng, (64, 96)))
    shards.write_tfds_metadata(str(tmp_path), records.tfds_features(), {'train': lengths},
                               records.DATASET_NAME, 'test')
    sources = [reader.RecordSource(str(tmp_path), i, 2) for i in range(2)]
    assert [s.count() for s in sources] == [6, 6]
    for s in sources:
        n = int(s.dataset(None, ordered=True).reduce(np.int64(0), lambda n, _: n + 1))
        assert n == 6
    config = make_config(TINY, (4, 6), str(tmp_path), batch=4)
    assert next(reader.train_batches(config, 0, 1, 2))['images'].shape == (2, 96, 768)
