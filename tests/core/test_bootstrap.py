"""Bootstrap intervals against references: scikit-learn on explicitly resampled data (the same
draws, rebuilt by hand), scipy.stats.bootstrap's percentile interval, DeLong's variance, and the
coverage of a known AUC."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from rankmixer.core.bootstrap import (
    bootstrap_ci,
    bootstrap_difference_ci,
    bootstrap_distribution,
    bootstrap_mean_ci,
    resample_indices,
)


def _data(n: int, seed: int, n_groups: int = 0, runs: int = 1, tasks: int = 1):
    """Labels [n, tasks]; per run informative scores with ties (rounded); user ids."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, tasks)) < 0.3).astype(np.float32)
    scores = [np.round(rng.random((n, tasks)) + 0.4 * y, 2).astype(np.float32) for _ in range(runs)]
    g = rng.integers(0, n_groups, n) if n_groups else None
    return y, scores, g


def _ref_gauc(y, s, g):
    """Slow gAUC / UAUC: sklearn per group, groups with both classes only."""
    aucs, sizes = [], []
    for k in np.unique(g):
        yy = y[g == k]
        if 0 < yy.sum() < len(yy):
            aucs.append(roc_auc_score(yy, s[g == k]))
            sizes.append(len(yy))
    aucs, sizes = np.array(aucs), np.array(sizes, dtype=float)
    return (aucs * sizes).sum() / sizes.sum(), aucs.mean()


def _groups_drawn(g, b, seed):
    """Resample b with users as units, built by hand: the rows of every drawn user, a user drawn
    twice appearing as two users (new ids: the draw's position)."""
    users = np.unique(g)
    drawn = users[resample_indices(len(users), b, seed)]
    rows = [np.flatnonzero(g == u) for u in drawn]
    new_ids = np.concatenate([np.full(len(r), i) for i, r in enumerate(rows)])
    return np.concatenate(rows), new_ids


def test_row_resamples_equal_sklearn_on_the_resampled_rows():
    y, (s,), _ = _data(700, seed=1, tasks=2)
    dist = bootstrap_distribution(y, [s], n_boot=40, seed=3, task=1)
    ref = [roc_auc_score(y[i, 1], s[i, 1]) for i in (resample_indices(700, b, 3) for b in range(40))]
    np.testing.assert_allclose(dist[:, 0], ref, rtol=0, atol=1e-12)


def test_group_resamples_equal_references_on_the_rebuilt_data():
    y, (s,), g = _data(600, seed=2, n_groups=40)
    y, s = y[:, 0], s[:, 0]
    n_boot = 25
    ref = {"auc": [], "gauc": [], "uauc": []}
    for b in range(n_boot):
        rows, new_ids = _groups_drawn(g, b, seed=5)
        ref["auc"].append(roc_auc_score(y[rows], s[rows]))
        ga, ua = _ref_gauc(y[rows], s[rows], new_ids)
        ref["gauc"].append(ga)
        ref["uauc"].append(ua)
    for metric, values in ref.items():
        dist = bootstrap_distribution(y, [s], metric, n_boot=n_boot, seed=5, group=g)
        np.testing.assert_allclose(dist[:, 0], values, rtol=0, atol=1e-12, err_msg=metric)


def test_seed_mean_and_paired_difference_against_an_explicit_loop():
    y, runs, _ = _data(500, seed=4, runs=5)
    y = y[:, 0]
    a, b = [r[:, 0] for r in runs[:3]], [r[:, 0] for r in runs[3:]]
    n_boot, level = 60, 0.9
    means_a, means_b = [], []
    for k in range(n_boot):
        i = resample_indices(500, k, 0)
        means_a.append(np.mean([roc_auc_score(y[i], p[i]) for p in a]))
        means_b.append(np.mean([roc_auc_score(y[i], p[i]) for p in b]))
    means_a, means_b = np.array(means_a), np.array(means_b)
    q = [(1 - level) / 2, (1 + level) / 2]

    ci = bootstrap_mean_ci(y, a, n_boot=n_boot, level=level)
    assert ci.estimate == pytest.approx(np.mean([roc_auc_score(y, p) for p in a]), abs=1e-12)
    assert (ci.low, ci.high) == pytest.approx(tuple(np.quantile(means_a, q)), abs=1e-12)
    assert (ci.n_boot, ci.n_valid, ci.unit) == (n_boot, n_boot, "rows")

    diff = bootstrap_difference_ci(y, a, b, n_boot=n_boot, level=level)
    assert diff.estimate == pytest.approx(ci.estimate - np.mean([roc_auc_score(y, p) for p in b]), abs=1e-12)
    assert (diff.low, diff.high) == pytest.approx(tuple(np.quantile(means_a - means_b, q)), abs=1e-12)
    same = bootstrap_difference_ci(y, a, a, n_boot=n_boot)
    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0)


