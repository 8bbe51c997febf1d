"""MERLOT Reserve pretraining sequences from one decoded record (spec mreserve §1.7, §1.8, §2.1).

Pure numpy, one example at a time: the reader calls :func:`build_sequences` inside its tf.data
map (``tf.numpy_function``) with a generator seeded from (seed, process, example index), so
every random choice is a function of those only. Shapes come from :class:`SequenceConfig`
(tiny and base alike).

Output (int32, per example): ``text2audio``/``audio2text`` ``[groups, lang_seq_len]``,
``audio_text_matching``/``random_text`` ``[1, seq_len]``, each with ``/audio_ptr`` and
``/text_ptr`` (-1 = none; padding is (0, -1, -1)), and ``text_spans [2·n_trg + budget, 15]``:
rows 0..n_trg-1 the T2A span texts, n_trg..2n_trg-1 the A2T ones, then random-text spans.

Choices where the spec is silent are marked "(choice)" in the docstrings below.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

PAD, START, END, MASK, MASKAUDIO, AUDIOSPAN, LTOVPOOL = range(7)
# Lowercase-BPE ids of "title:", "description:", "tags:" (spec §4; checked by the tests).
META_PREFIX_IDS = ((3388, 35), (2026, 35), (10884, 35))
# Spec §2.1, v2 weights for random-text fake-segment lengths 1..15 (mean 6.23).
SPAN_LENGTH_WEIGHTS = np.array([.0323, .0524, .0876, .1176, .1374, .1372, .1254, .1026, .0771,
                                .0536, .0343, .0204, .0118, .0066, .0037])
SPAN_LENGTH_MEAN = 6.23
# Spectrogram framing of the records (spec §3.1 step 5, §3.3): hop 588, n_fft 1536 at 22050 Hz.
HOP_S = 588 / 22050
FFT_S = 1536 / 22050
SEGMENT_S = 5.0           # each chunk spans 5 s of speed-normalised time
MASK_KEEP_LOGIT = 1e7


@dataclasses.dataclass(frozen=True)
class SequenceConfig:
    num_segments: int = 16
    num_segment_groups: int = 2
    num_audio_subsegments: int = 3
    lang_seq_len: int = 160
    seq_len: int = 640
    mask_rate: float = 0.25
    text_span_budget: int = 38
    text_span_length: int = 15
    audio_token_length: int = 6
    audio_seq_length: int = 60
    use_audio_token_prob: float = 0.5
    convert_extra_span_to_text_prob: float = 0.8
    textmask_slack_s: float = 0.125
    meta_prefix_ids: tuple = META_PREFIX_IDS

    @property
    def num_audio_spans(self) -> int:
        return self.num_segments * self.num_audio_subsegments

    @property
    def num_targets(self) -> int:
        return int(self.num_audio_spans * self.mask_rate)

    @property
    def num_text_spans(self) -> int:
        return 2 * self.num_targets + self.text_span_budget

    @property
    def rows_per_group(self) -> int:
        return self.num_audio_spans // self.num_segment_groups

    def shapes(self) -> dict[str, tuple[int, ...]]:
        out = {'text_spans': (self.num_text_spans, self.text_span_length)}
        for key in ('audio2text', 'audio_text_matching', 'random_text', 'text2audio'):
            shape = ((self.num_segment_groups, self.lang_seq_len)
                     if key in ('audio2text', 'text2audio') else (1, self.seq_len))
            for suffix in ('', '/audio_ptr', '/text_ptr'):
                out[key + suffix] = shape
        return out


def window_times(window_starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start/end seconds of audio windows starting at spectrogram frame `window_starts`."""
    start = window_starts * HOP_S - FFT_S / 2
    return start, start + 60 * HOP_S + FFT_S


def assign_rows(tok_lens, centroids, window_starts) -> np.ndarray:
    """Audio row (3·chunk + sub-segment) of every token: the window centre nearest its time
    centroid, made monotone with a cumulative max over the record (spec §2.1)."""
    start, end = window_times(np.asarray(window_starts, np.float64))
    centres = (start + end) / 2                                   # [segments, 3]
    chunk = np.repeat(np.arange(len(tok_lens)), tok_lens)
    nearest = np.abs(centroids[:, None] - centres[chunk]).argmin(-1)
    rows = chunk * centres.shape[1] + nearest
    return np.maximum.accumulate(rows) if rows.size else rows.astype(np.int64)


def _directions(rng):
    return (-1, 1) if rng.random() < 0.5 else (1, -1)


