"""Zero-shot evaluation on the held-out demo videos: does the model know what it sees and hears?

    python -m mreserve.demo_eval --workdir WORKDIR [--step N] [--demo-dir DIR] [--out FILE]
    python -m mreserve.demo_eval --params EXPORTED_DIR --demo-dir DIR [--out FILE]

Each held-out video (demo corpus `val` split) is decoded with the zero-shot preprocessing
(`data_pipeline.segments.video_to_segments`: one frame per 5 s segment, [3, 60, 65] audio
features, the words of the segment). A segment is a question when its transcript names the
colour (or shape) of the scene its frame shows, inside that scene. The question is that
one segment laid out like a row of pretraining (spec §2.1), with its frame as vision input:

- mode `row` (the headline): like a text2audio row of pretraining: the sub-segment holding
  the first naming becomes a lone MASK, the other two keep their words except the answer
  (so it cannot be copied from the transcript); the frame; no audio input;
- mode `text`: the segment's transcript with every naming of the answer replaced by one MASK
  (first occurrence) or dropped (later ones), plus the frame; no audio;
- mode `audio`: like an audio2text row: the sub-segment holding the first naming becomes a
  lone MASK, the other two sub-segments are 6 AUDIOSPAN tokens each (their audio); no
  transcript text, so only frame + sound can tell the answer.

The joint output at MASK is scored against the span-encoder label space of the options (all
colour names, or all shape names) through `PretrainedMerlotReserve.get_label_space`, as the
original zero-shot scripts do (`logits = 100 h @ labels.T`). Accuracy is the top-1 rate,
chance is 1 / number of options.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from data_pipeline import demo_corpus, media
from data_pipeline.segments import video_to_segments
from data_pipeline.tokenizer import AUDIOSPAN, MASK, PAD, load_tokenizer
from data_pipeline.transcripts import parse_transcript
from mreserve.model_config import ModelConfig
from mreserve.modeling import MerlotReserve
from mreserve.zero_shot import PretrainedMerlotReserve

OPTIONS = {'colour': tuple(demo_corpus.COLOURS), 'shape': tuple(demo_corpus.SHAPES)}
MODES = ('row', 'text', 'audio')   # the first is the headline
SEGMENT_SECONDS = 5.0


def image_to_patches(frame: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """uint8 [H, W, 3] -> [h·w, 768] float32 patches: the reader's eval-time resize/pad/patchify
    (aspect-preserving bilinear resize into the grid box, zero padding, spec §6.3)."""
    from data_pipeline.mreserve_reader import decode_image
    encoded = media.encode_jpeg(np.asarray(frame, np.uint8), quality=95)
    return decode_image(encoded, tuple(grid), None, train=False).numpy()


def _scene_at(scenes: Sequence[dict], t: float) -> dict | None:
    for scene in scenes:
        if scene['start'] <= t < scene['end']:
            return scene
    return None


def _subsegment(t: float, start: float, n: int) -> int:
    return int(np.clip((t - start) // (SEGMENT_SECONDS / n), 0, n - 1))


def decode_video(video_entry: dict, corpus_dir: str, grid: tuple[int, int]) -> dict:
    """Zero-shot preprocessing of one demo video: its words and segments (with `patches`)."""
    words = parse_transcript(os.path.join(corpus_dir, video_entry['transcript']))
    segments = video_to_segments(os.path.join(corpus_dir, video_entry['video']),
                                 SEGMENT_SECONDS, words=words)
    for segment in segments:
        segment['patches'] = image_to_patches(segment['frame'], grid)
    return dict(entry=video_entry, words=words, segments=segments)


def build_questions(video: dict, attribute: str, tokenizer, length: int, mode: str = 'audio',
                    num_subsegments: int = 3) -> list[dict]:
    """The questions of one decoded video (see the module docstring): per question `images`
    [1, h·w, 768], `audio_clips` [3, 60, 65], `tokens`/`subseg_idxs` [length], `answer`."""
    if mode not in MODES:
        raise ValueError(f'mode {mode!r} is not one of {MODES}')
    entry, words = video['entry'], video['words']
    questions = []
    for segment in video['segments']:
        start, end = segment['start_time'], segment['end_time']
        scene = _scene_at(entry['scenes'], (start + end) / 2)
        if scene is None:
            continue
        answer = scene[attribute]
        inside = [w for w in words if start <= (w.start + w.end) / 2 < end]
        naming = [i for i, w in enumerate(inside) if w.word == answer
                  and scene['start'] <= w.start and w.end <= scene['end']]
        if not naming:
            continue
        first = inside[naming[0]]
        tokens, subseg = [], []
        if mode == 'audio':
            k = _subsegment((first.start + first.end) / 2, start, num_subsegments)
            for j in range(num_subsegments):
                row = [MASK] if j == k else [AUDIOSPAN] * 6
                tokens += row
                subseg += [j] * len(row)
        elif mode == 'text':
            for i, w in enumerate(inside):
                if w.word == answer and i != naming[0]:
                    continue
                ids = [MASK] if i == naming[0] else tokenizer.encode(w.word)
                tokens += ids
                subseg += [_subsegment((w.start + w.end) / 2, start, num_subsegments)] * len(ids)
        else:
            k = _subsegment((first.start + first.end) / 2, start, num_subsegments)
            for j in range(num_subsegments):
                row = [w for w in inside if w.word != answer
                       and _subsegment((w.start + w.end) / 2, start, num_subsegments) == j]
                ids = [MASK] if j == k else [i for w in row for i in tokenizer.encode(w.word)]
                tokens += ids
                subseg += [j] * len(ids)
        tokens, subseg = tokens[:length], subseg[:length]
        if MASK not in tokens:
            continue
        pad = length - len(tokens)
        audio = segment['spectrogram'] if mode == 'audio' else np.zeros_like(
            segment['spectrogram'])
        questions.append(dict(
            images=segment['patches'][None], audio_clips=np.asarray(audio, np.float32),
            tokens=np.array(tokens + [PAD] * pad, np.int32),
            subseg_idxs=np.array(subseg + [-1] * pad, np.int32),
            answer=OPTIONS[attribute].index(answer), video=entry['id'], start_time=start))
    return questions


def load_val_entries(corpus_dir: str, split: str = 'val') -> list[dict]:
    with open(os.path.join(corpus_dir, f'{split}.jsonl')) as f:
        return [json.loads(line) for line in f if line.strip()]


def score(model: PretrainedMerlotReserve, questions: Sequence[dict], options: Sequence[str],
          batch_size: int = 32) -> np.ndarray:
    """logits [n_questions, n_options]: 100 · (joint output at MASK) · label space."""
    labels = np.asarray(model.get_label_space(list(options)))
    logits = []
    for i in range(0, len(questions), batch_size):
        chunk = questions[i:i + batch_size]
        padded = chunk + [chunk[-1]] * (batch_size - len(chunk))   # one compiled shape
        images, audio, tokens, subseg = (np.stack([q[key] for q in padded]) for key in (
            'images', 'audio_clips', 'tokens', 'subseg_idxs'))
        h = np.asarray(model.batch_embed_video(images, audio, tokens, subseg))
        at_mask = np.stack([h[b][tokens[b] == MASK].mean(0) for b in range(len(chunk))])
        logits.append(100.0 * at_mask @ labels.T)
    return np.concatenate(logits) if logits else np.zeros((0, len(options)), np.float32)


def evaluate(params: Any, model_config: ModelConfig, tokenizer, corpus_dir: str,
             attributes: Sequence[str] = ('colour', 'shape'), modes: Sequence[str] = MODES,
             split: str = 'val', length: int | None = None,
             cache: dict | None = None) -> dict:
    """Zero-shot accuracy on the demo `split` for each (attribute, mode); the first pair is
    the headline (`accuracy`, `chance`, `num_examples`). `cache` (a dict) keeps the decoded
    videos between calls (e.g. trained vs untrained params)."""
    t0 = time.time()
    if isinstance(tokenizer, str | os.PathLike):
        tokenizer = load_tokenizer(tokenizer)
    config = model_config.replace(dtype='float32')
    model = PretrainedMerlotReserve(MerlotReserve(config), jax.device_get(params), tokenizer)
    length = length or config.lang_seq_len
    cache = {} if cache is None else cache
    key = (os.path.abspath(corpus_dir), split, tuple(config.output_grid))
    if key not in cache:
        cache[key] = [decode_video(entry, corpus_dir, config.output_grid)
                      for entry in load_val_entries(corpus_dir, split)]
    videos = cache[key]
    results = {}
    for attribute in attributes:
        for mode in modes:
            questions = [q for video in videos for q in build_questions(
                video, attribute, tokenizer, length, mode, config.num_audio_subsegments)]
            options = OPTIONS[attribute]
            logits = score(model, questions, options)
            answers = np.array([q['answer'] for q in questions], np.int64)
            predicted = logits.argmax(-1) if len(questions) else answers
            results[f'{attribute}/{mode}'] = dict(
                accuracy=float(np.mean(predicted == answers)) if len(questions) else 0.0,
                chance=1.0 / len(options), num_examples=len(questions), options=list(options),
                predicted_counts=np.bincount(predicted, minlength=len(options)).tolist())
    head = results[f'{attributes[0]}/{modes[0]}']
    return dict(accuracy=head['accuracy'], chance=head['chance'],
                num_examples=head['num_examples'], headline=f'{attributes[0]}/{modes[0]}',
                split=split, tasks=results, seconds=round(time.time() - t0, 1))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--workdir', default='', help='a training work directory (checkpoints/)')
    parser.add_argument('--step', type=int, default=-1, help='checkpoint step (default: latest)')
    parser.add_argument('--params', default='',
                        help='or an exported params directory (python -m trainer.export)')
    parser.add_argument('--demo-dir', default='', help='mreserve.demo_data output folder '
                        "(default: the run's demo.dir or WORKDIR/demo)")
    parser.add_argument('--out', default='', help='write the result JSON here')
    args = parser.parse_args(argv)
    if bool(args.workdir) == bool(args.params):
        parser.error('give one of --workdir and --params')
    with open(os.path.join(args.workdir or args.params, 'config.json')) as f:
        saved = json.load(f)
    if args.workdir:
        from trainer.export import read_checkpoint_params
        step, params = read_checkpoint_params(args.workdir, None if args.step < 0 else args.step)
    else:
        from trainer.params_io import load_params
        step, params = saved.get('exported_from', {}).get('step'), load_params(args.params)
    demo = args.demo_dir or saved.get('demo', {}).get('dir') or os.path.join(
        args.workdir or '.', 'demo')
    result = evaluate(params, ModelConfig.from_config(saved),
                      os.path.join(demo, 'tokenizer.model'), os.path.join(demo, 'corpus'))
    result['step'] = step
    print(json.dumps({k: v for k, v in result.items() if k != 'tasks'}))
    for name, task in result['tasks'].items():
        print(f'{name:14s} accuracy {task["accuracy"]:.3f} (chance {task["chance"]:.3f}, '
              f'{task["num_examples"]} examples)')
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == '__main__':
    main()
