"""Bridge from the original HERO collate outputs (flat subtitle rows) to this port's layout.

The original stacks all subtitles of a batch along one axis and rebuilds each f-TRM sequence with
a gather index; this port keeps subtitles per video (see hero/modeling.py) and MLM examples as
`[frames | text]` rows with dense label maps. This module converts numpy batches produced by the
original collate functions (e.g. ../shared/reference/hero/batches.npz) so the original's outputs
can be compared one to one; a data pipeline can produce the port's layout directly.

Port layout per task (B videos, S subtitles per video, F frames per subtitle, T text tokens):
  video tasks  frame_feats, frame_mask, sub_ids, sub_mask, sub_frames (hero/modeling.py)
  mfm          + mfm_mask (B, L) bool; frame_feats hold the *original* (unmasked) features
  fom          + shuffled_orders (B, L), fom_targets (B, L) (-1 = not a target)
  vsm          + query_ids, query_mask (B, Q, Tq), query_targets (B, Q, 2)
  mlm          frame_feats (N, F, vfeat), frame_mask (N, F), txt_ids, txt_mask, txt_labels (N, T)
"""
from __future__ import annotations

import numpy as np

from hero.config import PAD_ID


def video_batch(arrays, meta, task: str) -> dict[str, np.ndarray]:
    """Original `video_collate`-style entries of `task` -> per-video arrays (+ task extras)."""
    def get(name):
        return np.asarray(arrays[f'{task}__{name}'])

    num_subs = meta[f'{task}__num_subs']
    sub2frames = meta[f'{task}__sub_idx2frame_idx']
    f_feats, txt_ids, txt_mask = get('f_v_feats'), get('f_sub_input_ids'), get(
        'f_sub_input_attn_masks')
    frame_feats = get('c_v_feats').astype(np.float32)
    b, s, f, t = len(num_subs), max(num_subs), f_feats.shape[1], txt_ids.shape[1]
    sub_ids = np.full((b, s, t), PAD_ID, np.int32)
    sub_mask = np.zeros((b, s, t), np.int32)
    sub_frames = np.full((b, s, f), -1, np.int32)
    row = 0
    for vid in range(b):
        for j, (_, frames) in enumerate(sub2frames[vid]):
            sub_ids[vid, j], sub_mask[vid, j] = txt_ids[row], txt_mask[row]
            sub_frames[vid, j, :len(frames)] = frames
            np.testing.assert_array_equal(f_feats[row, :len(frames)], frame_feats[vid, frames])
            row += 1
    out = dict(frame_feats=frame_feats, frame_mask=get('c_attn_masks').astype(np.int32),
               sub_ids=sub_ids, sub_mask=sub_mask, sub_frames=sub_frames)
    if task == 'mfm':
        mask = get('c_v_masks').astype(bool)
        out['frame_feats'] = frame_feats.copy()
        out['frame_feats'][mask] = get('feat_targets')   # row-major order of c_v_masks
        out['mfm_mask'] = mask
    if task == 'fom':
        out['shuffled_orders'] = get('shuffled_orders').astype(np.int32)
        out['fom_targets'] = get('targets').astype(np.int32)
    if task == 'vsm':
        q_vidx = get('q_vidx')
        per_video = len(q_vidx) // b
        np.testing.assert_array_equal(q_vidx, np.repeat(np.arange(b), per_video))
        out['query_ids'] = get('query_input_ids').reshape(b, per_video, -1).astype(np.int32)
        out['query_mask'] = get('query_attn_masks').reshape(b, per_video, -1).astype(np.int32)
        out['query_targets'] = get('targets').reshape(b, per_video, 2).astype(np.int32)
    return out


def mlm_batch(arrays) -> dict[str, np.ndarray]:
    """Original `mlm_collate` entries (gathered layout) -> `[frames | text]` rows + label map."""
    feats = np.asarray(arrays['mlm__v_feat'], np.float32)
    ids = np.asarray(arrays['mlm__input_ids'])
    attn, gather = np.asarray(arrays['mlm__attn_masks']), np.asarray(arrays['mlm__gather_index'])
    targets, labels = np.asarray(arrays['mlm__txt_mask_tgt']), np.asarray(arrays['mlm__txt_labels'])
    n, f = feats.shape[:2]
    frame_mask = np.zeros((n, f), np.int32)
    txt_mask = np.zeros(ids.shape, np.int32)
    txt_labels = np.full(ids.shape, -1, np.int32)
    label_iter = iter(labels)
    for r in range(n):
        for p in range(attn.shape[1]):   # row-major, the order of txt_labels
            slot = gather[r, p]
            if attn[r, p]:
                if slot < f:
                    frame_mask[r, slot] = 1
                else:
                    txt_mask[r, slot - f] = 1
            if targets[r, p]:
                txt_labels[r, slot - f] = next(label_iter)
    return dict(frame_feats=feats, frame_mask=frame_mask, txt_ids=ids.astype(np.int32),
                txt_mask=txt_mask, txt_labels=txt_labels)
