"""Downstream examples and batches for MERLOT Reserve finetuning (spec §7).

An *example* is a dict of decoded numpy arrays; `*_batch` functions turn examples into the
static-shape batches of mreserve/finetune_tasks.py:

  images [B, S, h*w, 768] float32   frames as patches (zero frames beyond `num_frames`)
  audio_clips [B, A, 60, 65]        audio sub-segments (TVQA, classification with audio)
  tokens / segment_idx / audio_ptr [B, K, L] int32   K option sequences (or 1 for
                                    classification), each with one MASK token
  label [B] (TVQA, classification) or labels [B, 2] (VCR: Q->A, QA->R)

TVQA examples: `patches` [7, h*w, 768], `audio` [21, 60, 65], `query`, `choices` (5),
`subs` (7 token lists), `label`. VCR: `patches` [1, h*w, 768], `qa_query`, `qa_choices` (4),
`qar_query`, `qar_choices` (4), `qa_label`, `qar_label`. Classification: `patches` [S, ...],
`audio` [3S, 60, 65], `label`. Sources (TFRecords, TFDS, learnable synthetic corpora) live in
mreserve/finetune_sources.py.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from mreserve.model_config import AUDIOSPAN, MASK

AUDIO_PER_SEGMENT = 18          # 3 sub-segments x 6 pooled audio tokens


@dataclasses.dataclass(frozen=True)
class Layout:
    """Static sizes of one task's sequences."""
    lang_seq_len: int               # L: text / audio positions per option sequence
    max_option_len: int = 255       # option row before MASK (TVQA 255, VCR 143)
    num_segments: int = 7
    answer_prefix: tuple[int, ...] = ()     # ids of "answer: "
    rationale_prefix: tuple[int, ...] = ()  # ids of "rationale: "


def option_row(query: Sequence[int], prefix: Sequence[int], choice: Sequence[int],
               limit: int) -> list[int]:
    """query + prefix + choice, cut to `limit` tokens from the front of the query (the
    answer is kept), then MASK."""
    row = [*query, *prefix, *choice]
    return row[max(0, len(row) - limit):] + [MASK]


def _put(out: dict, k: int, tokens: Sequence[int], segs: Sequence[int], ptrs: Sequence[int]):
    n = min(len(tokens), out['tokens'].shape[1])
    out['tokens'][k, :n] = tokens[:n]
    out['segment_idx'][k, :n] = segs[:n]
    out['audio_ptr'][k, :n] = ptrs[:n]


def _empty(k: int, length: int) -> dict:
    return dict(tokens=np.zeros((k, length), np.int32),
                segment_idx=np.zeros((k, length), np.int32),
                audio_ptr=np.full((k, length), -1, np.int32))


