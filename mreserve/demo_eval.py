"""Zero-shot evaluation on the held-out demo videos: choose the masked span among options.

    python -m mreserve.demo_eval --workdir WORKDIR [--step N] [--demo-dir DIR] [--out FILE]
    python -m mreserve.demo_eval --params EXPORTED_DIR --demo-dir DIR [--out FILE]

Design: the questions are laid out as the pretraining sequences are (spec §2.1), so the
evaluation asks the model exactly what training taught it, on videos it never saw.

- Each held-out video (demo corpus `val` split) is decoded with the zero-shot preprocessing
  (`data_pipeline.segments.video_to_segments`: one frame per 5 s segment, [3, 60, 65] audio
  features with the fixed zero-shot window gaps, the words of the segment).
- The video is cut into groups of `segments_per_group` consecutive segments (a group
  sequence of pretraining: tiny 2 segments, base 8; the last group ends at the last
  segment). Its words go to audio sub-segment rows (3 per segment) by the records' rule
  (`mreserve_masking.assign_rows`, nearest window centre, monotone), each word with its own
  BPE pieces, as the record writer stores them.
- A question is a segment whose transcript names the colour (or shape) of the scene its
  frame shows, inside that scene (the `name_once` corpus never names shapes, so it has
  colour questions only; an attribute without questions gets no task entry). Its masked
  row is the sub-segment holding that naming. Other namings of the answer in the same
  segment are dropped from the context (with the `name_once` corpus there are none), so
  the answer cannot be copied from the words.
- The options are the masked row's own words with the answer replaced by each colour (or
  shape): they differ only in that word, chance is 1 / number of options, and they are the
  kind of span text the span encoder embeds in training (a whole sub-segment transcript,
  not a lone word).
- Modes (the first is the headline):
  `text2audio`: the text2audio layout: the masked row is `[MASK, MASKAUDIO]`, every other
  row of the group keeps its words; the group's frames as vision; no audio input.
  `audio2text`: the audio2text layout: the masked row is `[MASK]`, every other row is 6
  AUDIOSPAN tokens of its audio (training keeps a masked row's neighbours as text with
  p 0.8; here all are audio, so only frames and sound can tell the answer).

Scoring goes through the zero-shot API (`mreserve/zero_shot.py`): the joint output at MASK
from `batch_embed_video` against `get_label_space` of the question's options, `logits = 100
h @ labels.T` as the original zero-shot scripts do. Accuracy is the top-1 rate.

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
from data_pipeline.mreserve_masking import assign_rows
from data_pipeline.segments import video_to_segments
from data_pipeline.spectrogram import NUM_SUBSEGS, SUBSEG_LEN, ZERO_SHOT_GAP
from data_pipeline.tokenizer import AUDIOSPAN, MASK, MASKAUDIO, PAD, load_tokenizer
from data_pipeline.transcripts import parse_transcript
from mreserve.model_config import ModelConfig
from mreserve.modeling import MerlotReserve
from mreserve.zero_shot import PretrainedMerlotReserve

OPTIONS = {'colour': tuple(demo_corpus.COLOURS), 'shape': tuple(demo_corpus.SHAPES)}
MODES = ('text2audio', 'audio2text')   # the first is the headline
SEGMENT_SECONDS = 5.0
# Spectrogram frame where each zero-shot audio window starts ([2:62], [64:124], [126:186]).
WINDOW_STARTS = [ZERO_SHOT_GAP + i * (SUBSEG_LEN + ZERO_SHOT_GAP) for i in range(NUM_SUBSEGS)]


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


def decode_video(video_entry: dict, corpus_dir: str, grid: tuple[int, int]) -> dict:
    """Zero-shot preprocessing of one demo video: its words and segments (with `patches`)."""
    words = parse_transcript(os.path.join(corpus_dir, video_entry['transcript']))
    segments = video_to_segments(os.path.join(corpus_dir, video_entry['video']),
                                 SEGMENT_SECONDS, words=words)
    for segment in segments:
        segment['patches'] = image_to_patches(segment['frame'], grid)
    return dict(entry=video_entry, words=words, segments=segments)


def _groups(num_segments: int, per_group: int) -> list[range]:
    """Consecutive groups of `per_group` segments; the last one ends at the last segment."""
    if num_segments < per_group:
        return []
    starts = list(range(0, num_segments - per_group + 1, per_group))
    if starts[-1] + per_group < num_segments:
        starts.append(num_segments - per_group)
    return [range(s, s + per_group) for s in starts]


def _rows(words, segments, group: range) -> list[list]:
    """The group's words as audio sub-segment rows (3 per segment): [[Word, ...], ...]."""
    per_seg = [[w for w in words if seg['start_time'] <= (w.start + w.end) / 2 < seg['end_time']]
               for seg in (segments[i] for i in group)]
    centroids = np.array([(w.start + w.end) / 2 - segments[i]['start_time']
                          for i, ws in zip(group, per_seg) for w in ws], np.float64)
    row_of = assign_rows(np.array([len(ws) for ws in per_seg]), centroids,
                         np.tile(WINDOW_STARTS, (len(group), 1)))
    rows = [[] for _ in range(NUM_SUBSEGS * len(group))]
    for w, r in zip((w for ws in per_seg for w in ws), row_of.tolist()):
        rows[r].append(w)
    return rows


