"""Metrics against independent references: scikit-learn, per-group loops, float64 by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from rankmixer.core.metrics import (
    StreamingMetrics,
    auc,
    calibration,
    compute_metrics,
    gauc,
    group_auc,
    higher_is_better,
    logloss,
    normalized_entropy,
    uauc,
)


def _data(n: int, pos_rate: float, seed: int, decimals: int | None = 2, n_groups: int = 0):
    """Labels, informative scores with many ties (rounded), probabilities, groups."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < pos_rate).astype(np.float32)
    s = rng.random(n) + 0.3 * y
    s = s / s.max()
    if decimals is not None:
        s = np.round(s, decimals)
    p = np.clip(s, 1e-3, 1 - 1e-3).astype(np.float32)
    g = rng.integers(0, n_groups, n) if n_groups else None
    return y, p, g


def _ref_group_auc(y, s, g):
    """Slow reference: sklearn per group, weighted by group size (gAUC) and unweighted (UAUC)."""
    order = np.argsort(g, kind="stable")
    ys, ss, gs = y[order], s[order], g[order]
    bounds = np.flatnonzero(np.r_[True, gs[1:] != gs[:-1], True])
    aucs, sizes = [], []
    for a, b in zip(bounds[:-1], bounds[1:]):
        yy = ys[a:b]
        if 0 < yy.sum() < len(yy):
            aucs.append(roc_auc_score(yy, ss[a:b]))
            sizes.append(b - a)
    aucs, sizes = np.array(aucs), np.array(sizes, dtype=np.float64)
    return float((aucs * sizes).sum() / sizes.sum()), float(aucs.mean())


# ---- AUC ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("pos_rate", [0.5, 0.02, 0.001])
@pytest.mark.parametrize("decimals", [None, 2, 1])
def test_auc_matches_sklearn_with_ties_and_imbalance(pos_rate, decimals):
    y, p, _ = _data(20_000, pos_rate, seed=1, decimals=decimals)
    assert auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def test_auc_tie_counts_half_by_hand():
    # Positive 0.5 ties negative 0.5 (1/2) and beats negative 0.1 (1); positive 0.9 beats both.
    assert auc([0, 1, 0, 1], [0.5, 0.5, 0.1, 0.9]) == pytest.approx((0.5 + 1 + 1 + 1) / 4)
    # All scores equal: every pair is a tie.
    assert auc([0, 1, 1, 0, 1], [3.0] * 5) == pytest.approx(0.5)
    # Perfectly wrong ranking, and logits (scores outside [0, 1]) are fine for AUC.
    assert auc([1, 1, 0], [-5.0, -4.0, 7.0]) == 0.0


def test_auc_accepts_bool_int_and_float32_ties():
    y, p, _ = _data(5_000, 0.1, seed=2, decimals=3)
    ref = roc_auc_score(y, p)
    assert auc(y.astype(bool), p) == pytest.approx(ref, abs=1e-12)
    assert auc(y.astype(np.int64), p.astype(np.float64)) == pytest.approx(ref, abs=1e-12)


def test_auc_one_class_is_nan():
    assert math.isnan(auc([1, 1, 1], [0.1, 0.2, 0.3]))
    assert math.isnan(auc([0, 0], [0.1, 0.2]))


@pytest.mark.slow  # ~4 s; the per-group and small-sample checks stay
def test_one_million_rows_match_sklearn():
    y, p, g = _data(1_000_000, 0.03, seed=3, decimals=3, n_groups=1_000)
    assert auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-10)
    ga, ua = group_auc(y, p, g)
    ref_ga, ref_ua = _ref_group_auc(y, p, g)
    assert ga == pytest.approx(ref_ga, abs=1e-10)
    assert ua == pytest.approx(ref_ua, abs=1e-10)