def tvqa_sequences(ex: dict, layout: Layout) -> dict:
    """10 sequences: options 0..4 with audio (18 AUDIOSPAN per segment, segment ids 1..7),
    then options 0..4 with each segment's subtitles (segment ids 1..7) (spec §7.1)."""
    length, n_seg = layout.lang_seq_len, layout.num_segments
    choices = ex['choices']
    out = _empty(2 * len(choices), length)
    audio_limit = min(layout.max_option_len, length - AUDIO_PER_SEGMENT * n_seg - 1)
    if audio_limit < 1:
        raise ValueError(f'lang_seq_len {length} leaves no room for the option next to '
                         f'{AUDIO_PER_SEGMENT * n_seg} audio tokens')
    for k, choice in enumerate(choices):
        row = option_row(ex['query'], layout.answer_prefix, choice, audio_limit)
        tokens, segs, ptrs = list(row), [0] * len(row), [-1] * len(row)
        for i in range(n_seg):
            tokens += [AUDIOSPAN] * AUDIO_PER_SEGMENT
            segs += [i + 1] * AUDIO_PER_SEGMENT
            ptrs += [3 * i + j // 6 for j in range(AUDIO_PER_SEGMENT)]
        _put(out, k, tokens, segs, ptrs)
        row = option_row(ex['query'], layout.answer_prefix, choice,
                         min(layout.max_option_len, length - 1))
        tokens, segs = list(row), [0] * len(row)
        for i, sub in enumerate(ex['subs'][:n_seg]):
            tokens += list(sub)
            segs += [i + 1] * len(sub)
        _put(out, len(choices) + k, tokens, segs, [-1] * len(tokens))
    return out


def shift_audio(audio: np.ndarray, rng: np.random.Generator, max_shift: int = 4) -> np.ndarray:
    """Training augmentation (spec §7.1): each segment's 180 frames move by 0..max_shift
    frames, the gap filled with Gaussian noise of the segment's mean and std; the playback-speed
    column stays 1. audio [3 * n_seg, 60, 65]."""
    n_sub, frames, feats = audio.shape
    seg = audio.reshape(n_sub // 3, 3 * frames, feats).copy()
    for i in range(len(seg)):
        shift = int(rng.integers(0, max_shift + 1))
        if shift:
            values = seg[i, :, :-1]
            noise = rng.normal(values.mean(), values.std() + 1e-6,
                               size=(shift, feats - 1)).astype(np.float32)
            seg[i, :, :-1] = np.concatenate([noise, values[:-shift]])
    seg[..., -1] = 1.0
    return seg.reshape(audio.shape)


def tvqa_batch(examples: Sequence[dict], layout: Layout,
               rng: np.random.Generator | None = None) -> dict:
    rows = []
    for ex in examples:
        row = tvqa_sequences(ex, layout)
        row['images'] = ex['patches']
        row['audio_clips'] = ex['audio'] if rng is None else shift_audio(ex['audio'], rng)
        row['label'] = np.int32(ex['label'])
        rows.append(row)
    return stack(rows)


def vcr_batch(examples: Sequence[dict], layout: Layout) -> dict:
    """8 sequences per example: Q->A options 0..3, then QA->R options 0..3; everything is
    segment 0 (one image) (spec §7.2)."""
    rows = []
    limit = min(layout.max_option_len, layout.lang_seq_len - 1)
    for ex in examples:
        out = _empty(8, layout.lang_seq_len)
        for k, choice in enumerate(ex['qa_choices']):
            row = option_row(ex['qa_query'], layout.answer_prefix, choice, limit)
            _put(out, k, row, [0] * len(row), [-1] * len(row))
        for k, choice in enumerate(ex['qar_choices']):
            row = option_row(ex['qar_query'], layout.rationale_prefix, choice, limit)
            _put(out, 4 + k, row, [0] * len(row), [-1] * len(row))
        out['images'] = ex['patches']
        out['labels'] = np.asarray([ex['qa_label'], ex['qar_label']], np.int32)
        rows.append(out)
    return stack(rows)


def classification_batch(examples: Sequence[dict], layout: Layout, use_audio: bool,
                         prompt: Sequence[int] = ()) -> dict:
    """One sequence per example: prompt + MASK (segment 0), then with audio 18 AUDIOSPAN per
    segment (segment ids 0..S-1); frames are segments 0..S-1."""
    rows = []
    for ex in examples:
        out = _empty(1, layout.lang_seq_len)
        tokens = [*prompt, MASK]
        segs, ptrs = [0] * len(tokens), [-1] * len(tokens)
        if use_audio:
            for i in range(layout.num_segments):
                tokens += [AUDIOSPAN] * AUDIO_PER_SEGMENT
                segs += [i] * AUDIO_PER_SEGMENT
                ptrs += [3 * i + j // 6 for j in range(AUDIO_PER_SEGMENT)]
            out['audio_clips'] = ex['audio']
        if len(tokens) > layout.lang_seq_len:
            raise ValueError(f'lang_seq_len {layout.lang_seq_len} < {len(tokens)} tokens')
        _put(out, 0, tokens, segs, ptrs)
        out['images'] = ex['patches']
        out['label'] = np.int32(ex['label'])
        rows.append(out)
    return stack(rows)


def stack(rows: list[dict]) -> dict:
    return {k: np.stack([np.asarray(r[k]) for r in rows]) for k in rows[0]}
