"""Bootstrap confidence intervals of AUC, gAUC and UAUC: of one run, of a mean over seeds, and
of a paired difference between two models scored on the same test rows.

What the interval is about: the test set. A resample draws the test set's units with
replacement (as many as there are), every metric is recomputed on it, and the interval is the
``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the ``n_boot`` recomputed values (the
percentile bootstrap, as ``scipy.stats.bootstrap(method="percentile")``). It says how much the
number would move on another test set of the same size; it does not contain the seed-to-seed
spread of training, which tables show beside it as the sd over seeds.

Units: rows, or groups (users) when ``group`` is given. gAUC and UAUC are means over users, so
they always resample users (a drawn user brings all its rows; drawn twice, it counts twice).
AUC resamples rows unless ``group`` is given; then it resamples users too (a cluster bootstrap:
wider, and the honest one when a user's rows are correlated).

Seeds and pairs: several runs (seeds) scored on the same test rows share every resample. The
seed-mean interval recomputes each run's metric on a resample and averages over runs; the paired
difference takes mean(A) - mean(B) on the same resample, so the test-set noise the two rows share
cancels and a small but consistent difference can be told from zero.

Several tasks: the metric of column ``task`` (default 0, the first task: what the plain ``auc``
key of :func:`rankmixer.core.metrics.compute_metrics`, and so of ``metrics.json``, reports).

Resample ``b`` draws ``resample_indices(n_units, b, seed)``, whatever the chunking, so a resample
can be reproduced by hand (the tests do). Resamples where the metric is undefined (one class
only, or no user with both classes) are left out of the quantiles; ``n_valid`` counts the rest.
Speed: each run's scores are sorted once; a resample is then a count of draws per tie block of
scores (or per user), so 1000 resamples of 3 runs on 30k rows take about a second.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from rankmixer.core.metrics import auc, group_auc, per_group_auc

__all__ = [
    "METRICS",
    "Interval",
    "bootstrap_ci",
    "bootstrap_difference_ci",
    "bootstrap_distribution",
    "bootstrap_mean_ci",
    "percentile_interval",
    "resample_indices",
]

METRICS = ("auc", "gauc", "uauc")
# Draws held at once (resamples x units): bounds the temporaries to some tens of MB.
_CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class Interval:
    """A percentile bootstrap interval. ``estimate`` is the statistic on the whole test set."""

    estimate: float
    low: float
    high: float
    level: float
    n_boot: int  # resamples drawn
    n_valid: int  # resamples where the metric was defined (the quantiles' sample)
    unit: str  # "rows" or "groups": what was resampled

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def resample_indices(n_units: int, b: int, seed: int = 0) -> np.ndarray:
    """The units (row or group positions) drawn by resample ``b``: ``n_units`` draws with
    replacement from a generator seeded by ``(seed, b)``."""
    return np.random.default_rng([seed, b]).integers(0, n_units, n_units)


# ---- one run's metric on many resamples ------------------------------------------------------


def _tie_blocks(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Rows sorted by score, and each sorted row's tie block (runs of equal scores): block ids
    in sorted order and per original row, and the block count."""
    order = np.argsort(scores, kind="stable")
    s = scores[order]
    starts = np.ones(s.shape[0], dtype=bool)
    starts[1:] = s[1:] != s[:-1]
    block_sorted = np.cumsum(starts) - 1
    block_of_row = np.empty_like(block_sorted)
    block_of_row[order] = block_sorted
    return order, block_of_row, int(block_sorted[-1]) + 1 if s.shape[0] else 0


