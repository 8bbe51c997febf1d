"""Raw media with PyAV: probing, frames at timestamps, black bars, resizing, JPEG, audio.

This is the one media layer shared by the MERLOT Reserve record writer (spec mreserve §3.1.4-5),
the zero-shot preprocessing (§6.3) and HERO feature extraction. Everything returns plain numpy
arrays; TensorFlow is imported lazily and only for bicubic resizing and JPEG coding (Pillow is
not a dependency of the project).

Times are seconds on the container's timeline, with 0 at the container start time, so a frame
at ``t`` and audio sample ``round(t * sr)`` belong together.

Every failure caused by the input file raises :class:`MediaError`, whose message starts with
the file path, so a preprocessing run over thousands of videos can log and skip it.
"""
from __future__ import annotations

import dataclasses
import math
import os
import struct
from collections.abc import Sequence

import av
import numpy as np

BLACK_THRESHOLD = 32        # pixel value below which a border line counts as black (§3.1.4)
MAX_BAR_FRACTION = 0.2      # at most this fraction of the height/width is trimmed per side
SHORT_SIDE = 288            # stored frames: shorter side 288 ...
MAX_LONG_SIDE = 512         # ... and longer side at most 512
JPEG_QUALITY = 75           # stored frames are JPEG quality 75
AUDIO_SAMPLE_RATE = 22050   # ffmpeg -ac 1 -ar 22050 in the original


class MediaError(Exception):
    """A media file cannot be used: corrupt, truncated, no frames, no audio, ...

    ``str(err)`` is ``"<path>: <reason>"``; the parts are kept as ``err.path`` / ``err.reason``.
    """

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f'{self.path}: {reason}')


@dataclasses.dataclass(frozen=True)
class MediaInfo:
    """What :func:`probe` learns from the container headers (no full decode)."""
    path: str
    duration: float                 # seconds, container duration (longest stream)
    has_video: bool
    has_audio: bool
    fps: float | None = None        # average frame rate of the first video stream
    width: int | None = None        # coded size; extract_frames also applies display rotation
    height: int | None = None
    video_codec: str | None = None
    audio_codec: str | None = None
    sample_rate: int | None = None  # native rate of the first audio stream
    channels: int | None = None


def _open(path) -> av.container.InputContainer:
    """Opens ``path`` for reading after checking it exists and is not cut short."""
    if not os.path.isfile(path):
        raise MediaError(path, 'no such file')
    _check_declared_size(path)
    try:
        return av.open(os.fspath(path))
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as e:
        raise MediaError(path, f'cannot open ({e})') from e


def _check_declared_size(path) -> None:
    """Raises if the container header declares more bytes than the file holds (a cut-off download).

    FFmpeg happily decodes whatever is present in such files, so this is checked from the
    headers: the Matroska/WebM Segment element size, and the top-level boxes of MP4/MOV.
    Other containers are not checked here.
    """
    size = os.path.getsize(path)
    with open(path, 'rb') as f:
        head = f.read(64)
        if head[:4] == b'\x1a\x45\xdf\xa3':                     # EBML: Matroska / WebM
            seg_pos, _ = _ebml_element(head, 0, path)           # just past the EBML header
            f.seek(seg_pos)
            seg = f.read(16)
            if seg[:4] != b'\x18\x53\x80\x67':                  # not a Segment: leave it
                return
            seg_end, known = _ebml_element(seg, 0, path)
            if known and seg_pos + seg_end > size:
                raise MediaError(path, f'truncated: the Matroska segment declares '
                                       f'{seg_pos + seg_end} bytes, file has {size}')
        elif head[4:8] in (b'ftyp', b'moov', b'mdat', b'free', b'wide'):  # ISO BMFF / QuickTime
            pos, boxes = 0, []
            while pos + 8 <= size:
                f.seek(pos)
                box_size, box_type = struct.unpack('>I4s', f.read(8))
                if box_size == 1:
                    box_size = struct.unpack('>Q', f.read(8))[0]
                elif box_size == 0:                             # box runs to the end of file
                    box_size = size - pos
                if box_size < 8 or pos + box_size > size:
                    raise MediaError(path, f'truncated: MP4 box {box_type!r} at byte {pos} '
                                           f'declares {box_size} bytes, file has {size - pos} left')
                boxes.append(box_type)
                pos += box_size
            if b'moov' not in boxes:
                raise MediaError(path, 'truncated: MP4 without a moov box')


