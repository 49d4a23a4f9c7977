"""The accuracy benchmark end to end on a small synthetic set: suite expansion, resumability,
the summary against the per-run metrics files, and FLOPs per sample against RankMixer's
analytic count."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from rankmixer.bench.accuracy import (Cell, cells_from_configs, load_suite, markdown_table, run_accuracy, suite_differences,
                                      summarise)
from rankmixer.config import ConfigError
from rankmixer.core.bootstrap import bootstrap_mean_ci
from rankmixer.core.predictions import load_predictions
from rankmixer.data.feature_map import FeatureMap
from rankmixer.models import registry
from rankmixer.models.flops import forward_flops_per_sample
from rankmixer.models.rankmixer import rankmixer_flops_per_sample, rankmixer_param_count

SMALL_SYNTHETIC = {"rows_train": 3000, "rows_valid": 1000, "rows_test": 1000, "n_users": 200, "n_items": 300,
                   "vocab_max": 300, "n_tags": 30, "seq_len": 6}
RANKMIXER = {"name": "rankmixer", "embedding_dim": 8, "num_tokens": 4, "hidden_dim": 16, "num_layers": 1,
             "expansion": 2}


def _base_config(tmp: Path) -> Path:
    cfg = {
        "data": {"dataset": "synthetic", "preset_options": SMALL_SYNTHETIC, "prepared_dir": str(tmp / "prepared")},
        "model": {"name": "lr"},
        "train": {"epochs": 1, "batch_size": 256, "eval_batch_size": 1024, "threads": 1, "tensorboard": False,
                  "log_every_steps": 100, "checkpoint_every_steps": 1000},
    }
    path = tmp / "base.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _suite(tmp: Path) -> Path:
    suite = {
        "datasets": {"synth": {"config": str(_base_config(tmp)), "overrides": ["train.batch_size=500"]}},
        "models": {"lr": {"name": "lr"}, "rm": RANKMIXER, "rm-no-mix": {**RANKMIXER, "token_mixing": "none"}},
        "overrides": ["train.max_steps=6"],
    }
    path = tmp / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def test_suite_crosses_datasets_with_models_and_rejects_typos(tmp_path):
    cells = load_suite(_suite(tmp_path))
    assert [c.label for c in cells] == ["synth-lr", "synth-rm", "synth-rm-no-mix"]
    assert all(c.overrides[1:] == ("train.batch_size=500", "train.max_steps=6") for c in cells)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"datasets": {"a": "x.yaml"}, "modles": {}}))
    with pytest.raises(ConfigError, match="modles"):
        load_suite(bad)
    bad.write_text(yaml.safe_dump({"datasets": {"a": "x.yaml"}, "models": {"m": {"dnn_hidden": [3]}}}))
    with pytest.raises(ConfigError, match="'name'"):
        load_suite(bad)
    bad.write_text(yaml.safe_dump({"datasets": {"a": {"cfg": "x.yaml"}}, "models": {"m": {"name": "lr"}}}))
    with pytest.raises(ConfigError, match="dataset 'a'"):
        load_suite(bad)
    with pytest.raises(ValueError, match="distinct labels"):
        run_accuracy([Cell("a", "x.yaml"), Cell("a", "y.yaml")], [0], tmp_path / "o")
    assert cells_from_configs(["movielens_lr"])[0].label == "movielens_lr"


def test_suite_fuxictr_e2e_entries_and_differences(tmp_path):
    suite = {"datasets": {"synth": str(_base_config(tmp_path))},
             "models": {"lr": {"name": "lr"}, "fuxictr-e2e:dcnv2": {"fuxictr_e2e": "dcnv2", "params": {"epochs": 2}}},
             "differences": [["lr", "fuxictr-e2e:dcnv2"]]}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    lr, e2e = load_suite(path)
    assert (lr.fuxictr_e2e, e2e.fuxictr_e2e) == (None, "dcnv2")
    # The label names the run directories: no colon in it; the model column keeps the suite's name.
    assert (e2e.label, e2e.model_label, json.loads(e2e.fuxictr_params)) == (
        "synth-fuxictr-e2e-dcnv2", "fuxictr-e2e:dcnv2", {"epochs": 2})
    assert not any(o.startswith("model=") for o in e2e.overrides)
    assert suite_differences(path) == [("lr", "fuxictr-e2e:dcnv2")]
    # DATASET/MODEL sides name one dataset's row (pairs across datasets)
    path.write_text(yaml.safe_dump({**suite, "differences": [[f"{next(iter(suite['datasets']))}/lr", "lr"]]}))
    assert suite_differences(path)[0][1] == "lr"
    for bad_models, bad_diffs, match in (
        ({"e": {"fuxictr_e2e": "dcnv2", "parms": {}}}, [], "parms"),
        ({"e": {"fuxictr_e2e": "dcnv2", "params": [1]}}, [], "params must be a mapping"),
        ({"lr": {"name": "lr"}}, [["lr", "nope"]], "two of its model labels"),
        ({"lr": {"name": "lr"}}, [["lr", "nodataset/lr"]], "two of its model labels"),
    ):
        path.write_text(yaml.safe_dump({"datasets": suite["datasets"], "models": bad_models, "differences": bad_diffs}))
        with pytest.raises(ConfigError, match=match):
            load_suite(path)
            suite_differences(path)


def test_suite_model_restricted_to_some_datasets(tmp_path):
    base = str(_base_config(tmp_path))
    suite = {"datasets": {"a": base, "b": base},
             "models": {"lr": {"name": "lr"}, "oracle": {"model": "model/planted", "datasets": ["b"]}}}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    cells = load_suite(path)
    assert [c.label for c in cells] == ["a-lr", "b-lr", "b-oracle"]
    assert cells[-1].overrides[0] == 'model={"name": "planted"}'
    for bad, match in (({"model": "model/planted", "datasets": ["c"]}, r"\['c'\] are not datasets"),
                       ({"model": "model/planted", "datasets": []}, "expected"),
                       ({"model": "model/planted", "datasets": ["a"], "x": 1}, "expected")):
        path.write_text(yaml.safe_dump({"datasets": suite["datasets"], "models": {"o": bad}}))
        with pytest.raises(ConfigError, match=match):
            load_suite(path)


def test_benchmark_summary_flops_and_resume(tmp_path):
    out = tmp_path / "out"
    logs: list[str] = []
    report = run_accuracy(load_suite(_suite(tmp_path)), [0, 1], out, log=logs.append)
    assert sum("training" in m for m in logs) == 6

    # The summary is the mean and sample std of the runs' own metrics files.
    for row in report["summary"]:
        aucs = [json.loads((out / "runs" / f"{row['label']}-s{s}" / "metrics.json").read_text())["test"]["auc"]
                for s in (0, 1)]
        assert row["auc"] == pytest.approx(np.mean(aucs)) and row["auc_std"] == pytest.approx(np.std(aucs, ddof=1))
    by_model = {r["model"]: r for r in report["summary"]}
    assert set(by_model) == {"lr", "rm", "rm-no-mix"} and {r["dataset"] for r in report["summary"]} == {"synth"}
    assert by_model["rm"]["bayes_auc"] is not None  # the synthetic set knows its ceiling

    # FLOPs counted by torch on a real batch equal RankMixer's analytic forward count.
    fm = FeatureMap.load(tmp_path / "prepared")
    cfg = {k: v for k, v in RANKMIXER.items() if k != "name"}
    assert by_model["rm"]["flops_per_sample"] == pytest.approx(rankmixer_flops_per_sample(cfg, fm)["forward"])
    assert by_model["rm-no-mix"]["flops_per_sample"] == by_model["rm"]["flops_per_sample"]  # mixing is free
    counts = rankmixer_param_count(cfg, fm)
    assert (by_model["rm"]["parameters"], by_model["rm"]["dense_parameters"]) == (counts["total"], counts["dense"])

    # Every row's interval is the seed-mean bootstrap over its runs' saved test predictions.
    for row in report["summary"]:
        preds = [load_predictions(out / "runs" / f"{row['label']}-s{s}" / "test_predictions.npz") for s in (0, 1)]
        ci = bootstrap_mean_ci(preds[0].labels, [p.probs for p in preds], n_boot=1000, seed=0)
        assert (row["auc_ci_low"], row["auc_ci_high"]) == pytest.approx((ci.low, ci.high), abs=1e-12)
        assert ci.estimate == pytest.approx(row["auc"], abs=1e-9)
        positives = json.loads((out / "runs" / f"{row['label']}-s0" / "metrics.json").read_text())["positives"]
        assert row["positives"] == next(iter(positives["test"].values())) < 500

    table = markdown_table(report["summary"])
    # header, 3 rows, one Bayes row for the dataset; then the footnote on few positives
    assert table.count("\n") == 2 + 3 + 1 + 2 and "| AUC 95% CI |" in table and "\n† fewer than 500" in table
    assert json.loads((out / "accuracy.json").read_text())["summary"] == report["summary"]

    # A second run reads every finished cell instead of training it again.
    logs.clear()
    again = run_accuracy(load_suite(_suite(tmp_path)), [0, 1], out, log=logs.append)
    assert not any("training" in m for m in logs) and again["summary"] == report["summary"]

    # A cell whose run died before writing its config (its folder holds only what training had
    # begun) is trained again from scratch, to the same result.
    lost = out / "runs" / f"{report['summary'][0]['label']}-s1"
    for f in ("config.yaml", "metrics.json", "best.safetensors"):
        (lost / f).unlink()
    logs.clear()
    third = run_accuracy(load_suite(_suite(tmp_path)), [0, 1], out, log=logs.append)
    assert sum("training" in m for m in logs) == 1 and third["summary"] == report["summary"]

    # A finished run trained with another recipe is not reused under this command's name: the
    # error names the run and the key, and nothing in the folder changes.
    before = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match=r"(?s)synth-lr-s0 \(synth-lr seed 0\) finished with another config.*"
                                         r"train\.batch_size: 500 in the run, 250 now"):
        run_accuracy(load_suite(_suite(tmp_path)), [0, 1], out, overrides=["train.batch_size=250"], log=logs.append)
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*") if p.is_file()} == before


def _result(label, seed, flops, auc):
    metrics = {"auc": auc, "gauc": auc, "logloss": 0.5, "ne": 0.9}
    return {"label": label, "config": "c.yaml", "dataset": "d", "model": label, "parameters": 10,
            "dense_parameters": 5, "flops_per_sample": flops, "seed": seed, "test": metrics, "bayes": None}


def test_summary_flops_are_the_mean_over_seeds():
    """A sparse MoE's counted FLOPs follow its routing, so they differ by seed: the row reports
    their mean and spread, not seed 0's count (the issue's 250.75k / 289.79k / 320.13k)."""
    moe = [250_750.0, 289_790.0, 320_130.0]
    results = [_result("moe", s, f, 0.7 + s / 100) for s, f in enumerate(moe)]
    results += [_result("dense", s, 100_000.0, 0.7) for s in range(3)]
    results += [_result("uncounted", s, None, 0.7) for s in range(2)]  # e.g. distributed runs
    rows = {r["label"]: r for r in summarise(results)}
    assert rows["moe"]["flops_per_sample"] == pytest.approx(sum(moe) / 3)
    assert rows["moe"]["flops_per_sample_std"] == pytest.approx(np.std(moe, ddof=1))
    assert (rows["moe"]["flops_per_sample_min"], rows["moe"]["flops_per_sample_max"]) == (250_750.0, 320_130.0)
    assert rows["dense"]["flops_per_sample"] == 100_000.0 and rows["dense"]["flops_per_sample_std"] == 0.0
    assert rows["uncounted"]["flops_per_sample"] is None
    assert rows["moe"]["auc"] == pytest.approx(0.71)
    table = markdown_table(list(rows.values()))
    assert "| 286.89k ± 34.78k |" in table and "| 100.00k |" in table


def test_summary_reports_the_validation_auc_next_to_the_test_auc():
    """A searched model is chosen on validation: the row's valid AUC is the seeds' mean and sd of
    each run's best-step validation AUC, '-' where a run has none (an older report)."""
    valid = [0.683, 0.684, 0.6875]
    results = [_result("m", s, 1.0, 0.71) | {"valid": {"auc": v}} for s, v in enumerate(valid)]
    results += [_result("old", s, 1.0, 0.71) for s in range(2)]
    rows = {r["label"]: r for r in summarise(results)}
    assert rows["m"]["valid_auc"] == pytest.approx(np.mean(valid))
    assert rows["m"]["valid_auc_std"] == pytest.approx(np.std(valid, ddof=1))
    assert rows["old"]["valid_auc"] is None
    table = markdown_table(list(rows.values()), ["model", "valid_auc", "auc"])
    assert "| m | 0.6848 ± 0.0024 | 0.7100 ± 0.0000 |" in table and "| old | - |" in table