def build_questions(video: dict, attribute: str, tokenizer, length: int,
                    mode: str = 'text2audio', segments_per_group: int = 2) -> list[dict]:
    """The questions of one decoded video (see the module docstring): per question `images`
    [G, h·w, 768], `audio_clips` [3G, 60, 65], `tokens`/`subseg_idxs` [length], `options`
    (texts), `answer` (index into OPTIONS[attribute])."""
    if mode not in MODES:
        raise ValueError(f'mode {mode!r} is not one of {MODES}')
    entry, segments, names = video['entry'], video['segments'], OPTIONS[attribute]
    encode = lambda word: list(tokenizer.encode(word))
    questions = []
    for group in _groups(len(segments), segments_per_group):
        rows = _rows(video['words'], segments, group)
        for g, i in enumerate(group):
            start, end = segments[i]['start_time'], segments[i]['end_time']
            scene = _scene_at(entry['scenes'], (start + end) / 2)
            if scene is None:
                continue
            answer = scene[attribute]
            seg_rows = range(NUM_SUBSEGS * g, NUM_SUBSEGS * (g + 1))
            naming = [(r, w) for r in seg_rows for w in rows[r] if w.word == answer
                      and scene['start'] <= w.start and w.end <= scene['end']]
            if not naming:
                continue
            masked, first = naming[0]
            tokens, subseg = [], []
            for r, row in enumerate(rows):
                if r == masked:
                    ids = [MASK, MASKAUDIO] if mode == 'text2audio' else [MASK]
                elif mode == 'audio2text':
                    ids = [AUDIOSPAN] * 6
                else:
                    ids = [t for w in row if not (r in seg_rows and w.word == answer)
                           for t in encode(w.word)]
                tokens += ids
                subseg += [r] * len(ids)
            if len(tokens) > length:          # cut the far end, keep the MASK
                cut = len(tokens) - length
                at = tokens.index(MASK)
                head = min(cut, at)
                tokens, subseg = tokens[head:], subseg[head:]
                tokens, subseg = tokens[:length], subseg[:length]
            pad = length - len(tokens)
            audio = np.stack([segments[j]['spectrogram'] for j in group]).reshape(-1, 60, 65)
            if mode != 'audio2text':
                audio = np.zeros_like(audio)
            context = [w.word for w in rows[masked]]
            questions.append(dict(
                images=np.stack([segments[j]['patches'] for j in group]),
                audio_clips=np.asarray(audio, np.float32),
                tokens=np.array(tokens + [PAD] * pad, np.int32),
                subseg_idxs=np.array(subseg + [-1] * pad, np.int32),
                options=[' '.join(name if w == answer else w for w in context)
                         for name in names],
                answer=names.index(answer), video=entry['id'], start_time=start))
    return questions


def load_val_entries(corpus_dir: str, split: str = 'val') -> list[dict]:
    with open(os.path.join(corpus_dir, f'{split}.jsonl')) as f:
        return [json.loads(line) for line in f if line.strip()]


def score(model: PretrainedMerlotReserve, questions: Sequence[dict],
          batch_size: int = 32) -> np.ndarray:
    """logits [n_questions, n_options]: 100 · (joint output at MASK) · its options' labels."""
    logits = []
    for i in range(0, len(questions), batch_size):
        chunk = questions[i:i + batch_size]
        padded = chunk + [chunk[-1]] * (batch_size - len(chunk))   # one compiled shape
        images, audio, tokens, subseg = (np.stack([q[key] for q in padded]) for key in (
            'images', 'audio_clips', 'tokens', 'subseg_idxs'))
        h = np.asarray(model.batch_embed_video(images, audio, tokens, subseg))
        n_options = len(padded[0]['options'])
        labels = np.asarray(model.get_label_space(
            [o for q in padded for o in q['options']])).reshape(batch_size, n_options, -1)
        for b in range(len(chunk)):
            at_mask = h[b][tokens[b] == MASK][0]
            logits.append(100.0 * labels[b] @ at_mask)
    return np.stack(logits)


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
        options = OPTIONS[attribute]
        for mode in modes:
            questions = [q for video in videos for q in build_questions(
                video, attribute, tokenizer, length, mode, config.segments_per_group)]
            if not questions:      # e.g. shape with the name_once corpus: never named
                continue
            answers = np.array([q['answer'] for q in questions], np.int64)
            predicted = score(model, questions).argmax(-1)
            results[f'{attribute}/{mode}'] = dict(
                accuracy=float(np.mean(predicted == answers)),
                chance=1.0 / len(options), num_examples=len(questions), options=list(options),
                predicted_counts=np.bincount(predicted, minlength=len(options)).tolist())
    none = dict(accuracy=0.0, num_examples=0, chance=1 / len(OPTIONS[attributes[0]]))
    head = results.get(f'{attributes[0]}/{modes[0]}', none)
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
        print(f'{name:16s} accuracy {task["accuracy"]:.3f} (chance {task["chance"]:.3f}, '
              f'{task["num_examples"]} examples)')
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == '__main__':
    main()
