"""MERLOT Reserve record writer (data_pipeline.mreserve_records) on ../shared/media.

One small corpus is built per module: four "talking" videos (cockatoo.mp4 frames under
conversation.wav, transcript conversation.stm), the lego clip as mp4/webm/ogv with a JSON
transcript, a video without audio, realshort.mp4 without a transcript and truncated.mkv.
"""
import json
import os
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf

from data_pipeline import mreserve_records as mr
from data_pipeline import shards
from data_pipeline.media import decode_jpeg
from data_pipeline.mux import make_talking_video
from data_pipeline.spectrogram import decode_spectrogram
from data_pipeline.transcripts import Word

EXPECTED_CHUNK_KEYS = {  # spec mreserve §3.2: key -> (dtype, list?)
    'image/encoded': (tf.string, False), 'image/height': (tf.int64, False),
    'image/width': (tf.int64, False), 'image/key/sha256': (tf.string, False),
    'image/format': (tf.string, False), 'spectrogram/encoded': (tf.string, False),
    'spectrogram/height': (tf.int64, False), 'spectrogram/width': (tf.int64, False),
    'spectrogram/magic_number': (tf.float32, False),
    'spectrogram/key/sha256': (tf.string, False), 'spectrogram/format': (tf.string, False),
    'youtube_id': (tf.string, False), 'video_src_idx': (tf.int64, False),
    'video_src_index': (tf.int64, False), 'title': (tf.int64, True),
    'description': (tf.int64, True), 'tags': (tf.int64, True), 'meta': (tf.string, False),
    'playback_speed': (tf.int64, False), 'start_time': (tf.float32, False),
    'end_time': (tf.float32, False), 'tok_ids': (tf.int64, True),
    'tok_start_times': (tf.float32, True), 'tok_end_times': (tf.float32, True),
    'random_text': (tf.int64, True),
}
LEGO_WORDS = 'this is a small lego car driving on the table and it goes fast'.split()


def test_schema_lists_every_key_and_type():
    assert len(mr.FEATURES) == 16 * len(EXPECTED_CHUNK_KEYS)
    for i in range(16):
        for key, (dtype, is_list) in EXPECTED_CHUNK_KEYS.items():
            spec = mr.FEATURES[f'c{i:02d}/{key}']
            if is_list:
                assert isinstance(spec, tf.io.VarLenFeature) and spec.dtype == dtype, key
            else:
                assert isinstance(spec, tf.io.FixedLenFeature), key
                assert spec.dtype == dtype and tuple(spec.shape) == (), key


def _words(times):
    return [Word(f'w{i}', t, t + 0.2) for i, t in enumerate(times)]


def test_plan_chunks_speed_rules():
    rng = lambda: np.random.default_rng(0)
    dense = _words(np.arange(3.0, 60.0, 0.25))          # 4 words/s: always >= 8 per 5 s
    plans = mr.plan_chunks(dense, 62.0, rng())
    assert {p.speed for p in plans} == {1}
    assert 0.5 <= plans[0].start <= 3.0 and all(p.start < 61.0 for p in plans)
    assert plans == mr.plan_chunks(dense, 62.0, rng())    # seeded: reproducible
    used = [i for p in plans for i in p.word_indices]
    assert len(used) == len(set(used))
    sparse = _words(np.arange(1.0, 200.0, 4.0))          # ~1 word per 4 s: speeds up
    plans = mr.plan_chunks(sparse, 200.0, rng())
    assert {p.speed for p in plans} > {1} and max(p.speed for p in plans) == 3
    for a, b in zip(plans, plans[1:]):
        assert b.start == pytest.approx(a.end) and a.end - a.start == 5 * a.speed
    assert plans[-1].start < 199.0 <= plans[-1].end and plans[-2].end < 199.0
    silent = mr.plan_chunks([], 23.0, rng())             # no words: 5 s windows from 0
    assert [p.start for p in silent] == [0, 5, 10, 15, 20] and {p.speed for p in silent} == {1}


