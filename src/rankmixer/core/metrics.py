"""Ranking metrics in pure numpy: exact, vectorised, O(n log n).

Evaluation sets reach tens of millions of rows and gAUC sets have millions of groups, so nothing
here loops over rows or groups in Python. Every AUC comes from sorting plus counting: the AUC
equals the probability that a random positive scores above a random negative, with a tie counted
as 1/2 (the Mann-Whitney statistic, identical to ROC AUC with average ranks for ties, which is
what ``sklearn.metrics.roc_auc_score`` computes).

Conventions:

* A metric that is undefined on the data (AUC with one class, NE when every label is equal,
  calibration with no positives) is ``float('nan')``, not an error: a small validation shard or a
  rare task can legitimately hit that, and a training run must not die on it. Malformed input
  (shapes, probabilities outside [0, 1], labels not in {0, 1}) is a ``ValueError``.
* Sums are taken in int64 / float64 whatever the input dtype, so float32 model outputs do not
  lose precision on large sets. Scores are compared in their own dtype, so two float32 scores
  that are equal count as a tie.

One file, though just over 400 lines: every metric shares the input checks and the one-sort
counting, and the streaming accumulator is the trainer's door to all of them.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

__all__ = [
    "auc",
    "logloss",
    "normalized_entropy",
    "calibration",
    "gauc",
    "uauc",
    "group_auc",
    "per_group_auc",
    "compute_metrics",
    "StreamingMetrics",
    "higher_is_better",
]


# ---- input checks ------------------------------------------------------------------------------


def _to_numpy(x: Any) -> np.ndarray:
    # Accept torch tensors without importing torch here: this module stays numpy-only.
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _labels_1d(labels: Any, what: str = "labels") -> np.ndarray:
    """Labels as a bool array; ValueError unless 1-D and every value is 0 or 1."""
    y = _to_numpy(labels)
    if y.ndim != 1:
        raise ValueError(f"{what} must be 1-D, got shape {y.shape}")
    if y.dtype == np.bool_:
        return y
    bad = ~((y == 0) | (y == 1))  # NaN fails both comparisons, so it is caught here too
    if bad.any():
        n_bad = int(bad.sum())
        example = y[np.flatnonzero(bad)[0]]
        raise ValueError(f"{what} must be 0 or 1; {n_bad} value(s) are not (e.g. {example!r})")
    return y == 1


def _scores_1d(scores: Any, n: int, what: str = "scores") -> np.ndarray:
    """Scores as a 1-D numeric array of length n; ValueError on NaN/inf (they have no rank)."""
    s = _to_numpy(scores)
    if s.ndim != 1:
        raise ValueError(f"{what} must be 1-D, got shape {s.shape}")
    if s.shape[0] != n:
        raise ValueError(f"{what} has {s.shape[0]} rows but labels have {n}")
    if s.dtype == np.bool_ or not np.issubdtype(s.dtype, np.number):
        raise ValueError(f"{what} must be numeric, got dtype {s.dtype}")
    if np.issubdtype(s.dtype, np.floating) and not np.isfinite(s).all():
        raise ValueError(f"{what} contain {int((~np.isfinite(s)).sum())} non-finite value(s)")
    return s


def _probs_1d(probs: Any, n: int, what: str = "probs") -> np.ndarray:
    p = _scores_1d(probs, n, what)
    if (p < 0).any() or (p > 1).any():
        n_bad = int(((p < 0) | (p > 1)).sum())
        raise ValueError(
            f"{what} must lie in [0, 1]; {n_bad} value(s) do not (pass probabilities, not logits)"
        )
    return p


def _groups_1d(groups: Any, n: int, what: str = "groups") -> np.ndarray:
    g = _to_numpy(groups)
    if g.ndim != 1:
        raise ValueError(f"{what} must be 1-D, got shape {g.shape}")
    if g.shape[0] != n:
        raise ValueError(f"{what} has {g.shape[0]} rows but labels have {n}")
    # NaN != NaN would make every NaN row a group of its own, silently.
    if np.issubdtype(g.dtype, np.floating) and not np.isfinite(g).all():
        raise ValueError(f"{what} contain non-finite values")
    return g


# ---- core kernels (inputs already checked) -----------------------------------------------------


def _run_starts(*sorted_keys: np.ndarray) -> np.ndarray:
    """Boolean mask: True where a row starts a new run of equal keys (all keys compared)."""
    n = sorted_keys[0].shape[0]
    new = np.zeros(n, dtype=bool)
    if n:
        new[0] = True
        for k in sorted_keys:
            new[1:] |= k[1:] != k[:-1]
    return new


def _auc_counts(y: np.ndarray, s: np.ndarray, chunk: int = 1 << 20) -> float:
    """Exact AUC from each class's scores, sorted: copies in their own dtype (4 bytes a row for
    float32, where an argsort with per-tie-block arrays needs ~40; the synthetic generator scores
    100M+ rows). For a positive, ``searchsorted(neg, p)`` left / right count the negatives below
    it and at most equal to it, so ``left + right`` is twice its wins plus ties. Positives go in
    sorted slices of ``chunk`` rows: bounded temporaries, each search starting near the last."""
    n = y.shape[0]
    n_pos = int(np.count_nonzero(y))
    n_neg = n - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    neg = s[~y]
    neg.sort()
    pos = s[y]
    pos.sort()
    # 2 * (wins + ties / 2), an exact integer (Python ints: no overflow on any size).
    twice = 0
    for start in range(0, n_pos, chunk):
        q = pos[start : start + chunk]
        twice += int(np.searchsorted(neg, q, side="left").sum(dtype=np.int64))
        twice += int(np.searchsorted(neg, q, side="right").sum(dtype=np.int64))
    return twice / (2.0 * n_pos * n_neg)


def _group_auc_arrays(
    y: np.ndarray, s: np.ndarray, g: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per group: AUC (nan where one class only), size, and whether both classes are present.

    One lexsort by (group, score); tie blocks are runs of equal (group, score); the negatives
    "below" a block are counted from the start of its group only.
    """
    n = y.shape[0]
    order = np.lexsort((s, g))
    gs = g[order]
    ss = s[order]
    ys = y[order].astype(np.int64)

    group_start = _run_starts(gs)
    block_start = group_start.copy()
    block_start[1:] |= ss[1:] != ss[:-1]
    b_starts = np.flatnonzero(block_start)
    pos_b = np.add.reduceat(ys, b_starts)
    neg_b = np.diff(np.append(b_starts, n)) - pos_b

    # Which blocks open a group, and the group index of every block.
    opens_group = group_start[b_starts]
    g_first_block = np.flatnonzero(opens_group)
    gid_b = np.cumsum(opens_group) - 1
    neg_excl = np.cumsum(neg_b) - neg_b  # negatives in all earlier blocks, any group
    neg_below = neg_excl - neg_excl[g_first_block][gid_b]

    twice = 2 * np.add.reduceat(pos_b * neg_below, g_first_block) + np.add.reduceat(
        pos_b * neg_b, g_first_block
    )
    n_pos = np.add.reduceat(pos_b, g_first_block)
    size = np.add.reduceat(pos_b + neg_b, g_first_block)
    n_neg = size - n_pos
    valid = (n_pos > 0) & (n_neg > 0)
    denom = 2.0 * n_pos * n_neg
    group_aucs = np.full(size.shape[0], np.nan)
    group_aucs[valid] = twice[valid] / denom[valid]
    return group_aucs, size, valid