def _ebml_element(buf: bytes, pos: int, path) -> tuple[int, bool]:
    """(offset just past the EBML element at ``pos``, whether its size is known).

    An element is an id and a size, both variable-length integers whose first byte's leading
    zeros give the length; a size of all ones means "unknown" (live streams).
    """
    def vint(p):
        if p >= len(buf) or not buf[p]:
            raise MediaError(path, 'corrupt EBML header')
        length = 9 - buf[p].bit_length()
        if p + length > len(buf):
            raise MediaError(path, 'corrupt EBML header')
        value = buf[p] & (0xFF >> length)
        for byte in buf[p + 1:p + length]:
            value = (value << 8) | byte
        return value, length, value == (1 << (7 * length)) - 1

    _, id_len, _ = vint(pos)
    size, size_len, unknown = vint(pos + id_len)
    return pos + id_len + size_len + size, not unknown


def probe(path, require_video: bool = False, require_audio: bool = False) -> MediaInfo:
    """Reads the headers and demuxes (no decoding) the first video and audio streams.

    Raises MediaError for files that cannot be opened, have neither video nor audio (or lack
    a required one), or whose timestamps show they were cut (see :func:`_scan_packets`).
    Takes milliseconds per minute of media.
    """
    with _open(path) as container:
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        if video is None and audio is None:
            raise MediaError(path, 'no video or audio stream')
        if require_video and video is None:
            raise MediaError(path, 'no video stream')
        if require_audio and audio is None:
            raise MediaError(path, 'no audio stream')
        duration = _duration(container)
        if duration is None or duration <= 0:
            raise MediaError(path, 'unknown or zero duration')
        info = dict(path=os.fspath(path), duration=duration,
                    has_video=video is not None, has_audio=audio is not None)
        if video is not None:
            _scan_packets(container, video, path)
            cc = video.codec_context
            rate = video.average_rate or video.guessed_rate
            info.update(fps=float(rate) if rate else None, width=cc.width, height=cc.height,
                        video_codec=cc.name)
        if audio is not None:
            container.seek(0)
            _scan_packets(container, audio, path)
            cc = audio.codec_context
            info.update(audio_codec=cc.name, sample_rate=cc.sample_rate,
                        channels=cc.layout.nb_channels)
        return MediaInfo(**info)


def _scan_packets(container, stream, path, max_backstep: float = 1.0) -> list[float]:
    """Demuxes (without decoding) the packets of one stream; returns the key-frame times.

    Raises MediaError when there are none, or when a timestamp falls more than
    ``max_backstep`` seconds behind the latest one seen: B-frame reordering moves timestamps
    back by a few frames only, a restart means the stream was cut and spliced (as in
    ../shared/media/truncated.mkv, whose video restarts at 0 s after 2.24 s, mid-GOP).
    """
    count, latest, keyframes = 0, None, []
    try:
        for packet in container.demux(stream):
            ts = packet.pts if packet.pts is not None else packet.dts
            if ts is None or packet.size == 0:
                continue
            t = float(ts * packet.time_base)
            if latest is not None and t < latest - max_backstep:
                raise MediaError(path, f'corrupt or truncated: {stream.type} timestamps jump '
                                       f'back from {latest:.2f}s to {t:.2f}s at byte {packet.pos}')
            latest = t if latest is None else max(latest, t)
            count += 1
            if packet.is_keyframe:
                keyframes.append(t)
    except av.FFmpegError as e:
        raise MediaError(path, f'corrupt {stream.type} stream ({e})') from e
    if not count:
        raise MediaError(path, f'no {stream.type} packets')
    return sorted(keyframes)


def _duration(container) -> float | None:
    if container.duration:
        return container.duration / av.time_base
    durations = [float(s.duration * s.time_base) for s in container.streams
                 if s.duration and s.time_base]
    return max(durations) if durations else None


def _origin(container) -> float:
    """Container start time in seconds: t = 0 on our timeline."""
    return container.start_time / av.time_base if container.start_time else 0.0


