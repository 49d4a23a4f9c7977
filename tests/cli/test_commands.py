"""The commands themselves: quickstart is the packaged experiment, ``models --describe`` prints
what the describer returns, ``data synthetic`` writes what it reports, user errors are one line,
and packaged experiments run from any working directory."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from rankmixer import experiment
from rankmixer.cli import app
from rankmixer.cli.train import quickstart_overrides
from rankmixer.config import load_config
from rankmixer.core.rundir import RunDirError
from rankmixer.core.weights import WeightsError
from tests.factories import make_feature_map


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args), terminal_width=300)


# ---- quickstart ---------------------------------------------------------------------------------
def _former_quickstart(rows: int, model: str, epochs: int, run_dir: str, threads: int | None) -> list[str]:
    """The overrides quickstart applied to an empty config before it was a packaged experiment
    (the reference: the same data, model, training and output as then)."""
    return [
        "data.dataset=synthetic",
        f"data.preset_options={{rows_train: {rows}, rows_valid: {max(rows // 10, 1000)}, rows_test: {max(rows // 10, 1000)}}}",
        f"data.prepared_dir=data_cache/synthetic-{rows}",
        f"model.name={model}",
        f"run_dir={run_dir}",
        f"train.epochs={epochs}",
        "train.batch_size=2048",
        "train.dense_optimizer={name: adamw, lr: 0.001}",
        "train.sparse_optimizer={name: adagrad, lr: 0.05}",
        "train.sparse_gradients=true",
        "train.checkpoint_every_steps=200",
    ] + ([f"train.threads={threads}"] if threads else [])


@pytest.mark.parametrize("rows,model,epochs,threads", [(300_000, "dcnv2", 2, None), (4000, "deepfm", 1, 1),
                                                       (123_456, "rankmixer-tiny", 3, 2)])
def test_quickstart_is_the_packaged_experiment_with_the_options_over_it(rows, model, epochs, threads):
    new = load_config("quickstart", quickstart_overrides(rows, model, epochs, Path("runs/q"), threads))
    old = load_config(None, _former_quickstart(rows, model, epochs, "runs/q", threads))
    assert new.model_dump() == old.model_dump()


def test_quickstart_defaults_are_the_packaged_experiment_unchanged():
    defaults = quickstart_overrides(300_000, "dcnv2", 2, Path("runs/quickstart"), None)
    assert load_config("quickstart", defaults).model_dump() == load_config("quickstart").model_dump()


# ---- models --describe -------------------------------------------------------------------------
def _stand_in(monkeypatch, answer: dict) -> list:
    """A stand-in for rankmixer.models.describe (the describer owns the numbers; the command
    only prints them)."""
    calls = []

    def describe_model(name, overrides, feature_map):
        calls.append((name, overrides, feature_map))
        return {"name": name, **answer}

    module = types.ModuleType("rankmixer.models.describe")
    module.describe_model = describe_model
    monkeypatch.setitem(sys.modules, "rankmixer.models.describe", module)
    return calls


def test_models_describe_prints_the_describers_tables(monkeypatch, tmp_path):
    calls = _stand_in(monkeypatch, {
        "summary": "a stand-in summary", "config": {"hidden_dim": 768, "moe": {"num_experts": 8}},
        "params": {"embedding": 4_321, "blocks": 113_246_208}, "flops": {"forward": 226_492_416},
        "notes": ["counted on the meta device"]})
    res = _invoke("models", "--describe", "rankmixer-100m", "-o", "num_layers=3", "-o", "moe={num_experts: 8}")
    assert res.exit_code == 0, res.output
    assert calls == [("rankmixer-100m", {"num_layers": 3, "moe": {"num_experts": 8}}, None)]
    for text in ("a stand-in summary", "hidden_dim", '{"num_experts": 8}', "parameters", "embedding", "4,321", "4.32k",
                 "113,246,208", "113.25M", "FLOPs per sample", "226,492,416", "226.49M", "counted on the meta device"):
        assert text in res.output, text

    fm = make_feature_map(num_tasks=1)
    fm.save(tmp_path / "feature_map.json")
    res = _invoke("models", "--describe", "dcnv2", "--feature-map", str(tmp_path))
    assert res.exit_code == 0, res.output
    assert [f.name for f in calls[-1][2].features] == [f.name for f in fm.features]


def test_models_describe_without_counts_prints_config_and_notes_only(monkeypatch):
    _stand_in(monkeypatch, {"summary": "s", "config": {"dropout": 0.1}, "params": None, "flops": None,
                            "notes": ["give --feature-map to count this model"]})
    res = _invoke("models", "--describe", "dcnv2")
    assert res.exit_code == 0, res.output
    assert "dropout" in res.output and "give --feature-map" in res.output
    assert "parameters" not in res.output and "FLOPs" not in res.output


# ---- data synthetic -----------------------------------------------------------------------------
def test_data_synthetic_writes_what_it_reports(tmp_path):
    out = tmp_path / "syn"
    res = CliRunner().invoke(app, ["data", "synthetic", str(out), "--rows-train", "1500", "--option", "rows_valid=400",
                                   "-o", "rows_test=300", "-o", "n_users=80", "--seed", "3", "--quiet"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    meta = json.loads((out / "synthetic_meta.json").read_text())
    assert meta["config"]["seed"] == 3 and meta["config"]["n_users"] == 80
    for split, rows in (("train", 1500), ("valid", 400), ("test", 300)):
        clicks = [c for f in meta["splits"][split]["files"] for c in pq.read_table(out / f).column("click").to_pylist()]
        assert summary["splits"][split]["rows"] == len(clicks) == rows
        assert summary["splits"][split]["label_mean"] == pytest.approx(sum(clicks) / len(clicks), abs=1e-12)


# ---- user errors: one line, exit 2 --------------------------------------------------------------
def _one_error_line(res, *fragments: str) -> None:
    assert res.exit_code == 2, res.output
    assert isinstance(res.exception, SystemExit), res.exception  # not an uncaught exception
    assert res.output.startswith("error:") and "Traceback" not in res.output
    for f in fragments:
        assert f in res.output, (f, res.output)


def test_user_errors_are_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _one_error_line(_invoke("train", "-c", "movielens_dcnv2", "train.bach_size=3"), "train.bach_size")
    _one_error_line(_invoke("train", "-c", "no_such_experiment"), "no_such_experiment", "movielens_dcnv2")
    _one_error_line(_invoke("train", "-c", "movielens_dcnv2", "model=no_such_part"), "model/no_such_part")
    _one_error_line(_invoke("data", "prepare", "--option", "rows_train"), "--option 'rows_train' must look like key=value")
    _one_error_line(_invoke("data", "synthetic", "syn", "-o", "n_userz=3"), "n_userz")
    _one_error_line(_invoke("bench", "accuracy", "--suite", "no_such_suite"), "no_such_suite", "peers")
    (tmp_path / "empty_run").mkdir()
    _one_error_line(_invoke("evaluate", "--run", "empty_run"), "empty_run")
    for err in (RunDirError("run dir x: config.yaml missing"), WeightsError("model.safetensors: damaged")):
        def evaluate(*a, err=err, **k):
            raise err
        monkeypatch.setattr(experiment, "evaluate", evaluate)
        _one_error_line(_invoke("evaluate", "--run", "x"), str(err))


# ---- outside a clone ------------------------------------------------------------------------------
def test_packaged_experiment_outside_a_clone(tmp_path, monkeypatch):
    """A packaged name resolves from any directory; its relative raw path does not, and says how
    to give one."""
    monkeypatch.chdir(tmp_path)
    _one_error_line(_invoke("train", "-c", "movielens_dcnv2"), "data.raw=PATH", str(tmp_path))
    res = _invoke("train", "-c", "synthetic_lr", "data.preset_options={rows_train: 1200, rows_valid: 300, rows_test: 300, "
                  "n_users: 60, n_items: 80, vocab_max: 100}", "train.max_steps=2", "train.progress=false",
                  "train.tensorboard=false", "train.threads=1", "run_dir=run")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["steps"] == 2
    assert (tmp_path / "data_cache" / "synthetic-300000" / "feature_map.json").exists()
