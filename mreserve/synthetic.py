"""Random pretraining batches in the original loader's layout (spec §2.1, §3.3).

They are structurally valid (complete AUDIOSPAN runs, one MASK per span, pointers as the
loader writes them) but the content is noise. Used by the random-init loss test, and by the
engine before a real data pipeline exists. Each example depends only on (seed, index), so
hosts can build their own slice of a global batch (and step, for a stream of batches).
"""
from __future__ import annotations

import numpy as np

from mreserve.model_config import AUDIOSPAN, LTOVPOOL, MASK, MASKAUDIO, ModelConfig

FIRST_ORDINARY_ID = 11
SEQUENCE_KEYS = ('audio2text', 'audio_text_matching', 'random_text', 'text2audio')


def batch_shapes(c: ModelConfig, batch: int) -> dict[str, tuple[tuple[int, ...], type]]:
    """Shape and dtype of every batch entry for `batch` examples."""
    n_patches = c.output_grid[0] * c.output_grid[1]
    n_spans = 2 * c.num_targets + c.text_span_budget
    shapes = {
        'images': ((batch, c.num_segments * n_patches, c.patch_dim), np.float32),
        'audio_clips': ((batch, c.num_audio_spans * c.audio_seq_length, c.audio_num_features),
                        np.float32),
        'text_spans': ((batch, n_spans, c.text_span_length), np.int32),
        'video_src_index': ((batch, c.num_segments), np.int32),
    }
    for key in SEQUENCE_KEYS:
        rows, length = ((c.num_segment_groups, c.lang_seq_len) if key in ('audio2text',
                        'text2audio') else (1, c.seq_len))
        for suffix in ('', '/audio_ptr', '/text_ptr'):
            shapes[key + suffix] = ((batch, rows, length), np.int32)
    return shapes


def _fit(tokens: list, audio_ptr: list, text_ptr: list, length: int) -> np.ndarray:
    """[3, length]: truncated at the end or padded with (0, -1, -1)."""
    out = np.stack([np.full(length, 0), np.full(length, -1), np.full(length, -1)])
    n = min(len(tokens), length)
    out[:, :n] = np.array([tokens, audio_ptr, text_ptr])[:, :n]
    return out


def random_example(c: ModelConfig, seed: int, index: int, step: int = 0
                   ) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([seed, step, index])
    words = lambda n: list(rng.integers(FIRST_ORDINARY_ID, c.vocab_size, n))
    subsegs = c.num_audio_subsegments
    transcript = [words(rng.integers(1, 5)) for _ in range(c.num_audio_spans)]
    targets = rng.permutation(c.num_audio_spans)[:2 * c.num_targets]
    t2a = {int(r): i for i, r in enumerate(targets[:c.num_targets])}
    a2t = {int(r): c.num_targets + i for i, r in enumerate(targets[c.num_targets:])}
    per_group = c.segments_per_group * subsegs

    seqs = {'text2audio': [], 'audio2text': []}
    for g in range(c.num_segment_groups):
        rows = range(g * per_group, (g + 1) * per_group)
        t2a_seq, a2t_seq = ([], [], []), ([], [], [])
        for r in rows:
            if r in t2a:
                parts = ([MASK, MASKAUDIO], [r, r], [t2a[r], t2a[r]])
            else:
                parts = (transcript[r], [r] * len(transcript[r]), [-1] * len(transcript[r]))
            for dst, src in zip(t2a_seq, parts):
                dst.extend(src)
            if r in a2t:
                parts = ([MASK], [r], [a2t[r]])
            else:
                n = c.audio_token_length
                parts = ([AUDIOSPAN] * n, [r] * n, [-1] * n)
            for dst, src in zip(a2t_seq, parts):
                dst.extend(src)
        seqs['text2audio'].append(_fit(*t2a_seq, c.lang_seq_len))
        seqs['audio2text'].append(_fit(*a2t_seq, c.lang_seq_len))

    atm = ([], [], [])
    for s in range(c.num_segments):
        n = c.audio_token_length * subsegs
        atm[0].extend([LTOVPOOL] + [AUDIOSPAN] * n)
        atm[1].extend([s * subsegs] + [s * subsegs + k // c.audio_token_length
                                       for k in range(n)])
        atm[2].extend([-1] * (n + 1))

    n_random = c.text_span_budget
    random_spans = [words(rng.integers(1, 6)) for _ in range(n_random)]
    rand = ([], [], [])
    for i in range(n_random):
        filler = words(rng.integers(1, 4))
        rand[0].extend(filler + [MASK])
        rand[1].extend([i] * (len(filler) + 1))
        rand[2].extend([-1] * len(filler) + [2 * c.num_targets + i])

    spans = ([transcript[r] for r in targets[:c.num_targets]] +
             [transcript[r] for r in targets[c.num_targets:]] + random_spans)
    text_spans = np.zeros((len(spans), c.text_span_length), np.int32)
    for i, span in enumerate(spans):
        text_spans[i, :len(span)] = span[:c.text_span_length]

    n_patches = c.output_grid[0] * c.output_grid[1]
    audio = rng.normal(size=(c.num_audio_spans * c.audio_seq_length, c.audio_num_features))
    audio[:, -1] = 1.0
    split = rng.integers(0, c.num_segments + 1)
    out = {
        'images': rng.uniform(size=(c.num_segments * n_patches, c.patch_dim)),
        'audio_clips': audio,
        'text_spans': text_spans,
        'video_src_index': (np.arange(c.num_segments) >= split).astype(np.int32),
    }
    for key, rows in (('audio2text', seqs['audio2text']), ('text2audio', seqs['text2audio']),
                      ('audio_text_matching', [_fit(*atm, c.seq_len)]),
                      ('random_text', [_fit(*rand, c.seq_len)])):
        stacked = np.stack(rows)
        out[key], out[f'{key}/audio_ptr'], out[f'{key}/text_ptr'] = (
            stacked[:, 0], stacked[:, 1], stacked[:, 2])
    return out


def random_batch(c: ModelConfig, seed: int, indices, step: int = 0) -> dict[str, np.ndarray]:
    """Examples `indices` of a global batch, stacked, with the dtypes of `batch_shapes`."""
    examples = [random_example(c, seed, int(i), step) for i in indices]
    shapes = batch_shapes(c, len(examples))
    return {k: np.stack([e[k] for e in examples]).astype(dtype)
            for k, (_, dtype) in shapes.items()}
