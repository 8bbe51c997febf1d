"""data_pipeline.spectrogram: mel scale, filterbank properties, STFT framing, JPEG round trip.

librosa is not available, so the filterbank is checked against properties worked out by hand
from Slaney's definition (linear 200/3 Hz per mel below 1 kHz, log step ln(6.4)/27 above).
"""
import numpy as np
import pytest

from data_pipeline import media
from data_pipeline import spectrogram as S

SR, NFFT = 22050, 1536


def test_mel_scale_hand_values():
    np.testing.assert_allclose(S.hz_to_mel([0.0, 200 / 3, 500.0, 1000.0, 6400.0]),
                               [0.0, 1.0, 7.5, 15.0, 42.0], atol=1e-9)
    f = np.array([20.0, 440.0, 999.0, 1000.0, 1001.0, 5000.0, 11025.0])
    np.testing.assert_allclose(S.mel_to_hz(S.hz_to_mel(f)), f, rtol=1e-12)
    assert np.all(np.diff(S.hz_to_mel(np.linspace(0, 11025, 1000))) > 0)


def test_filterbank_properties():
    fb = S.mel_filterbank()
    assert fb.shape == (64, 769) and fb.dtype == np.float32 and (fb >= 0).all()
    freqs = np.linspace(0, SR / 2, 769)
    edges = S.mel_to_hz(np.linspace(S.hz_to_mel(20), S.hz_to_mel(11025), 66))
    # edges equally spaced in mel: 0.3 mel (20 Hz) to 49.91 mel (11025 Hz) in 65 steps
    assert S.hz_to_mel(11025) == pytest.approx(15 + np.log(11.025) / (np.log(6.4) / 27))
    for i in range(64):
        support = freqs[fb[i] > 0]
        # a filter is non-zero strictly between its outer edges ...
        assert support.min() > edges[i] and support.max() < edges[i + 2] + 1e-6
        # ... and peaks at the FFT bin nearest its centre edge (ties: either neighbour)
        peak = freqs[np.argmax(fb[i])]
        assert abs(peak - edges[i + 1]) <= SR / NFFT / 2 + 1e-6, i
        # Slaney normalisation: height 2 / (f[i+2] - f[i]), i.e. unit area over Hz (sampled
        # on 14.4 Hz bins, so the narrow low filters are off by up to 2%)
        assert fb[i].max() <= 2 / (edges[i + 2] - edges[i]) * (1 + 1e-6)
        area = fb[i].sum() * SR / NFFT
        assert area == pytest.approx(1.0, abs=0.02 if i < 20 else 0.005), i
    assert fb[:, freqs < 20].sum() == 0                  # nothing below fmin
    assert fb[-1, -1] == 0 and fb[-1, -2] > 0            # the top filter falls to 0 at Nyquist
    # the linear part: centres 200/3 * 0.763 Hz apart below 1 kHz
    centres = edges[1:-1]
    low = np.diff(centres[centres < 1000])
    np.testing.assert_allclose(low, low[0], rtol=1e-9)
    assert low[0] == pytest.approx((S.hz_to_mel(11025) - 0.3) / 65 * 200 / 3, rel=1e-9)


@pytest.mark.parametrize('speed', [1, 2, 3])
def test_five_seconds_give_188_frames(speed):
    n = S.segment_num_samples(speed)
    assert n == 5 * 22050 * speed
    rng = np.random.default_rng(speed)
    log_mel = S.log_mel_spectrogram(rng.uniform(-1, 1, n), speed)
    assert log_mel.shape == (64, 188) and log_mel.dtype == np.float32