def test_flops_counter_sees_self_attention():
    """The self-attention ablation runs nn.MultiheadAttention, whose fused eval kernel torch's
    counter would count as zero; the count must still equal the analytic formula."""
    from tests.factories import make_feature_map, random_batch

    fm = make_feature_map()
    cfg = {k: v for k, v in RANKMIXER.items() if k != "name"} | {"token_mixing": "self_attention"}
    model = registry.build_model("rankmixer", fm, cfg).train()
    counted = forward_flops_per_sample(model, random_batch(fm, 32))
    assert counted == pytest.approx(rankmixer_flops_per_sample(cfg, fm)["forward"])
    assert model.training and torch.backends.mha.get_fastpath_enabled()  # state restored


def test_select_and_budget(tmp_path):
    from rankmixer.bench.accuracy import budget_overrides, select

    cells = load_suite(_suite(tmp_path))
    assert [c.label for c in select(cells, models=["rm", "lr"])] == ["synth-lr", "synth-rm"]
    assert select(cells, datasets=["synth"]) == cells
    with pytest.raises(ConfigError, match=r"unknown model\(s\) \['rn'\]"):
        select(cells, models=["rn"])
    assert budget_overrides("epochs=3", 512) == ["train.epochs=3"]
    assert budget_overrides("samples=1025", 512)[0] == "train.max_steps=3"  # ceil(1025 / 512)
    for bad in ("sample=10", "samples=0", "epochs=x", "10"):
        with pytest.raises(ConfigError, match="--budget"):
            budget_overrides(bad, 512)