def test_auc_over_a_million_positives_is_exact():
    """More positives than one search slice (2^20), every tie block spanning slice boundaries:
    the AUC equals the exact count over distinct scores, done by hand in Python integers."""
    y, p, _ = _data(2_400_000, 0.5, seed=5, decimals=2)
    assert np.count_nonzero(y) > 1 << 20
    values, index = np.unique(p, return_inverse=True)
    pos = np.bincount(index, weights=y, minlength=values.size).astype(np.int64)
    neg = np.bincount(index, minlength=values.size) - pos
    twice, neg_below = 0, 0
    for n_pos_v, n_neg_v in zip(pos.tolist(), neg.tolist()):
        twice += n_pos_v * (2 * neg_below + n_neg_v)  # wins count 2, ties 1
        neg_below += n_neg_v
    n_pos, n_neg = int(pos.sum()), int(neg.sum())
    assert auc(y, p) == twice / (2.0 * n_pos * n_neg)


# ---- gAUC / UAUC ---------------------------------------------------------------------------


@pytest.mark.parametrize("pos_rate", [0.3, 0.05])
def test_gauc_uauc_match_per_group_sklearn(pos_rate):
    y, p, g = _data(30_000, pos_rate, seed=4, decimals=2, n_groups=700)
    ref_ga, ref_ua = _ref_group_auc(y, p, g)
    assert gauc(y, p, g) == pytest.approx(ref_ga, abs=1e-12)
    assert uauc(y, p, g) == pytest.approx(ref_ua, abs=1e-12)
    # With unequal group sizes the two differ; a mix-up between them must show.
    assert gauc(y, p, g) != pytest.approx(uauc(y, p, g), abs=1e-6)


def test_gauc_by_hand_skips_one_class_groups_and_ties_across_groups():
    # Group 7: AUC 1.0 on 2 rows; group 3: one positive tied with one of two negatives -> 0.75
    # on 3 rows; group 5 (positives only) is skipped. The score 0.4 in groups 3 and 7 must not
    # be treated as a tie across groups.
    y = [1, 0, 1, 0, 0, 1, 1]
    s = [0.9, 0.4, 0.4, 0.4, 0.1, 0.2, 0.3]
    g = [7, 7, 3, 3, 3, 5, 5]
    assert gauc(y, s, g) == pytest.approx((2 * 1.0 + 3 * 0.75) / 5)
    assert uauc(y, s, g) == pytest.approx((1.0 + 0.75) / 2)


def test_gauc_string_groups_and_no_valid_group():
    y = np.array([1, 0, 1, 0])
    s = np.array([0.9, 0.1, 0.2, 0.8])
    g = np.array(["u1", "u1", "u2", "u2"])
    assert gauc(y, s, g) == pytest.approx(0.5)
    assert math.isnan(gauc([1, 0], [0.3, 0.2], [1, 2]))  # each group has one class only


# ---- logloss / NE / calibration --------------------------------------------------------------


@pytest.mark.parametrize("pos_rate", [0.5, 0.01])
def test_logloss_matches_sklearn(pos_rate):
    y, p, _ = _data(50_000, pos_rate, seed=5, decimals=None)
    assert logloss(y, p) == pytest.approx(log_loss(y, p.astype(np.float64)), rel=1e-9)


def test_logloss_clips_extremes():
    # p = 0 for a positive would be infinite; clipped at eps it costs -log(eps), and the
    # negative at p = 0 (clipped to eps too) costs -log(1 - eps).
    eps = 1e-7
    expected = (-math.log(eps) - math.log1p(-eps)) / 2
    assert logloss([1, 0], [0.0, 0.0], eps=eps) == pytest.approx(expected, rel=1e-12)
    # float32 1.0 for a negative must also be clipped (1 - 1e-7 is 1.0 in float32).
    v = logloss(np.array([0.0], np.float32), np.array([1.0], np.float32), eps=eps)
    assert v == pytest.approx(-math.log(eps), rel=1e-6)


