"""data_pipeline.media on the real files in ../shared/media (skipped when absent)."""
import av
import numpy as np
import pytest

from data_pipeline import media


def _all_frames(path):
    """(times, frames) of every frame, decoded sequentially without seeking."""
    with av.open(str(path)) as c:
        frames = [(float(f.pts * f.time_base), f.to_ndarray(format='rgb24'))
                  for f in c.decode(video=0)]
    return np.array([t for t, _ in frames]), [f for _, f in frames]


@pytest.mark.parametrize('ext', ['mp4', 'webm', 'ogv'])
def test_probe_lego(media_dir, ext):
    info = media.probe(media_dir / f'lego.{ext}')
    assert info.has_video and info.has_audio
    assert (info.width, info.height) == (560, 320)
    assert info.fps == pytest.approx(30.0)
    assert info.duration == pytest.approx(5.55, abs=0.2)
    assert info.sample_rate == 48000 and info.channels == 1


def test_lego_formats_agree(media_dir):
    times = [0.5, 2.0, 4.0, 5.3]
    frames = {ext: media.extract_frames(media_dir / f'lego.{ext}', times).astype(np.float32)
              for ext in ['mp4', 'webm', 'ogv']}
    durations = [media.probe(media_dir / f'lego.{ext}').duration for ext in frames]
    assert max(durations) - min(durations) <= 0.2
    for ext, f in frames.items():
        assert f.shape == (4, 320, 560, 3), ext
        # the same picture through H.264, VP8 and Theora: a few grey levels apart on average
        assert np.abs(f - frames['mp4']).mean(axis=(1, 2, 3)).max() < 6.0, ext
    audio = [media.load_audio(media_dir / f'lego.{ext}') for ext in frames]
    assert max(len(a) for a in audio) - min(len(a) for a in audio) <= 0.2 * 22050


@pytest.mark.parametrize('ext', ['mp4', 'webm', 'ogv'])
def test_extract_frames_is_nearest_frame(media_dir, ext):
    path = media_dir / f'lego.{ext}'
    all_times, all_frames = _all_frames(path)
    times = [3.01, 0.0, 1.49, 1.52, 4.9, 2.2, 99.0, 0.016]      # unsorted, repeats, past the end
    got = media.extract_frames(path, times)
    for t, frame in zip(times, got):
        nearest = int(np.argmin(np.abs(all_times - t)))
        np.testing.assert_array_equal(frame, all_frames[nearest], err_msg=f't={t}')


def test_cockatoo_frames_and_audio(media_dir):
    path = media_dir / 'cockatoo.mp4'
    info = media.probe(path)
    assert (info.width, info.height, info.fps) == (1280, 720, 20.0)
    assert info.duration == pytest.approx(14.0, abs=0.1)
    frames = media.extract_frames(path, [1.0, 7.0, 13.0])
    assert frames.shape == (3, 720, 1280, 3) and frames.dtype == np.uint8
    assert frames.std() > 10                             # real pictures, not a blank decode
    assert media.detect_black_bars(frames) == (0, 720, 0, 1280)
    jpegs = media.frames_for_storage(path, [1.0, 7.0])
    assert [media.decode_jpeg(j).shape for j in jpegs] == [(288, 512, 3)] * 2
    wav = media.load_audio(path)
    assert wav.dtype == np.float32
    assert abs(len(wav) - 14.0 * 22050) < 0.2 * 22050
    assert np.isfinite(wav).all()                         # its MP3 track is digital silence
    assert np.abs(wav).max() in (0.0, 1.0)


def test_audio_resampling(media_dir):
    wav = media.load_audio(media_dir / 'realshort.mp4', sample_rate=16000)
    assert abs(len(wav) - 1.17 * 16000) < 0.05 * 16000
    raw = media.load_audio(media_dir / 'conversation.wav', sample_rate=16000, normalize=False)
    with av.open(str(media_dir / 'conversation.wav')) as c:
        direct = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
    np.testing.assert_allclose(raw, direct.astype(np.float32) / 32768, atol=1e-6)