@pytest.mark.slow  # trains a small scaling study; run with -m slow
def test_scaling_study_small(tmp_path):
    """The scaling benchmark end to end at toy sizes: every point trained with the same sample
    budget, FLOPs growing with size, slopes equal to an independent least-squares fit, a PNG."""
    pytest.importorskip("matplotlib", reason="the bench extra (pip install -e '.[bench]') draws the plot")
    from rankmixer.bench.scaling import run_scaling

    spec = {
        "dataset": {"config": str(_base_config(tmp_path)), "overrides": ["train.batch_size=500"]},
        "budget": "samples=1200",
        "families": {
            "mlp": [{"name": "concat-mlp", "embedding_dim": 8, "dnn_hidden": [8]},
                    {"name": "concat-mlp", "embedding_dim": 8, "dnn_hidden": [64, 64]}],
            "rm": [{**RANKMIXER, "hidden_dim": 8}, {**RANKMIXER, "hidden_dim": 32}],
        },
        "oracle": "model/planted",
        "differences": [["rm", "mlp"]],
    }
    path = tmp_path / "scaling.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "scaling"
    report = run_scaling(path, [0], out, log=lambda m: None)

    rows = report["summary"]
    assert [r["label"] for r in rows] == ["scaling-mlp-0", "scaling-mlp-1", "scaling-rm-0", "scaling-rm-1",
                                          "scaling-oracle"]
    assert all(r["steps"] == 3 for r in report["cells"])  # ceil(1200 / 500) steps each
    for family in ("mlp", "rm"):
        small, big = (r for r in rows if r["model"] == family)
        assert big["flops_per_sample"] > 2 * small["flops_per_sample"]
        assert big["dense_parameters"] > 2 * small["dense_parameters"]
        # slope of AUC on log2(FLOPs) through two points: rise over run
        expect = (big["auc"] - small["auc"]) / (np.log2(big["flops_per_sample"]) - np.log2(small["flops_per_sample"]))
        assert report["slopes"][family]["auc_per_doubling_flops"] == pytest.approx(expect)
    assert report["bayes_auc"] is not None and "model-class oracle" not in report["slopes"]
    # rm minus mlp at each size: the difference of the two runs' test AUCs, as a paired interval
    by_label = {r["label"]: r["auc"] for r in rows}
    assert [d["dataset"] for d in report["differences"]] == ["size 0", "size 1"]
    for d in report["differences"]:
        size = d["dataset"].split()[1]
        assert d["estimate"] == pytest.approx(by_label[f"scaling-rm-{size}"] - by_label[f"scaling-mlp-{size}"])
        assert d["low"] <= d["estimate"] <= d["high"]
    oracle = rows[-1]["auc"]
    best = max(rows[:-1], key=lambda r: r["auc"])
    assert report["gaps"] == {"best_label": best["label"], "best_auc": best["auc"], "oracle_auc": oracle,
                              "bayes_auc": report["bayes_auc"], "to_oracle": pytest.approx(oracle - best["auc"]),
                              "oracle_to_bayes": pytest.approx(report["bayes_auc"] - oracle)}
    # The slopes' intervals against a loop: sklearn's AUC on the same draws of the test rows,
    # the seed mean per size, numpy's least-squares slope, the 2.5% / 97.5% quantiles.
    from sklearn.metrics import roc_auc_score

    from rankmixer.bench.intervals import BOOTSTRAP, run_predictions
    from rankmixer.core.bootstrap import resample_indices

    for family in ("mlp", "rm"):
        group = [r for r in rows if r["model"] == family]
        preds = [run_predictions(c, out / "runs") for r in group for c in report["cells"] if c["label"] == r["label"]]
        y = preds[0].labels[:, 0]
        lx = np.log2([r["flops_per_sample"] for r in group])
        slopes = []
        for b in range(BOOTSTRAP["n_boot"]):
            idx = resample_indices(len(y), b, BOOTSTRAP["seed"])
            slopes.append(np.polyfit(lx, [roc_auc_score(y[idx], p.probs[idx, 0]) for p in preds], 1)[0])
        low, high = report["slopes"][family]["auc_per_doubling_flops_ci"]
        # the report keeps each run's draws as float32
        assert (low, high) == pytest.approx(tuple(np.quantile(slopes, [0.025, 0.975])), abs=1e-6)
        assert low <= report["slopes"][family]["auc_per_doubling_flops"] <= high
    assert (out / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "scaling.json").read_text())["slopes"] == report["slopes"]
    md = (out / "scaling.md").read_text()
    # two sizes + the slope row + the two rows of differences
    assert md.count("| rm |") == 2 + 1 + 2 and "| model-class oracle |" in md and "| size 1 | rm | mlp |" in md