def test_group_chunks_makes_full_records():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 40, size=300)
    videos = [[(v, k) for k in range(n)] for v, n in enumerate(lengths)]
    records, dropped = mr.group_chunks(videos, np.random.default_rng(1))
    flat = [c for r in records for piece in r for c in piece]
    assert all(sum(len(p) for p in r) == 16 for r in records)
    assert len(flat) == len(set(flat)) == sum(lengths) - dropped and 0 <= dropped < 16
    for r in records:
        assert len({piece[0][0] for piece in r}) == len(r)         # one piece per video
        for piece in r:                                           # consecutive chunks
            assert [k for _, k in piece] == list(range(piece[0][1], piece[0][1] + len(piece)))


def test_write_shard_is_atomic(tmp_path):
    def records():
        yield b'one'
        raise RuntimeError('disk full')
    with pytest.raises(RuntimeError):
        shards.write_shard(str(tmp_path), 'train', 0, 2, records(), {})
    assert os.listdir(tmp_path) == []
    assert not shards.is_finished(str(tmp_path), 'train', 0, 2)
    info = shards.write_shard(str(tmp_path), 'train', 1, 2, [b'a', b'b'], {'x': 1})
    assert info['num_records'] == 2 and shards.is_finished(str(tmp_path), 'train', 1, 2)
    assert sorted(os.listdir(tmp_path)) == ['index', 'train00001of00002.tfrecord']


def test_stale_temporaries_are_removed(tmp_path):
    dead = tmp_path / '.train00000of00001.tfrecord.999999999.tmp'
    alive = tmp_path / f'.train00000of00001.tfrecord.{os.getpid()}.tmp'
    dead.write_bytes(b'half')
    alive.write_bytes(b'half')
    assert shards.remove_stale_temporaries(str(tmp_path)) == [dead.name]
    assert alive.exists() and not dead.exists()


def test_black_bars_are_the_same_in_one_or_two_passes(media_dir):
    times = [0.3, 1.1, 2.0, 2.9, 3.7, 4.4, 5.2]
    path = str(media_dir / 'lego.webm')
    one = list(mr.stored_frames(path, times))
    two = list(mr.stored_frames(path, times, batch=3))
    assert len(one) == len(two) == len(times)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)


@pytest.fixture(scope='module')
def corpus(tmp_path_factory, media_dir, shared_dir):
    tokenizer = shared_dir / 'tokenizers' / 'mreserve_lowercase_bpe.json'
    if not tokenizer.is_file():
        pytest.skip('../shared/tokenizers/mreserve_lowercase_bpe.json is not present')
    root = tmp_path_factory.mktemp('mreserve_corpus')
    videos, transcripts = root / 'videos', root / 'transcripts'
    videos.mkdir()
    transcripts.mkdir()
    make_talking_video(videos / 'talk0.mp4', media_dir / 'cockatoo.mp4',
                       media_dir / 'conversation.wav')
    make_talking_video(videos / 'silent.mp4', media_dir / 'cockatoo.mp4',
                       media_dir / 'conversation.wav', audio=False, seconds=6.0)
    for i in range(4):
        if i:
            shutil.copy(videos / 'talk0.mp4', videos / f'talk{i}.mp4')
        shutil.copy(media_dir / 'conversation.stm', transcripts / f'talk{i}.stm')
    for name in ('lego.mp4', 'lego.webm', 'lego.ogv', 'realshort.mp4', 'truncated.mkv'):
        os.symlink(media_dir / name, videos / name)
    lego = [{'word': w, 'start': 0.4 + 0.35 * i, 'end': 0.7 + 0.35 * i}
            for i, w in enumerate(LEGO_WORDS)]
    for stem in ('lego', 'silent'):
        (transcripts / f'{stem}.json').write_text(json.dumps(lego))
    (root / 'text.txt').write_text('The first document. It has two sentences.\n\n'
                                   'A second one, about nothing.\n')
    return SimpleNamespace(root=root, videos=videos, transcripts=transcripts,
                           tokenizer=f'bpe:{tokenizer}', text=root / 'text.txt')


