"""A run's saved test predictions, and what a split's labels say about trusting its metrics.

Every training run writes ``test_predictions.npz`` (:data:`rankmixer.core.rundir.TEST_PREDICTIONS`)
beside ``metrics.json``: its best model's probabilities on the prepared test split, in the
split's own order, so that tables can bootstrap confidence intervals over the same test rows for
every seed and every model (:mod:`rankmixer.core.bootstrap`). Any tool may write the format
(the FuxiCTR end-to-end runner does): a compressed NumPy archive with

* ``labels`` [N, T] float32, 0 or 1;
* ``probs``  [N, T] float32, the predicted probability of each task;
* ``group``  [N] int64, the user of each row (only where the data has a group key).

With negatives plentiful, AUC's standard error is about ``0.3 / sqrt(positives)`` for AUC
between 0.5 and 0.75 (Hanley & McNeil 1982): 0.028 at 114 positives, 0.013 at 500. A split with
few positives cannot rank models that differ by less; :func:`few_positives` names the splits and
tasks under :data:`MIN_POSITIVES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rankmixer.core.files import atomic_file

__all__ = ["MIN_POSITIVES", "Predictions", "count_positives", "few_positives", "load_predictions", "save_predictions"]

# Below this many positives in a split (per task), its AUC's standard error is above about 0.013.
MIN_POSITIVES = 500


@dataclass(frozen=True)
class Predictions:
    labels: np.ndarray  # [N, T] float32
    probs: np.ndarray  # [N, T] float32
    group: np.ndarray | None  # [N] int64, or None


def _two_d(x: Any, what: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float32)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{what} must be [N, T] (or [N]), got shape {a.shape}")
    return a


def save_predictions(path: Path | str, labels: Any, probs: Any, group: Any | None = None) -> Path:
    """Write the archive atomically (float32 labels and probabilities, int64 group)."""
    y, p = _two_d(labels, "labels"), _two_d(probs, "probs")
    if y.shape != p.shape:
        raise ValueError(f"labels shape {y.shape} and probs shape {p.shape} differ")
    arrays = {"labels": y, "probs": p}
    if group is not None:
        g = np.asarray(group).astype(np.int64)
        if g.shape != (y.shape[0],):
            raise ValueError(f"group shape {g.shape}, expected ({y.shape[0]},)")
        arrays["group"] = g
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    return Path(path)


def load_predictions(path: Path | str) -> Predictions:
    """Read an archive written by :func:`save_predictions` (or another tool in its format);
    ValueError naming the file when arrays are missing or their shapes disagree."""
    with np.load(path, allow_pickle=False) as z:
        missing = {"labels", "probs"} - set(z.files)
        if missing:
            raise ValueError(f"{path}: no {', '.join(sorted(missing))} array (have {', '.join(z.files)})")
        y, p = _two_d(z["labels"], f"{path}: labels"), _two_d(z["probs"], f"{path}: probs")
        g = z["group"] if "group" in z.files else None
    if y.shape != p.shape or (g is not None and g.shape != (y.shape[0],)):
        raise ValueError(f"{path}: labels {y.shape}, probs {p.shape}"
                         + ("" if g is None else f", group {g.shape}") + " do not describe the same rows")
    return Predictions(y, p, g)


def count_positives(labels: Any, task_names: Sequence[str]) -> dict[str, int]:
    """Positive rows per task of a split's labels [N, T]."""
    y = _two_d(labels, "labels")
    if y.shape[1] != len(task_names):
        raise ValueError(f"{y.shape[1]} label column(s) for tasks {list(task_names)}")
    return {t: int(np.count_nonzero(y[:, j] == 1)) for j, t in enumerate(task_names)}


def few_positives(positives: dict[str, dict[str, int]], minimum: int = MIN_POSITIVES) -> list[str]:
    """A warning for every (split, task) with fewer than ``minimum`` positives, from
    ``{split: {task: positives}}`` (the ``positives`` of ``metrics.json``)."""
    return [f"the {split} split has {n} positives for task {task!r} (fewer than {minimum}): its AUC's standard "
            f"error is about {0.3 / max(n, 1) ** 0.5:.3f}, so smaller differences do not rank models"
            for split, tasks in positives.items() for task, n in tasks.items() if n < minimum]
