"""A procedurally generated video corpus in which frames, sound and words agree.

``python -m data_pipeline.demo_corpus --out DIR --num-videos N --seed S`` writes real encoded
videos (H.264 + AAC in MP4, via PyAV) with timed transcripts, so the whole pipeline (decode,
records, training, zero-shot) can run and *learn something* without downloading data.

Each video is a run of scenes of 4-7 s. A scene shows one coloured shape drifting over a
dark background; the soundtrack plays a tone whose pitch is set by the colour and whose
amplitude-modulation rate is set by the shape; the narrator's words name them ("now we see a
red circle on a gray background", with filler words), timed inside the scene. A model can
therefore match frame <-> audio <-> text within a 5 s chunk.

Two options make the words a harder, cleaner target (the `demo.scene_seconds` and
`demo.name_once` keys of configs/mreserve/pretrain.py):
``scene_seconds=5`` gives every scene exactly one 5 s chunk of the record writer (chunks start
at 0 and follow each other at playback speed 1), so a chunk's frame, sound and words all
belong to one scene; ``name_once=True`` names the colour in exactly one short sentence of the
scene ("the colour is red", at a random place) and the shape not at all (it is still seen and
heard), the other sentences say other things ("it is moving left"), so a masked naming cannot
be copied from the neighbouring words but must come from what is seen or heard. The naming
sentence holds no other scene word: with size and shape in it ("now we see a big red
circle"), the span encoder learned to tell naming spans apart without the colour in about
half of the main-job runs (colour-swapped spans embedded at cosine 0.999) and the zero-shot
colour accuracy stayed at chance (configs/mreserve/pretrain.py).

Output (paths in the manifests are relative to DIR)::

    DIR/train/demo_00000.mp4   .json (word list: [{word, start, end}])   .vtt (YouTube-style)
    DIR/val/...                held-out videos (the last ``val_fraction`` of the indices)
    DIR/train.jsonl, DIR/val.jsonl   one line per video: id, video, transcript, vtt, duration,
                                     title, description, tags, scenes
    DIR/random_text.txt        plain English sentences for the records' ``random_text`` field
    DIR/transcripts.txt        the train transcripts, one video per line (tokenizer training:
                               ``python -m data_pipeline.tokenizer --input DIR/*.txt ...``)

Everything is a function of ``--seed`` and the video index (each video has its own RNG), so
the files are byte-identical across runs and worker counts.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor

import av
import numpy as np

from data_pipeline.transcripts import Word, words_to_json, words_to_youtube_vtt

# Bumped whenever the generated files change (part of mreserve/demo_data.py's cache key).
VERSION = 2
COLOURS = {  # name: (RGB, tone frequency in Hz); pitches 4 semitones apart
    'red': ((220, 40, 40), 220.0), 'orange': ((240, 140, 30), 277.2),
    'yellow': ((230, 215, 40), 349.2), 'green': ((40, 185, 60), 440.0),
    'cyan': ((40, 200, 210), 554.4), 'blue': ((45, 85, 225), 698.5),
    'purple': ((150, 60, 200), 880.0), 'white': ((235, 235, 235), 1108.7),
}
SHAPES = {'circle': 1.5, 'square': 3.0, 'triangle': 6.0, 'diamond': 10.0}  # AM rate in Hz
BACKGROUNDS = {'black': (12, 12, 12), 'gray': (70, 70, 75), 'navy': (20, 25, 70),
               'brown': (70, 45, 25)}
SIZES = {'small': 0.16, 'big': 0.3}          # radius as a fraction of the frame height
TEMPLATES = (
    'now we see a {size} {colour} {shape}',
    'here is a {colour} {shape} on a {background} background',
    'look at the {colour} {shape} moving {direction}',
    'this {shape} is {colour}',
    'the next one is a {colour} {shape}',
    'a {size} {shape} and it is {colour}',
    'there goes the {colour} {shape}',
)
NAMING_TEMPLATES = (       # name_once: the one naming sentence, the colour its only scene word
    'the colour is {colour}', 'it looks {colour}',
)
PLAIN_TEMPLATES = (        # name_once: the scene's other sentences (no colour, no shape)
    'it is moving {direction}',
    'the background is {background}',
    'it looks quite {size}',
    'and it keeps on going {direction}',
    'see how it moves',
    'on a {background} background',
    'watch it go',
)
FILLERS = ('um', 'so', 'okay', 'and', 'you know', 'right', 'well', 'uh')
SAMPLE_RATE = 22050


def _scene_plan(rng: np.random.Generator, duration: float,
                scene_seconds: float = 0.0) -> list[dict]:
    scenes, t = [], 0.0
    while t < duration - 1.0:
        length = scene_seconds or float(rng.uniform(4.0, 7.0))
        length = min(length, duration - t)
        p0, p1 = rng.uniform(0.3, 0.7, size=2), rng.uniform(0.3, 0.7, size=2)
        scenes.append(dict(
            start=round(t, 3), end=round(t + length, 3),
            colour=str(rng.choice(list(COLOURS))), shape=str(rng.choice(list(SHAPES))),
            background=str(rng.choice(list(BACKGROUNDS))), size=str(rng.choice(list(SIZES))),
            path=[p0.round(3).tolist(), p1.round(3).tolist()]))
        t += length
    return scenes


def _direction(scene) -> str:
    (x0, y0), (x1, y1) = scene['path']
    if abs(x1 - x0) >= abs(y1 - y0):
        return 'right' if x1 > x0 else 'left'
    return 'down' if y1 > y0 else 'up'


def _scene_words(rng: np.random.Generator, scene: dict, name_once: bool = False) -> list[Word]:
    """Sentences about the scene, ~3 words/s, from its start to just before its end.
    name_once: one sentence (at a random place) names the colour, the others name neither
    colour nor shape."""
    words, t = [], scene['start'] + float(rng.uniform(0.1, 0.4))
    fields = dict(scene, direction=_direction(scene))
    misses, named, i = 0, not name_once, 0
    naming_at = int(rng.integers(0, 2)) if name_once else 0   # the naming sentence: 1st or 2nd
    while misses < 3:                     # a few tries to fill the rest with a shorter sentence
        naming = not named and (i >= naming_at or misses > 0)
        templates = TEMPLATES
        if name_once:
            templates = NAMING_TEMPLATES if naming else PLAIN_TEMPLATES
            if not named and not naming:                # short, so the naming still fits
                templates = tuple(x for x in PLAIN_TEMPLATES if len(x.split()) <= 4)
        sentence = str(rng.choice(templates)).format(**fields).split()
        if rng.random() < 0.4 and named and not naming:
            sentence = str(rng.choice(FILLERS)).split() + sentence
        durations = rng.uniform(0.22, 0.4, size=len(sentence))
        if t + durations.sum() > scene['end'] - 0.1:
            misses += 1
            continue
        for w, d in zip(sentence, durations):
            words.append(Word(w, round(t, 3), round(t + d - 0.03, 3)))
            t += d
        t += float(rng.uniform(0.05, 0.3))
        named, i = named or naming, i + 1
    return words


def _render_scene(scene: dict, times: np.ndarray, width: int, height: int) -> np.ndarray:
    """uint8 ``[len(times), H, W, 3]`` frames of one scene."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    bg = np.array(BACKGROUNDS[scene['background']], np.float32)
    shade = 1.0 + 0.25 * (yy / height - 0.5)[..., None]           # a soft vertical gradient
    base = np.clip(bg * shade, 0, 255)
    colour = np.array(COLOURS[scene['colour']][0], np.float32)
    r = SIZES[scene['size']] * height
    (x0, y0), (x1, y1) = scene['path']
    frames = np.empty((len(times), height, width, 3), np.uint8)
    length = max(scene['end'] - scene['start'], 1e-6)
    for i, t in enumerate(times):
        a = (t - scene['start']) / length
        dx = xx - ((x0 + a * (x1 - x0)) * width)
        dy = yy - ((y0 + a * (y1 - y0)) * height)
        shape = scene['shape']
        if shape == 'circle':
            mask = dx * dx + dy * dy <= r * r
        elif shape == 'square':
            mask = np.maximum(np.abs(dx), np.abs(dy)) <= 0.85 * r
        elif shape == 'triangle':
            mask = (dy <= 0.8 * r) & (np.abs(dx) <= 0.6 * (dy + r))
        else:
            mask = np.abs(dx) + np.abs(dy) <= r
        frame = base.copy()
        frame[mask] = colour
        frames[i] = frame
    return frames