@pytest.mark.slow  # trains a small scaling study in two parts; run with -m slow
def test_scaling_study_in_two_parts_joined_by_earlier(tmp_path):
    """One family trained in one folder, the other in a second with ``earlier`` pointing at the
    first report, whose runs' folders are then gone: the joined report equals the paired
    bootstrap of the predictions (the draws the first report kept)."""
    pytest.importorskip("matplotlib", reason="the bench extra (pip install -e '.[bench]') draws the plot")
    import shutil

    from rankmixer.bench.intervals import BOOTSTRAP, paired_difference
    from rankmixer.bench.scaling import run_scaling

    spec = {
        "dataset": {"config": str(_base_config(tmp_path)), "overrides": ["train.batch_size=500"]},
        "budget": "samples=1000",
        "families": {"mlp": [{"name": "concat-mlp", "embedding_dim": 8, "dnn_hidden": [8]},
                             {"name": "concat-mlp", "embedding_dim": 8, "dnn_hidden": [32, 32]}],
                     "rm": [{**RANKMIXER, "hidden_dim": 8}, {**RANKMIXER, "hidden_dim": 16}]},
        "differences": [["rm", "mlp"]],
    }
    path = tmp_path / "scaling.yaml"
    path.write_text(yaml.safe_dump(spec))
    first = run_scaling(path, [0], tmp_path / "one", families=["mlp"], log=lambda m: None)
    shutil.copy(tmp_path / "one" / "scaling.json", tmp_path / "earlier.json")
    # The reference: both parts' predictions side by side.
    both = run_scaling(path, [0], tmp_path / "one", families=["rm"], log=lambda m: None)
    ref = {d["dataset"]: paired_difference({"cells": first["cells"] + both["cells"]}, d["a"], d["b"], tmp_path / "one" / "runs",
                                           **BOOTSTRAP) for d in [{"dataset": f"size {i}", "a": f"scaling-rm-{i}",
                                                                   "b": f"scaling-mlp-{i}"} for i in (0, 1)]}
    shutil.copytree(tmp_path / "one" / "runs", tmp_path / "two" / "runs", ignore=shutil.ignore_patterns("scaling-mlp-*"))
    shutil.rmtree(tmp_path / "one" / "runs")
    joined = run_scaling(path, [0], tmp_path / "two", families=["rm"], report_only=True,
                         earlier=tmp_path / "earlier.json", log=lambda m: None)
    assert [r["label"] for r in joined["summary"]] == ["scaling-mlp-0", "scaling-mlp-1", "scaling-rm-0", "scaling-rm-1"]
    assert joined["earlier"]["labels"] == ["scaling-mlp-0", "scaling-mlp-1"]
    assert joined["slopes"]["mlp"] == first["slopes"]["mlp"]
    for d in joined["differences"]:
        assert d["paired"] is True
        assert (d["estimate"], d["low"], d["high"]) == pytest.approx(
            (ref[d["dataset"]]["estimate"], ref[d["dataset"]]["low"], ref[d["dataset"]]["high"]), abs=1e-6)
    # The carried rows keep their own intervals (from the first report's summary).
    # Continuing the study with the earlier report trains only what it does not hold.
    seen: list[str] = []
    with pytest.raises(ConfigError, match="nothing to train"):
        run_scaling(path, [0], tmp_path / "three", families=["mlp"], earlier=tmp_path / "earlier.json", log=seen.append)
    assert seen == ["not trained, held by " + str(tmp_path / "earlier.json") + ": scaling-mlp-0, scaling-mlp-1"]
    first_rows = {r["label"]: r for r in first["summary"]}
    for r in joined["summary"][:2]:
        assert (r["auc_ci_low"], r["auc_ci_high"]) == (first_rows[r["label"]]["auc_ci_low"],
                                                       first_rows[r["label"]]["auc_ci_high"])


