"""Real measurements in a worker process, and the ways a setting fails (recorded with a reason)."""

from __future__ import annotations

import ctypes.util
import json

import pytest

from rankmixer.config import load_config
from rankmixer.experiment import prepare_data
from rankmixer.system import worker
from rankmixer.system.measure import MeasureOptions, allocator_env, measure_setting, record_of
from rankmixer.system.space import parse_system_space


@pytest.fixture(scope="module")
def tiny_space(tmp_path_factory):
    prep = tmp_path_factory.mktemp("prep") / "synthetic"
    tree = {
        "base": "synthetic_rankmixer",
        "base_overrides": ["data=synthetic_100k", "data.preset_options.rows_train=3000",
                           "data.preset_options.rows_valid=500", "data.preset_options.rows_test=500",
                           f"data.prepared_dir={prep}"],
        "knobs": {"model_size": {"small": {"model.num_tokens": 4, "model.hidden_dim": 16, "model.num_layers": 1}},
                  "batch_size": [256], "precision": ["fp32", "fp16"], "threads": [1], "workers": [0, 1],
                  "optimizer_impl": ["foreach"], "ffn_impl": ["bmm"], "allocator": ["glibc", "glibc-tuned", "jemalloc"],
                  "compile": ["none"]},
        "default": {"batch_size": 256, "precision": "fp32", "threads": 1, "workers": 0, "optimizer_impl": "foreach",
                    "ffn_impl": "bmm", "allocator": "glibc", "compile": "none"},
    }
    sp = parse_system_space(tree, "tiny")
    prepare_data(load_config(sp.base, list(sp.base_overrides)).data, log=lambda *_: None)
    return sp


FAST = MeasureOptions(warmup=1, min_steps=2, min_seconds=0.2, max_steps=5, timeout_s=120)


def test_a_setting_is_measured_in_its_own_process(tiny_space):
    s = {**tiny_space.default_setting("small"), "allocator": "glibc-tuned"}
    rec = measure_setting(tiny_space, s, FAST, origin="test")
    assert rec["status"] == "ok", rec["reason"]
    assert rec["samples_per_s"] > 0 and rec["peak_rss_mb"] > 50 and rec["params"] > 0
    assert 2 <= rec["timed_steps"] <= 5 and rec["origin"] == "test" and rec["kind"] == "train"
    assert rec["setting"] == s and "allocator=glibc-tuned" in rec["key"]


def test_an_unsupported_precision_fails_with_the_reason(tiny_space, tmp_path):
    # the worker's own error path, run in this process (the spawn is tested above)
    s = {**tiny_space.default_setting("small"), "precision": "fp16"}
    spec, out = tmp_path / "spec.json", tmp_path / "out.json"
    spec.write_text(json.dumps({"base": tiny_space.base, "overrides": tiny_space.overrides(s), "compile": "none"}))
    assert worker.main([str(spec), str(out)]) == 0
    result = json.loads(out.read_text())
    rec = record_of(s, result, "test", 0.1)
    assert rec["status"] == "failed" and rec["samples_per_s"] is None
    assert "train.precision" in rec["reason"] and rec["setting"]["precision"] == "fp16"


def test_memory_limit_and_timeout_kill_the_run(tiny_space):
    s = tiny_space.default_setting("small")
    rec = measure_setting(tiny_space, s, MeasureOptions(memory_limit_mb=40, timeout_s=120))
    assert rec["status"] == "failed" and rec["reason"].startswith("memory: resident")
    rec = measure_setting(tiny_space, s, MeasureOptions(timeout_s=0.3))
    assert rec["status"] == "failed" and rec["reason"].startswith("timeout")


@pytest.mark.skipif(ctypes.util.find_library("jemalloc") is not None, reason="jemalloc is installed here")
def test_a_missing_allocator_is_recorded_not_run(tiny_space):
    rec = measure_setting(tiny_space, {**tiny_space.default_setting("small"), "allocator": "jemalloc"}, FAST)
    assert rec["status"] == "failed" and "libjemalloc is not installed" in rec["reason"]
    assert rec["wall_seconds"] < 5


def test_allocator_environments():
    assert allocator_env("glibc") == ({}, None)
    env, why = allocator_env("glibc-tuned")
    assert why is None and "glibc.malloc.mmap_threshold" in env["GLIBC_TUNABLES"]
