"""Rank correlations between two scorings of the same items (a proxy against a measured metric, a
predictor against trials): Spearman's rho and Kendall's tau-b, both with ties handled as scipy
does (tests compare them with scipy.stats), and Spearman's rho with a third scoring held fixed
(a proxy's agreement with the metric beyond what the cost alone explains)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["kendall_tau", "partial_spearman", "spearman"]


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties given their mean rank."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    for v in np.unique(x):
        tied = x == v
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation: the Pearson correlation of the (tie-averaged) ranks."""
    rx, ry = _ranks(np.asarray(x, float)), _ranks(np.asarray(y, float))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = math.sqrt(float(rx @ rx) * float(ry @ ry))
    return float(rx @ ry) / den if den else math.nan


def partial_spearman(x: Sequence[float], y: Sequence[float], z: Sequence[float]) -> float:
    """Spearman's rho of ``x`` and ``y`` with ``z`` held fixed: the correlation of the ranks of
    ``x`` and ``y`` left once each is regressed linearly on the ranks of ``z``,
    (r_xy - r_xz r_yz) / sqrt((1 - r_xz^2)(1 - r_yz^2)) with r the Spearman coefficients. NaN
    where ``z`` orders ``x`` or ``y`` completely (nothing is left to correlate)."""
    r_xy, r_xz, r_yz = spearman(x, y), spearman(x, z), spearman(y, z)
    den = (1 - r_xz * r_xz) * (1 - r_yz * r_yz)
    return (r_xy - r_xz * r_yz) / math.sqrt(den) if den > 1e-12 else math.nan


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (ties in either variable corrected), over all pairs."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    dx = np.sign(x[:, None] - x[None, :])
    dy = np.sign(y[:, None] - y[None, :])
    upper = np.triu_indices(len(x), k=1)
    dx, dy = dx[upper], dy[upper]
    den = math.sqrt(float((dx != 0).sum()) * float((dy != 0).sum()))
    return float((dx * dy).sum()) / den if den else math.nan