def _group_auc_checked(y: np.ndarray, s: np.ndarray, g: np.ndarray) -> tuple[float, float]:
    if y.shape[0] == 0:
        return math.nan, math.nan
    group_aucs, size, valid = _group_auc_arrays(y, s, g)
    if not valid.any():
        return math.nan, math.nan
    a = group_aucs[valid]
    w = size[valid].astype(np.float64)
    return float(np.dot(w, a) / w.sum()), float(a.mean())


def _logloss_checked(y: np.ndarray, p: np.ndarray, eps: float) -> float:
    if y.shape[0] == 0:
        return math.nan
    # float64 before clipping: 1 - 1e-7 rounds to 1.0 in float32, and log(0) would follow.
    p = np.clip(p.astype(np.float64, copy=False), eps, 1.0 - eps)
    return float(-np.mean(np.where(y, np.log(p), np.log1p(-p))))


def _base_entropy(y: np.ndarray) -> float:
    if y.shape[0] == 0:
        return math.nan
    rate = float(np.count_nonzero(y)) / y.shape[0]
    if rate <= 0.0 or rate >= 1.0:
        return 0.0
    return -(rate * math.log(rate) + (1.0 - rate) * math.log1p(-rate))


def _calibration_checked(y: np.ndarray, p: np.ndarray) -> float:
    n_pos = int(np.count_nonzero(y))
    if n_pos == 0:
        return math.nan
    return float(p.sum(dtype=np.float64) / n_pos)


