"""``rankmixer search`` end to end on the tiny synthetic set: trials are training runs of drawn
architectures with their FLOPs read back, a failing trial is recorded with its error while the
search goes on, a killed search resumes from its storage to the same completed trials, and the
Pareto front against a brute-force check."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from rankmixer import experiment
from rankmixer.cli import app
from rankmixer.search import pareto_front, run_search
from rankmixer.tune import SpaceError
from tests.factories import TINY_SEARCH_SPACE, tiny_config_file

optuna = pytest.importorskip("optuna", reason="rankmixer search needs the 'tune' extra (optuna)")

SPACE = TINY_SEARCH_SPACE


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return tiny_config_file(tmp_path_factory.mktemp("search"))


def space_file(folder: Path, **changes) -> Path:
    path = folder / "space.yaml"
    path.write_text(yaml.safe_dump({**SPACE, **changes}))
    return path


def test_trials_train_drawn_architectures_and_report_their_costs(tiny, tmp_path):
    out = tmp_path / "out"
    report = run_search(tiny, space_file(tmp_path), "random", 3, out, seed=1, log=lambda *_: None)
    assert report["strategy"] == "random" and report["states"] == {"COMPLETE": 3}
    for t in report["trials"]:
        run = out / t["run_dirs"][0]
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        assert cfg["model"]["name"] == "searched" and cfg["model"]["blocks"] == t["model"]["blocks"]
        metrics = json.loads((run / "metrics.json").read_text())
        assert t["flops_per_sample"] == metrics["flops_per_sample"] > 0
        assert t["value"] == metrics["valid"]["auc"] and t["architecture"].startswith("b0=")
    assert set(report["pareto"]) <= {t["number"] for t in report["trials"]} and report["pareto"]
    assert json.loads((out / "search.json").read_text())["best"]["architecture"] == report["best"]["architecture"]


def test_a_failing_trial_is_recorded_and_the_search_goes_on(tiny, tmp_path, monkeypatch):
    real = experiment.train
    calls = []

    def train(cfg, **kw):
        calls.append(cfg.run_dir)
        if len(calls) == 1:
            raise RuntimeError("out of memory (a stand-in)")
        return real(cfg, **kw)

    monkeypatch.setattr(experiment, "train", train)
    report = run_search(tiny, space_file(tmp_path), "tpe", 2, tmp_path / "out", log=lambda *_: None)
    assert report["states"] == {"FAIL": 1, "COMPLETE": 2}
    failed = next(t for t in report["trials"] if t["state"] == "FAIL")
    assert failed["error"] == "RuntimeError: out of memory (a stand-in)" and failed["architecture"]


def test_a_killed_search_resumes_to_the_same_completed_trials(tiny, tmp_path, monkeypatch):
    space = space_file(tmp_path)
    real = experiment.train

    def killed(cfg, **kw):
        if Path(cfg.run_dir).name.startswith("2-s"):
            raise KeyboardInterrupt  # Ctrl-C in the third trial
        return real(cfg, **kw)

    monkeypatch.setattr(experiment, "train", killed)
    with pytest.raises(KeyboardInterrupt):
        run_search(tiny, space, "tpe", 4, tmp_path / "out", log=lambda *_: None)
    before = json.loads((tmp_path / "out" / "tune.json").read_text())
    done = {t["number"]: t["params"] for t in before["trials"] if t["state"] == "COMPLETE"}
    assert len(done) == 2
    monkeypatch.setattr(experiment, "train", real)
    report = run_search(tiny, space, "tpe", 4, tmp_path / "out", log=lambda *_: None)
    complete = [t for t in report["trials"] if t["state"] == "COMPLETE"]
    assert len(complete) == 4
    assert {t["number"]: t["model"] for t in complete if t["number"] in done} == \
        {n: p["model"] for n, p in done.items()}
    retry = next(t for t in complete if t["retry_of"] == 2)  # the interrupted trial, drawn again identically
    assert retry["model"] == next(t for t in report["trials"] if t["number"] == 2)["model"]


def test_a_model_override_is_refused(tiny, tmp_path):
    with pytest.raises(SpaceError, match="the search draws"):
        run_search(tiny, space_file(tmp_path), "tpe", 1, tmp_path / "out", ["model.embedding_dim=8"],
                   log=lambda *_: None)


def test_pareto_front_against_brute_force():
    rng = random.Random(0)
    for _ in range(50):
        pts = [(i, round(rng.random(), 1), rng.choice([1.0, 2.0, 3.0, 4.0])) for i in range(8)]
        for maximize in (True, False):
            s = 1 if maximize else -1
            want = {i for i, v, f in pts
                    if not any((s * w > s * v and g <= f) or (s * w >= s * v and g < f) for j, w, g in pts)}
            assert set(pareto_front(pts, maximize)) == want


def test_the_command_prints_the_trials(tiny, tmp_path):
    r = CliRunner().invoke(app, ["search", "-c", str(tiny), "--space", str(space_file(tmp_path)), "--strategy",
                                 "random", "--budget", "1", "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    assert "| trial | state | valid auc | FLOPs/sample |" in r.output and "best: trial 0" in r.output
    r = CliRunner().invoke(app, ["search", "-c", str(tiny), "--strategy", "grid", "--budget", "1",
                                 "--out", str(tmp_path / "o2")])
    assert r.exit_code == 2 and "unknown strategy" in r.output


@pytest.mark.slow  # spawns worker processes (each imports torch)
def test_worker_processes_share_one_study(tiny, tmp_path):
    out = tmp_path / "out"
    report = run_search(tiny, space_file(tmp_path), "random", 4, out, seed=3, workers=2, log=lambda *_: None)
    complete = [t for t in report["trials"] if t["state"] == "COMPLETE"]
    assert len(complete) >= 4  # two processes starting the last trials may finish one more
    dirs = [t["run_dirs"][0] for t in complete]
    assert len(set(dirs)) == len(dirs) and all((out / d / "metrics.json").is_file() for d in dirs)


def test_a_search_keeps_trial_checkpoints_only_when_asked(tiny, tmp_path):
    """By default a finished trial keeps its metrics and best weights, not its checkpoints (a
    100-trial search once filled the disk); ``keep_checkpoints`` keeps them."""
    kept = run_search(tiny, space_file(tmp_path), "random", 1, tmp_path / "kept", seed=1, log=lambda *_: None,
                      keep_checkpoints=True)
    dropped = run_search(tiny, space_file(tmp_path), "random", 1, tmp_path / "dropped", seed=1, log=lambda *_: None)
    kept_runs = list((tmp_path / "kept" / "trials").iterdir())
    dropped_runs = list((tmp_path / "dropped" / "trials").iterdir())
    assert kept_runs and all(any((r / "checkpoints").iterdir()) for r in kept_runs)
    assert dropped_runs and not any((r / "checkpoints").exists() for r in dropped_runs)
    assert all((r / "best.safetensors").is_file() for r in dropped_runs)
    assert dropped["trials"][0]["architecture"] == kept["trials"][0]["architecture"]  # the same draw
