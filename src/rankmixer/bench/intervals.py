"""Confidence intervals of the accuracy tables, from the test predictions every run saves.

A row's interval is the 95% percentile bootstrap interval of its seed-mean test AUC: test rows
resampled, the same draws for every seed (:mod:`rankmixer.core.bootstrap`, settings in
:data:`BOOTSTRAP`). It covers test-set sampling, not seed-to-seed spread (the tables' sd).
:func:`paired_difference` compares two rows on the same resamples, so the noise they share
cancels: the parity tables' question, "is A within noise of B?".
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from rankmixer.core.bootstrap import bootstrap_difference_ci, bootstrap_mean_ci
from rankmixer.core.predictions import Predictions, load_predictions
from rankmixer.core.rundir import TEST_PREDICTIONS

__all__ = ["BOOTSTRAP", "INTERVAL_KEYS", "dataset_differences", "differences_table", "paired_difference",
           "run_dir_name", "run_predictions", "seed_mean_interval"]

# 95% percentile bootstrap over test rows, 1000 resamples, fixed draws (the same every time).
BOOTSTRAP = {"n_boot": 1000, "level": 0.95, "seed": 0}
# What a summary row gains from the predictions.
INTERVAL_KEYS = ("auc_ci_low", "auc_ci_high", "positives")


def run_dir_name(label: str, seed: int) -> str:
    """The folder of a (cell, seed) run under a benchmark's ``runs/``."""
    return f"{label}-s{seed}"


def run_predictions(result: dict, runs_dir: Path | None) -> Predictions | None:
    """A (cell, seed)'s saved test predictions: the file its result names under ``predictions``
    (a runner that writes elsewhere), else ``runs_dir/<label>-s<seed>/test_predictions.npz``;
    None when there is none."""
    path = result.get("predictions")
    if path is None and runs_dir is not None:
        path = Path(runs_dir) / run_dir_name(result["label"], result["seed"]) / TEST_PREDICTIONS
    return load_predictions(path) if path is not None and Path(path).is_file() else None


def seed_mean_interval(results: list[dict], runs_dir: Path | None) -> dict:
    """``auc_ci_low`` / ``auc_ci_high`` of one row (its seeds' results) and ``positives``, the
    test positives of the first task; None where a run saved no predictions or the seeds' test
    rows differ."""
    preds = [run_predictions(r, runs_dir) for r in results]
    known = [p for p in preds if p is not None]
    out = dict.fromkeys(INTERVAL_KEYS)
    if known:
        out["positives"] = int(np.count_nonzero(known[0].labels[:, 0] == 1))
    if known and len(known) == len(preds) and all(np.array_equal(p.labels, known[0].labels) for p in known):
        ci = bootstrap_mean_ci(known[0].labels, [p.probs for p in known], "auc", **BOOTSTRAP)
        out["auc_ci_low"], out["auc_ci_high"] = ci.low, ci.high
    return out


def paired_difference(report: dict | Sequence[dict], row_a: str, row_b: str, runs_dir: Path | None = None, *,
                      metric: str = "auc", n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """Row A minus row B (labels): the difference of their seed-mean test metric with a paired
    bootstrap interval (the same resamples of the same test rows for both; users resampled for
    ``gauc`` / ``uauc``). ``report``: an accuracy report (or several) whose cells hold both
    rows; predictions are found as in :func:`run_predictions`. An interval that excludes 0 says
    the rows differ by more than test-set noise; seed-to-seed spread is not in it."""
    cells = [c for rep in ([report] if isinstance(report, dict) else report) for c in rep["cells"]]
    sides = []
    for label in (row_a, row_b):
        runs = [c for c in cells if c["label"] == label]
        if not runs:
            raise ValueError(f"no row {label!r} in the report (rows: {', '.join(dict.fromkeys(c['label'] for c in cells))})")
        preds = [run_predictions(c, runs_dir) for c in runs]
        if any(p is None for p in preds):
            missing = [f"{c['label']} seed {c['seed']}" for c, p in zip(runs, preds) if p is None]
            raise ValueError(f"no saved test predictions for {', '.join(missing)}")
        sides.append(preds)
    first = sides[0][0]
    if not all(np.array_equal(p.labels, first.labels) for side in sides for p in side):
        raise ValueError(f"{row_a} and {row_b}: the runs' test labels differ (not the same test rows in the same order)")
    group = None
    if metric != "auc":
        if any(p.group is None for side in sides for p in side):
            raise ValueError(f"{metric} needs every run's predictions to carry the group (user) of each row")
        group = first.group
    ci = bootstrap_difference_ci(first.labels, [p.probs for p in sides[0]], [p.probs for p in sides[1]], metric,
                                 n_boot=n_boot, level=level, seed=seed, group=group)
    return {"a": row_a, "b": row_b, "metric": metric, "seeds_a": len(sides[0]), "seeds_b": len(sides[1]),
            **ci.as_dict()}


def dataset_differences(report: dict, pairs: Sequence[tuple[str, str]], runs_dir: Path | None) -> list[dict]:
    """For each (model A, model B) and each dataset holding both: A minus B as
    :func:`paired_difference` gives it, with the dataset and the two model labels.

    A side written ``dataset/model`` names a row of one dataset, so a pair can cross datasets
    whose test rows are the same (two views of one data set, e.g. the same impressions with page
    or click histories): one difference, its dataset ``A's / B's``; :func:`paired_difference`
    refuses runs whose test labels differ."""
    out = []
    rows = report["summary"]
    by_row = {f"{r['dataset']}/{r['model']}": r for r in rows}
    for a, b in pairs:
        if "/" in a or "/" in b:
            ra, rb = by_row.get(a), by_row.get(b)
            if ra is not None and rb is not None:
                diff = paired_difference(report, ra["label"], rb["label"], runs_dir, **BOOTSTRAP)
                out.append({"dataset": f"{ra['dataset']} / {rb['dataset']}", "model_a": ra["model"],
                            "model_b": rb["model"], **diff})
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        label = {r["model"]: r["label"] for r in rows if r["dataset"] == dataset}
        for a, b in pairs:
            if a in label and b in label:
                diff = paired_difference(report, label[a], label[b], runs_dir, **BOOTSTRAP)
                out.append({"dataset": dataset, "model_a": a, "model_b": b, **diff})
    return out


def differences_table(diffs: list[dict], first: str = "dataset") -> str:
    """Markdown: one row per difference, its estimate and 95% interval, and whether the interval
    holds 0 (within test-set noise) or which side wins. ``first``: the first column's header.
    An interval not from a paired bootstrap (``paired: false``, e.g. the scaling study's rows
    whose draws are gone) says so."""
    lines = [f"| {first} | A | B | A - B (test AUC) | 95% CI | reading |", "|---|---|---|---:|---|---|"]
    for d in diffs:
        if d["low"] > 0:
            reading = "A higher"
        elif d["high"] < 0:
            reading = "B higher"
        else:
            reading = "within noise"
        kind = " unpaired" if d.get("paired") is False else ""
        lines.append(f"| {d['dataset']} | {d['model_a']} | {d['model_b']} | {d['estimate']:+.4f} | "
                     f"[{d['low']:+.4f}, {d['high']:+.4f}]{kind} | {reading} |")
    return "\n".join(lines) + "\n"