def _scene_audio(rng: np.random.Generator, scene: dict, start: int, stop: int) -> np.ndarray:
    """float32 samples ``[start, stop)`` of the scene: AM tone plus a little noise."""
    t = np.arange(start, stop) / SAMPLE_RATE
    f0, am = COLOURS[scene['colour']][1], SHAPES[scene['shape']]
    tone = np.sin(2 * np.pi * f0 * t) + 0.3 * np.sin(4 * np.pi * f0 * t)
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * am * (t - scene['start']))
    fade = np.clip(np.minimum(t - scene['start'], scene['end'] - t) / 0.02, 0, 1)
    noise = 0.02 * rng.standard_normal(len(t))
    return (0.3 * tone * envelope * fade + noise).astype(np.float32)


def make_video(path: str, seed: int, index: int, width: int = 192, height: int = 128,
               fps: int = 10, min_seconds: float = 20.0, max_seconds: float = 40.0,
               scene_seconds: float = 0.0, name_once: bool = False) -> dict:
    """Writes one demo video (``path``, an .mp4) and returns its description with words.
    scene_seconds: fixed scene length (0: random 4-7 s); name_once: see the module doc."""
    rng = np.random.default_rng([seed, index])
    duration = round(float(rng.uniform(min_seconds, max_seconds)), 1)
    if scene_seconds:                          # whole scenes only
        duration = scene_seconds * max(1, round(duration / scene_seconds))
    scenes = _scene_plan(rng, duration, scene_seconds)
    duration = scenes[-1]['end']
    words = [w for s in scenes for w in _scene_words(rng, s, name_once)]

    with av.open(path, 'w', format='mp4') as out:
        video = out.add_stream('libx264', rate=fps, options={
            'preset': 'ultrafast', 'crf': '23', 'threads': '1', 'g': str(2 * fps)})
        video.width, video.height, video.pix_fmt = width, height, 'yuv420p'
        audio = out.add_stream('aac', rate=SAMPLE_RATE, layout='mono')
        audio.bit_rate = 32000
        audio_pos, frame_size = 0, 1024
        pending = np.zeros(0, np.float32)
        for scene in scenes:
            frame_idx = np.arange(round(scene['start'] * fps), round(scene['end'] * fps))
            for img_i, img in zip(frame_idx, _render_scene(scene, frame_idx / fps, width, height)):
                frame = av.VideoFrame.from_ndarray(img, format='rgb24')
                frame.pts = int(img_i)
                out.mux(video.encode(frame))
            stop = round(scene['end'] * SAMPLE_RATE)
            pending = np.concatenate([pending, _scene_audio(rng, scene, audio_pos + len(pending),
                                                            stop)])
            while len(pending) >= frame_size:
                out.mux(audio.encode(_audio_frame(pending[:frame_size], audio_pos)))
                pending, audio_pos = pending[frame_size:], audio_pos + frame_size
        if len(pending):
            out.mux(audio.encode(_audio_frame(pending, audio_pos)))
        out.mux(video.encode(None))
        out.mux(audio.encode(None))

    first = scenes[0]
    return dict(duration=duration, scenes=scenes, words=words,
                title=f"a {first['colour']} {first['shape']} and more shapes",
                description='procedurally generated demo video: coloured shapes with tones',
                tags=['demo', 'shapes', 'colours'])