def test_stft_amplitude_and_centring():
    n_fft, hop, k = 1536, 588, 100
    t = np.arange(22050)
    sine = 0.5 * np.cos(2 * np.pi * k * t / n_fft)          # exactly on FFT bin k
    power = S.power_stft(sine, n_fft, hop)
    assert power.shape == (769, 1 + 22050 // hop)
    # periodic Hann sums to N/2, so the bin holds (A/2 * N/2)^2
    assert power[k, 10] == pytest.approx((0.5 / 2 * n_fft / 2) ** 2, rel=1e-9)
    assert power[k + 3, 10] < 1e-12 * power[k, 10]
    # centred: frame j is centred on sample j*hop; reflect padding mirrors the start
    zero_padded = S.power_stft(sine, n_fft, hop, pad_mode='constant')
    np.testing.assert_allclose(zero_padded[:, 2:-2], power[:, 2:-2], rtol=1e-9, atol=1e-6)
    assert not np.allclose(zero_padded[:, 0], power[:, 0])


def test_tone_lights_up_its_mel_band():
    t = np.arange(S.segment_num_samples()) / SR
    log_mel = S.log_mel_spectrogram(np.sin(2 * np.pi * 1000 * t))
    centres = S.mel_to_hz(np.linspace(S.hz_to_mel(20), S.hz_to_mel(11025), 66))[1:-1]
    band = int(np.argmax(log_mel[:, 94]))
    assert abs(centres[band] - 1000) <= np.diff(centres)[band]
    silence = S.log_mel_spectrogram(np.zeros(S.segment_num_samples()))
    assert np.all(silence == 0)                         # log(0 + 0.1) - log(0.1)


def test_quantize_magic():
    log_mel = np.linspace(0, 10, 64 * 188).reshape(64, 188)
    q, magic = S.quantize(log_mel)
    assert magic == pytest.approx(255 / np.percentile(log_mel, 99))
    assert q.dtype == np.uint8 and q.max() == 255
    assert q[0, 1] == int(log_mel[0, 1] * magic)         # truncation, not rounding
    _, magic_quiet = S.quantize(log_mel * 0.05)           # p99 < 1: magic stays 255
    assert magic_quiet == 255


def test_jpeg_round_trip_on_speech(media_dir):
    wav = media.load_audio(media_dir / 'conversation.wav')
    for start, speed in [(6.5, 1), (12.0, 1), (20.0, 2)]:
        window = S.take_window(wav, start, S.segment_num_samples(speed))
        log_mel = S.log_mel_spectrogram(window, speed)
        data, magic = S.encode_spectrogram(log_mel)
        assert media.decode_jpeg(data).shape == (64, 188, 1)
        back = S.decode_spectrogram(data, magic)
        assert back.shape == (188, 64) and back.dtype == np.float32
        unsaturated = (log_mel * magic < 255).T
        err_levels = np.abs(back - log_mel.T)[unsaturated] * magic
        # truncation to uint8 costs < 1 level, JPEG q95 about one more on average
        assert err_levels.mean() < 2.0 and np.percentile(err_levels, 99) < 12
        assert (back <= 255 / magic + 1e-4).all()


def test_make_spectrogram_windows():
    rng = np.random.default_rng(0)
    for speed in (1, 3):
        wav = rng.uniform(-1, 1, S.segment_num_samples(speed)).astype(np.float32)
        clips = S.make_spectrogram(wav, speed)
        assert clips.shape == (3, 60, 65) and clips.dtype == np.float32
        assert (clips[..., 64] == speed).all()
        full = S.log_mel_spectrogram(wav, speed).T
        for i, start in enumerate([2, 64, 126]):
            np.testing.assert_array_equal(clips[i, :, :64], full[start:start + 60])
    with pytest.raises(ValueError, match='do not fit'):
        S.split_subsegments(np.zeros((150, 64)), 1)


def test_windows_and_times():
    wav = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(S.take_window(wav, 8 / SR, 4), [8, 9, 0, 0])
    np.testing.assert_array_equal(S.pad_center(wav[:2], 6), [0, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(S.pad_center(wav, 4), [3, 4, 5, 6])
    start, end = S.subsegment_times([2, 64])
    assert start[0] == pytest.approx(2 * 588 / 22050 - 1536 / 22050 / 2)
    assert end[1] - start[1] == pytest.approx(60 * 588 / 22050 + 1536 / 22050)
