"""Learning-curve extrapolation of a short training run: what its validation metric would reach
after ``horizon`` steps.

The AutoML searcher (rankmixer.search.automl) evaluates each trial with a short run, as the
AutoML-for-ranking paper does (low-fidelity evaluation), and scores it by the short run's
result *and* the trend of its curve, so that a model still improving fast is not judged by
where it stands early. The paper does not publish its formula; ours fits
``value(t) = a + b * ln(t)`` by least squares to the later half of the run's validation points
(at least the last two) and reads the fit at ``horizon``. A logarithm in the steps flattens the
way one-pass ranking curves do, and its one slope is all a handful of points can carry.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rankmixer.core.rundir import METRICS_LOG

__all__ = ["extrapolate", "read_curve"]


def extrapolate(steps: Sequence[float], values: Sequence[float], horizon: float) -> float:
    """The fitted ``a + b ln t`` of the later half of the points (at least two) at ``horizon``;
    the last value when there is a single point or ``horizon`` is not after the last step."""
    if len(steps) != len(values) or not steps:
        raise ValueError(f"a curve needs as many steps as values, at least one; got {len(steps)} and {len(values)}")
    t = np.asarray(steps, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if np.any(t <= 0) or np.any(np.diff(t) <= 0):
        raise ValueError(f"a curve's steps must be positive and increasing, got {list(steps)}")
    if len(t) == 1 or horizon <= t[-1]:
        return float(v[-1])
    later = slice(min(len(t) // 2, len(t) - 2), None)
    x = np.log(t[later])
    b, a = np.polyfit(x, v[later], 1)
    return float(a + b * math.log(horizon))


def read_curve(run_dir: Path, metric: str) -> tuple[list[int], list[float]]:
    """The validation points ``(steps, values)`` of ``metric`` a run logged (``metrics.jsonl``),
    the last record per step kept (a resumed run logs a step again)."""
    points: dict[int, float] = {}
    path = Path(run_dir) / METRICS_LOG
    with open(path) as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}, line {n}: not JSON ({e.msg})") from None
            if rec.get("split") == "valid" and isinstance(rec.get(metric), (int, float)):
                points[int(rec["step"])] = float(rec[metric])
    steps = sorted(points)
    return steps, [points[s] for s in steps]