# ---- public single-task metrics ----------------------------------------------------------------


def auc(labels: Any, scores: Any) -> float:
    """ROC AUC with ties counted 1/2 (average ranks). Scores may be logits or probabilities.

    Returns ``nan`` when only one class is present: the AUC is undefined there, and a training
    run evaluating a tiny or rare-label shard should log that, not crash.
    """
    y = _labels_1d(labels)
    return _auc_counts(y, _scores_1d(scores, y.shape[0]))


def logloss(labels: Any, probs: Any, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy, natural log, probabilities clipped to [eps, 1 - eps]."""
    y = _labels_1d(labels)
    return _logloss_checked(y, _probs_1d(probs, y.shape[0]), eps)


def normalized_entropy(labels: Any, probs: Any, eps: float = 1e-7) -> float:
    """Normalised entropy (He et al. 2014; TorchRec's NE): logloss / entropy of the base rate.

    1.0 means no better than always predicting the base rate; lower is better. ``nan`` when all
    labels are equal (the base-rate entropy is 0).
    """
    y = _labels_1d(labels)
    p = _probs_1d(probs, y.shape[0])
    h = _base_entropy(y)
    if not h > 0.0:
        return math.nan
    return _logloss_checked(y, p, eps) / h


def calibration(labels: Any, probs: Any) -> float:
    """mean(prob) / mean(label): 1.0 is calibrated on average; ``nan`` with no positives."""
    y = _labels_1d(labels)
    return _calibration_checked(y, _probs_1d(probs, y.shape[0]))


def group_auc(labels: Any, scores: Any, groups: Any) -> tuple[float, float]:
    """(gAUC, UAUC) from one sort. Only groups with both classes count; ``nan`` if none has.

    gAUC weights each group's AUC by its number of rows (impressions), as in DIN and FuxiCTR;
    UAUC is the unweighted mean over the same groups. Groups may be any sortable ids.
    """
    y = _labels_1d(labels)
    s = _scores_1d(scores, y.shape[0])
    return _group_auc_checked(y, s, _groups_1d(groups, y.shape[0]))


def per_group_auc(labels: Any, scores: Any, groups: Any) -> tuple[np.ndarray, np.ndarray]:
    """Each group's AUC (``nan`` where it has one class only) and its row count, groups in
    ascending id order (that of ``np.unique(groups)``): what gAUC and UAUC average, for callers
    that re-weight groups (the bootstrap of :mod:`rankmixer.core.bootstrap`)."""
    y = _labels_1d(labels)
    s = _scores_1d(scores, y.shape[0])
    g = _groups_1d(groups, y.shape[0])
    if y.shape[0] == 0:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    group_aucs, size, _ = _group_auc_arrays(y, s, g)
    return group_aucs, size


def gauc(labels: Any, scores: Any, groups: Any) -> float:
    """Impression-weighted mean of per-group AUC; see :func:`group_auc`."""
    return group_auc(labels, scores, groups)[0]


def uauc(labels: Any, scores: Any, groups: Any) -> float:
    """Unweighted mean of per-group AUC (every user counts once); see :func:`group_auc`."""
    return group_auc(labels, scores, groups)[1]


# ---- multi-task ------------------------------------------------------------------------------

_HIGHER_IS_BETTER = {"auc": True, "gauc": True, "uauc": True, "logloss": False, "ne": False}


def higher_is_better(metric_name: str) -> bool:
    """Direction of a metric for early stopping and best-model selection.

    Accepts prefixed names (``"click/auc"``, ``"val/click/ne"``): the last ``/`` part decides.
    ``calibration`` has no direction (its optimum is 1.0), so it and unknown names raise
    ``ValueError`` rather than silently picking one.
    """
    base = metric_name.rsplit("/", 1)[-1]
    if base not in _HIGHER_IS_BETTER:
        raise ValueError(
            f"no optimisation direction for metric {metric_name!r}; "
            f"use one of {sorted(_HIGHER_IS_BETTER)}"
        )
    return _HIGHER_IS_BETTER[base]


def _as_2d(x: np.ndarray, what: str) -> np.ndarray:
    if x.ndim == 1:
        return x[:, None]
    if x.ndim != 2:
        raise ValueError(f"{what} must be [N, T] (or [N] for one task), got shape {x.shape}")
    return x


def compute_metrics(
    labels: Any,
    probs: Any,
    groups: Any | None,
    task_names: Sequence[str],
    eps: float = 1e-7,
) -> dict[str, float]:
    """All metrics for every task.

    labels, probs: [N, T] (or [N] when T == 1); groups: [N] or None; task_names: T names.
    Keys: ``auc``, ``logloss``, ``ne``, ``calibration`` (+ ``gauc``, ``uauc`` with groups) for the
    first task, so single-task code reads plain names; and ``<task>/<metric>`` for every task,
    the first included.
    """
    y_all = _as_2d(_to_numpy(labels), "labels")
    p_all = _as_2d(_to_numpy(probs), "probs")
    task_names = list(task_names)
    if y_all.shape != p_all.shape:
        raise ValueError(f"labels shape {y_all.shape} and probs shape {p_all.shape} differ")
    n, t = y_all.shape
    if len(task_names) != t:
        raise ValueError(f"{len(task_names)} task names {task_names} for {t} label column(s)")
    if len(set(task_names)) != t:
        raise ValueError(f"task names must be unique, got {task_names}")
    if n == 0:
        raise ValueError("no rows to compute metrics on")
    g = None if groups is None else _groups_1d(groups, n)

    out: dict[str, float] = {}
    for j, task in enumerate(task_names):
        y = _labels_1d(y_all[:, j], f"labels of task {task!r}")
        p = _probs_1d(p_all[:, j], n, f"probs of task {task!r}")
        ll = _logloss_checked(y, p, eps)
        h = _base_entropy(y)
        m = {
            "auc": _auc_counts(y, p),
            "logloss": ll,
            "ne": ll / h if h > 0.0 else math.nan,
            "calibration": _calibration_checked(y, p),
        }
        if g is not None:
            m["gauc"], m["uauc"] = _group_auc_checked(y, p, g)
        if j == 0:
            out.update(m)
        out.update({f"{task}/{k}": v for k, v in m.items()})
    return out


class StreamingMetrics:
    """Collects (labels, probs, groups) batch by batch and computes exact metrics at the end.

    Exact rather than binned (TorchRec-style approximate AUC): evaluation sets fit in host memory
    as a few float32 columns, and ranking comparisons need the 4th decimal of AUC. Chunks are
    copied on update, so callers may reuse their buffers.
    """

    def __init__(self, task_names: Sequence[str], eps: float = 1e-7) -> None:
        self.task_names = list(task_names)
        self.eps = eps
        self.reset()

    def reset(self) -> None:
        self._labels: list[np.ndarray] = []
        self._probs: list[np.ndarray] = []
        self._groups: list[np.ndarray] = []
        self._with_groups: bool | None = None  # fixed by the first update
        self._rows = 0

    def __len__(self) -> int:
        return self._rows

    def update(self, labels: Any, probs: Any, groups: Any | None = None) -> None:
        """Add one batch: labels, probs [B, T] (or [B] for one task); groups [B] or None."""
        y = _as_2d(_to_numpy(labels), "labels")
        p = _as_2d(_to_numpy(probs), "probs")
        if y.shape != p.shape:
            raise ValueError(f"labels shape {y.shape} and probs shape {p.shape} differ")
        if y.shape[1] != len(self.task_names):
            raise ValueError(f"{y.shape[1]} label column(s) for tasks {self.task_names}")
        with_groups = groups is not None
        if self._with_groups is None:
            self._with_groups = with_groups
        elif self._with_groups != with_groups:
            # Mixing would make groups misalign with rows at concatenation.
            raise ValueError("groups must be given for every batch or for none")
        if with_groups:
            g = _to_numpy(groups)
            if g.shape != (y.shape[0],):
                raise ValueError(f"groups shape {g.shape}, expected ({y.shape[0]},)")
            self._groups.append(np.array(g, copy=True))
        self._labels.append(np.array(y, copy=True))
        self._probs.append(np.array(p, copy=True))
        self._rows += y.shape[0]

    def compute(self) -> dict[str, float]:
        """Metrics over everything seen since the last reset (see :func:`compute_metrics`)."""
        if not self._labels:
            raise ValueError("StreamingMetrics.compute() called before any update()")
        y = np.concatenate(self._labels)
        p = np.concatenate(self._probs)
        g = np.concatenate(self._groups) if self._with_groups else None
        # Keep the concatenated arrays: a second compute() (e.g. logging twice) costs nothing.
        self._labels, self._probs = [y], [p]
        if g is not None:
            self._groups = [g]
        return compute_metrics(y, p, g, self.task_names, eps=self.eps)


def expected_calibration_error(labels: Any, probs: Any, bins: int = 20) -> float:
    """ECE over ``bins`` equal-count bins of the predicted probability (rows sorted by it, split
    into ``bins`` nearly equal runs): ``sum_b n_b / N * |mean p_b - mean y_b|``. Equal-count bins
    keep every bin's mean label estimable where predictions crowd near 0. ``nan`` on no rows."""
    y = _labels_1d(labels)
    p = _probs_1d(probs, y.shape[0]).astype(np.float64, copy=False)
    n = y.shape[0]
    if n == 0:
        return math.nan
    if not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    order = np.argsort(p, kind="stable")
    total = 0.0
    for part in np.array_split(order, min(bins, n)):
        total += len(part) * abs(float(p[part].mean()) - float(y[part].mean()))
    return total / n


def group_calibration_error(labels: Any, probs: Any, groups: Any) -> float:
    """ECE with the groups as bins: ``sum_g n_g / N * |mean p_g - mean y_g|``, e.g. how far each
    advertiser's predicted conversions are from its observed ones, weighted by its rows (an
    overall calibration of 1.0 can hide groups over- and under-predicted). ``nan`` on no rows."""
    y = _labels_1d(labels)
    p = _probs_1d(probs, y.shape[0]).astype(np.float64, copy=False)
    g = _groups_1d(groups, y.shape[0])
    if y.shape[0] == 0:
        return math.nan
    _, inverse = np.unique(g, return_inverse=True)
    gap = np.bincount(inverse, weights=p - y)  # per group: sum p - sum y
    return float(np.abs(gap).sum() / y.shape[0])