def test_normalized_entropy_by_hand_float64():
    y, p, _ = _data(10_000, 0.07, seed=6, decimals=None)
    yd, pd = y.astype(np.float64), p.astype(np.float64)
    ll = -np.mean(yd * np.log(pd) + (1 - yd) * np.log(1 - pd))
    r = yd.mean()
    h = -(r * math.log(r) + (1 - r) * math.log(1 - r))
    assert normalized_entropy(y, p) == pytest.approx(ll / h, rel=1e-9)
    # Predicting the base rate everywhere gives NE exactly 1.
    assert normalized_entropy(y, np.full_like(p, r)) == pytest.approx(1.0, rel=1e-6)
    assert math.isnan(normalized_entropy([1, 1], [0.5, 0.7]))


def test_calibration():
    assert calibration([1, 0, 0, 0], [0.5, 0.25, 0.25, 0.0]) == pytest.approx(1.0)
    assert calibration([1, 0], [0.6, 0.4]) == pytest.approx(1.0)
    assert calibration([1, 1, 0, 0], [0.1, 0.1, 0.1, 0.1]) == pytest.approx(0.2)
    assert math.isnan(calibration([0, 0], [0.1, 0.2]))


# ---- compute_metrics / streaming ----------------------------------------------------------------


def test_compute_metrics_keys_and_values_multi_task():
    y1, p1, g = _data(20_000, 0.2, seed=7, n_groups=300)
    y2, p2, _ = _data(20_000, 0.02, seed=8)
    y, p = np.stack([y1, y2], 1), np.stack([p1, p2], 1)
    m = compute_metrics(y, p, g, ["click", "like"])
    for task, yy, pp in [("click", y1, p1), ("like", y2, p2)]:
        assert m[f"{task}/auc"] == pytest.approx(roc_auc_score(yy, pp), abs=1e-12)
        assert m[f"{task}/logloss"] == pytest.approx(log_loss(yy, pp.astype(np.float64)), rel=1e-9)
        ref_ga, ref_ua = _ref_group_auc(yy, pp, g)
        assert m[f"{task}/gauc"] == pytest.approx(ref_ga, abs=1e-12)
        assert m[f"{task}/uauc"] == pytest.approx(ref_ua, abs=1e-12)
        assert m[f"{task}/calibration"] == pytest.approx(pp.astype(np.float64).mean() / yy.mean())
    # Plain keys belong to the first task.
    for k in ["auc", "logloss", "ne", "calibration", "gauc", "uauc"]:
        assert m[k] == m[f"click/{k}"]
    assert m["auc"] != m["like/auc"]


def test_compute_metrics_single_task_without_groups():
    y, p, _ = _data(1_000, 0.3, seed=9)
    m = compute_metrics(y[:, None], p[:, None], None, ["ctr"])
    assert set(m) == {"auc", "logloss", "ne", "calibration"} | {
        f"ctr/{k}" for k in ["auc", "logloss", "ne", "calibration"]
    }
    assert compute_metrics(y, p, None, ["ctr"]) == m  # 1-D input means one task


@pytest.mark.parametrize(
    "labels, probs, groups, tasks, match",
    [
        (np.zeros((4, 2)), np.zeros((4, 1)), None, ["a"], "shape"),
        (np.zeros((4, 1)), np.zeros((4, 1)), None, ["a", "b"], "task names"),
        (np.zeros((4, 1)), np.zeros((4, 1)), np.zeros(3), ["a"], "groups has 3 rows"),
        (np.array([[0], [1], [2], [0]]), np.full((4, 1), 0.5), None, ["ctr"], "labels of task"),
        (np.array([[0], [1], [np.nan], [0]]), np.full((4, 1), 0.5), None, ["c"], "must be 0 or 1"),
        (np.array([[0], [1]]), np.array([[0.5], [1.5]]), None, ["ctr"], r"probs of task.*\[0, 1\]"),
        (np.array([[0], [1]]), np.array([[0.5], [np.nan]]), None, ["ctr"], "non-finite"),
        (np.zeros((0, 1)), np.zeros((0, 1)), None, ["a"], "no rows"),
    ],
)
def test_compute_metrics_rejects_bad_input(labels, probs, groups, tasks, match):
    with pytest.raises(ValueError, match=match):
        compute_metrics(labels, probs, groups, tasks)


