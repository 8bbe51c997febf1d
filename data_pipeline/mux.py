"""Muxing test videos with PyAV: the frames of one file under the audio of another.

The shared media has real footage (cockatoo.mp4) and real speech with a timed transcript
(conversation.wav + conversation.stm) but no talking video; :func:`make_talking_video`
makes one for the record-writer tests and benchmarks (and one without audio).
"""
from __future__ import annotations

import os

import av
import numpy as np


def make_talking_video(out_path, frames_from, audio_from, fps: int = 4, size=(320, 180),
                       audio: bool = True, seconds: float | None = None) -> float:
    """Muxes the frames of one file (looped, resized) under the audio of another (H.264 + AAC,
    16 kHz mono); ``audio=False`` writes no audio stream. Returns the length in seconds."""
    with av.open(os.fspath(audio_from)) as c:
        resampler = av.AudioResampler(format='flt', layout='mono', rate=16000)
        wav = np.concatenate([o.to_ndarray().reshape(-1) for f in c.decode(audio=0)
                              for o in resampler.resample(f)])
    seconds = seconds or len(wav) / 16000
    images, next_t = [], 0.0
    with av.open(os.fspath(frames_from)) as c:
        for frame in c.decode(video=0):
            if frame.time is not None and frame.time >= next_t:
                images.append(frame.reformat(width=size[0], height=size[1],
                                             format='yuv420p').to_ndarray())
                next_t += 1 / fps
            if next_t > min(seconds, 8.0):
                break
    with av.open(os.fspath(out_path), 'w') as out:
        video = out.add_stream('libx264', rate=fps, options={'preset': 'ultrafast',
                                                             'threads': '1'})
        video.width, video.height, video.pix_fmt = size[0], size[1], 'yuv420p'
        sound = out.add_stream('aac', rate=16000, layout='mono') if audio else None
        for i in range(int(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(images[i % len(images)], format='yuv420p')
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None:
            for pos in range(0, len(wav), 1024):
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wav[None, pos:pos + 1024]),
                                                   format='flt', layout='mono')
                frame.sample_rate, frame.pts = 16000, pos
                out.mux(sound.encode(frame))
            out.mux(sound.encode(None))
    return seconds
