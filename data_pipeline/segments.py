"""Raw video -> per-segment frame, audio features and words: zero-shot preprocessing (spec §6.3).

``video_to_segments`` is the decode half of the original ``mreserve/preprocess.py``: back to
back segments from t = 0, one black-bar-trimmed frame at each midpoint, 22050 Hz mono audio
normalised by max|x| and turned into ``[3, 60, 65]`` features by ``make_spectrogram``. Turning
frames into patches and text into tokens belongs to the model side (``preprocess_video``).

Reading of the spec where it is terse: "from t = 0 until duration - 1" is taken as segment
*starts* below ``duration - 1``; a last segment that runs past the end of the audio is
zero-padded and its frame is the last frame when the midpoint is past it.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from data_pipeline import media
from data_pipeline import spectrogram as spec
from data_pipeline.transcripts import Word


def segment_windows(duration: float, time_interval: float = 5.0) -> list[tuple[float, float]]:
    """``(start, end)`` of back-to-back segments whose start is below ``duration - 1``."""
    starts = np.arange(0.0, max(duration - 1.0, 0.0), time_interval)
    return [(float(s), float(s + time_interval)) for s in starts] or [(0.0, time_interval)]


def video_to_segments(path, time_interval: float = 5.0, words: Sequence[Word] | None = None,
                      windows: Sequence[tuple[float, float]] | None = None,
                      playback_speed: int = 1) -> list[dict]:
    """One dict per segment: ``frame`` uint8 [H, W, 3], ``spectrogram`` float32 [3, 60, 65],
    ``start_time``, ``end_time`` and, when ``words`` are given, ``text`` (the words whose
    centre lies in the segment).

    ``windows`` overrides the back-to-back segments (the EPIC-Kitchens style
    ``video_to_segments_zero_shot``): each window's audio is centre-padded (or centre-cut)
    to ``5 * 22050 * playback_speed`` samples. Files without audio give zero spectrogram
    windows; files without video raise MediaError.
    """
    info = media.probe(path, require_video=True)
    centred = windows is not None
    if windows is None:
        windows = segment_windows(info.duration, time_interval)
    frames = media.trim_black_bars(media.extract_frames(path, [(s + e) / 2 for s, e in windows]))
    wav = media.load_audio(path) if info.has_audio else None
    n = spec.segment_num_samples(playback_speed)
    out = []
    for (start, end), frame in zip(windows, frames):
        if wav is None:
            audio = np.zeros(n, np.float32)
        elif centred:
            piece = wav[max(0, round(start * spec.SAMPLE_RATE)):round(end * spec.SAMPLE_RATE)]
            audio = spec.pad_center(piece, n)
        else:
            audio = spec.take_window(wav, start, n)
        segment = dict(frame=frame, spectrogram=spec.make_spectrogram(audio, playback_speed),
                       start_time=start, end_time=end)
        if words is not None:
            segment['text'] = ' '.join(w.word for w in words
                                       if start <= (w.start + w.end) / 2 < end)
        out.append(segment)
    return out