def test_single_metric_input_errors():
    with pytest.raises(ValueError, match="rows"):
        auc([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="1-D"):
        auc(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="logits"):
        logloss([0, 1], [-0.1, 0.5])


def test_streaming_equals_one_shot_and_copies_chunks():
    y1, p1, g = _data(9_000, 0.2, seed=10, n_groups=200)
    y2, p2, _ = _data(9_000, 0.1, seed=11)
    y, p = np.stack([y1, y2], 1), np.stack([p1, p2], 1)
    sm = StreamingMetrics(["a", "b"])
    buf_y, buf_p = np.empty((1000, 2), np.float32), np.empty((1000, 2), np.float32)
    for i in range(0, 9_000, 1000):
        buf_y[:], buf_p[:] = y[i : i + 1000], p[i : i + 1000]
        sm.update(buf_y, buf_p, g[i : i + 1000])  # the buffer is overwritten next round
    assert len(sm) == 9_000
    expected = compute_metrics(y, p, g, ["a", "b"])
    assert sm.compute() == expected
    assert sm.compute() == expected  # computing twice is stable
    sm.reset()
    with pytest.raises(ValueError, match="before any update"):
        sm.compute()
    sm.update(y[:10], p[:10])
    with pytest.raises(ValueError, match="every batch or for none"):
        sm.update(y[:10], p[:10], g[:10])


def test_streaming_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    y, p, _ = _data(2_000, 0.3, seed=12)
    sm = StreamingMetrics(["ctr"])
    sm.update(torch.from_numpy(y[:1000]), torch.from_numpy(p[:1000]))
    sm.update(torch.from_numpy(y[1000:]), torch.from_numpy(p[1000:]))
    assert sm.compute()["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def test_higher_is_better():
    assert higher_is_better("auc") and higher_is_better("click/gauc") and higher_is_better("uauc")
    assert not higher_is_better("logloss") and not higher_is_better("val/like/ne")
    with pytest.raises(ValueError, match="calibration"):
        higher_is_better("calibration")
    with pytest.raises(ValueError):
        higher_is_better("accuracy")


def test_expected_calibration_error_by_hand():
    from rankmixer.core.metrics import expected_calibration_error

    # two equal-count bins: {0.1, 0.2} with labels {0, 0} and {0.6, 0.9} with labels {1, 0}
    y, p = [0, 0, 1, 0], [0.2, 0.1, 0.9, 0.6]
    want = 0.5 * abs(0.15 - 0.0) + 0.5 * abs(0.75 - 0.5)
    assert expected_calibration_error(y, p, bins=2) == pytest.approx(want)
    # one bin: |mean p - mean y|; more bins than rows: one row per bin, mean |p - y|
    assert expected_calibration_error(y, p, bins=1) == pytest.approx(abs(np.mean(p) - 0.25))
    assert expected_calibration_error(y, p, bins=10) == pytest.approx(np.mean(np.abs(np.array(p) - y)))
    assert math.isnan(expected_calibration_error([], [], bins=3))
    with pytest.raises(ValueError, match="bins must be a positive integer"):
        expected_calibration_error(y, p, bins=0)


def test_group_calibration_error_by_hand():
    from rankmixer.core.metrics import group_calibration_error

    # group a: mean p 0.3, mean y 0.5 (2 rows); group b: mean p 0.2, mean y 0 (3 rows)
    y, p, g = [1, 0, 0, 0, 0], [0.4, 0.2, 0.1, 0.2, 0.3], ["a", "a", "b", "b", "b"]
    assert group_calibration_error(y, p, g) == pytest.approx(2 / 5 * 0.2 + 3 / 5 * 0.2)
    # one group: |mean p - mean y|
    assert group_calibration_error(y, p, [0] * 5) == pytest.approx(abs(np.mean(p) - 0.2))
