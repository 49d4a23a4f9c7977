"""The planted models' logistic link and the bias that sets their mean click rate.

Shared by the synthetic generators (``synthetic``, ``behaviour``, ``multitask``): each standardises its
logit terms on a calibration sample and solves the bias so that the mean of the true
probability on that sample is the configured ``target_ctr``.
"""

from __future__ import annotations

import numpy as np


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function, overflow-free for any float input."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def solve_bias(logit: np.ndarray, target: float) -> float:
    """The bias that makes the mean of sigmoid(logit + bias) equal ``target`` (bisection)."""
    lo, hi = -30.0, 30.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if sigmoid(logit + mid).mean() < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)
