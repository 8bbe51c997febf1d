"""Downstream batches as numpy arrays, built in memory from (features per video, subtitles,
annotations), plus learnable synthetic corpora for smoke runs and tests.

A *video* is `Video(feats (n, vfeat) float32, subs [(token ids, [frame indices])])`: subtitle
text without special tokens, frames already aligned (`align_subtitles`, spec §3.2). Packing
(`pack_video`) produces the static-shape layout of hero/modeling.py for one video; batches stack
packed videos. Where videos come from (the HERO feature store, npz files, a synthetic corpus) is
`VideoSource`'s business (hero/finetune_tasks.py).

Sizes (`Sizes`): L frames per video, S subtitles per video, F frames per subtitle, T subtitle
text slots (incl. [SEP]), Tq query slots (incl. [CLS]), Tx QA / statement text slots.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from hero.config import CLS_ID, PAD_ID, SEP_ID


@dataclasses.dataclass(frozen=True)
class Sizes:
    frames: int = 100
    subs: int = 48
    frames_per_sub: int = 16
    txt_len: int = 61
    query_len: int = 61
    qa_len: int = 121

    @classmethod
    def from_config(cls, data) -> Sizes:
        return cls(frames=data.max_clip_len, subs=data.subs_per_video,
                   frames_per_sub=data.frames_per_sub, txt_len=data.max_txt_len + 1,
                   query_len=data.max_txt_len + 1, qa_len=data.max_qa_len + 1)


@dataclasses.dataclass
class Video:
    feats: np.ndarray                               # (n, vfeat)
    subs: list[tuple[Sequence[int], Sequence[int]]]  # (text ids, frame indices)


def align_subtitles(times: Sequence[tuple[float, float]], n_frames: int,
                    interval: float = 1.5) -> list[list[int]]:
    """Spec §3.2: subtitle i covers frames floor(start)..ceil(end)-1 (in frames); subtitles
    starting after the video are skipped (empty), the last one, if longer than 16 s, keeps its
    first 11 frames; each covered frame goes to the covering subtitle of highest IoU between
    [f, f+1] and [start, end] (first wins ties). Returns the sorted frames of each subtitle."""
    spans = []
    for k, (start, end) in enumerate(times):
        st, ed = start / interval, end / interval
        if st >= n_frames:
            spans.append(None)
            continue
        first, last = math.floor(st), math.ceil(ed) - 1
        if k == len(times) - 1 and end - start > 16:
            last = min(last, first + 10)
        spans.append((st, ed, first, min(last, n_frames - 1)))
    owner: dict[int, tuple[float, int]] = {}
    for k, span in enumerate(spans):
        if span is None:
            continue
        st, ed, first, last = span
        for f in range(first, last + 1):
            inter = max(0.0, min(f + 1, ed) - max(f, st))
            union = max(f + 1, ed) - min(f, st)
            iou = inter / union if union > 0 else 0.0
            if f not in owner or iou > owner[f][0]:
                owner[f] = (iou, k)
    frames: list[list[int]] = [[] for _ in times]
    for f, (_, k) in sorted(owner.items()):
        frames[k].append(f)
    return frames


def moment_frames(ts: Sequence[float], n_frames: int, interval: float = 1.5) -> tuple[int, int]:
    """Spec §3.3 moment label (inclusive frames): st = min(floor(st/i), n-1),
    ed = min(max(ceil(ed/i) - 1, st + 1), n - 1)."""
    st = min(math.floor(ts[0] / interval), n_frames - 1)
    ed = min(max(math.ceil(ts[1] / interval) - 1, st + 1), n_frames - 1)
    return st, ed


def pack_video(video: Video, sizes: Sizes, append: Sequence[int] = ()) -> dict[str, np.ndarray]:
    """One video -> frame_feats (L, vfeat), frame_mask (L,), sub_ids / sub_mask (S, T),
    sub_frames (S, F). Every subtitle's text is `[SEP] sub [+ append]` (QA appends
    `[SEP] q [SEP] a`); the subtitle part is cut so that `append` fits. Frames >= L are dropped
    (the first subtitle reaching them keeps its in-range frames, later subtitles go, §3.2);
    subtitles beyond S and frames beyond F per subtitle are dropped (static padding)."""
    n = min(len(video.feats), sizes.frames)
    out = dict(frame_feats=np.zeros((sizes.frames, video.feats.shape[1]), np.float32),
               frame_mask=np.zeros(sizes.frames, np.int32),
               sub_ids=np.full((sizes.subs, sizes.txt_len), PAD_ID, np.int32),
               sub_mask=np.zeros((sizes.subs, sizes.txt_len), np.int32),
               sub_frames=np.full((sizes.subs, sizes.frames_per_sub), -1, np.int32))
    out['frame_feats'][:n] = video.feats[:n]
    out['frame_mask'][:n] = 1
    append = list(append)[:sizes.txt_len - 1]
    room = sizes.txt_len - 1 - len(append)
    row = 0
    for ids, frames in video.subs:
        if row == sizes.subs:
            break
        kept = [f for f in frames if f < n]
        truncated = len(kept) < len(frames)
        if truncated and not kept:
            break
        text = [SEP_ID, *list(ids)[:room], *append]
        out['sub_ids'][row, :len(text)] = text
        out['sub_mask'][row, :len(text)] = 1
        kept = kept[:sizes.frames_per_sub]
        out['sub_frames'][row, :len(kept)] = kept
        row += 1
        if truncated:
            break
    return out


def text_slots(ids: Sequence[int], length: int, first: int) -> tuple[np.ndarray, np.ndarray]:
    """`[first] + ids` padded / cut to `length` -> (ids, mask)."""
    seq = [first, *ids][:length]
    out, mask = np.full(length, PAD_ID, np.int32), np.zeros(length, np.int32)
    out[:len(seq)], mask[:len(seq)] = seq, 1
    return out, mask


def stack(rows: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


# ---------------------------------------------------------------------------------------- VCMR
@dataclasses.dataclass
class Query:
    """A moment-retrieval query: text ids (no [CLS]), its video, GT window in seconds."""
    ids: Sequence[int]
    video: int
    window: tuple[float, float]
    qtype: str = ''
    desc_id: str = ''


def vcmr_batch(videos: Sequence[Video], queries: Sequence[Query], sizes: Sizes,
               interval: float = 1.5) -> dict[str, np.ndarray]:
    """Per-query training batch: the query's video + query_ids / query_mask (B, Tq) and
    query_targets (B, 2) (inclusive frames, spec §3.3)."""
    rows = []
    for q in queries:
        row = pack_video(videos[q.video], sizes)
        row['query_ids'], row['query_mask'] = text_slots(q.ids, sizes.query_len, CLS_ID)
        n = int(row['frame_mask'].sum())
        row['query_targets'] = np.asarray(moment_frames(q.window, n, interval), np.int32)
        rows.append(row)
    return stack(rows)


# ------------------------------------------------------------------------------- QA and VIOLIN
def qa_text(question: Sequence[int], answer: Sequence[int]) -> list[int]:
    return [SEP_ID, *question, SEP_ID, *answer]


def multi_text_example(video: Video, texts: Sequence[Sequence[int]], sizes: Sizes):
    """One video with C instance texts (each already `[SEP] ...`): sub_ids (C, S, T) with the
    text appended to every subtitle, txt_ids (C, Tx) with the text alone."""
    base = pack_video(video, sizes)
    per = [pack_video(video, sizes, append=t) for t in texts]
    out = {k: base[k] for k in ('frame_feats', 'frame_mask', 'sub_frames')}
    out['sub_ids'] = np.stack([p['sub_ids'] for p in per])
    out['sub_mask'] = np.stack([p['sub_mask'] for p in per])
    txt = [text_slots(t[1:], sizes.qa_len, t[0]) for t in texts]
    out['txt_ids'] = np.stack([t[0] for t in txt])
    out['txt_mask'] = np.stack([t[1] for t in txt])
    return out


@dataclasses.dataclass
class QAItem:
    question: Sequence[int]
    answers: Sequence[Sequence[int]]          # 5 candidates
    answer: int
    video: int
    window: tuple[float, float] | None = None  # TVQA "ts" (seconds), None if absent
    qid: str = ''


def qa_batch(videos: Sequence[Video], items: Sequence[QAItem], sizes: Sizes,
             interval: float = 1.5) -> dict[str, np.ndarray]:
    rows = []
    for it in items:
        row = multi_text_example(videos[it.video], [qa_text(it.question, a)
                                                    for a in it.answers], sizes)
        row['answer'] = np.int32(it.answer)
        n = int(row['frame_mask'].sum())
        span = moment_frames(it.window, n, interval) if it.window else (-1, -1)
        row['span'] = np.asarray(span, np.int32)
        rows.append(row)
    return stack(rows)


@dataclasses.dataclass
class ViolinItem:
    """A statement pair over one video: (statement ids, label) x 2 (opposite labels)."""
    statements: Sequence[Sequence[int]]
    labels: Sequence[int]
    video: int
    pair_id: str = ''


def violin_batch(videos: Sequence[Video], items: Sequence[ViolinItem],
                 sizes: Sizes) -> dict[str, np.ndarray]:
    rows = []
    for it in items:
        row = multi_text_example(videos[it.video], [[SEP_ID, *s] for s in it.statements], sizes)
        row['labels'] = np.asarray(it.labels, np.int32)
        rows.append(row)
    return stack(rows)


# --------------------------------------------------------------------------- synthetic corpora
@dataclasses.dataclass
class SyntheticCorpus:
    videos: list[Video]
    queries: list[Query]
    qa: list[QAItem]
    violin: list[ViolinItem]


def synthetic_corpus(seed: int, vfeat: int, vocab: int, *, split: str = 'train',
                     videos: int = 8, queries: int = 32, frames: tuple[int, int] = (8, 12),
                     classes: int = 4, interval: float = 1.5) -> SyntheticCorpus:
    """A learnable corpus: every video has a class c (its frames carry pattern_c plus noise)
    and one marked moment whose frames carry a moment pattern of class m. Word ids encode them:
    a VCMR query is [word(m), word(c)] and targets the marked moment; a QA question's correct
    answer is [word(c)] among 4 wrong classes' words; a VIOLIN statement [word(k)] is true iff
    k == c. Chance: VR R@1 = 1/videos, QA 1/5, VIOLIN 1/2. Words and patterns depend on the
    seed only, videos and items on (seed, split), so splits share what is to be learnt."""
    shared = np.random.default_rng(seed)
    words = 4 + shared.permutation(vocab - 5)[:2 * classes + 8]     # avoid special ids 0..3
    cls_words, mom_words, filler = words[:classes], words[classes:2 * classes], words[2 * classes:]
    patterns = shared.normal(size=(2 * classes, vfeat)).astype(np.float32)
    rng = np.random.default_rng([seed, sum(split.encode())])
    out = SyntheticCorpus([], [], [], [])
    info = []
    for v in range(videos):
        n = int(rng.integers(frames[0], frames[1] + 1))
        c, m = v % classes, int(rng.integers(classes))
        feats = 0.5 * rng.normal(size=(n, vfeat)).astype(np.float32) + patterns[c]
        st = int(rng.integers(0, n - 3))
        ed = min(n - 1, st + int(rng.integers(2, 4)))
        feats[st:ed + 1] += 2.0 * patterns[classes + m]
        times, start = [], 0.0
        while start < n * interval:
            end = start + float(rng.uniform(2.0, 5.0))
            times.append((start, min(end, n * interval)))
            start = end + float(rng.uniform(0.0, 2.0))
        subs = [(rng.choice(filler, size=int(rng.integers(1, 4))).tolist(), fr)
                for fr in align_subtitles(times, n, interval)]
        out.videos.append(Video(feats, subs))
        info.append((c, m, st, ed, n))
    for q in range(queries):
        v = q % videos
        c, m, st, ed, _ = info[v]
        window = (st * interval, (ed + 1) * interval)
        out.queries.append(Query([int(mom_words[m]), int(cls_words[c])], v, window,
                                 qtype='vt', desc_id=f'q{q}'))
        wrong = [k for k in range(classes) if k != c]
        cands = [[int(cls_words[k])] for k in rng.choice(wrong, size=4, replace=True)]
        answer = int(rng.integers(5))
        cands.insert(answer, [int(cls_words[c])])
        cands = cands[:5]
        question = rng.choice(filler, size=3).tolist()
        out.qa.append(QAItem(question, cands, answer, v, window, qid=f'qa{q}'))
        false = int(rng.choice(wrong))
        order = [(int(cls_words[c]), 1), (int(cls_words[false]), 0)]
        if rng.integers(2):
            order.reverse()
        out.violin.append(ViolinItem([[w] for w, _ in order], [y for _, y in order], v,
                                     pair_id=f'st{q}'))
    return out
