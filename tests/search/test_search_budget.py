"""``rankmixer bench search-budget`` over real (tiny) searches: best-so-far against a brute-force
pass over prefixes, the seed statistics and the comparison recomputed from the searches' own
reports, NE read from each trial's run, the predictor's ablations present, and an output inside a
search's folder refused."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import yaml

from rankmixer.bench.search_budget import PREDICTOR_VARIANTS, best_so_far, longest_run, run_search_budget
from rankmixer.core.files import OutputError
from tests.factories import tiny_config_file

optuna = pytest.importorskip("optuna", reason="rankmixer search needs the 'tune' extra (optuna)")

from rankmixer.search.run import run_search  # noqa: E402

SPACE = {
    "model": {"embedding_dim": 4},
    "blocks": {"int": [1, 2]},
    "types": {"mlp": {"width": {"int": [4, 16]}}, "cross": {"depth": {"int": [1, 2]}}, "fm": {}},
}


@pytest.mark.parametrize("maximize", [True, False])
def test_best_so_far_is_the_best_of_each_prefix(maximize):
    rng = random.Random(3)
    values = [rng.random() for _ in range(30)]
    flops = [rng.choice([1e3, 1e4, 1e5]) for _ in range(30)]
    for target in (None, 1e4, 1.0):
        got = best_so_far(values, flops, maximize, target)
        for k in range(30):
            ok = [v for v, f in zip(values[:k + 1], flops[:k + 1]) if target is None or f <= target]
            want = (max(ok) if maximize else min(ok)) if ok else math.nan
            assert got[k] == want or (math.isnan(want) and math.isnan(got[k]))


def test_longest_run_of_failures_against_a_scan_of_every_window():
    rng = random.Random(5)
    for _ in range(50):
        flags = [rng.random() < 0.4 for _ in range(rng.randint(0, 20))]
        want = max((j - i for i in range(len(flags) + 1) for j in range(i, len(flags) + 1) if all(flags[i:j])),
                   default=0)
        assert longest_run(flags) == want


@pytest.fixture(scope="module")
def searches(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("budget")
    tiny = tiny_config_file(root)
    space = root / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    for strategy, seed in (("random", 1), ("random", 2), ("automl", 1)):
        run_search(tiny, space, strategy, 5, root / "searches" / f"{strategy}-s{seed}", seed=seed,
                   log=lambda *_: None, options={"startup_trials": 3, "round_size": 1, "labels": "extrapolated"}
                   if strategy == "automl" else None)
    return root / "searches"


@pytest.mark.slow  # ~10 s with its three searches; best-so-far stays in the default suite
def test_the_report_follows_the_searches(searches, tmp_path, monkeypatch):
    # The report's bookkeeping is under test, not the predictor's fit (tests/search/test_automl.py):
    # a few epochs per member keep it quick.
    import rankmixer.search.predictor as predictor

    full = predictor.cross_validate
    monkeypatch.setattr(predictor, "cross_validate", lambda *a, **k: full(*a, **{**k, "epochs": 20}))
    report = run_search_budget(searches, tmp_path / "out", checkpoints=(2, 5), flops_target=2e3, folds=2,
                               log=lambda *_: None)
    per = {}
    for folder in sorted(searches.iterdir()):
        rep = json.loads((folder / "search.json").read_text())
        done = sorted((t for t in rep["trials"] if t["state"] == "COMPLETE"), key=lambda t: t["number"])
        per[folder.name] = done
        for t in done:  # NE comes from the trial's own run
            row = next(r for r in report["trials"] if f"{r['strategy']}-s{r['seed']}" == folder.name
                       and r["number"] == t["number"])
            assert row["ne"] == json.loads((folder / t["run_dirs"][0] / "metrics.json").read_text())["valid"]["ne"]
    for s in report["summary"]:
        bests = [max(t["value"] for t in done[:s["trials"]]) for name, done in per.items()
                 if name.startswith(s["strategy"] + "-")]
        assert s["best_mean"] == pytest.approx(np.mean(bests))
        assert s["best_sd"] == pytest.approx(np.std(bests, ddof=1) if len(bests) > 1 else 0.0)
    (cmp,) = [c for c in report["comparison"] if c["trials"] == 5 and c["what"] == "best"]
    a = next(s for s in report["summary"] if s["strategy"] == "automl" and s["trials"] == 5)
    b = next(s for s in report["summary"] if s["strategy"] == "random" and s["trials"] == 5)
    assert cmp["strategy"] == "automl" and cmp["difference"] == pytest.approx(a["best_mean"] - b["best_mean"])
    assert cmp["beyond_spread"] == (abs(cmp["difference"]) > max(a["best_sd"], b["best_sd"]))
    for row in report["searches"]:
        assert row["controller"] is None  # no rankitect-sampling search here
        states = [t["state"] for t in json.loads((searches / f"{row['strategy']}-s{row['seed']}" / "search.json")
                                                  .read_text())["trials"]]
        assert row["failed"] == states.count("FAIL") and 0 <= row["failed_in_a_row"] <= row["failed"]
        assert set(row["predictor"]) == set(PREDICTOR_VARIANTS)
        assert all(-1 <= v["kendall"] <= 1 for v in row["predictor"].values())
    # The labels' agreement with the values: Spearman's rho from ranks by hand, over the
    # extrapolated labels the automl search itself recorded (its horizon is the report's).
    automl = json.loads((searches / "automl-s1" / "search.json").read_text())["automl"]
    assert report["context"]["horizon_steps"] == automl["options"]["horizon_steps"]
    lab = np.array([t["label"] for t in automl["trials"]])
    val = np.array([t["value"] for t in automl["trials"]])
    rank = lambda x: np.argsort(np.argsort(x)).astype(float)  # noqa: E731 (no ties in real-valued AUCs)
    n = len(lab)
    want = 1 - 6 * np.sum((rank(lab) - rank(val)) ** 2) / (n * (n * n - 1))
    (row,) = [r for r in report["searches"] if r["strategy"] == "automl"]
    assert row["labels"]["trials"] == n and row["labels"]["spearman"] == pytest.approx(want)
    out = tmp_path / "out"
    assert (out / "search_budget.png").stat().st_size > 0 and "| automl |" in (out / "search_budget.md").read_text()


@pytest.mark.slow  # needs the three searches above
def test_an_output_inside_a_search_is_refused(searches):
    with pytest.raises(OutputError):
        run_search_budget(searches, searches / "random-s1", log=lambda *_: None)


@pytest.mark.slow  # needs the three searches above
def test_searches_of_an_earlier_report_join_as_if_their_folders_were_here(searches, tmp_path, monkeypatch):
    import shutil

    import rankmixer.search.predictor as predictor

    full = predictor.cross_validate
    monkeypatch.setattr(predictor, "cross_validate", lambda *a, **k: full(*a, **{**k, "epochs": 20}))
    kw = {"checkpoints": (2, 5), "flops_target": 2e3, "folds": 2, "log": lambda *_: None}
    whole = run_search_budget(searches, tmp_path / "whole", **kw)
    old, new = tmp_path / "old", tmp_path / "new"
    for name in ("random-s1", "random-s2"):
        shutil.copytree(searches / name, old / name)
    shutil.copytree(searches / "automl-s1", new / "automl-s1")
    run_search_budget(old, tmp_path / "old_report", **kw)
    earlier = tmp_path / "old_report" / "search_budget.json"
    shutil.rmtree(old)  # the earlier searches' folders are gone; their report carries them
    joined = run_search_budget(new, tmp_path / "joined", earlier=[earlier], **kw)
    key = lambda r: (r["strategy"], r.get("seed"), r.get("trials"), r.get("what"))  # noqa: E731
    for part in ("summary", "comparison"):
        assert sorted(joined[part], key=key) == sorted(whole[part], key=key)
    assert len(joined["trials"]) == len(whole["trials"])
    with pytest.raises(ValueError, match="flops_target"):
        run_search_budget(new, tmp_path / "other", earlier=[earlier], **{**kw, "flops_target": 1e3})
    with pytest.raises(ValueError, match="random"):
        run_search_budget(searches, tmp_path / "twice", earlier=[earlier], **kw)

    # The trainer renamed an override: the earlier searches' spelling is read through the map.
    old_report = json.loads(earlier.read_text())
    old_report["context"]["overrides"] = ["train.old_spelling=5"]
    renamed = tmp_path / "renamed.json"
    renamed.write_text(json.dumps(old_report))
    here = json.loads((new / "automl-s1" / "search.json").read_text())
    (new / "automl-s1" / "search.json").write_text(json.dumps({**here, "overrides": ["train.new_spelling=12"]}))
    with pytest.raises(ValueError, match="overrides"):
        run_search_budget(new, tmp_path / "unmapped", earlier=[renamed], **kw)
    with pytest.raises(ValueError, match="did not use"):
        run_search_budget(new, tmp_path / "typo", earlier=[renamed],
                          earlier_overrides={"train.old_spelling=6": "train.new_spelling=12"}, **kw)
    mapped = run_search_budget(new, tmp_path / "mapped", earlier=[renamed],
                               earlier_overrides={"train.old_spelling=5": "train.new_spelling=12"}, **kw)
    assert sorted(mapped["summary"], key=key) == sorted(whole["summary"], key=key)
    assert mapped["context"]["earlier_overrides"] == {"train.old_spelling=5": "train.new_spelling=12"}


@pytest.mark.parametrize("pair", ["train.one_pass_evals=5", "a=1 b=2 c=3", "a=1 b"])
def test_a_malformed_earlier_override_is_named(tmp_path, pair):
    from typer.testing import CliRunner

    from rankmixer.cli import app

    result = CliRunner().invoke(app, ["bench", "search-budget", "--root", str(tmp_path), "--earlier-override", pair],
                                terminal_width=300)
    assert result.exit_code != 0 and "--earlier-override" in result.output and "two key=value" in result.output


def test_an_earlier_override_without_an_earlier_report_is_refused(tmp_path):
    from typer.testing import CliRunner

    from rankmixer.cli import app

    result = CliRunner().invoke(app, ["bench", "search-budget", "--root", str(tmp_path), "--earlier-override",
                                      "a=1 b=2"], terminal_width=300)
    assert result.exit_code != 0 and "no --earlier" in result.output