def extract_frames(path, times: Sequence[float], max_short_side: int | None = None) -> np.ndarray:
    """RGB frames nearest to each timestamp: uint8 ``[len(times), H, W, 3]`` in the order given.

    Times are sorted internally; the decoder seeks to the key frame before a target only when
    the target is behind the decoder or a key frame lies between them, else decodes on.
    Times past the last frame give the last frame. Raises MediaError when no frame decodes.

    All frames come out at the stream's coded size (also when the resolution changes midway),
    or, with ``max_short_side``, shrunk (area filter, aspect kept) so the shorter side is at
    most that: e.g. 576 bounds memory for long HD videos and leaves room for the 288 resize.
    Frames are turned upright by the display-matrix rotation (phone videos), as the ffmpeg
    command line of the original does, so H and W may be the coded W and H.
    """
    times = np.asarray(times, dtype=np.float64)
    if times.ndim != 1 or not len(times):
        raise ValueError(f'times must be a non-empty 1-D sequence, got shape {times.shape}')
    out: list[np.ndarray | None] = [None] * len(times)
    with _open(path) as container:
        if not container.streams.video:
            raise MediaError(path, 'no video stream')
        stream = container.streams.video[0]
        keyframes = np.asarray(_scan_packets(container, stream, path)) - _origin(container)
        stream.thread_type = 'AUTO'
        height, width = stream.codec_context.height, stream.codec_context.width
        if max_short_side and min(height, width) > max_short_side:
            scale = max_short_side / min(height, width)
            height, width = round(height * scale), round(width * scale)
        frames = _FrameCursor(container, stream, _origin(container), keyframes, path)
        for i in np.argsort(times, kind='stable'):
            frame = frames.nearest(float(times[i]))
            rotation = frame.rotation        # display matrix, degrees counterclockwise
            if (frame.height, frame.width) != (height, width):
                frame = frame.reformat(width=width, height=height, interpolation='AREA')
            out[i] = np.rot90(frame.to_ndarray(format='rgb24'), k=round(rotation / 90) % 4)
    return np.ascontiguousarray(np.stack(out))


class _FrameCursor:
    """Walks a video stream forward, seeking only when it has to.

    A target behind the decoder needs a seek; one ahead needs a seek only if a key frame lies
    between the decoder and the target (else decoding on is cheaper than re-decoding from
    the same key frame). Key-frame times come from the demux scan.
    """

    def __init__(self, container, stream, origin, keyframes, path):
        self.container, self.stream, self.origin, self.path = container, stream, origin, path
        self.keyframes = keyframes
        self.prev = None        # (time, frame) last decoded frame at or before the target
        self.next = None        # first decoded frame after the target (lookahead)
        self.it = container.decode(stream)      # from the start, should seeking fail

    def _time(self, frame) -> float:
        if frame.pts is None:
            raise MediaError(self.path, 'video frame without a timestamp')
        return float(frame.pts * frame.time_base) - self.origin

    def _seek(self, t: float) -> bool:
        """Seeks to the key frame at or before ``t``; False if the demuxer refuses."""
        offset = int((max(t, 0.0) + self.origin) / self.stream.time_base)
        self.prev = self.next = None
        try:
            self.container.seek(offset, stream=self.stream, backward=True, any_frame=False)
        except av.FFmpegError:
            return False
        self.it = self.container.decode(self.stream)
        return True

    def _keyframe_between(self, decoded: float, t: float) -> bool:
        i = np.searchsorted(self.keyframes, t, side='right')      # key frames <= t
        return i > 0 and self.keyframes[i - 1] > decoded

    def _decode_next(self):
        try:
            frame = next(self.it, None)
        except av.FFmpegError as e:
            raise MediaError(self.path, f'video decoding failed ({e})') from e
        return None if frame is None else (self._time(frame), frame)

    def nearest(self, t: float):
        known = self.prev or self.next
        if known is None or t < known[0] or self._keyframe_between(known[0], t):
            ok = self._seek(t)
            self.next = self._decode_next() if ok else None
            # Some demuxers land after the target, or nowhere when it is past the end:
            # back off, finally to the start.
            for back in (1.0, 4.0, math.inf):
                if t <= 0 or (self.next is not None and self.next[0] <= t):
                    break
                if self._seek(max(t - back, 0.0)):
                    self.next = self._decode_next()
            if self.next is None:
                raise MediaError(self.path, f'no video frame could be decoded near {t:.3f}s')
        while self.next is not None and self.next[0] <= t:
            self.prev, self.next = self.next, self._decode_next()
        if self.prev is None:
            return self.next[1]
        if self.next is None:
            return self.prev[1]
        return self.next[1] if self.next[0] - t < t - self.prev[0] else self.prev[1]


def detect_black_bars(frames: np.ndarray, threshold: int = BLACK_THRESHOLD,
                      max_fraction: float = MAX_BAR_FRACTION) -> tuple[int, int, int, int]:
    """Video-wide letterbox/pillarbox detection over frames ``[N, H, W, 3]`` (or one ``[H, W, 3]``).

    A border row/column is black when none of its pixels in any frame and channel reaches
    ``threshold``. Returns the crop box ``(top, bottom, left, right)`` such that
    ``frames[:, top:bottom, left:right]`` is the content; at most ``max_fraction`` of the
    height/width is removed per side, so an all-black video keeps its middle 60%.
    """
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    bright = frames.max(axis=(0, 3)) >= threshold          # [H, W]
    h, w = bright.shape

    def run(lines_bright: np.ndarray, limit: int) -> int:
        nonblack = np.flatnonzero(lines_bright[:limit])
        return int(nonblack[0]) if len(nonblack) else limit

    rows, cols = bright.any(axis=1), bright.any(axis=0)
    max_h, max_w = int(h * max_fraction), int(w * max_fraction)
    top, bottom = run(rows, max_h), run(rows[::-1], max_h)
    left, right = run(cols, max_w), run(cols[::-1], max_w)
    return top, h - bottom, left, w - right