def _audio_frame(samples: np.ndarray, pts: int) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(samples[None, :], format='fltp', layout='mono')
    frame.sample_rate, frame.pts = SAMPLE_RATE, pts
    return frame


def random_text(seed: int, num_sentences: int = 3000) -> str:
    """Plain sentences (one per line) for the ``random_text`` field of the records."""
    rng = np.random.default_rng([seed, 1 << 20])
    subjects = ('the cat', 'my friend', 'a teacher', 'the old house', 'this recipe', 'our team',
                'the river', 'a small bird', 'the city', 'everyone here')
    verbs = ('likes', 'needs', 'remembers', 'finds', 'shows', 'builds', 'paints', 'follows')
    objects = ('a red circle', 'the blue square', 'green trees', 'the morning light',
               'a long story', 'the yellow triangle', 'fresh bread', 'the quiet street',
               'a purple diamond', 'old photographs', 'the white wall', 'an orange boat')
    tails = ('every day', 'in the evening', 'after the rain', 'with great care', 'again',
             'without a word', 'near the window', 'before lunch')
    lines = []
    for _ in range(num_sentences):
        s = f'{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} {rng.choice(tails)}.'
        lines.append(s[0].upper() + s[1:])
    return '\n'.join(lines) + '\n'


def _build_one(job) -> dict:
    out_dir, split, seed, index, kwargs = job
    vid = f'demo_{index:05d}'
    rel = os.path.join(split, vid)
    info = make_video(os.path.join(out_dir, rel + '.mp4'), seed, index, **kwargs)
    words = info.pop('words')
    with open(os.path.join(out_dir, rel + '.json'), 'w') as f:
        f.write(words_to_json(words))
    with open(os.path.join(out_dir, rel + '.vtt'), 'w') as f:
        f.write(words_to_youtube_vtt(words))
    return dict(id=vid, split=split, video=rel + '.mp4', transcript=rel + '.json',
                vtt=rel + '.vtt', num_words=len(words), text=' '.join(w.word for w in words),
                **info)


