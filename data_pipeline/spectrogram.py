"""Log-mel spectrograms of MERLOT Reserve (spec mreserve §3.1.5, §3.3, §6.3) in numpy.

The original calls ``librosa.feature.melspectrogram(waveform, sr=22050, n_mels=64,
n_fft=1536*speed, hop_length=588*speed, fmin=20, fmax=11025)`` with librosa's defaults:
periodic Hann window, ``center=True``, power 2, Slaney mel scale and Slaney area
normalisation. It passes the waveform positionally, so it ran on librosa < 0.10, whose
``center`` padding is ``'reflect'`` (0.10 switched the default to zero padding); that is the
default here. librosa is not a dependency; this module reproduces those formulas.

Storage round trip: ``log(mel + 0.1) - log(0.1)`` is scaled by
``magic = 255 / max(p99, 1)``, truncated to uint8 and stored as a 64 (mels) x 188 (frames)
grayscale JPEG at quality 95; the reader decodes, divides by ``magic`` and transposes to
``[188, 64]``.
"""
from __future__ import annotations

import functools

import numpy as np

SAMPLE_RATE = 22050
N_MELS = 64
N_FFT = 1536            # times playback speed
HOP = 588               # times playback speed
FMIN, FMAX = 20.0, 11025.0
LOG_EPS = 0.1
SEGMENT_SECONDS = 5     # MEGA_WINDOW_SIZE
NUM_FRAMES = 188        # 1 + 5 * 22050 // 588 for every playback speed
SPEC_JPEG_QUALITY = 95  # PIL's default in the original pil_image_to_jpgstring
SUBSEG_LEN = 60         # frames per audio sub-segment
NUM_SUBSEGS = 3
ZERO_SHOT_GAP = 2       # windows [2:62], [64:124], [126:186]