def trim_black_bars(frames: np.ndarray, box: tuple[int, int, int, int] | None = None,
                    **kwargs) -> np.ndarray:
    """Crops ``[..., H, W, 3]`` frames to ``box`` (detected over all the frames if not given)."""
    top, bottom, left, right = box if box is not None else detect_black_bars(frames, **kwargs)
    return frames[..., top:bottom, left:right, :]


def storage_size(height: int, width: int, short_side: int = SHORT_SIDE,
                 max_long_side: int = MAX_LONG_SIDE) -> tuple[int, int]:
    """(height, width) keeping aspect: shorter side ``short_side`` unless the longer would pass
    ``max_long_side``, in which case the longer side is ``max_long_side``."""
    scale = short_side / min(height, width)
    if max(height, width) * scale > max_long_side:
        scale = max_long_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_for_storage(image: np.ndarray, short_side: int = SHORT_SIDE,
                       max_long_side: int = MAX_LONG_SIDE) -> np.ndarray:
    """Bicubic, antialiased (like PIL's BICUBIC) resize of a uint8 ``[H, W, 3]`` image."""
    import tensorflow as tf
    size = storage_size(image.shape[0], image.shape[1], short_side, max_long_side)
    if size == image.shape[:2]:
        return image
    out = tf.image.resize(image, size, method='bicubic', antialias=True)
    return np.clip(np.round(out.numpy()), 0, 255).astype(np.uint8)


def encode_jpeg(image: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """JPEG bytes of a uint8 ``[H, W, 3]`` (colour) or ``[H, W]`` / ``[H, W, 1]`` (gray) image."""
    import tensorflow as tf
    image = np.asarray(image, dtype=np.uint8)
    if image.ndim == 2:
        image = image[..., None]
    return tf.io.encode_jpeg(image, quality=quality).numpy()


def decode_jpeg(data: bytes, channels: int = 0) -> np.ndarray:
    """uint8 ``[H, W, C]`` from JPEG bytes (``channels`` 0 keeps what the file has)."""
    import tensorflow as tf
    return tf.io.decode_jpeg(data, channels=channels).numpy()


def frames_for_storage(path, times: Sequence[float]) -> list[bytes]:
    """§3.1.4 in one call: frames at ``times``, black bars trimmed video-wide, resized, JPEG q75.

    Frames are decoded at most at twice the stored size (shorter side 576) to bound memory.
    """
    frames = trim_black_bars(extract_frames(path, times, max_short_side=2 * SHORT_SIDE))
    return [encode_jpeg(resize_for_storage(f)) for f in frames]


def load_audio(path, sample_rate: int = AUDIO_SAMPLE_RATE, normalize: bool = True) -> np.ndarray:
    """Whole audio track as mono float32 at ``sample_rate`` (PyAV's resampler, i.e. libswresample).

    Sample 0 is at container time 0: a track that starts late is padded with zeros in front,
    one that starts early (encoder priming) is cut. With ``normalize`` the waveform is divided
    by max|x| as in the original (a silent track stays zeros). Raises MediaError when the
    file has no audio stream or no sample decodes.
    """
    with _open(path) as container:
        if not container.streams.audio:
            raise MediaError(path, 'no audio stream')
        stream = container.streams.audio[0]
        _scan_packets(container, stream, path)
        container.seek(0)
        origin = _origin(container)
        resampler = av.AudioResampler(format='flt', layout='mono', rate=sample_rate)
        chunks, first_time = [], None
        try:
            for frame in container.decode(stream):
                if first_time is None and frame.pts is not None:
                    first_time = float(frame.pts * frame.time_base) - origin
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except av.FFmpegError as e:
            raise MediaError(path, f'audio decoding failed ({e})') from e
    if not chunks or not sum(len(c) for c in chunks):
        raise MediaError(path, 'no audio samples could be decoded')
    wav = np.concatenate(chunks).astype(np.float32)
    shift = round((first_time or 0.0) * sample_rate)
    if shift > 0:
        wav = np.concatenate([np.zeros(shift, np.float32), wav])
    elif shift < 0:
        wav = wav[-shift:]
    if normalize:
        peak = float(np.max(np.abs(wav))) if len(wav) else 0.0
        if peak > 0:
            wav = wav / peak
    return wav