def reassign_empty_tokens(rows, masked, rng):
    """An empty masked row takes the boundary token of an adjacent unmasked row holding >= 2
    tokens; the side tried first is random per row (choice)."""
    for r in sorted(masked):
        if rows[r]:
            continue
        for d in _directions(rng):
            nb = r + d
            if 0 <= nb < len(rows) and nb not in masked and len(rows[nb]) >= 2:
                if d < 0:
                    rows[r].insert(0, rows[nb].pop())
                else:
                    rows[r].append(rows[nb].pop(0))
                break


def increase_textmask(rows, masked, win_start, win_end, video, slack, rng):
    """A masked row also takes a neighbour's boundary token whose time centroid lies less than
    `slack` s beyond its audio window edge. Times are on a per-record axis (5 s per chunk);
    neighbours from another source video are never taken (choice)."""
    per_seg = len(rows) // len(video)
    for r in sorted(masked):
        for d in _directions(rng):
            nb = r + d
            if not (0 <= nb < len(rows)) or nb in masked or not rows[nb]:
                continue
            if video[nb // per_seg] != video[r // per_seg]:
                continue
            if d < 0 and rows[nb][-1][1] > win_start[r] - slack:
                rows[r].insert(0, rows[nb].pop())
            elif d > 0 and rows[nb][0][1] < win_end[r] + slack:
                rows[r].append(rows[nb].pop(0))


def select_tokens(units, length, rng):
    """Length control (spec §2.1). `units` is a list of (tokens, audio_ptr, text_ptr, row,
    is_mask) that must stay whole (a text token, a run of AUDIOSPAN, a MASK group).
    Too long: trim both ends, never past the first/last mask (the split between the two ends
    is uniform over what is feasible: choice); still too long: Gumbel top-k with MASK logit
    1e7 plus one Gumbel score per row so rows stay together. Returns [3, length]."""
    sizes = np.array([len(u[0]) for u in units], np.int64)
    excess = int(sizes.sum()) - length
    if excess > 0:
        is_mask = np.array([u[4] for u in units], bool)
        first = int(np.argmax(is_mask)) if is_mask.any() else len(units)
        last = len(units) - 1 - int(np.argmax(is_mask[::-1])) if is_mask.any() else -1
        left_room = int(sizes[:first].sum())
        right_room = int(sizes[last + 1:].sum()) if is_mask.any() else left_room
        lo, hi = max(0, excess - right_room), min(excess, left_room)
        n_left = int(rng.integers(lo, hi + 1)) if lo <= hi else left_room
        n_right = excess - n_left if lo <= hi else right_room
        begin, cut = 0, 0
        while cut < n_left and begin < first:
            cut += sizes[begin]
            begin += 1
        stop, cut = len(units), 0
        while cut < n_right and stop > max(last + 1, begin):
            stop -= 1
            cut += sizes[stop]
        units = units[begin:stop]
        sizes = sizes[begin:stop]
    if int(sizes.sum()) > length:
        row_ids = np.array([u[3] for u in units])
        row_score = rng.gumbel(size=int(row_ids.max()) + 2)
        score = (MASK_KEEP_LOGIT * np.array([u[4] for u in units]) + row_score[row_ids + 1]
                 + 1e-3 * rng.gumbel(size=len(units)))
        keep, used = np.zeros(len(units), bool), 0
        for i in np.argsort(-score, kind='stable'):
            if used + sizes[i] <= length:
                keep[i] = True
                used += sizes[i]
        units = [u for u, k in zip(units, keep) if k]
    return _pack(units, length)


def _pack(units, length):
    """Units in order while they fit, then padding (0, -1, -1): [3, length]."""
    toks, aptr, tptr = [], [], []
    for u in units:
        if len(toks) + len(u[0]) > length:
            break
        toks += u[0]
        aptr += u[1]
        tptr += u[2]
    out = np.stack([np.zeros(length, np.int64), np.full(length, -1), np.full(length, -1)])
    out[:, :len(toks)] = (toks, aptr, tptr)
    return out


def _text_units(row_tokens, row):
    return [([t], [row], [-1], row, False) for t, _ in row_tokens]


def group_sequences(c: SequenceConfig, rows, t2a, a2t, rng):
    """T2A and A2T sequences, one per group of segments: [groups, 3, lang_seq_len] each."""
    n_trg, k = c.num_targets, c.audio_token_length
    t2a_idx = {r: i for i, r in enumerate(t2a)}
    a2t_idx = {r: n_trg + i for i, r in enumerate(a2t)}
    neighbours = {r + d for r in a2t for d in (-1, 1)} - set(a2t)
    as_text = {r for r in sorted(neighbours)
               if rng.random() < c.convert_extra_span_to_text_prob}
    t2a_out, a2t_out = [], []
    for g in range(c.num_segment_groups):
        t2a_units, a2t_units = [], []
        for r in range(g * c.rows_per_group, (g + 1) * c.rows_per_group):
            if r in t2a_idx:
                i = t2a_idx[r]
                t2a_units.append(([MASK, MASKAUDIO], [r, r], [i, i], r, True))
            else:
                t2a_units += _text_units(rows[r], r)
            if r in a2t_idx:
                a2t_units.append(([MASK], [r], [a2t_idx[r]], r, True))
            elif r in as_text:
                a2t_units += _text_units(rows[r], r)
            else:
                a2t_units.append(([AUDIOSPAN] * k, [r] * k, [-1] * k, r, False))
        t2a_out.append(select_tokens(t2a_units, c.lang_seq_len, rng))
        a2t_out.append(select_tokens(a2t_units, c.lang_seq_len, rng))
    return np.stack(t2a_out), np.stack(a2t_out)


def matching_sequence(c: SequenceConfig, seg_tokens, seg_rows, meta, rng):
    """Audio/text <-> frame matching: metadata prefix, then per segment LTOVPOOL and either
    3x6 AUDIOSPAN (p = use_audio_token_prob, one draw per example) or its transcript.
    The prefix is cut to the room left (choice: cut at its end); the body is cut at its end,
    dropping a partial AUDIOSPAN run. Returns [1, 3, seq_len]."""
    use_audio = rng.random() < c.use_audio_token_prob
    subs, k = c.num_audio_subsegments, c.audio_token_length
    body = []
    for s in range(c.num_segments):
        body.append(([LTOVPOOL], [s * subs], [-1], -1, False))
        if use_audio:
            for j in range(subs):
                body.append(([AUDIOSPAN] * k, [s * subs + j] * k, [-1] * k, -1, False))
        else:
            body += [([int(t)], [int(r)], [-1], -1, False)
                     for t, r in zip(seg_tokens[s], seg_rows[s])]
    prefix = []
    for (word, colon), ids in zip(c.meta_prefix_ids, meta):
        prefix += [START, word, colon] + [int(t) for t in ids]
    prefix.append(END)
    room = max(c.seq_len - sum(len(u[0]) for u in body), 0)
    units = [([t], [-1], [-1], -1, False) for t in prefix[:room]] + body
    return _pack(units, c.seq_len)[None]


def random_text_sequence(c: SequenceConfig, text, token_is_valid, rng):
    """Random (Pile) text with `text_span_budget` masked fake segments (spec §2.1).

    The text is cut into fake segments with lengths from SPAN_LENGTH_WEIGHTS. A window of
    whole segments holding up to seq_len + int((6.23·0.85 − 1)·budget) tokens starts at a
    uniformly drawn offset (choice); `budget` of its segments are masked without replacement,
    weight 1 if every token is YouTube-like else 0.2 (Gumbel top-k). Tokens left and right of
    the window then pad the sequence towards seq_len (random split: choice); a longer result
    is cut at the end. audio_ptr = fake segment index (0 = first one used).
    Returns ([1, 3, seq_len], span texts)."""
    text = np.clip(np.asarray(text, np.int64), 0, len(token_is_valid) - 1)
    budget, n_trg = c.text_span_budget, c.num_targets
    if text.size == 0:
        return _pack([], c.seq_len)[None], [[] for _ in range(budget)]
    lengths = rng.choice(15, size=text.size, p=SPAN_LENGTH_WEIGHTS / SPAN_LENGTH_WEIGHTS.sum()) + 1
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    bounds = bounds[:np.searchsorted(bounds, text.size) + 1]
    bounds[-1] = text.size
    n_seg = len(bounds) - 1
    use = c.seq_len + int((SPAN_LENGTH_MEAN * 0.85 - 1) * budget)
    offset = int(rng.integers(0, max(text.size - use, 0) + 1))
    s0 = min(int(np.searchsorted(bounds, offset)), n_seg - 1)
    s1 = s0
    while s1 < n_seg and bounds[s1 + 1] - bounds[s0] <= use:
        s1 += 1
    s1 = max(s1, s0 + 1)
    segs = np.arange(s0, s1)
    invalid = np.add.reduceat((~token_is_valid[text]).astype(np.int64), bounds[:-1])
    valid = invalid[segs] == 0
    score = np.log(np.where(valid, 1.0, 0.2)) + rng.gumbel(size=len(segs))
    masked = set(segs[np.argsort(-score, kind='stable')[:budget]].tolist())
    units, spans = [], []
    for s in segs:
        toks = text[bounds[s]:bounds[s + 1]]
        if s in masked:
            units.append(([MASK], [s], [2 * n_trg + len(spans)], s, True))
            spans.append(toks[token_is_valid[toks]].tolist())
        else:
            units += [([int(t)], [s], [-1], s, False) for t in toks]
    need = c.seq_len - sum(len(u[0]) for u in units)
    left_avail, right_avail = int(bounds[s0]), int(text.size - bounds[s1])
    n_left = min(left_avail, int(rng.integers(0, max(need, 0) + 1)))
    n_right = min(right_avail, max(need - n_left, 0))
    n_left = min(left_avail, max(need - n_right, 0))
    seg_of = np.repeat(np.arange(n_seg), np.diff(bounds))
    left = [([int(text[i])], [int(seg_of[i])], [-1], -1, False)
            for i in range(bounds[s0] - n_left, bounds[s0])]
    right = [([int(text[i])], [int(seg_of[i])], [-1], -1, False)
             for i in range(bounds[s1], bounds[s1] + n_right)]
    out = _pack(left + units + right, c.seq_len)
    first = out[1, 0]
    out[1] = np.where(out[1] >= 0, out[1] - first, -1)
    return out[None], spans + [[] for _ in range(budget - len(spans))]


def build_sequences(c: SequenceConfig, *, tok_ids, tok_start, tok_end, tok_lens, window_starts,
                    video_src, meta, random_text, token_is_valid, rng) -> dict[str, Any]:
    """All token sequences of one example. `tok_*` are flat over the chunks (lengths
    `tok_lens`), times relative to each chunk start ÷ playback speed; `window_starts [S, 3]`
    the spectrogram frame where each audio window starts; `meta` = (title, description, tags)
    id arrays; `token_is_valid` a bool table over the vocabulary (spec §4 TOKEN_IS_VALID)."""
    subs, n_rows, n_trg = c.num_audio_subsegments, c.num_audio_spans, c.num_targets
    tok_lens = np.asarray(tok_lens, np.int64)
    chunk = np.repeat(np.arange(c.num_segments), tok_lens)
    centroid = (np.asarray(tok_start, np.float64) + np.asarray(tok_end, np.float64)) / 2
    row_of = assign_rows(tok_lens, centroid, window_starts)
    global_t = centroid + SEGMENT_S * chunk
    rows = [[] for _ in range(n_rows)]
    for t, r, g in zip(np.asarray(tok_ids).tolist(), row_of.tolist(), global_t.tolist()):
        rows[r].append((t, g))
    seg_tokens = [[t for r in range(s * subs, (s + 1) * subs) for t, _ in rows[r]]
                  for s in range(c.num_segments)]
    seg_rows = [[r for r in range(s * subs, (s + 1) * subs) for _ in rows[r]]
                for s in range(c.num_segments)]

    targets = rng.permutation(n_rows)[:2 * n_trg]
    t2a, a2t = sorted(targets[:n_trg].tolist()), sorted(targets[n_trg:].tolist())
    masked = set(t2a) | set(a2t)
    start, end = window_times(np.asarray(window_starts, np.float64))
    offset = SEGMENT_S * np.arange(c.num_segments)[:, None]
    reassign_empty_tokens(rows, masked, rng)
    increase_textmask(rows, masked, (start + offset).reshape(-1), (end + offset).reshape(-1),
                      np.asarray(video_src), c.textmask_slack_s, rng)

    t2a_seq, a2t_seq = group_sequences(c, rows, t2a, a2t, rng)
    atm = matching_sequence(c, seg_tokens, seg_rows, meta, rng)
    rnd, random_spans = random_text_sequence(c, random_text, token_is_valid, rng)
    spans = [[t for t, _ in rows[r]] for r in t2a + a2t] + random_spans
    text_spans = np.zeros((c.num_text_spans, c.text_span_length), np.int32)
    for i, span in enumerate(spans):
        span = span[:c.text_span_length]
        text_spans[i, :len(span)] = span
    out = {'text_spans': text_spans}
    for key, seq in (('text2audio', t2a_seq), ('audio2text', a2t_seq),
                     ('audio_text_matching', atm), ('random_text', rnd)):
        seq = seq.astype(np.int32)
        out[key], out[key + '/audio_ptr'], out[key + '/text_ptr'] = (
            seq[:, 0], seq[:, 1], seq[:, 2])
    return out