# Slaney's "auditory toolbox" mel scale: linear below 1 kHz, logarithmic above.
_F_SP = 200.0 / 3.0
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP          # 15
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(freq):
    """Slaney mel of frequencies in Hz (librosa ``hz_to_mel(htk=False)``)."""
    freq = np.asarray(freq, dtype=np.float64)
    linear = freq / _F_SP
    log = _MIN_LOG_MEL + np.log(np.maximum(freq, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(freq >= _MIN_LOG_HZ, log, linear)


def mel_to_hz(mel):
    """Inverse of :func:`hz_to_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * _F_SP
    log = _MIN_LOG_HZ * np.exp(_LOGSTEP * (np.maximum(mel, _MIN_LOG_MEL) - _MIN_LOG_MEL))
    return np.where(mel >= _MIN_LOG_MEL, log, linear)


@functools.lru_cache(maxsize=16)
def mel_filterbank(sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS,
                   fmin: float = FMIN, fmax: float = FMAX) -> np.ndarray:
    """Triangular Slaney-normalised filters ``[n_mels, 1 + n_fft // 2]`` (librosa ``filters.mel``).

    Filter ``i`` rises from edge ``i`` to its peak at edge ``i + 1`` and falls to edge ``i + 2``,
    where the ``n_mels + 2`` edges are equally spaced in mel between ``fmin`` and ``fmax``;
    each is scaled by ``2 / (f[i+2] - f[i])`` so its area over Hz is 1.
    """
    fft_freqs = np.linspace(0.0, sr / 2.0, 1 + n_fft // 2)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    weights = weights.astype(np.float32)
    weights.setflags(write=False)          # cached: shared by every call
    return weights


def power_stft(waveform: np.ndarray, n_fft: int, hop: int, pad_mode: str = 'reflect') -> np.ndarray:
    """``|STFT|^2`` with a periodic Hann window and librosa's centring: ``[1 + n_fft//2, frames]``.

    The signal is padded by ``n_fft // 2`` on both sides, so ``len(waveform)`` samples give
    ``1 + len // hop`` frames.
    """
    y = np.asarray(waveform, dtype=np.float64)
    if y.ndim != 1:
        raise ValueError(f'waveform must be 1-D, got shape {y.shape}')
    pad = n_fft // 2
    if pad_mode == 'reflect' and len(y) <= pad:
        raise ValueError(f'reflect padding needs more than {pad} samples, got {len(y)}')
    y = np.pad(y, pad, mode=pad_mode)
    n_frames = 1 + (len(y) - n_fft) // hop
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)
    frames = np.lib.stride_tricks.sliding_window_view(y, n_fft)[::hop][:n_frames]
    spec = np.fft.rfft(frames * window, axis=-1)
    return (spec.real ** 2 + spec.imag ** 2).T


def log_mel_spectrogram(waveform: np.ndarray, playback_speed: int = 1, sr: int = SAMPLE_RATE,
                        pad_mode: str = 'reflect') -> np.ndarray:
    """``log(mel + 0.1) - log(0.1)``, float32 ``[64, frames]`` (mels x time, like librosa).

    ``sr`` is the rate the filterbank is built for; like the original it need not be the true
    rate of ``waveform`` (TVQA passes 22620 Hz audio as 22050).
    """
    n_fft, hop = N_FFT * playback_speed, HOP * playback_speed
    mel = mel_filterbank(sr, n_fft).astype(np.float64) @ power_stft(waveform, n_fft, hop, pad_mode)
    return (np.log(mel + LOG_EPS) - np.log(LOG_EPS)).astype(np.float32)


def segment_num_samples(playback_speed: int = 1, sr: int = SAMPLE_RATE) -> int:
    """Samples in one 5 s segment at this speed: ``5 * sr * speed`` (gives 188 frames)."""
    return SEGMENT_SECONDS * sr * playback_speed


def take_window(waveform: np.ndarray, start_s: float, num_samples: int,
                sr: int = SAMPLE_RATE) -> np.ndarray:
    """``num_samples`` from ``start_s`` on, zero-padded at the end when the audio runs out."""
    start = max(0, round(start_s * sr))
    out = np.zeros(num_samples, np.float32)
    piece = np.asarray(waveform[start:start + num_samples], dtype=np.float32)
    out[:len(piece)] = piece
    return out


def pad_center(waveform: np.ndarray, num_samples: int) -> np.ndarray:
    """Zero-pads (or centre-crops) to ``num_samples`` with the signal in the middle (zero-shot
    windows shorter than 5 s, spec §6.3)."""
    waveform = np.asarray(waveform, dtype=np.float32)
    if len(waveform) >= num_samples:
        start = (len(waveform) - num_samples) // 2
        return waveform[start:start + num_samples]
    out = np.zeros(num_samples, np.float32)
    start = (num_samples - len(waveform)) // 2
    out[start:start + len(waveform)] = waveform
    return out


def quantize(log_mel: np.ndarray) -> tuple[np.ndarray, float]:
    """uint8 spectrogram and its magic number ``255 / max(p99, 1)``; values are truncated."""
    magic = 255.0 / max(float(np.percentile(log_mel, 99)), 1.0)
    return np.minimum(log_mel * magic, 255.0).astype(np.uint8), magic


def encode_spectrogram(log_mel: np.ndarray) -> tuple[bytes, float]:
    """``[64, 188]`` log-mel -> (grayscale JPEG bytes at quality 95, magic number)."""
    from data_pipeline.media import encode_jpeg
    q, magic = quantize(log_mel)
    return encode_jpeg(q, quality=SPEC_JPEG_QUALITY), magic


def decode_spectrogram(data: bytes, magic: float) -> np.ndarray:
    """Inverse of :func:`encode_spectrogram` as the loader does it: float32 ``[frames, 64]``."""
    from data_pipeline.media import decode_jpeg
    q = decode_jpeg(data, channels=1)[..., 0]
    return (q.astype(np.float32) / np.float32(magic)).T


def segment_spectrogram(waveform: np.ndarray, start_s: float, playback_speed: int = 1,
                        sr: int = SAMPLE_RATE) -> tuple[bytes, float]:
    """Record-writer step for one chunk: ``5·sr·speed`` samples from ``start_s``, log-mel,
    quantised JPEG. Returns (JPEG bytes of 64 x 188, magic)."""
    wav = take_window(waveform, start_s, segment_num_samples(playback_speed, sr), sr)
    return encode_spectrogram(log_mel_spectrogram(wav, playback_speed, sr))


def split_subsegments(spec_tf: np.ndarray, playback_speed: float, starts=None) -> np.ndarray:
    """``[frames, 64]`` -> ``[3, 60, 65]``: three 60-frame windows plus the playback-speed column.

    ``starts`` defaults to the zero-shot windows 2, 64, 126; the pretraining loader draws
    random gaps and passes its own starts.
    """
    if starts is None:
        starts = [ZERO_SHOT_GAP + i * (SUBSEG_LEN + ZERO_SHOT_GAP) for i in range(NUM_SUBSEGS)]
    if max(starts) + SUBSEG_LEN > spec_tf.shape[0]:
        raise ValueError(f'windows {list(starts)} of {SUBSEG_LEN} frames do not fit in '
                         f'{spec_tf.shape[0]} frames')
    windows = np.stack([spec_tf[s:s + SUBSEG_LEN] for s in starts])
    speed = np.full(windows.shape[:2] + (1,), playback_speed, dtype=np.float32)
    return np.concatenate([windows.astype(np.float32), speed], axis=-1)


def make_spectrogram(waveform: np.ndarray, playback_speed: int = 1,
                     sr: int = SAMPLE_RATE) -> np.ndarray:
    """Zero-shot audio features of one segment (spec §6.3): float32 ``[3, 60, 65]``.

    ``waveform`` should hold ``5·sr·speed`` samples (use :func:`take_window` or
    :func:`pad_center`); no JPEG quantisation is applied on this path.
    """
    spec_tf = log_mel_spectrogram(waveform, playback_speed, sr).T
    return split_subsegments(spec_tf, playback_speed)


def subsegment_times(start_frames):
    """(start, end) seconds of the audio windows starting at frames ``start_frames`` (§3.3).

    In the chunk's speed-1 time units (588 / 22050 s per frame), like the token times, which
    the writer already divides by the playback speed.
    """
    start_frames = np.asarray(start_frames, dtype=np.float64)
    start = start_frames * HOP / SAMPLE_RATE - (N_FFT / SAMPLE_RATE) / 2
    end = start + SUBSEG_LEN * HOP / SAMPLE_RATE + N_FFT / SAMPLE_RATE
    return start, end