def test_scaling_spec_rejects_typos_and_single_sizes(tmp_path):
    from rankmixer.bench.scaling import load_spec

    bad = tmp_path / "spec.yaml"
    bad.write_text(yaml.safe_dump({"dataset": {"config": "x.yaml"}, "famlies": {}}))
    with pytest.raises(ConfigError, match="famlies"):
        load_spec(bad)
    bad.write_text(yaml.safe_dump({"dataset": {"config": "x.yaml"}, "families": {"mlp": [{"name": "lr"}]}}))
    with pytest.raises(ConfigError, match="at least two"):
        load_spec(bad)
    with pytest.raises(FileNotFoundError, match="scaling spec"):
        load_spec(tmp_path / "missing.yaml")
    from rankmixer.bench.scaling import spec_differences

    bad.write_text(yaml.safe_dump({"dataset": {"config": "x.yaml"}, "families": {"a": ["model/lr", "model/lr"]},
                                   "differences": [["a", "b"]]}))
    with pytest.raises(ConfigError, match="two of its families"):
        spec_differences(bad)
    assert ("rankmixer-post", "dcnv2") in spec_differences("scaling_10m")
    cells, budget = load_spec("scaling")
    assert len(cells) == 16 and budget == "samples=500000"
    assert {c.model_label for c in cells} == {"dlrm-mlp", "dcnv2", "wukong", "rankmixer"}


