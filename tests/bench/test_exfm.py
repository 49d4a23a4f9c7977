"""``rankmixer bench exfm``: verticals against the hash row by row, the summary and the paired
intervals against numpy/scipy on hand-made runs, and (slow) the whole study on a tiny stream."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from scipy import stats

from rankmixer.bench.exfm import differences, run_exfm, summarise, vertical_ids
from rankmixer.data.encode import fnv1a64


def test_verticals_are_the_hash_of_the_value_modulo_the_count():
    values = pl.Series(["c3_17", "c3_2", None, "c3_17", "x"])
    expected = [int(fnv1a64(pa.array([v if v is not None else None], pa.large_string()))[0]) % 3 for v in values]
    assert vertical_ids(values, 3).tolist() == expected
    assert set(vertical_ids(pl.Series([f"v{i}" for i in range(400)]), 2).tolist()) == {0, 1}


def _runs() -> list[dict]:
    rng = np.random.default_rng(0)
    runs = []
    for variant, ks in (("alone", [None]), ("auxiliary", [0, 1])):
        for k in ks:
            for seed in (1, 2, 3):
                for v in (0, 1):
                    ne, auc = 0.9 + rng.normal(0, 0.01), 0.7 + rng.normal(0, 0.01)
                    runs.append({"variant": variant, "staleness": k, "seed": seed, "vertical": v,
                                 "mean": {"ne": ne, "auc": auc},
                                 "days": [{"day": 1, "ne": ne + 0.01, "auc": auc}, {"day": 2, "ne": ne - 0.01, "auc": auc}]})
    return runs


def test_summary_averages_verticals_within_a_seed_then_seeds():
    runs = _runs()
    rows = summarise(runs, {"alone": {"distill": "none"}, "auxiliary": {"distill": "auxiliary"}}, [0, 1])
    assert [(r["variant"], r["staleness"]) for r in rows] == [("alone", None), ("auxiliary", 0), ("auxiliary", 1)]
    row = rows[1]
    per_seed = [np.mean([r["mean"]["ne"] for r in runs if r["variant"] == "auxiliary" and r["staleness"] == 0
                         and r["seed"] == s]) for s in (1, 2, 3)]
    assert row["ne"]["mean"] == pytest.approx(np.mean(per_seed)) and row["ne"]["sd"] == pytest.approx(np.std(per_seed, ddof=1))
    assert row["days"][0]["ne"] == pytest.approx(np.mean([r["days"][0]["ne"] for r in runs
                                                          if r["variant"] == "auxiliary" and r["staleness"] == 0]))


def test_paired_differences_match_scipys_t_interval():
    runs = _runs()
    out = {(d["a"], d["b"], d["staleness"]): d for d in differences(runs, [0, 1])}
    d = out[("auxiliary", "alone", 1)]
    key = lambda r: (r["seed"], r["vertical"])  # noqa: E731
    a = {key(r): r["mean"]["auc"] for r in runs if r["variant"] == "auxiliary" and r["staleness"] == 1}
    b = {key(r): r["mean"]["auc"] for r in runs if r["variant"] == "alone"}
    diff = np.array([a[p] - b[p] for p in sorted(a)])
    low, high = stats.t.interval(0.95, len(diff) - 1, loc=diff.mean(), scale=stats.sem(diff))
    assert d["pairs"] == 6 and d["auc"]["mean"] == pytest.approx(diff.mean())
    assert (d["auc"]["low"], d["auc"]["high"]) == pytest.approx((low, high))


@pytest.mark.slow
def test_the_study_runs_end_to_end_on_a_tiny_stream(tmp_path):
    rep = run_exfm(tmp_path / "out", [1], overrides=[
        "data.preset_options.rows_train=4000", "data.preset_options.rows_valid=1000",
        "data.preset_options.rows_test=1000", f"data.prepared_dir={tmp_path / 'prep'}", "train.batch_size=256"],
        log=lambda *_: None)
    assert len(rep["teacher"]) == 1 and len(rep["runs"]) == 2 * (1 + 3 * 3)
    for r in rep["runs"]:
        assert [d["day"] for d in r["days"]] == list(range(8))
    logs = pl.read_parquet(tmp_path / "out" / "data" / "logs" / "teacher-s1-k3.parquet")
    assert (logs["teacher_day"] == logs["day"] - 4).all() and logs["day"].min() == 4