def _auc_from_blocks(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """AUC per resample from positive and negative weight per tie block, blocks in ascending
    score order ([C, blocks]): positives beat the negatives of lower blocks, tie with their own."""
    below = np.cumsum(neg, axis=1) - neg
    twice = 2 * (pos * below).sum(axis=1) + (pos * neg).sum(axis=1)
    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    out = np.full(pos.shape[0], np.nan)
    ok = (n_pos > 0) & (n_neg > 0)
    out[ok] = twice[ok] / (2.0 * n_pos[ok] * n_neg[ok])
    return out


def _counts(idx: np.ndarray, n_units: int) -> np.ndarray:
    """[C, n_units] how often each unit was drawn, from draws [C, n_units]."""
    c = idx.shape[0]
    flat = (idx + (np.arange(c, dtype=np.int64) * n_units)[:, None]).ravel()
    return np.bincount(flat, minlength=c * n_units).reshape(c, n_units)


class _RowAUC:
    """AUC with rows as the units: a row is coded by (tie block, label), and a resample's
    per-block counts are one bincount of its draws' codes."""

    def __init__(self, y: np.ndarray, s: np.ndarray) -> None:
        _, block_of_row, self.blocks = _tie_blocks(s)
        self.code = 2 * block_of_row + y.astype(np.int64)

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        c = idx.shape[0]
        width = 2 * self.blocks
        keys = self.code[idx] + (np.arange(c, dtype=np.int64) * width)[:, None]
        cnt = np.bincount(keys.ravel(), minlength=c * width).reshape(c, self.blocks, 2)
        return _auc_from_blocks(cnt[:, :, 1], cnt[:, :, 0])


class _ClusterAUC:
    """AUC with users as the units: every row weighs as often as its user was drawn."""

    def __init__(self, y: np.ndarray, s: np.ndarray, gid: np.ndarray, n_groups: int) -> None:
        order, block_of_row, _ = _tie_blocks(s)
        self.gid_sorted = gid[order]
        self.y_sorted = y[order].astype(np.int64)
        block_sorted = block_of_row[order]
        self.starts = np.flatnonzero(np.r_[True, block_sorted[1:] != block_sorted[:-1]])
        self.n_groups = n_groups

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        w = _counts(idx, self.n_groups)[:, self.gid_sorted]  # [C, rows] in score order
        pos = w * self.y_sorted
        neg = w - pos
        return _auc_from_blocks(np.add.reduceat(pos, self.starts, axis=1), np.add.reduceat(neg, self.starts, axis=1))


class _GroupMean:
    """gAUC (groups weighted by rows) or UAUC (each group once) with users as the units: each
    user's AUC is computed once; a resample re-weights users by how often they were drawn."""

    def __init__(self, y: np.ndarray, s: np.ndarray, g: np.ndarray, by_rows: bool) -> None:
        aucs, sizes = per_group_auc(y, s, g)
        defined = np.isfinite(aucs)
        self.weight = np.where(defined, sizes if by_rows else 1, 0).astype(np.float64)
        self.weighted_auc = self.weight * np.nan_to_num(aucs)

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        cnt = _counts(idx, self.weight.shape[0]).astype(np.float64)
        den = cnt @ self.weight
        out = np.full(idx.shape[0], np.nan)
        ok = den > 0
        out[ok] = (cnt @ self.weighted_auc)[ok] / den[ok]
        return out


# ---- checks and the shared driver --------------------------------------------------------------


def _column(x: Any, task: int, n: int | None, what: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim == 2:
        if not 0 <= task < a.shape[1]:
            raise ValueError(f"task {task} out of range for {what} with {a.shape[1]} column(s)")
        a = a[:, task]
    elif a.ndim != 1 or task != 0:
        raise ValueError(f"{what} must be [N] or [N, T] (task {task}), got shape {a.shape}")
    if n is not None and a.shape[0] != n:
        raise ValueError(f"{what} has {a.shape[0]} rows but labels have {n}")
    return a


def _inputs(labels: Any, runs: Sequence[Any], metric: str, group: Any | None, task: int):
    if metric not in METRICS:
        raise ValueError(f"metric {metric!r}: expected one of {', '.join(METRICS)}")
    if metric != "auc" and group is None:
        raise ValueError(f"metric {metric!r} needs group (the user of every row)")
    if len(runs) == 0:
        raise ValueError("no runs to bootstrap")
    y = _column(labels, task, None, "labels")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    y = y == 1
    ps = []
    for i, p in enumerate(runs):
        p = _column(p, task, y.shape[0], f"scores of run {i}")
        if not np.issubdtype(p.dtype, np.number) or not np.isfinite(p).all():
            raise ValueError(f"scores of run {i} must be finite numbers")
        ps.append(p)
    g = None if group is None else _column(group, 0, y.shape[0], "group")
    if g is not None and np.issubdtype(g.dtype, np.floating) and not np.isfinite(g).all():
        raise ValueError("group contains non-finite ids")
    return y, ps, g


def _estimate(y: np.ndarray, p: np.ndarray, g: np.ndarray | None, metric: str) -> float:
    """The metric on the whole test set, from the plain metric functions."""
    if metric == "auc":
        return auc(y, p)
    gauc_value, uauc_value = group_auc(y, p, g)
    return gauc_value if metric == "gauc" else uauc_value


def _distribution(y, ps, g, metric: str, n_boot: int, seed: int) -> tuple[np.ndarray, str]:
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    if g is None:
        n_units, unit = y.shape[0], "rows"
        evaluators = [_RowAUC(y, p) for p in ps]
        width = n_units
    else:
        _, gid = np.unique(g, return_inverse=True)
        n_units, unit = int(gid.max()) + 1 if gid.size else 0, "groups"
        if metric == "auc":
            evaluators = [_ClusterAUC(y, p, gid, n_units) for p in ps]
            width = max(n_units, y.shape[0])  # the [C, rows] weights are the larger temporary
        else:
            evaluators = [_GroupMean(y, p, g, by_rows=metric == "gauc") for p in ps]
            width = n_units
    if n_units == 0:
        raise ValueError("no rows to bootstrap")
    out = np.empty((n_boot, len(ps)))
    chunk = max(1, _CHUNK_ELEMENTS // width)
    for start in range(0, n_boot, chunk):
        stop = min(start + chunk, n_boot)
        idx = np.stack([resample_indices(n_units, b, seed) for b in range(start, stop)])
        for r, evaluate in enumerate(evaluators):
            out[start:stop, r] = evaluate(idx)
    return out, unit


def _interval(estimate: float, values: np.ndarray, level: float, unit: str) -> Interval:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    finite = values[np.isfinite(values)]
    if finite.size:
        low, high = (float(q) for q in np.quantile(finite, [(1 - level) / 2, (1 + level) / 2]))
    else:
        low = high = math.nan
    return Interval(float(estimate), low, high, level, int(values.shape[0]), int(finite.size), unit)


# ---- public --------------------------------------------------------------------------------


def bootstrap_distribution(
    labels: Any, runs: Sequence[Any], metric: str = "auc", *, n_boot: int = 1000, seed: int = 0,
    group: Any | None = None, task: int = 0,
) -> np.ndarray:
    """[n_boot, len(runs)]: every run's metric on every resample (``nan`` where undefined).

    labels: [N] or [N, T]; runs: each run's scores (probabilities or logits) of the same shape,
    for the same rows in the same order; group: [N] user ids, or None to resample rows.
    """
    y, ps, g = _inputs(labels, runs, metric, group, task)
    return _distribution(y, ps, g, metric, n_boot, seed)[0]


def bootstrap_mean_ci(
    labels: Any, runs: Sequence[Any], metric: str = "auc", *, n_boot: int = 1000, level: float = 0.95,
    seed: int = 0, group: Any | None = None, task: int = 0,
) -> Interval:
    """Interval of the mean over runs (seeds) of their metric; every run is scored on the same
    test rows and shares every resample. See the module docstring for what it covers."""
    y, ps, g = _inputs(labels, runs, metric, group, task)
    values, unit = _distribution(y, ps, g, metric, n_boot, seed)
    estimate = float(np.mean([_estimate(y, p, g, metric) for p in ps]))
    with np.errstate(invalid="ignore"):
        return _interval(estimate, values.mean(axis=1), level, unit)


def bootstrap_ci(
    labels: Any, probs: Any, metric: str = "auc", *, n_boot: int = 1000, level: float = 0.95, seed: int = 0,
    group: Any | None = None, task: int = 0,
) -> Interval:
    """Percentile interval of one run's metric on its test predictions."""
    return bootstrap_mean_ci(labels, [probs], metric, n_boot=n_boot, level=level, seed=seed, group=group, task=task)


def percentile_interval(estimate: float, values: Any, level: float = 0.95, unit: str = "rows") -> Interval:
    """The percentile interval of ``values``, a statistic's values on the resamples (``nan``
    where undefined, left out), around ``estimate``, its value on the whole test set. For draws
    kept from an earlier computation: two rows' kept draws of the same resamples, subtracted,
    give the paired difference's interval as :func:`bootstrap_difference_ci` does."""
    values = np.asarray(values, dtype=float)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"values must be a non-empty 1-d array, got shape {values.shape}")
    return _interval(estimate, values, level, unit)


def bootstrap_difference_ci(
    labels: Any, runs_a: Sequence[Any], runs_b: Sequence[Any], metric: str = "auc", *, n_boot: int = 1000,
    level: float = 0.95, seed: int = 0, group: Any | None = None, task: int = 0,
) -> Interval:
    """Interval of mean(A) - mean(B): the seed-mean metric of runs A minus that of runs B, on the
    same resamples of the same test rows (a paired bootstrap). An interval that excludes 0 says
    the difference is larger than test-set noise at this level."""
    if len(runs_a) == 0 or len(runs_b) == 0:
        raise ValueError("both sides of a difference need at least one run")
    y, ps, g = _inputs(labels, [*runs_a, *runs_b], metric, group, task)
    values, unit = _distribution(y, ps, g, metric, n_boot, seed)
    k = len(runs_a)
    estimates = [_estimate(y, p, g, metric) for p in ps]
    estimate = float(np.mean(estimates[:k]) - np.mean(estimates[k:]))
    with np.errstate(invalid="ignore"):
        return _interval(estimate, values[:, :k].mean(axis=1) - values[:, k:].mean(axis=1), level, unit)
