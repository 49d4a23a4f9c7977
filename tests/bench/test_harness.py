"""The benchmark harness's arithmetic on synthetic timings (no clock involved): MFU against one
stated peak, the peak itself, percentiles, interleaving, and the precision choice on a CPU with
and without native bf16."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rankmixer.bench.harness import (
    Variant, best_peaks, choose_precisions, interleaved_times, percentile, run_interleaved, summary_row,
)

CPU = torch.device("cpu")


def _timed(name, kind, times, flops=0.0, batch=0, precision="fp32", peak_key=None):
    return Variant(name, kind, fn=lambda: None, batch=batch, flops=flops, precision=precision, peak_key=peak_key,
                   times=[list(r) for r in times])


def test_mfu_is_against_one_stated_peak_for_best_and_median():
    # The peak moved during the run: 100 GFLOP/s in round 1, 50 in rounds 2 and 3. The model's
    # rounds all took the same time, 1 s for 40 GFLOP. Against each round's own peak the median
    # round would read 80% (double the best); against the one stated peak (100) both are 40%.
    peak = _timed("peak/fp32/a", "peak", [[1.0], [2.0], [2.0]], flops=100e9)
    peaks, per_round = best_peaks([peak])
    assert peaks == {"fp32": 100.0} and per_round == {"fp32": [100.0, 50.0, 50.0]}
    model = _timed("ours/train/fp32/b8", "train", [[1.0], [1.0], [1.0]], flops=40e9, batch=8, peak_key="fp32")
    row = summary_row(model, peaks)
    assert row["peak_gflops"] == 100.0
    assert row["mfu_best"] == 0.4 and row["mfu_median"] == 0.4


def test_summary_row_by_hand():
    # three rounds of two calls; best call 0.3 s; round medians 0.45, 0.45, 0.5 -> median 0.45
    times = [[0.5, 0.4], [0.3, 0.6], [0.45, 0.55]]
    flops, batch, peak = 6e9, 64, 25.0
    row = summary_row(_timed("ours/infer/bf16/b64", "infer", times, flops, batch, "bf16", "bf16"), {"bf16": peak})
    best, median = 0.3, 0.45
    assert row["seconds_best"] == best and row["seconds_median"] == pytest.approx(median, abs=1e-15)
    assert row["calls"] == 6 and row["ms_best"] == 300.0 and row["ms_median"] == 450.0
    assert row["samples_per_s_best"] == round(64 / 0.3, 1) and row["samples_per_s_median"] == round(64 / 0.45, 1)
    assert row["achieved_gflops_best"] == 20.0 and row["achieved_gflops_median"] == round(6 / 0.45, 2)
    assert row["mfu_best"] == 0.8 and row["mfu_median"] == round(6 / 0.45 / 25.0, 4)
    flat = sorted(t for r in times for t in r)
    assert row["latency_ms_p50"] == pytest.approx(np.percentile(flat, 50) * 1e3)
    assert row["latency_ms_p99"] == pytest.approx(np.percentile(flat, 99) * 1e3)
    # no peak for the row's precision: no MFU (and no made-up denominator)
    assert "mfu_best" not in summary_row(_timed("x", "infer", times, flops, batch, "bf16", "bf16"), {"fp32": 1.0})
    assert "mfu_best" not in summary_row(_timed("x", "train", times, flops, batch, "fp32", None), {"fp32": 1.0})


def test_best_peak_is_over_shapes_and_rounds_per_precision():
    a = _timed("peak/fp32/a", "peak", [[2.0, 1.0], [4.0]], flops=10e9)  # 10 and 2.5 GFLOP/s
    b = _timed("peak/fp32/b", "peak", [[1.0], [0.5]], flops=6e9)  # 6 and 12
    c = _timed("peak/bf16/a", "peak", [[0.25], [0.5]], flops=10e9, precision="bf16")  # 40 and 20
    peaks, per_round = best_peaks([a, b, c, _timed("ours", "train", [[1.0], [1.0]])])
    assert peaks == {"fp32": 12.0, "bf16": 40.0}
    assert per_round == {"fp32": [10.0, 12.0], "bf16": [40.0, 20.0]}


@pytest.mark.parametrize("n", [1, 2, 7, 100])
def test_percentile_matches_numpy(n):
    vals = sorted(np.random.default_rng(n).random(n).tolist())
    for q in (0, 1, 50, 99, 100):
        assert percentile(vals, q) == pytest.approx(np.percentile(vals, q))


def test_rounds_interleave_every_variant():
    order: list[str] = []
    vs = [Variant(n, "train", fn=lambda n=n: order.append(n), warmup=2) for n in ("a", "b")]
    run_interleaved(vs, rounds=3, device=CPU, log=lambda m: None)
    assert order == ["a", "a", "b", "b"] + ["a", "b"] * 3  # warm-ups, then one call each per round
    assert all(len(v.times) == 3 and len(v.times[0]) == 1 for v in vs)
    order.clear()
    times = interleaved_times({"x": lambda: order.append("x"), "y": lambda: order.append("y")}, repeats=2)
    assert order == ["x", "y", "x", "y", "x", "y"] and {k: len(v) for k, v in times.items()} == {"x": 2, "y": 2}


def test_precision_choice_follows_the_cpu(monkeypatch):
    from rankmixer.core import hardware

    logs: list[str] = []
    monkeypatch.setattr(hardware, "_all_cpu_flags", lambda: frozenset({"avx2", "fma"}))  # no native bf16
    assert choose_precisions(None, CPU, logs.append) == ["fp32"]
    assert len(logs) == 1 and "bf16 has no native support" in logs[0] and "--precision bf16" in logs[0]
    logs.clear()
    assert choose_precisions(["bf16", "fp32"], CPU, logs.append) == ["bf16", "fp32"]  # asked for: kept
    assert len(logs) == 1 and "WARNING" in logs[0]
    logs.clear()
    monkeypatch.setattr(hardware, "_all_cpu_flags", lambda: frozenset({"avx2", "amx_bf16"}))
    assert choose_precisions(None, CPU, logs.append) == ["fp32", "bf16"] and not logs
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        choose_precisions(["fp8"], CPU, logs.append)
