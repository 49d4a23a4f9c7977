"""The accuracy tables' intervals from saved predictions: the paired difference of two rows
against an explicit loop over the same resamples with scikit-learn, and the table columns."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from rankmixer.bench.accuracy import markdown_table, summarise
from rankmixer.bench.intervals import paired_difference
from rankmixer.core.bootstrap import resample_indices
from rankmixer.core.predictions import save_predictions

N = 400


def _runs(tmp, labels: dict[str, float], seeds=(0, 1)):
    """Saved predictions of rows whose scores carry ``signal`` of the label; their cells."""
    rng = np.random.default_rng(0)
    y = (rng.random((N, 2)) < 0.3).astype(np.float32)
    g = rng.integers(0, 40, N)
    cells = []
    for label, signal in labels.items():
        for seed in seeds:
            p = 1 / (1 + np.exp(-(signal * y + rng.normal(size=(N, 2)))))
            save_predictions(tmp / "runs" / f"{label}-s{seed}" / "test_predictions.npz", y, p, g)
            metrics = {"auc": roc_auc_score(y[:, 0], p[:, 0]), "gauc": 0.5, "logloss": 0.5, "ne": 0.9}
            cells.append({"label": label, "config": "c.yaml", "dataset": "d", "model": label, "parameters": 1,
                          "dense_parameters": 1, "flops_per_sample": None, "seed": seed, "test": metrics})
    return {"cells": cells}, y, g


def _probs(tmp, label, seed):
    return np.load(tmp / "runs" / f"{label}-s{seed}" / "test_predictions.npz")["probs"]


def test_paired_difference_matches_an_explicit_loop(tmp_path):
    report, y, _ = _runs(tmp_path, {"a": 1.0, "b": 0.5})
    n_boot = 40
    diffs = []
    for b in range(n_boot):
        i = resample_indices(N, b, 0)
        mean = {row: np.mean([roc_auc_score(y[i, 0], _probs(tmp_path, row, s)[i, 0]) for s in (0, 1)])
                for row in ("a", "b")}
        diffs.append(mean["a"] - mean["b"])
    d = paired_difference(report, "a", "b", tmp_path / "runs", n_boot=n_boot)
    full = {row: np.mean([roc_auc_score(y[:, 0], _probs(tmp_path, row, s)[:, 0]) for s in (0, 1)])
            for row in ("a", "b")}
    assert d["estimate"] == pytest.approx(full["a"] - full["b"], abs=1e-12)
    assert (d["low"], d["high"]) == pytest.approx(tuple(np.quantile(diffs, [0.025, 0.975])), abs=1e-12)
    assert (d["seeds_a"], d["seeds_b"], d["unit"]) == (2, 2, "rows")
    assert paired_difference(report, "a", "b", tmp_path / "runs", metric="gauc", n_boot=5)["unit"] == "groups"

    with pytest.raises(ValueError, match="no row 'c'"):
        paired_difference(report, "a", "c", tmp_path / "runs")
    with pytest.raises(ValueError, match="no saved test predictions"):
        paired_difference(report, "a", "b", tmp_path / "elsewhere")
    other = tmp_path / "runs" / "b-s1" / "test_predictions.npz"
    save_predictions(other, y[::-1], _probs(tmp_path, "b", 1))  # another row order
    with pytest.raises(ValueError, match="test labels differ"):
        paired_difference(report, "a", "b", tmp_path / "runs")


def test_rows_gain_intervals_positives_and_the_few_positives_mark(tmp_path):
    report, y, _ = _runs(tmp_path, {"a": 1.0, "b": 0.5})
    rows = summarise(report["cells"], tmp_path / "runs")
    assert all(r["auc_ci_low"] < r["auc"] < r["auc_ci_high"] for r in rows)
    assert all(r["positives"] == int(y[:, 0].sum()) for r in rows)
    table = markdown_table(rows)
    assert "| AUC 95% CI |" in table and " † |" in table and "† fewer than 500 test positives" in table

    # Without the runs (a doc table reading JSON), stored summary rows supply the same values;
    # without either, the interval is unknown and the column is left out.
    again = summarise(report["cells"], stored=rows)
    assert [(r["auc_ci_low"], r["auc_ci_high"], r["positives"]) for r in again] == \
        [(r["auc_ci_low"], r["auc_ci_high"], r["positives"]) for r in rows]
    bare = summarise(report["cells"])
    assert bare[0]["auc_ci_low"] is None and "CI" not in markdown_table(bare) and "†" not in markdown_table(bare)


def test_dataset_differences_pair_model_labels_within_each_dataset(tmp_path):
    from rankmixer.bench.intervals import dataset_differences, differences_table

    report, y, _ = _runs(tmp_path, {"a": 2.0, "b": 0.0})
    report["summary"] = summarise(report["cells"], tmp_path / "runs")
    diffs = dataset_differences(report, [("a", "b"), ("a", "missing")], tmp_path / "runs")
    assert len(diffs) == 1  # a pair whose model has no row in a dataset is skipped
    d = diffs[0]
    assert (d["dataset"], d["model_a"], d["model_b"]) == ("d", "a", "b")
    assert d == {**d, **paired_difference(report, "a", "b", tmp_path / "runs")}
    # A strong signal against none: the interval excludes 0 on A's side, and the table says so.
    assert d["low"] > 0
    table = differences_table(diffs)
    assert f"| d | a | b | {d['estimate']:+.4f} | [{d['low']:+.4f}, {d['high']:+.4f}] | A higher |" in table


def test_dataset_differences_across_two_views_of_the_same_rows(tmp_path):
    """``DATASET/MODEL`` sides pair rows of two datasets (the same test rows seen two ways): one
    difference, equal to the paired difference of the two rows; unknown sides are skipped."""
    from rankmixer.bench.intervals import dataset_differences

    report, _, _ = _runs(tmp_path, {"a": 2.0, "b": 0.0})
    report["summary"] = summarise(report["cells"], tmp_path / "runs")
    for r in report["summary"]:
        if r["label"] == "b":
            r["dataset"] = "e"  # the second view
    diffs = dataset_differences(report, [("d/a", "e/b"), ("d/a", "e/missing"), ("a", "b")], tmp_path / "runs")
    assert len(diffs) == 1  # a and b are no longer in one dataset
    d = diffs[0]
    assert (d["dataset"], d["model_a"], d["model_b"]) == ("d / e", "a", "b")
    assert d == {**d, **paired_difference(report, "a", "b", tmp_path / "runs")}
