"""Random but well-formed HERO batches in the port's layout (smoke tests, shape checks).

Videos get a random number of frames, consecutive subtitle groups (some without frames, some
frames without a subtitle) and VSM queries built like the original `VsmDataset` (spec §2.3):
queries are subtitles with frames, the last one repeated to reach `queries_per_video`, and their
text is removed from the video context.
"""
from __future__ import annotations

import numpy as np

from hero.config import CLS_ID, PAD_ID, SEP_ID, HeroConfig


def video_batch(seed: int, config: HeroConfig, *, videos: int = 4, frames: int = 8,
                subs: int = 3, sub_frames: int = 4, txt_len: int = 6, queries: int = 5,
                query_len: int = 6) -> dict[str, np.ndarray]:
    """A VSM-ready video batch (keys of hero/batch_layout.py; MFM/FOM keys come from masking)."""
    rng = np.random.default_rng(seed)
    out = dict(
        frame_feats=np.zeros((videos, frames, config.vfeat_dim), np.float32),
        frame_mask=np.zeros((videos, frames), np.int32),
        sub_ids=np.full((videos, subs, txt_len), PAD_ID, np.int32),
        sub_mask=np.zeros((videos, subs, txt_len), np.int32),
        sub_frames=np.full((videos, subs, sub_frames), -1, np.int32),
        query_ids=np.full((videos, queries, query_len), PAD_ID, np.int32),
        query_mask=np.zeros((videos, queries, query_len), np.int32),
        query_targets=np.zeros((videos, queries, 2), np.int32))
    low = 4
    for b in range(videos):
        n = int(rng.integers(2, frames + 1))
        out['frame_feats'][b, :n] = rng.normal(size=(n, config.vfeat_dim))
        out['frame_mask'][b, :n] = 1
        start, with_frames = int(rng.integers(0, 2)), []
        for s in range(subs):
            count = min(int(rng.integers(0, sub_frames + 1)), n - start)
            out['sub_frames'][b, s, :count] = np.arange(start, start + count)
            start += count
            length = int(rng.integers(1, min(txt_len, query_len)))
            ids = rng.integers(low, config.vocab_size - 1, size=length)
            out['sub_ids'][b, s, :length + 1] = [SEP_ID, *ids]
            out['sub_mask'][b, s, :length + 1] = 1
            if count:
                with_frames.append((s, ids, start - count, start - 1))
        if not with_frames:      # every video needs one query subtitle
            out['sub_frames'][b, 0, 0] = 0
            with_frames.append((0, out['sub_ids'][b, 0, 1:2], 0, 0))
        picks = with_frames[:queries] + [with_frames[-1]] * (queries - len(with_frames))
        for q, (s, ids, first, last) in enumerate(picks):
            out['query_ids'][b, q, :len(ids) + 1] = [CLS_ID, *ids]
            out['query_mask'][b, q, :len(ids) + 1] = 1
            out['query_targets'][b, q] = (first, min(max(first + 1, last), n - 1))
            out['sub_ids'][b, s, 1:] = PAD_ID          # query text leaves the video context
            out['sub_mask'][b, s, 1:] = 0
    return out


def mlm_batch(seed: int, config: HeroConfig, *, examples: int = 4, frames: int = 4,
              txt_len: int = 6) -> dict[str, np.ndarray]:
    """MLM examples: one subtitle each, `[CLS] + ids` with its aligned frames (no labels: the
    task masks on device)."""
    rng = np.random.default_rng(seed)
    out = dict(frame_feats=np.zeros((examples, frames, config.vfeat_dim), np.float32),
               frame_mask=np.zeros((examples, frames), np.int32),
               txt_ids=np.full((examples, txt_len), PAD_ID, np.int32),
               txt_mask=np.zeros((examples, txt_len), np.int32))
    for i in range(examples):
        n = int(rng.integers(0, frames + 1))
        out['frame_feats'][i, :n] = rng.normal(size=(n, config.vfeat_dim))
        out['frame_mask'][i, :n] = 1
        length = int(rng.integers(2, txt_len + 1))
        out['txt_ids'][i, :length] = [CLS_ID, *rng.integers(4, config.vocab_size - 1,
                                                             size=length - 1)]
        out['txt_mask'][i, :length] = 1
    return out


def pretrain_batch(config: HeroConfig, sizes: dict, seed: int, rows, step: int):
    """The mixed-task batch of hero/task.py (`mlm.*`, `video.*`, `vsm.*`) for global rows
    `rows` of step `step`; every row depends only on (seed, step, row)."""
    parts: dict[str, list] = {}
    for row in rows:
        row_seed = int(np.random.SeedSequence([seed, step, row]).generate_state(1)[0])
        mlm = mlm_batch(row_seed, config, examples=1, frames=sizes['frames_per_sub'],
                        txt_len=sizes['query_len'])
        video = video_batch(row_seed + 1, config, videos=1, frames=sizes['frames'],
                            subs=sizes['subs_per_video'], sub_frames=sizes['frames_per_sub'],
                            txt_len=sizes['txt_len'], queries=sizes['queries_per_video'],
                            query_len=sizes['query_len'])
        vsm = video_batch(row_seed + 2, config, videos=1, frames=sizes['frames'],
                          subs=sizes['subs_per_video'], sub_frames=sizes['frames_per_sub'],
                          txt_len=sizes['txt_len'], queries=sizes['queries_per_video'],
                          query_len=sizes['query_len'])
        for prefix, part in (('mlm', mlm), ('video', video), ('vsm', vsm)):
            for key, value in part.items():
                if prefix == 'video' and key.startswith('query'):
                    continue
                parts.setdefault(f'{prefix}.{key}', []).append(value)
    return {key: np.concatenate(values) for key, values in parts.items()}
