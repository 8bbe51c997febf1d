"""Zero-shot multiple-choice video QA from MASK prompts (spec §6.3: MSRVTT-QA questions turned
into fill-in-the-blank with an answer vocabulary), on `PretrainedMerlotReserve`.

    python -m mreserve.zero_shot_qa --checkpoint EXPORT --questions test_qa.json \
        --videos DIR --tokenizer BPE.json [--vocab_from train_qa.json --vocab_size 1000]

Each question becomes a statement with one <|MASK|> (`question_to_prompt`); the video's
segments (5 s, at most `max_segments`, spread evenly) give frames and audio (AUDIOSPAN tokens),
and the prompt is the text of the last segment. The label space is the answer vocabulary (the
`vocab_size` most frequent answers of `vocab_from`, ties alphabetical), scored as in the
original: logits = 100 * (joint output at MASK) . label embeddings. Metrics (written to
CHECKPOINT/metrics_zero_shot_qa.json): top-1 / top-5 accuracy over all questions (answers
outside the vocabulary count as wrong) and the share of answers in the vocabulary.
"""
from __future__ import annotations

import collections
import json
import os
import re
from collections.abc import Sequence

import numpy as np

from mreserve.model_config import AUDIOSPAN, MASK, PADDING

MASK_TEXT = '<|MASK|>'
# (pattern on the lower-cased question without '?', template); first match wins
_RULES = (
    (r'^what (is|are) (.+?) doing$', r'\2 \1 ' + MASK_TEXT),
    (r'^what (is|are) (.+?) (playing|wearing|holding|eating|watching|riding|cooking|'
     r'showing|talking about|singing|driving)$', r'\2 \1 \3 ' + MASK_TEXT),
    (r'^what does (.+?) do$', r'\1 does ' + MASK_TEXT),
    (r'^what (is|are) (.+)$', r'\2 \1 ' + MASK_TEXT),
    (r'^who (is|are) (.+)$', MASK_TEXT + r' \1 \2'),
    (r'^who (.+)$', MASK_TEXT + r' \1'),
    (r'^where (is|are) (.+)$', r'\2 \1 in ' + MASK_TEXT),
    (r'^how many (.+?) (is|are) (.+)$', r'there \2 ' + MASK_TEXT + r' \1 \3'),
    (r'^how many (.+)$', MASK_TEXT + r' \1'),
    (r'^what color (is|are) (.+)$', r'\2 \1 ' + MASK_TEXT),
    (r'^what (.+)$', r'the \1 is ' + MASK_TEXT),
)


def question_to_prompt(question: str) -> str:
    """Fill-in-the-blank statement with one MASK for a wh-question (rules above); other
    questions become 'question: ... answer: MASK'."""
    q = re.sub(r'\s+', ' ', question.strip().lower()).rstrip('?').strip()
    for pattern, template in _RULES:
        if re.match(pattern, q):
            return re.sub(pattern, template, q) + '.'
    return f'question: {q}? answer: {MASK_TEXT}'


def answer_vocabulary(answers: Sequence[str], size: int) -> list[str]:
    counts = collections.Counter(a.strip().lower() for a in answers)
    return [a for a, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:size]]


def evenly(n: int, k: int) -> list[int]:
    """k indices spread over range(n) (all of them when n <= k)."""
    if n <= k:
        return list(range(n))
    return [int(round(x)) for x in np.linspace(0, n - 1, k)]