def test_scaling_families_pick_cells_in_the_order_given():
    from rankmixer.bench.scaling import ORACLE, load_spec, pick_families

    cells, _ = load_spec("scaling_10m")
    picked = pick_families(cells, ["wukong", "oracle", "dcnv2"])
    assert [c.model_label for c in picked] == ["wukong"] * 5 + [ORACLE] + ["dcnv2"] * 5
    assert [c.label for c in picked[:5]] == [f"scaling-wukong-{i}" for i in range(5)]
    with pytest.raises(ConfigError, match="dcn2"):
        pick_families(cells, ["dcn2"])


@pytest.mark.slow  # spawns worker processes (each imports torch)
def test_parallel_runs_equal_serial_runs(tmp_path):
    """``processes=2`` trains the same runs as the serial loop: same steps and test metrics
    (one thread each, so both are deterministic), and a second call reads them back."""
    cells = load_suite(_suite(tmp_path))[:2]
    serial = run_accuracy(cells, [0, 1], tmp_path / "serial", log=lambda m: None)
    logs: list[str] = []
    parallel = run_accuracy(cells, [0, 1], tmp_path / "parallel", log=logs.append, processes=2)
    assert sum("finished" in m for m in logs) == 4
    for a, b in zip(serial["cells"], parallel["cells"]):
        assert (a["label"], a["seed"], a["steps"]) == (b["label"], b["seed"], b["steps"])
        assert a["test"]["auc"] == pytest.approx(b["test"]["auc"], abs=1e-6)
    logs.clear()
    run_accuracy(cells, [0, 1], tmp_path / "parallel", log=logs.append, processes=2)
    assert any("4 of 4 runs done before" in m for m in logs)