def test_audio_only_file(media_dir):
    path = media_dir / 'conversation.wav'
    info = media.probe(path)
    assert info.has_audio and not info.has_video and info.width is None
    assert info.duration == pytest.approx(30.0, abs=0.05)
    with pytest.raises(media.MediaError, match='conversation.wav: no video stream'):
        media.extract_frames(path, [1.0])
    wav = media.load_audio(path)
    assert len(wav) == 30 * 22050
    assert np.abs(wav).max() == pytest.approx(1.0)


def test_truncated_file_raises(media_dir):
    path = media_dir / 'truncated.mkv'
    for call in (lambda: media.probe(path), lambda: media.extract_frames(path, [1.0]),
                 lambda: media.load_audio(path)):
        with pytest.raises(media.MediaError, match='truncated.mkv') as err:
            call()
        assert err.value.path == str(path) and 'truncated' in err.value.reason


def test_unreadable_files(tmp_path):
    text = tmp_path / 'notes.mp4'
    text.write_text('not a video\n' * 10)
    with pytest.raises(media.MediaError, match='notes.mp4: cannot open'):
        media.probe(text)
    with pytest.raises(media.MediaError, match='missing.mp4: no such file'):
        media.extract_frames(tmp_path / 'missing.mp4', [0.0])
    cut = tmp_path / 'cut.mp4'
    cut.write_bytes(b'\x00\x00\x00\x18ftypisom' + bytes(12) + b'\x00\x10\x00\x00mdat' + bytes(64))
    with pytest.raises(media.MediaError, match='cut.mp4: truncated'):
        media.probe(cut)


def test_black_bars_synthetic():
    frames = np.full((2, 100, 160, 3), 120, np.uint8)
    frames[:, :12] = frames[:, 88:] = 16                    # letterbox, limited-range black
    frames[1, 50, 0] = 40                                   # one bright pixel keeps column 0
    frames[:, :, 150:] = 0
    assert media.detect_black_bars(frames) == (12, 88, 0, 150)
    assert media.trim_black_bars(frames).shape == (2, 76, 150, 3)
    black = np.zeros((1, 100, 200, 3), np.uint8)
    assert media.detect_black_bars(black) == (20, 80, 40, 160)   # at most 20% per side


def test_black_bars_through_h264(media_dir, tmp_path):
    """Letterbox lego frames, encode them with H.264, decode and detect the bars again."""
    src = media.extract_frames(media_dir / 'lego.mp4', [0.5, 2.5, 4.5])
    boxed = np.pad(src, ((0, 0), (40, 40), (0, 0), (0, 0)))
    path = tmp_path / 'boxed.mp4'
    with av.open(str(path), 'w') as out:
        stream = out.add_stream('libx264', rate=1, options={'crf': '30'})
        stream.width, stream.height, stream.pix_fmt = 560, 400, 'yuv420p'
        for i, img in enumerate(boxed):
            frame = av.VideoFrame.from_ndarray(img, format='rgb24')
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    decoded = media.extract_frames(path, [0.0, 1.0, 2.0])
    top, bottom, left, right = media.detect_black_bars(decoded)
    assert abs(top - 40) <= 2 and abs(bottom - 360) <= 2 and (left, right) == (0, 560)


def test_storage_size_and_resize():
    assert media.storage_size(720, 1280) == (288, 512)
    assert media.storage_size(320, 560) == (288, 504)
    assert media.storage_size(1280, 720) == (512, 288)
    assert media.storage_size(100, 400) == (128, 512)      # very wide: the long side caps
    img = np.zeros((180, 320, 3), np.uint8)
    img[:, 160:] = 200
    out = media.resize_for_storage(img)
    assert out.shape == (288, 512, 3) and out.dtype == np.uint8
    assert out[:, :240].max() <= 10 and out[:, 272:].min() >= 190
    decoded = media.decode_jpeg(media.encode_jpeg(out))
    assert decoded.shape == out.shape
    assert np.abs(decoded.astype(int) - out).mean() < 3