def test_point_estimates_are_sklearn_and_the_slow_gauc():
    y, (s,), g = _data(800, seed=6, n_groups=30)
    assert bootstrap_ci(y, s, n_boot=5).estimate == pytest.approx(roc_auc_score(y[:, 0], s[:, 0]), abs=1e-12)
    ga, ua = _ref_gauc(y[:, 0], s[:, 0], g)
    assert bootstrap_ci(y, s, "gauc", group=g, n_boot=5).estimate == pytest.approx(ga, abs=1e-12)
    assert bootstrap_ci(y, s, "uauc", group=g, n_boot=5).estimate == pytest.approx(ua, abs=1e-12)


def _pairwise_auc(y, s, axis=-1):
    """Reference AUC, vectorised over leading axes: the share of (positive, negative) pairs the
    positive wins, ties counting 1/2, by comparing every pair."""
    y, s = np.moveaxis(y, axis, -1).astype(bool), np.moveaxis(s, axis, -1)
    wins = (s[..., :, None] > s[..., None, :]) + 0.5 * (s[..., :, None] == s[..., None, :])
    pairs = y[..., :, None] & ~y[..., None, :]
    return (wins * pairs).sum(axis=(-1, -2)) / pairs.sum(axis=(-1, -2))


def test_interval_matches_scipy_percentile_bootstrap_within_monte_carlo_error():
    rng = np.random.default_rng(7)
    y = np.r_[np.ones(25), np.zeros(35)]
    s = np.round(rng.normal(0.8 * y, 1.0), 1)
    n_boot = 8000
    ref = stats.bootstrap((y, s), _pairwise_auc, paired=True, vectorized=True, n_resamples=n_boot,
                          confidence_level=0.95, method="percentile", random_state=rng, batch=500)
    ci = bootstrap_ci(y, s, n_boot=n_boot, seed=11)
    # Each endpoint's Monte-Carlo sd is about 0.003 here (bootstrap sd ~0.07, B = 8000): 0.012
    # is about 3 sd of the difference of two independent estimates; a 90% interval misses by 0.02.
    assert ci.low == pytest.approx(ref.confidence_interval.low, abs=0.012)
    assert ci.high == pytest.approx(ref.confidence_interval.high, abs=0.012)


def test_bootstrap_sd_agrees_with_delong():
    rng = np.random.default_rng(8)
    y = (rng.random(2000) < 0.3).astype(float)
    s = rng.normal(y, 1.0)
    pos, neg = s[y == 1], s[y == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    delong_var = psi.mean(axis=1).var(ddof=1) / len(pos) + psi.mean(axis=0).var(ddof=1) / len(neg)
    dist = bootstrap_distribution(y, [s], n_boot=2000, seed=1)
    assert np.std(dist, ddof=1) == pytest.approx(math.sqrt(delong_var), rel=0.08)


def test_coverage_of_a_known_auc():
    """Binormal scores (positives N(d, 1), negatives N(0, 1)) have AUC Phi(d / sqrt 2); about
    95% of 95% intervals from independent test sets must contain it."""
    d = 1.0
    true_auc = stats.norm.cdf(d / math.sqrt(2))
    rng = np.random.default_rng(9)
    hits = 0
    trials = 200
    for t in range(trials):
        y = (rng.random(300) < 0.3).astype(float)
        s = rng.normal(d * y, 1.0)
        ci = bootstrap_ci(y, s, n_boot=300, seed=t)
        hits += ci.low <= true_auc <= ci.high
    assert 0.88 <= hits / trials <= 0.99


def test_undefined_resamples_are_left_out():
    y = np.array([1, 0, 0, 0, 0, 0], dtype=float)
    s = np.array([0.9, 0.1, 0.2, 0.3, 0.4, 0.95])
    n_boot = 200
    ref = []
    for b in range(n_boot):
        i = resample_indices(6, b, 0)
        if 0 < y[i].sum() < len(i):
            ref.append(roc_auc_score(y[i], s[i]))
    ci = bootstrap_ci(y, s, n_boot=n_boot)
    assert 0 < ci.n_valid == len(ref) < n_boot
    assert (ci.low, ci.high) == pytest.approx(tuple(np.quantile(ref, [0.025, 0.975])), abs=1e-12)


def test_bad_inputs_are_named():
    y, (s,), g = _data(50, seed=10, n_groups=5)
    with pytest.raises(ValueError, match="needs group"):
        bootstrap_ci(y, s, "gauc")
    with pytest.raises(ValueError, match="expected one of"):
        bootstrap_ci(y, s, "logloss")
    with pytest.raises(ValueError, match="rows but labels have"):
        bootstrap_mean_ci(y, [s, s[:-1]])
    with pytest.raises(ValueError, match="0 or 1"):
        bootstrap_ci(y * 2, s)
    with pytest.raises(ValueError, match="task 1 out of range"):
        bootstrap_ci(y, s, task=1)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci(y, s, n_boot=0)
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci(y, s, level=95)
