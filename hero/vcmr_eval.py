"""VCMR / SVMR / VR inference and metrics (spec §4.1), pure numpy on model outputs.

Inputs are what the model gives for a set of queries against a video corpus:
  video_scores  (Nq, Nv)     max-over-frames cosine between query and video (hero/vsm.py)
  st/ed logits  (Nq, K, L)   span logits of each query against K candidate videos (-1e4 on
                             padded frames), K = the query's top videos or its GT video only
Moments are frame spans [i, j] (inclusive) shown as times [i * interval, (j + 1) * interval].

VCMR ranking (original `eval_vcmr.py`): keep the top `max_vcmr_video` videos by exp(alpha * s),
moment score P_st(i) * exp(alpha * s_v) * P_ed(j) for min_len <= j - i < max_len, the top
`max_before_nms` moments over all videos, temporal NMS at `nms_thd` (only moments of the same
video overlap), keep `max_after_nms`. SVMR is the same on the GT video alone; VR ranks videos.
A prediction counts for R@K only if its video is the GT video and its IoU with the GT window
reaches the threshold.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class VcmrSettings:
    """Inference options of the original TVR config (`q2c_alpha`, `max_vcmr_video`, ...)."""
    alpha: float = 20.0
    max_vcmr_video: int = 100
    min_pred_len: int = 2            # frames, inclusive lower bound on j - i
    max_pred_len: int = 16           # frames, exclusive upper bound on j - i
    max_before_nms: int = 200
    max_after_nms: int = 100
    nms_thd: float = 0.5             # <= 0 disables NMS (DiDeMo)
    interval: float = 1.5            # seconds per frame
    ks: tuple[int, ...] = (1, 5, 10, 100)
    ious: tuple[float, ...] = (0.5, 0.7)


def softmax(x, axis=-1):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def temporal_iou(a, b) -> float:
    """IoU of two [start, end] windows (seconds)."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


def temporal_nms(moments: Sequence[tuple], thd: float, keep: int) -> list[tuple]:
    """Greedy NMS over (video, start_s, end_s, score) sorted by score (descending): a moment is
    dropped when a kept moment of the same video overlaps it with IoU >= thd."""
    kept: list[tuple] = []
    for m in sorted(moments, key=lambda x: -x[3]):
        if len(kept) >= keep:
            break
        if thd > 0 and any(k[0] == m[0] and temporal_iou(k[1:3], m[1:3]) >= thd for k in kept):
            continue
        kept.append(m)
    return kept


def span_scores(st_logits, ed_logits, settings: VcmrSettings):
    """(K, L) logits -> (K, L, L) P_st(i) * P_ed(j), zero outside the allowed lengths."""
    p_st, p_ed = softmax(st_logits), softmax(ed_logits)
    length = p_st.shape[-1]
    diff = np.arange(length)[None, :] - np.arange(length)[:, None]        # j - i
    allowed = (diff >= settings.min_pred_len) & (diff < settings.max_pred_len)
    return p_st[..., :, None] * p_ed[..., None, :] * allowed


def rank_moments(st_logits, ed_logits, video_ids, video_weights, settings: VcmrSettings):
    """Moments of one query over candidate videos: (K, L) logits, K video ids and per-video
    weights (exp(alpha * s) for VCMR, 1 for SVMR) -> NMS-ed [(video, st_s, ed_s, score)]."""
    scores = span_scores(st_logits, ed_logits, settings) * np.asarray(video_weights)[:, None,
                                                                                        None]
    flat = scores.reshape(-1)
    top = min(settings.max_before_nms, int(np.sum(flat > 0)))
    order = np.argsort(-flat, kind='stable')[:top]
    k, i, j = np.unravel_index(order, scores.shape)
    moments = [(video_ids[a], b * settings.interval, (c + 1) * settings.interval, flat[o])
               for a, b, c, o in zip(k.tolist(), i.tolist(), j.tolist(), order.tolist())]
    return temporal_nms(moments, settings.nms_thd, settings.max_after_nms)


def top_videos(video_scores_row, settings: VcmrSettings):
    """Indices of the top `max_vcmr_video` videos and their weights exp(alpha * s)."""
    order = np.argsort(-np.asarray(video_scores_row), kind='stable')[:settings.max_vcmr_video]
    return order, np.exp(settings.alpha * np.asarray(video_scores_row, np.float64)[order])


def moment_recall(predictions, gt_video, gt_window, ks, ious) -> dict[str, float]:
    """{f'{iou}-r{k}': 0/1} for one query's ranked moments (video, st, ed, score)."""
    hits = np.array([[p[0] == gt_video and temporal_iou(p[1:3], gt_window) >= t for t in ious]
                     for p in predictions], bool).reshape(-1, len(ious))
    out = {}
    for ti, t in enumerate(ious):
        for k in ks:
            out[f'{t}-r{k}'] = float(np.any(hits[:k, ti]))
    return out


def video_recall(ranked_videos, gt_video, ks) -> dict[str, float]:
    ranked = list(ranked_videos)
    return {f'r{k}': float(gt_video in ranked[:k]) for k in ks}


def average(rows: list[dict[str, float]]) -> dict[str, float]:
    """Mean of per-query 0/1 dicts, in percent (as the original eval reports)."""
    if not rows:
        return {}
    return {k: 100.0 * float(np.mean([r[k] for r in rows])) for k in rows[0]}


def evaluate_queries(queries: Sequence[dict], settings: VcmrSettings) -> dict:
    """Metrics over queries. Each query dict holds:
      gt_video (int), gt_window (st_s, ed_s), type (str, optional),
      video_scores (Nv,), cand_videos (K,), cand_st / cand_ed (K, L) logits against
      cand_videos (the top videos), gt_st / gt_ed (L,) logits against the GT video.
    Returns {'VCMR': {...}, 'SVMR': {...}, 'VR': {...}} plus per-type groups and the
    per-query predictions under 'predictions' (ranked moments of VCMR)."""
    rows: dict[str, list] = {'VCMR': [], 'SVMR': [], 'VR': []}
    by_type: dict[str, dict[str, list]] = {}
    predictions = []
    for q in queries:
        order, weights = top_videos(q['video_scores'], settings)
        cand = list(np.asarray(q['cand_videos']))
        index = [cand.index(v) for v in order]
        vcmr = rank_moments(np.asarray(q['cand_st'])[index], np.asarray(q['cand_ed'])[index],
                            order.tolist(), weights, settings)
        svmr = rank_moments(np.asarray(q['gt_st'])[None], np.asarray(q['gt_ed'])[None],
                            [q['gt_video']], [1.0], settings)
        full_order = np.argsort(-np.asarray(q['video_scores']), kind='stable')
        row = {'VCMR': moment_recall(vcmr, q['gt_video'], q['gt_window'], settings.ks,
                                     settings.ious),
               'SVMR': moment_recall(svmr, q['gt_video'], q['gt_window'], settings.ks,
                                     settings.ious),
               'VR': video_recall(full_order, q['gt_video'], settings.ks)}
        for name, value in row.items():
            rows[name].append(value)
            if q.get('type'):
                by_type.setdefault(q['type'], {}).setdefault(name, []).append(value)
        predictions.append([(int(v), float(s), float(e), float(p)) for v, s, e, p in vcmr])
    out = {name: average(r) for name, r in rows.items()}
    for qtype, groups in sorted(by_type.items()):
        out[f'type_{qtype}'] = {name: average(r) for name, r in groups.items()}
    out['num_queries'] = len(queries)
    out['predictions'] = predictions
    return out