def _argv(corpus, out, *extra):
    return ['--videos', str(corpus.videos), '--transcripts', str(corpus.transcripts),
            '--out', str(out), '--tokenizer', corpus.tokenizer,
            '--text-corpus', str(corpus.text), '--seed', '3', *extra]


@pytest.fixture(scope='module')
def first_run(corpus):
    out = corpus.root / 'out'
    summary = mr.main(_argv(corpus, out, '--num-shards', '1', '--workers', '1'))
    return out, summary


def test_summary_reports_done_and_skipped(first_run):
    out, summary = first_run
    assert summary == json.loads((out / 'summary.json').read_text())
    reasons = {os.path.basename(p): r for p, r in summary['skipped'].items()}
    assert set(reasons) == {'truncated.mkv', 'silent.mp4', 'realshort.mp4'}
    assert 'truncated' in reasons['truncated.mkv']
    assert reasons['silent.mp4'] == 'no audio'
    assert reasons['realshort.mp4'] == 'no transcript'
    assert summary['videos_done'] == 7 and summary['videos_without_transcript'] == []
    files = {os.path.basename(p): v for p, v in summary['files'].items()}
    assert {files[f'talk{i}.mp4']['words'] for i in range(4)} == {81}
    assert summary['chunks'] == summary['chunks_in_records'] + summary['chunks_dropped']
    assert summary['records'] == summary['chunks_in_records'] // 16 >= 1
    assert summary['video_seconds_per_cpu_second'] > 0


def test_same_clip_in_three_containers(first_run, corpus):
    _, summary = first_run
    files = {os.path.basename(p): v for p, v in summary['files'].items()}
    assert files['lego.mp4']['chunks'] == files['lego.webm']['chunks'] \
        == files['lego.ogv']['chunks'] >= 1
    tokenizer = mr.load_tokenizer(corpus.tokenizer)
    outcomes = [mr.process_video(mr.VideoJob(str(corpus.videos / f'lego.{ext}'), 'lego',
                                             str(corpus.transcripts / 'lego.json'), None, 3),
                                 tokenizer) for ext in ('mp4', 'webm', 'ogv')]
    assert {len(o['chunks']) for o in outcomes} == {files['lego.mp4']['chunks']}
    for key in ('start_time', 'playback_speed', 'tok_ids', 'image/height', 'image/width'):
        assert outcomes[0]['chunks'][0][key] == outcomes[1]['chunks'][0][key] \
            == outcomes[2]['chunks'][0][key], key
    assert len(outcomes[0]['chunks'][0]['tok_ids']) >= len(LEGO_WORDS) - 2   # centres < end


def test_metadata_on_the_first_chunk(corpus, tmp_path):
    meta = {'title': 'Two friends on the phone', 'description': 'A call.',
            'tags': ['phone', 'chat'], 'view_count': 12, 'uploader': 'not kept'}
    (tmp_path / 'talk0.info.json').write_text(json.dumps(meta))
    found = mr.index_files([str(tmp_path)], ('.info.json', '.json'))
    tokenizer = mr.load_tokenizer(corpus.tokenizer)
    outcome = mr.process_video(mr.VideoJob(
        str(corpus.videos / 'talk0.mp4'), 'talk0', str(corpus.transcripts / 'talk0.stm'),
        found['talk0'], 0), tokenizer)
    first, second = outcome['chunks'][:2]
    assert first['title'] == tokenizer.encode(meta['title'])
    assert first['tags'] == tokenizer.encode('phone, chat')
    info = json.loads(first['meta'])
    assert info['view_count'] == 12 and 'uploader' not in info and info['num_words'] == 81
    assert second['title'] == second['tags'] == [] and second['meta'] == b''