def video_inputs(segments: Sequence[dict], prompt_ids: Sequence[int], grid, length: int,
                 use_audio: bool = True) -> dict:
    """One question: images [S, h*w, 768], audio_clips [3S, 60, 65], tokens / subseg_idxs
    [length]. Segments 0..S-1 give 18 AUDIOSPAN each (`use_audio`), the prompt follows as text
    of the last segment; tokens are cut from the front so the prompt (and MASK) survives."""
    from mreserve.demo_eval import image_to_patches
    tokens, subseg = [], []
    n = len(segments)
    if use_audio:
        for i in range(n):
            tokens += [AUDIOSPAN] * 18
            subseg += [3 * i + j // 6 for j in range(18)]
    tokens += list(prompt_ids)
    subseg += [3 * (n - 1)] * len(prompt_ids)
    if len(tokens) > length:      # drop whole audio segments from the front
        drop = -(-(len(tokens) - length) // 18) * 18
        tokens, subseg = tokens[drop:], subseg[drop:]
    tokens, subseg = tokens[-length:], subseg[-length:]
    pad = length - len(tokens)
    audio = np.stack([s['spectrogram'] for s in segments]).reshape(-1, 60, 65)
    if not use_audio:
        audio = np.zeros_like(audio)
    return dict(images=np.stack([s['patches'] if 'patches' in s else
                                 image_to_patches(s['frame'], grid) for s in segments]),
                audio_clips=audio.astype(np.float32),
                tokens=np.array(tokens + [PADDING] * pad, np.int32),
                subseg_idxs=np.array(subseg + [-1] * pad, np.int32))


def score(model, inputs: Sequence[dict], label_space: np.ndarray, batch_size: int = 8):
    """logits [N, V] = 100 * (unit joint output at the MASK) . label_space (unit rows)."""
    logits = []
    for first in range(0, len(inputs), batch_size):
        chunk = list(inputs[first:first + batch_size])
        padded = chunk + [chunk[-1]] * (batch_size - len(chunk))    # one compiled shape
        arrays = [np.stack([q[k] for q in padded])
                  for k in ('images', 'audio_clips', 'tokens', 'subseg_idxs')]
        h = np.asarray(model.batch_embed_video(*arrays))
        at_mask = np.stack([h[b][arrays[2][b] == MASK][0] for b in range(len(chunk))])
        logits.append(100.0 * at_mask @ np.asarray(label_space).T)
    return np.concatenate(logits) if logits else np.zeros((0, len(label_space)), np.float32)


def mc_metrics(logits: np.ndarray, answers: Sequence[str], vocab: Sequence[str]) -> dict:
    """Top-1 / top-5 accuracy (percent) over all questions; out-of-vocabulary answers are wrong."""
    index = {a: i for i, a in enumerate(vocab)}
    target = np.array([index.get(a.strip().lower(), -1) for a in answers])
    order = np.argsort(-np.asarray(logits), axis=-1, kind='stable')
    hit1 = order[:, 0] == target
    hit5 = (order[:, :5] == target[:, None]).any(-1)
    return {'accuracy': 100.0 * float(hit1.mean()), 'top5': 100.0 * float(hit5.mean()),
            'in_vocabulary': 100.0 * float((target >= 0).mean()),
            'num_questions': int(len(target)), 'vocab_size': len(vocab)}


def find_video(videos_dir: str, video_id: str) -> str:
    """MSRVTT names clips video{id}.mp4; a file named {id}.* is accepted too."""
    for name in (f'video{video_id}', f'{video_id}'):
        for ext in ('.mp4', '.webm', '.mkv', '.avi', '.mov', '.ogv'):
            path = os.path.join(videos_dir, name + ext)
            if os.path.exists(path):
                return path
    raise FileNotFoundError(f'no video for id {video_id} in {videos_dir}')


def evaluate(model, questions, videos_dir: str, vocab: Sequence[str], max_segments: int = 8,
             length: int = 160, use_audio: bool = True, batch_size: int = 8) -> dict:
    """Zero-shot MC accuracy of `model` (PretrainedMerlotReserve with a tokenizer)."""
    from data_pipeline.segments import video_to_segments
    grid = model.model.config.output_grid
    decoded: dict[str, list[dict]] = {}
    inputs = []
    for q in questions:
        if q.video_id not in decoded:
            segments = video_to_segments(find_video(videos_dir, q.video_id))
            decoded[q.video_id] = [segments[i] for i in evenly(len(segments), max_segments)]
        prompt = model.tokenizer.encode(question_to_prompt(q.question))
        inputs.append(video_inputs(decoded[q.video_id], prompt, grid, length, use_audio))
    labels = np.asarray(model.get_label_space(list(vocab)))
    logits = score(model, inputs, labels, batch_size)
    metrics = mc_metrics(logits, [q.answer for q in questions], vocab)
    metrics['predictions'] = [dict(id=q.qid, prompt=question_to_prompt(q.question),
                                   answer=q.answer, predicted=vocab[int(i)])
                              for q, i in zip(questions, logits.argmax(-1))]
    return metrics


def main(argv=None) -> dict:
    import argparse

    from data_pipeline.qa_annotations import read_msrvtt_qa
    from mreserve.zero_shot import PretrainedMerlotReserve
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--checkpoint', required=True, help='params directory with config.json')
    p.add_argument('--questions', required=True)
    p.add_argument('--videos', required=True)
    p.add_argument('--tokenizer', required=True)
    p.add_argument('--vocab_from', default='', help='questions whose answers form the vocab '
                                                    '(default: --questions)')
    p.add_argument('--vocab_size', type=int, default=1000)
    p.add_argument('--max_segments', type=int, default=8)
    p.add_argument('--no_audio', action='store_true')
    a = p.parse_args(argv)
    model = PretrainedMerlotReserve.from_converted(a.checkpoint, tokenizer=a.tokenizer)
    questions = read_msrvtt_qa(a.questions)
    vocab = answer_vocabulary([q.answer for q in read_msrvtt_qa(a.vocab_from or a.questions)],
                              a.vocab_size)
    metrics = evaluate(model, questions, a.videos, vocab, a.max_segments,
                       use_audio=not a.no_audio)
    predictions = metrics.pop('predictions')
    with open(os.path.join(a.checkpoint, 'metrics_zero_shot_qa.json'), 'w') as f:
        json.dump(metrics, f, indent=2, sort_keys=True)
    with open(os.path.join(a.checkpoint, 'predictions_zero_shot_qa.json'), 'w') as f:
        json.dump(predictions, f)
    print(json.dumps(metrics, indent=1))
    return metrics


if __name__ == '__main__':
    main()
