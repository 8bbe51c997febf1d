"""Downstream metrics against hand-computed values: temporal IoU, NMS, R@K at IoU thresholds
for VCMR / SVMR / VR (hero/vcmr_eval.py), QA and VIOLIN accuracy (hero/downstream.py)."""
import numpy as np
import pytest

from hero import downstream, vcmr_eval
from hero.vcmr_eval import VcmrSettings, temporal_iou, temporal_nms

NEG = -1e4


def test_temporal_iou():
    assert temporal_iou((0, 4), (2, 6)) == pytest.approx(1 / 3)
    assert temporal_iou((0, 1), (2, 3)) == 0.0
    assert temporal_iou((1, 3), (1, 3)) == 1.0


def test_nms_same_video_only_and_keep():
    moments = [(0, 1, 4, 0.8), (0, 0, 4, 0.9), (1, 0, 4, 0.7), (0, 3, 6, 0.6), (0, 0, 3, 0.5)]
    # (0,1,4) and (0,0,3) overlap the best (0,0,4) with IoU 3/4; video 1 never overlaps video 0
    assert temporal_nms(moments, 0.5, 10) == [(0, 0, 4, 0.9), (1, 0, 4, 0.7), (0, 3, 6, 0.6)]
    assert temporal_nms(moments, 0.5, 2) == [(0, 0, 4, 0.9), (1, 0, 4, 0.7)]
    assert len(temporal_nms(moments, 0.0, 10)) == 5          # NMS off


def test_moment_recall_needs_video_and_iou():
    preds = [(0, 0, 4, 0.9), (1, 3, 6, 0.7), (0, 3, 6, 0.6)]
    # GT video 0, [4, 6]: (0,0,4) IoU 0, (1,3,6) wrong video, (0,3,6) IoU 2/3 -> hit at rank 3
    got = vcmr_eval.moment_recall(preds, 0, (4, 6), (1, 2, 5), (0.5, 0.7))
    assert got == {'0.5-r1': 0, '0.5-r2': 0, '0.5-r5': 1, '0.7-r1': 0, '0.7-r2': 0,
                   '0.7-r5': 0}


def logits(probs):
    probs = np.asarray(probs, np.float64)
    return np.where(probs > 0, np.log(np.maximum(probs, 1e-30)), NEG)


def test_vcmr_svmr_vr_hand_computed():
    """Two videos, L = 6, interval 1 s, lengths 1 <= j - i < 4. Video 0 (s = 0.5, weight e^10):
    P_st = [.6 .4 0 ..], P_ed = [0 0 .5 .5 0 0] -> moments [0,3] .3, [0,4] .3, [1,3] .2,
    [1,4] .2 (x e^10); video 1 (s = 0.4, weight e^8 = .135 e^10): [2,5] 1.0. NMS at 0.5 keeps
    (v0 [0,3]) and (v1 [2,5]): [0,4] IoU 3/4, [1,3] IoU 2/3, [1,4] IoU 1/2 are suppressed."""
    settings = VcmrSettings(min_pred_len=1, max_pred_len=4, interval=1.0, ks=(1, 2, 5),
                            max_before_nms=10, max_after_nms=5)
    st = np.stack([logits([.6, .4, 0, 0, 0, 0]), logits([0, 0, 1, 0, 0, 0])])
    ed = np.stack([logits([0, 0, .5, .5, 0, 0]), logits([0, 0, 0, 0, 1, 0])])
    common = dict(video_scores=np.array([0.5, 0.4]), cand_videos=np.array([1, 0]),
                  cand_st=st[::-1], cand_ed=ed[::-1])
    q1 = dict(common, gt_video=1, gt_window=(2.0, 5.0), type='v', gt_st=st[1], gt_ed=ed[1])
    q2 = dict(common, gt_video=0, gt_window=(0.0, 3.0), type='t', gt_st=st[0], gt_ed=ed[0])
    out = vcmr_eval.evaluate_queries([q1, q2], settings)
    assert [(v, s, e) for v, s, e, _ in out['predictions'][0]] == [(0, 0, 3), (1, 2, 5)]
    np.testing.assert_allclose(out['predictions'][0][0][3], 0.3 * np.exp(10), rtol=1e-6)
    np.testing.assert_allclose(out['predictions'][0][1][3], np.exp(8), rtol=1e-6)
    # q1: VCMR hit at rank 2, SVMR at rank 1, VR rank 2; q2: all at rank 1
    for iou in (0.5, 0.7):
        assert out['VCMR'][f'{iou}-r1'] == 50.0 and out['VCMR'][f'{iou}-r2'] == 100.0
        assert out['SVMR'][f'{iou}-r1'] == 100.0
    assert out['VR'] == {'r1': 50.0, 'r2': 100.0, 'r5': 100.0}
    assert out['type_v']['VCMR']['0.7-r1'] == 0.0 and out['type_t']['VCMR']['0.7-r1'] == 100.0
    assert out['num_queries'] == 2


def test_length_limits_and_top_videos():
    settings = VcmrSettings(min_pred_len=2, max_pred_len=3, max_vcmr_video=1)
    scores = vcmr_eval.span_scores(np.zeros((1, 5)), np.zeros((1, 5)), settings)
    i, j = np.nonzero(scores[0])
    assert set(j - i) == {2}
    order, weights = vcmr_eval.top_videos(np.array([0.1, 0.3, 0.2]), settings)
    assert order.tolist() == [1] and weights[0] == pytest.approx(np.exp(20 * 0.3))


def test_qa_and_violin_accuracy():
    qa_logits = np.array([[0.1, 0.9, 0, 0, 0], [2, 1, 0, 0, 0], [0, 0, 0, 0, 1]])
    assert float(downstream.qa_accuracy(qa_logits, np.array([1, 1, 4]))) == pytest.approx(2 / 3)
    violin_logits = np.array([[2.0, -1.0], [-0.5, 0.3]])
    labels = np.array([[1, 0], [1, 0]])
    assert float(downstream.violin_accuracy(violin_logits, labels)) == pytest.approx(0.5)