def build_corpus(out_dir: str, num_videos: int = 160, seed: int = 0, val_fraction: float = 0.1,
                 workers: int | None = None, **video_kwargs) -> dict[str, list[dict]]:
    """Writes the corpus under ``out_dir``; returns ``{'train': [...], 'val': [...]}`` entries."""
    num_val = round(num_videos * val_fraction)
    splits = ['train'] * (num_videos - num_val) + ['val'] * num_val
    for split in set(splits):
        os.makedirs(os.path.join(out_dir, split), exist_ok=True)
    jobs = [(out_dir, split, seed, i, video_kwargs) for i, split in enumerate(splits)]
    workers = workers or min(2, os.cpu_count() or 1)
    if workers > 1:
        # spawn, not fork: the caller may have started threads (TensorFlow, JAX)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context('spawn')) as pool:
            entries = list(pool.map(_build_one, jobs, chunksize=4))
    else:
        entries = [_build_one(job) for job in jobs]
    manifest = {'train': [], 'val': []}
    for entry in entries:
        manifest[entry['split']].append(entry)
    with open(os.path.join(out_dir, 'transcripts.txt'), 'w') as f:
        f.writelines(entry.pop('text') + '\n' for entry in entries if entry['split'] == 'train')
    for entry in entries:
        entry.pop('text', None)
    for split, items in manifest.items():
        with open(os.path.join(out_dir, f'{split}.jsonl'), 'w') as f:
            f.writelines(json.dumps(item) + '\n' for item in items)
    with open(os.path.join(out_dir, 'random_text.txt'), 'w') as f:
        f.write(random_text(seed))
    return manifest


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', required=True)
    parser.add_argument('--num-videos', type=int, default=160)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--val-fraction', type=float, default=0.1)
    parser.add_argument('--width', type=int, default=192)
    parser.add_argument('--height', type=int, default=128)
    parser.add_argument('--fps', type=int, default=10)
    parser.add_argument('--min-seconds', type=float, default=20.0)
    parser.add_argument('--max-seconds', type=float, default=40.0)
    parser.add_argument('--scene-seconds', type=float, default=0.0,
                        help='fixed scene length, e.g. 5 = one record chunk (0: random 4-7 s)')
    parser.add_argument('--name-once', action='store_true',
                        help='name colour and shape in one sentence per scene only')
    parser.add_argument('--workers', type=int, default=None, help='default: min(2, cores)')
    args = parser.parse_args(argv)
    t0 = time.time()
    manifest = build_corpus(args.out, args.num_videos, args.seed, args.val_fraction, args.workers,
                            width=args.width, height=args.height, fps=args.fps,
                            min_seconds=args.min_seconds, max_seconds=args.max_seconds,
                            scene_seconds=args.scene_seconds, name_once=args.name_once)
    hours = sum(e['duration'] for items in manifest.values() for e in items) / 3600
    print(f'wrote {len(manifest["train"])} train + {len(manifest["val"])} val videos '
          f'({hours:.2f} h) to {args.out} in {time.time() - t0:.1f}s')


if __name__ == '__main__':
    main()