def test_stereo_downmix(tmp_path):
    """Stereo 44.1 kHz -> mono 22050 Hz through libswresample, as `ffmpeg -ac 1 -ar 22050`."""
    sr = 44100
    t = np.arange(2 * sr) / sr
    left = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    path = tmp_path / 'stereo.wav'
    with av.open(str(path), 'w') as out:
        stream = out.add_stream('pcm_s16le', rate=sr, layout='stereo')
        frame = av.AudioFrame.from_ndarray(np.stack([left, np.zeros_like(left)]),
                                           format='fltp', layout='stereo')
        frame.sample_rate, frame.pts = sr, 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    assert media.probe(path).channels == 2
    mono = media.load_audio(path, normalize=False)
    assert len(mono) == 2 * 22050
    assert np.abs(mono).max() == pytest.approx(0.5 / np.sqrt(2), rel=0.01)  # swr's -3 dB mix
    spectrum = np.abs(np.fft.rfft(mono))
    assert np.argmax(spectrum) == pytest.approx(440 * 2, abs=1)              # 2 s of signal
    assert np.abs(media.load_audio(path)).max() == pytest.approx(1.0)


def test_max_short_side_and_required_streams(media_dir):
    small = media.extract_frames(media_dir / 'cockatoo.mp4', [3.0, 6.0], max_short_side=360)
    full = media.extract_frames(media_dir / 'cockatoo.mp4', [3.0, 6.0])
    assert small.shape == (2, 360, 640, 3)
    shrunk = full.reshape(2, 360, 2, 640, 2, 3).mean(axis=(2, 4))
    assert np.abs(small - shrunk).mean() < 3                 # area filter = 2x2 mean
    assert media.extract_frames(media_dir / 'lego.mp4', [1.0], max_short_side=576).shape == \
        (1, 320, 560, 3)                                      # never enlarged
    assert media.probe(media_dir / 'lego.webm', require_video=True, require_audio=True).has_audio
    with pytest.raises(media.MediaError, match='conversation.wav: no video stream'):
        media.probe(media_dir / 'conversation.wav', require_video=True)


@pytest.mark.parametrize('ext, what', [('webm', 'Matroska segment'), ('mp4', "box b'mdat'")])
def test_cut_downloads_raise(media_dir, tmp_path, ext, what):
    """Half of a real file: FFmpeg would decode what is there; the header check refuses it."""
    data = (media_dir / f'lego.{ext}').read_bytes()
    path = tmp_path / f'half.{ext}'
    path.write_bytes(data[:len(data) // 2])
    for call in (media.probe, media.load_audio, lambda p: media.extract_frames(p, [0.5])):
        with pytest.raises(media.MediaError, match=f'half.{ext}: truncated: .*{what}'):
            call(path)
    (tmp_path / f'tiny.{ext}').write_bytes(data[:6])
    with pytest.raises(media.MediaError, match=f'tiny.{ext}: (corrupt EBML header|cannot open)'):
        media.probe(tmp_path / f'tiny.{ext}')


def test_display_rotation_is_applied(tmp_path):
    """A portrait phone video stored landscape with a 90-degree display matrix."""
    coded = np.zeros((64, 96, 3), np.uint8)
    coded[:16, :16] = 255                                    # marker at the coded top-left
    path = tmp_path / 'rotated.mp4'
    with av.open(str(path), 'w') as out:
        stream = out.add_stream('libx264', rate=1)
        stream.width, stream.height, stream.pix_fmt = 96, 64, 'yuv420p'
        stream.set_display_rotation(90)                      # counterclockwise
        frame = av.VideoFrame.from_ndarray(coded, format='rgb24')
        frame.pts = 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    upright = media.extract_frames(path, [0.0])[0]
    assert upright.shape == (96, 64, 3)
    assert upright[-16:, :16].mean() > 200 and upright[:16, :16].mean() < 50   # now bottom-left