def test_records_parse_with_the_schema(first_run):
    out, summary = first_run
    shard = out / 'train00000of00001.tfrecord'
    raw = list(tf.data.TFRecordDataset(str(shard)).as_numpy_iterator())
    assert len(raw) == summary['records']
    example = tf.io.parse_single_example(raw[0], mr.FEATURES)
    dense = {k: tf.sparse.to_dense(v).numpy() if isinstance(v, tf.SparseTensor) else v.numpy()
             for k, v in example.items()}
    src = [int(dense[f'c{i:02d}/video_src_idx']) for i in range(16)]
    assert src == [int(dense[f'c{i:02d}/video_src_index']) for i in range(16)]
    assert src == sorted(src) and src[0] == 0
    for i in range(16):
        c = lambda key, i=i: dense[f'c{i:02d}/{key}']
        image = decode_jpeg(c('image/encoded'))
        assert image.shape == (c('image/height'), c('image/width'), 3)
        assert min(image.shape[:2]) == 288 or max(image.shape[:2]) == 512
        assert c('image/format') == b'jpeg' and len(c('image/key/sha256')) == 64
        spec = decode_spectrogram(c('spectrogram/encoded'), c('spectrogram/magic_number'))
        assert spec.shape == (188, 64) and (c('spectrogram/height'), c('spectrogram/width')) \
            == (64, 188)
        assert c('playback_speed') in (1, 2, 3)
        assert c('end_time') - c('start_time') == pytest.approx(5 * c('playback_speed'))
        assert len(c('tok_ids')) == len(c('tok_start_times')) == len(c('tok_end_times')) > 0
        assert np.all(c('tok_start_times') <= c('tok_end_times'))
        assert c('youtube_id').decode().startswith('talk')
        assert len(c('random_text')) == (1536 if i < 2 else 0)
        first_of_video = i == 0 or src[i] != src[i - 1]
        if c('meta'):
            assert first_of_video and json.loads(c('meta'))['source'].endswith('.mp4')
    assert dense['c00/random_text'][0] == 1                      # START


def test_tfds_reads_the_output(first_run):
    import tensorflow_datasets as tfds
    out, summary = first_run
    builder = tfds.builder_from_directory(str(out))
    assert builder.info.splits['train'].num_examples == summary['records']
    examples = list(builder.as_dataset(split='train'))
    assert len(examples) == summary['records']
    assert examples[0]['c15']['spectrogram']['magic_number'].dtype == tf.float32


def test_rerun_skips_finished_shards(first_run, corpus):
    out, first = first_run
    shard = out / 'train00000of00001.tfrecord'
    before = (shard.stat().st_mtime_ns, shard.read_bytes())
    again = mr.main(_argv(corpus, out, '--num-shards', '1', '--workers', '1'))
    assert again['shards_written'] == 0 and again['shards_resumed'] == 1
    assert again['this_run']['videos_processed'] == 0
    assert (shard.stat().st_mtime_ns, shard.read_bytes()) == before
    assert again['records'] == first['records'] and again['skipped'] == first['skipped']


def test_two_workers_write_the_same_bytes(first_run, corpus):
    out, _ = first_run
    other = corpus.root / 'out_workers2'
    summary = mr.main(_argv(corpus, other, '--num-shards', '1', '--workers', '2'))
    assert summary['this_run']['workers'] == 2
    name = 'train00000of00001.tfrecord'
    assert (other / name).read_bytes() == (out / name).read_bytes()


def test_no_transcript_option(corpus):
    out = corpus.root / 'out_no_transcript'
    summary = mr.main(['--videos', str(corpus.videos / 'realshort.mp4'), '--out', str(out),
                       '--num-shards', '2', '--workers', '1', '--allow-no-transcript'])
    assert summary['videos_done'] == 1 and summary['videos_skipped'] == 0
    assert [os.path.basename(p) for p in summary['videos_without_transcript']] \
        == ['realshort.mp4']
    assert summary['records'] == 0 and summary['chunks_dropped'] == summary['chunks'] == 1
    outcome = mr.process_video(mr.VideoJob(str(corpus.videos / 'realshort.mp4'), 'realshort',
                                           None, None, 0, allow_no_transcript=True), None)
    chunk = outcome['chunks'][0]
    assert outcome['no_transcript'] and chunk['tok_ids'] == [] == chunk['tok_start_times']
    assert chunk['playback_speed'] == 1 and chunk['start_time'] == 0.0