def test_train_throughput_is_the_median_of_the_logged_windows(tmp_path):
    from rankmixer.bench.accuracy import train_throughput

    assert train_throughput(tmp_path) is None  # no log (e.g. FuxiCTR's own pipeline)
    lines = [{"split": "train", "step": 10, "samples_per_s": 100.0},
             {"split": "valid", "step": 10, "auc": 0.7},
             {"split": "train", "step": 20, "samples_per_s": 40.0},  # a window that held an evaluation
             {"split": "train", "step": 30, "samples_per_s": 120.0}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + '\n{"split": "tr')
    assert train_throughput(tmp_path) == 100.0
    results = [_result("m", s, 1.0, 0.7) | {"train_samples_per_s": v} for s, v in enumerate([100.0, 200.0, None])]
    row = summarise(results)[0]
    assert row["train_samples_per_s"] == 150.0
    assert "| 150 |" in markdown_table([row], ["model", "sps"])


def test_streamed_rows_report_progressive_validation_over_seeds():
    prog = [{"auc": 0.70, "ne": 0.91}, {"auc": 0.72, "ne": 0.90}, {"auc": 0.71, "ne": 0.95}]
    results = [{**_result("streamed", s, 1000.0, 0.7), "progressive": p} for s, p in enumerate(prog)]
    results += [_result("offline", s, 1000.0, 0.7) for s in range(3)]
    rows = {r["label"]: r for r in summarise(results)}
    assert rows["streamed"]["progressive_auc"] == pytest.approx(0.71)
    assert rows["streamed"]["progressive_ne_std"] == pytest.approx(np.std([0.91, 0.90, 0.95], ddof=1))
    assert rows["offline"]["progressive_auc"] is None
    table = markdown_table(list(rows.values()))
    assert "progressive AUC" in table and "| 0.7100 ± 0.0100 |" in table
