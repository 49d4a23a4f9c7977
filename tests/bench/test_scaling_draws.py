"""The scaling study's kept draws: a run's test AUC on each resample, stored in the report so
that slopes and paired differences survive the runs' folders. Checked against the bootstrap
computed from the predictions themselves (the same resamples), against numpy's least-squares
fit per resample, and the fallbacks (an earlier report's entries, an unpaired difference)
against hand computations."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from rankmixer.bench.intervals import BOOTSTRAP, differences_table
from rankmixer.bench.scaling import (PLACEMENT_OVERRIDES, check_same_test_rows, fit_slopes, load_spec, read_earlier,
                                     row_draws, run_draws, run_machines, run_scaling, size_differences)
from rankmixer.config import ConfigError
from rankmixer.core.files import OutputError
from rankmixer.core.bootstrap import bootstrap_difference_ci, bootstrap_distribution
from rankmixer.core.metrics import auc
from rankmixer.core.predictions import save_predictions
from rankmixer.core.rundir import TEST_PREDICTIONS

N = 1000


def _study(tmp_path):
    """Two families of two sizes on one test set: the scores get sharper with size, so every
    point has its own AUC. Returns labels, the scores, the cells and summary rows."""
    rng = np.random.default_rng(3)
    y = (rng.random(N) < 0.3).astype(np.float32)
    signal = y + rng.normal(0, 1, N)
    scores, cells, rows = {}, [], []
    for family, noise in (("a", (2.0, 1.2)), ("b", (2.5, 1.6))):
        for size, sd in enumerate(noise):
            label = f"scaling-{family}-{size}"
            p = 1 / (1 + np.exp(-(signal + rng.normal(0, sd, N))))
            save_predictions(tmp_path / "runs" / f"{label}-s0" / TEST_PREDICTIONS, y, p)
            scores[label] = p.astype(np.float32)
            cells.append({"label": label, "seed": 0})
            value = auc(y, scores[label])
            rows.append({"label": label, "model": family, "seeds": 1, "auc": value,
                         "flops_per_sample": 1000.0 * 4 ** size, "dense_parameters": 500.0 * 3 ** size})
    return y, scores, cells, rows


def test_kept_draws_give_the_paired_difference_and_slope_of_the_predictions(tmp_path):
    y, scores, cells, rows = _study(tmp_path)
    for c in cells:
        c["auc_draws"] = run_draws(c, tmp_path / "runs")
    # The runs' folders are gone: everything below comes from the kept draws.
    kept = json.loads(json.dumps(cells))
    draws = row_draws(rows, kept)
    assert all(run_draws(c, tmp_path / "missing") == c["auc_draws"] for c in kept)

    (diff,) = [d for d in size_differences(rows, [("a", "b")], draws) if d["dataset"] == "size 1"]
    ref = bootstrap_difference_ci(y, [scores["scaling-a-1"]], [scores["scaling-b-1"]], "auc", **BOOTSTRAP)
    assert diff["paired"] is True
    assert diff["estimate"] == pytest.approx(ref.estimate, abs=1e-12)
    assert (diff["low"], diff["high"]) == pytest.approx((ref.low, ref.high), abs=1e-6)  # draws kept as float32

    slopes = fit_slopes(rows, draws)
    per_draw = bootstrap_distribution(y, [scores["scaling-a-0"], scores["scaling-a-1"]], "auc",
                                      n_boot=BOOTSTRAP["n_boot"], seed=BOOTSTRAP["seed"])
    lx = np.log2([1000.0, 4000.0])
    fits = [np.polyfit(lx, d, 1)[0] for d in per_draw]
    assert slopes["a"]["auc_per_doubling_flops_ci"] == pytest.approx(list(np.quantile(fits, [0.025, 0.975])), abs=1e-5)
    assert slopes["a"]["auc_per_doubling_flops"] == pytest.approx(np.polyfit(lx, [rows[0]["auc"], rows[1]["auc"]], 1)[0])


def test_without_draws_earlier_entries_then_unpaired_differences(tmp_path):
    _, _, cells, rows = _study(tmp_path)
    for r, (low, high) in zip(rows, ((0.60, 0.64), (0.62, 0.65), (0.55, 0.61), (0.58, 0.60))):
        r["auc_ci_low"], r["auc_ci_high"] = low, high
    no_draws = dict.fromkeys((r["label"] for r in rows), None)
    earlier_diff = {"dataset": "size 0", "model_a": "a", "model_b": "b", "a": "scaling-a-0", "b": "scaling-b-0",
                    "estimate": 0.01, "low": 0.005, "high": 0.015, "paired": True}
    earlier_slopes = {"a": {"best_auc": 0.7, "auc_per_doubling_flops": 0.001, "auc_per_doubling_flops_ci": [0.0, 0.002]}}

    # Nothing of the pair or the family retrained here: the earlier entries, as they were.
    diffs = size_differences(rows, [("a", "b")], no_draws, [earlier_diff])
    assert diffs[0] == earlier_diff
    assert fit_slopes(rows, no_draws, earlier_slopes)["a"] == earlier_slopes["a"]
    # Size 1 has no earlier entry: unpaired, the half-widths in quadrature.
    ra, rb = rows[1], rows[3]
    half = np.hypot(0.015, 0.01)
    assert diffs[1]["paired"] is False
    assert (diffs[1]["low"], diffs[1]["high"]) == pytest.approx((ra["auc"] - rb["auc"] - half, ra["auc"] - rb["auc"] + half))
    table = differences_table(diffs, first="size")
    assert f"[{diffs[1]['low']:+.4f}, {diffs[1]['high']:+.4f}] unpaired |" in table
    assert f"[{earlier_diff['low']:+.4f}, {earlier_diff['high']:+.4f}] | A higher |" in table

    # A retrained row makes the earlier entries stale: recomputed (unpaired; no interval for the slope).
    fresh = {"scaling-a-0"}
    assert size_differences(rows, [("a", "b")], no_draws, [earlier_diff], fresh)[0]["paired"] is False
    refit = fit_slopes(rows, no_draws, earlier_slopes, fresh)["a"]
    assert refit["auc_per_doubling_flops_ci"] is None and refit["auc_per_doubling_flops"] != 0.001


def test_draws_of_different_test_rows_are_not_mixed():
    rows = [{"label": "p"}, {"label": "q"}]
    packed = base64.b64encode(np.array([0.625, np.nan], dtype="<f4").tobytes()).decode("ascii")
    cells = [{"label": lab, "seed": 0, "auc_draws": {"n_boot": 2, "seed": 0, "test_rows": rows_id, "float32_base64": packed}}
             for lab, rows_id in (("p", "aaaa"), ("q", "aaaa"))]
    draws = row_draws(rows, cells)
    assert draws["p"][0] == 0.625 and np.isnan(draws["p"][1])  # an undefined resample stays undefined
    cells[1]["auc_draws"] = {**cells[1]["auc_draws"], "test_rows": "bbbb"}
    with pytest.raises(ConfigError, match="different test sets.*aaaa.*p seed 0.*bbbb.*q seed 0"):
        row_draws(rows, cells)


def _earlier_report(tmp_path, **changes):
    cells, budget = load_spec("scaling_10m")
    c = cells[0]
    rep = {"spec": "scaling_10m", "budget": budget, "overrides": ["train.threads=2"], "slopes": {},
           "cells": [{"label": c.label, "seed": 0, "overrides": list(c.overrides),
                      "bayes": {"test": {"auc": 0.8462}}}], **changes}
    path = tmp_path / "earlier.json"
    path.write_text(json.dumps(rep))
    return path, cells, budget


def test_an_earlier_report_must_be_the_same_study(tmp_path):
    path, cells, budget = _earlier_report(tmp_path)
    rep = read_earlier(path, "scaling_10m", cells, budget, ["train.threads=1"])
    assert rep["spec"] == "scaling_10m" and "train.threads=" in PLACEMENT_OVERRIDES
    check_same_test_rows(path, rep["cells"], [{"label": "x", "bayes": {"test": {"auc": 0.8462}}}])
    with pytest.raises(ConfigError, match="different rows"):
        check_same_test_rows(path, rep["cells"], [{"label": "x", "bayes": {"test": {"auc": 0.9}}}])
    with pytest.raises(ConfigError, match="budget"):
        read_earlier(path, "scaling_10m", cells, "samples=5", [])
    with pytest.raises(ConfigError, match="overrides"):
        read_earlier(path, "scaling_10m", cells, budget, ["train.dense_optimizer.lr=0.01"])
    with pytest.raises(ConfigError, match="spec"):
        read_earlier(path, "scaling", cells, budget, [])
    changed = {**json.loads(path.read_text())}
    changed["cells"][0]["overrides"] = ["model={}", "data=synthetic_10m"]
    path.write_text(json.dumps(changed))
    with pytest.raises(ConfigError, match=f"run {cells[0].label} trained"):
        read_earlier(path, "scaling_10m", cells, budget, [])
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not a readable JSON"):
        read_earlier(path, "scaling_10m", cells, budget, [])


def test_run_machines_lists_each_machine_once():
    gpu = {"cpu_flags": ["avx2"], "cpus": 16, "device_name": "H200", "torch": "2.11", "loadavg": [1, 1, 1]}
    cpu = {"cpu_flags": ["avx2"], "cpus": 2, "device_name": "EPYC", "torch": "2.13"}
    kinds = run_machines([{**cpu, "run_machines": [gpu, cpu]}, cpu, None])
    assert kinds == [{k: gpu[k] for k in ("cpu_flags", "cpus", "device_name", "torch")}, cpu]


def test_an_earlier_report_is_never_the_one_being_written(tmp_path):
    (tmp_path / "scaling.json").write_text("{}")
    with pytest.raises(OutputError, match="also an input"):
        run_scaling("scaling_10m", [0], tmp_path, report_only=True, earlier=tmp_path / "scaling.json")
    assert (tmp_path / "scaling.json").read_text() == "{}"
