"""data_pipeline.demo_corpus: deterministic, decodable, and frames/sound/words agree."""
import json

import numpy as np
import pytest

from data_pipeline import demo_corpus as demo
from data_pipeline import media
from data_pipeline.spectrogram import take_window
from data_pipeline.transcripts import parse_transcript

SMALL = dict(min_seconds=9.0, max_seconds=13.0)


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp('demo_a')
    manifest = demo.build_corpus(str(out), num_videos=4, seed=7, val_fraction=0.25, workers=2,
                                 **SMALL)
    return out, manifest


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob('*')) if p.is_file()}


def test_layout_and_split(corpus):
    out, manifest = corpus
    assert [e['id'] for e in manifest['train']] == ['demo_00000', 'demo_00001', 'demo_00002']
    assert [e['id'] for e in manifest['val']] == ['demo_00003']
    for split in ('train', 'val'):
        lines = (out / f'{split}.jsonl').read_text().splitlines()
        assert [json.loads(line)['id'] for line in lines] == [e['id'] for e in manifest[split]]
    entry = manifest['val'][0]
    assert entry['video'] == 'val/demo_00003.mp4' and (out / entry['vtt']).is_file()
    assert len((out / 'random_text.txt').read_text().split()) > 10000
    lines = (out / 'transcripts.txt').read_text().splitlines()
    assert len(lines) == 3 and all(len(line.split()) > 10 for line in lines)


def test_same_seed_same_bytes(corpus, tmp_path):
    out, _ = corpus
    demo.build_corpus(str(tmp_path), num_videos=4, seed=7, val_fraction=0.25, workers=1, **SMALL)
    assert _files(tmp_path) == _files(out)                 # also independent of worker count
    other = tmp_path / 'other'
    demo.build_corpus(str(other), num_videos=1, seed=8, workers=1, **SMALL)
    assert (other / 'train/demo_00000.mp4').read_bytes() != \
        (out / 'train/demo_00000.mp4').read_bytes()


def test_videos_decode_and_modalities_agree(corpus):
    out, manifest = corpus
    for entry in manifest['train'] + manifest['val']:
        path = out / entry['video']
        info = media.probe(path)
        assert (info.width, info.height, info.fps) == (192, 128, 10.0)
        assert info.audio_codec == 'aac' and info.sample_rate == 22050
        assert info.duration == pytest.approx(entry['duration'], abs=0.2)
        scenes = entry['scenes']
        mids = [(s['start'] + s['end']) / 2 for s in scenes]
        frames = media.extract_frames(path, mids)
        wav = media.load_audio(path)
        words = parse_transcript(out / entry['transcript'])
        assert [w.word for w in parse_transcript(out / entry['vtt'])] == [w.word for w in words]
        for scene, mid, frame in zip(scenes, mids, frames):
            # the shape's centre at mid-scene has the scene's colour
            (x0, y0), (x1, y1) = scene['path']
            cx, cy = int((x0 + x1) / 2 * 192), int((y0 + y1) / 2 * 128)
            rgb, freq = demo.COLOURS[scene['colour']]
            assert np.abs(frame[cy, cx].astype(int) - rgb).max() < 40, scene
            # the tone at mid-scene has the colour's pitch
            x = take_window(wav, mid - 0.5, 22050)
            spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
            assert abs(np.argmax(spectrum) - freq) < 3, scene
            # the words spoken during the scene name its colour and shape
            said = {w.word for w in words if scene['start'] <= w.start < scene['end']}
            if len(said) >= 3:
                assert {scene['colour'], scene['shape']} <= said, (scene, said)
            assert all(w.end <= scene['end'] for w in words
                       if scene['start'] <= w.start < scene['end'])


def test_chunk_scenes_name_colour_once(tmp_path):
    """scene_seconds=5, name_once (the MERLOT Reserve main job): whole 5 s scenes, and each
    scene's words name its colour exactly once and its shape never."""
    for index in range(3):
        info = demo.make_video(str(tmp_path / f'{index}.mp4'), seed=2, index=index, width=64,
                               height=48, min_seconds=9.0, max_seconds=21.0, scene_seconds=5.0,
                               name_once=True)
        assert info['duration'] % 5.0 == 0
        for scene in info['scenes']:
            assert scene['end'] - scene['start'] == pytest.approx(5.0)
            said = [w.word for w in info['words'] if scene['start'] <= w.start < scene['end']]
            assert len(said) >= 8                    # enough words for playback speed 1
            assert said.count(scene['colour']) == 1, said
            assert not set(said) & set(demo.SHAPES), said
