"""``bench sequence-length`` on a tiny spec: every (model, length) row is there, histories are
full, FLOPs grow with L where the model attends and stay flat where it mean-pools."""

from __future__ import annotations

import json

import pytest

import torch

from rankmixer.bench.sequence_length import run_sequence_length_bench, saved_activation_bytes

pytestmark = pytest.mark.usefixtures("single_thread")


def test_tiny_length_sweep(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "lengths: [4, 8, 16]\nbatch_size: 8\nmodels:\n"
        "  dcnv2: {defaults: model/dcnv2, embedding_dim: 4, dnn_hidden: [8]}\n"
        "  din: {defaults: model/din, embedding_dim: 4, attention_hidden: [8], dnn_hidden: [8]}\n"
    )
    out = tmp_path / "r.json"
    run_sequence_length_bench(spec, out, rounds=1, device="cpu", log=lambda m: None)
    report = json.loads(out.read_text())
    assert (tmp_path / "r.png").stat().st_size > 0
    assert report["machine"]["cpu_flags"] is not None or "cpu" in json.dumps(report["machine"]).lower()
    rows = {(r["model"], r["length"]): r for r in report["rows"]}
    assert set(rows) == {(m, L) for m in ("dcnv2", "din") for L in (4, 8, 16)}
    for r in rows.values():
        assert r["samples_per_s_median"] > 0 and r["batch"] == 8
    # Mean pooling is not a matmul: DCNv2's counted FLOPs do not depend on L.
    assert rows[("dcnv2", 16)]["forward_flops_per_sample"] == rows[("dcnv2", 4)]["forward_flops_per_sample"]
    # DIN's activation unit runs once per position: FLOPs = a + b L, so doubling L adds b L.
    f4, f8, f16 = (rows[("din", L)]["forward_flops_per_sample"] for L in (4, 8, 16))
    assert f16 - f8 == pytest.approx(2 * (f8 - f4)) and f8 > f4
    assert rows[("din", 8)]["forward_flops_per_sample_growth"] == pytest.approx(f8 / f4, abs=1e-3)
    # DIN saves activations per position: more with every L
    a4, a8, a16 = (rows[("din", L)]["activation_mb"] for L in (4, 8, 16))
    assert a4 < a8 < a16


def test_saved_activations_are_counted_once_per_storage():
    x = torch.randn(4, 3, requires_grad=True)
    w = torch.randn(3, 2, requires_grad=True)
    # mm saves both inputs: 12 + 6 float32 values; sum saves none
    assert saved_activation_bytes(lambda: (x @ w).sum()) == (12 + 6) * 4
    # x and w saved by two matmuls: each storage counted once (scaling by a number saves nothing)
    assert saved_activation_bytes(lambda: ((x @ w) * 2).sum() + (x @ w).sum()) == (12 + 6) * 4


def test_unknown_model_is_an_error(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("lengths: [4]\nbatch_size: 4\nmodels:\n  din: model/din\n")
    with pytest.raises(ValueError, match="not in"):
        run_sequence_length_bench(spec, tmp_path / "r.json", models=["dien"], log=lambda m: None)


def test_cuda_step_memory_is_the_peak_above_what_was_resident():
    from rankmixer.bench.sequence_length import markdown, step_memory_mb

    base = {"model": "din", "length": 50, "samples_per_s_median": 10.0, "forward_flops_per_sample": 1e6,
            "activation_mb": 2.0}
    cuda_row = {**base, "cuda_peak_mb": 1300.0, "memory": {"peak_mb": 1300.0, "allocated_before_mb": 1000.0}}
    assert step_memory_mb(cuda_row) == 300.0
    assert step_memory_mb({**base, "memory": {"peak_mb": 5.0, "rss_before_mb": 1.0}}) is None  # CPU rows
    table = markdown([cuda_row])
    assert "CUDA step peak MB" in table and table.splitlines()[-1].endswith("| 300 |")
    assert "CUDA" not in markdown([{**base, "memory": {"peak_mb": 5.0, "rss_before_mb": 1.0}}])
