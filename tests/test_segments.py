"""data_pipeline.segments: zero-shot segments of real and demo videos."""
import numpy as np
import pytest

from data_pipeline import demo_corpus, media, segments
from data_pipeline.transcripts import Word, parse_transcript, words_to_json


def test_segment_windows():
    assert segments.segment_windows(14.0) == [(0.0, 5.0), (5.0, 10.0), (10.0, 15.0)]
    assert segments.segment_windows(5.5) == [(0.0, 5.0)]
    assert segments.segment_windows(0.5) == [(0.0, 5.0)]


def test_cockatoo_segments(media_dir):
    words = [Word('early', 1.0, 1.5), Word('late', 9.9, 10.3)]
    segs = segments.video_to_segments(media_dir / 'cockatoo.mp4', words=words)
    assert [(s['start_time'], s['end_time']) for s in segs] == [(0, 5), (5, 10), (10, 15)]
    assert [s['text'] for s in segs] == ['early', '', 'late']
    for s in segs:
        assert s['frame'].shape == (720, 1280, 3)
        assert s['spectrogram'].shape == (3, 60, 65) and (s['spectrogram'][..., 64] == 1).all()
    with pytest.raises(media.MediaError, match='conversation.wav: no video stream'):
        segments.video_to_segments(media_dir / 'conversation.wav')


def test_windows_are_centre_padded(tmp_path):
    path = tmp_path / 'v.mp4'
    info = demo_corpus.make_video(str(path), seed=1, index=0, min_seconds=8, max_seconds=9)
    scene = info['scenes'][0]
    segs = segments.video_to_segments(path, windows=[(1.0, 3.0)])
    spec = segs[0]['spectrogram']
    # 2 s of tone in the middle of 5 s of zeros: silent (0) edges, loud centre
    assert spec[0, :10, :64].max() < 0.05 and spec[1, :, :64].max() > 1.0
    rgb = demo_corpus.COLOURS[scene['colour']][0]
    assert (np.abs(segs[0]['frame'].reshape(-1, 3).astype(int) - rgb).max(axis=1) < 40).any()


def test_demo_segments_name_the_scene(tmp_path):
    path = tmp_path / 'v.mp4'
    info = demo_corpus.make_video(str(path), seed=3, index=0, min_seconds=10, max_seconds=12)
    (tmp_path / 'v.json').write_text(words_to_json(info['words']))
    segs = segments.video_to_segments(path, words=parse_transcript(tmp_path / 'v.json'))
    assert len(segs) >= 2 and all(s['text'] for s in segs)
    for s in segs:   # the scene shown at the midpoint is named in the segment's words
        mid = (s['start_time'] + s['end_time']) / 2
        scene = next(sc for sc in info['scenes'] if sc['start'] <= mid < sc['end'])
        if scene['end'] - scene['start'] > 4.5 and scene['start'] <= s['start_time'] + 1:
            assert scene['colour'] in s['text'].split(), (scene, s['text'])
