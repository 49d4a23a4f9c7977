"""Tuning end to end on the tiny synthetic set: trials are real training runs whose value is
their own metrics.json's validation metric, a study continues across commands, a seeded sampler
repeats itself, and a trial cut short (killed, or Ctrl-C) is run again with the same values in
the same run directory, resuming from its checkpoint."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from rankmixer import experiment
from rankmixer.config import ConfigError
from rankmixer.core.files import OutputError
from rankmixer.train.trainer import Trainer
from rankmixer.tune import SpaceError, TuneError, format_override, load_space, run_tune
from tests.factories import tiny_config_file

optuna = pytest.importorskip("optuna", reason="rankmixer tune needs the 'tune' extra (optuna)")

SPACE = {
    "sampler": {"name": "tpe", "seed": 0},
    "train.dense_optimizer.lr": {"float": [1.0e-4, 1.0e-1], "log": True},
    "model.dnn_hidden": {"choice": [[8], [16, 8]]},
    "model.dropout": {"float": [0.0, 0.5], "step": 0.1},
    "train.batch_size": {"fixed": 32},
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """The tiny DCNv2 experiment as a config file (its data prepared once for the module)."""
    return tiny_config_file(tmp_path_factory.mktemp("tune"))


def space_file(folder: Path, **changes) -> Path:
    path = folder / "space.yaml"
    path.write_text(yaml.safe_dump({**SPACE, **changes}))
    return path


def at(tree: dict, dotted: str):
    for part in dotted.split("."):
        tree = tree[part]
    return tree


def test_trials_are_runs_of_the_config_with_values_from_the_space(tiny, tmp_path):
    out = tmp_path / "out"
    space = load_space(space_file(tmp_path))
    report = run_tune(tiny, space, 3, out, log=lambda *_: None)
    assert json.loads((out / "tune.json").read_text()) == report
    trials = report["trials"]
    assert [t["state"] for t in trials] == ["COMPLETE"] * 3
    for t in trials:
        assert set(t["params"]) == {p.key for p in space.params}
        assert all(p.contains(t["params"][p.key]) for p in space.params), t["params"]
        assert t["run_dirs"] == [f"trials/{t['number']}-s42"]
        run = out / t["run_dirs"][0]
        assert t["value"] == json.loads((run / "metrics.json").read_text())["valid"]["auc"]
        saved = yaml.safe_load((run / "config.yaml").read_text())  # the values reached the trained config
        assert all(at(saved, k) == v for k, v in t["params"].items())
        assert "test" not in json.dumps(t)  # nothing of the test split in the report
    best = max(trials, key=lambda t: t["value"])
    assert report["best"]["number"] == best["number"]
    assert report["best_overrides"] == [format_override(k, v) for k, v in best["params"].items()]
    assert report["states"] == {"COMPLETE": 3} and report["storage"] == f"sqlite:///{(out / 'study.db').resolve()}"

    # The same command asking for 4 trials in all runs exactly one more, with a new draw.
    again = run_tune(tiny, space, 4, out, log=lambda *_: None)
    assert [t["number"] for t in again["trials"]] == [0, 1, 2, 3] and again["trials"][:3] == trials
    assert again["trials"][3]["state"] == "COMPLETE" and (out / "trials" / "3-s42" / "metrics.json").is_file()
    lrs = [t["params"]["train.dense_optimizer.lr"] for t in again["trials"]]
    assert len(set(lrs)) == 4  # the continuing sampler did not replay the first command's draws
    # Asking for fewer than the study holds runs nothing.
    assert run_tune(tiny, space, 2, out, log=lambda *_: None)["trials"] == again["trials"]
    assert sorted(p.name for p in (out / "trials").iterdir()) == ["0-s42", "1-s42", "2-s42", "3-s42"]
    # A finished trial keeps what retraining or export needs, not its checkpoints.
    for run in (out / "trials").iterdir():
        assert not (run / "checkpoints").exists()
        assert {"config.yaml", "metrics.json", "metrics.jsonl", "best.safetensors"} <= {f.name for f in run.iterdir()}


def test_finished_trials_keep_their_checkpoints_when_asked(tiny, tmp_path):
    out = tmp_path / "out"
    run_tune(tiny, load_space(space_file(tmp_path)), 1, out, log=lambda *_: None, keep_checkpoints=True)
    assert any((out / "trials" / "0-s42" / "checkpoints").iterdir())


def test_a_seeded_sampler_draws_the_same_first_trial(tiny, tmp_path):
    first = {}
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        folder = tmp_path / name
        folder.mkdir()
        space = load_space(space_file(folder, sampler={"name": "tpe", "seed": seed}))
        first[name] = run_tune(tiny, space, 1, folder / "out", storage=str(folder / "study.journal"),
                               log=lambda *_: None)["trials"][0]
    assert first["a"]["params"] == first["b"]["params"] and first["a"]["value"] == first["b"]["value"]
    assert first["c"]["params"]["train.dense_optimizer.lr"] != first["a"]["params"]["train.dense_optimizer.lr"]


def test_the_value_is_the_mean_over_the_spaces_seeds(tiny, tmp_path):
    out = tmp_path / "out"
    report = run_tune(tiny, load_space(space_file(tmp_path, seeds=[1, 2])), 1, out, log=lambda *_: None)
    (t,) = report["trials"]
    assert t["run_dirs"] == ["trials/0-s1", "trials/0-s2"] and report["seeds"] == [1, 2]
    per_seed = [json.loads((out / r / "metrics.json").read_text())["valid"]["auc"] for r in t["run_dirs"]]
    assert [yaml.safe_load((out / r / "config.yaml").read_text())["seed"] for r in t["run_dirs"]] == [1, 2]
    assert t["values_per_seed"] == per_seed and t["value"] == pytest.approx(np.mean(per_seed), abs=1e-15)


def _stand_in(monkeypatch, valid: callable) -> None:
    """experiment.train replaced by a run that writes metrics.json: valid metrics from
    ``valid(cfg)``, test metrics that would win every comparison if the tuner read them."""
    def train(cfg, resume=False, log=print, overwrite=False):
        run = cfg.resolved_run_dir()
        run.mkdir(parents=True, exist_ok=True)
        (run / "metrics.json").write_text(json.dumps({"valid": valid(cfg), "test": {"auc": 1.0, "logloss": 0.0}}))

    monkeypatch.setattr(experiment, "train", train)


def test_the_objective_reads_the_named_validation_metric_in_its_direction(tiny, tmp_path, monkeypatch):
    _stand_in(monkeypatch, lambda cfg: {"auc": 0.5, "logloss": cfg.train.dense_optimizer.lr * 10})
    space = load_space(space_file(tmp_path, objective={"metric": "logloss"}))
    report = run_tune(tiny, space, 4, tmp_path / "out", storage=str(tmp_path / "a.journal"), log=lambda *_: None)
    values = {t["number"]: t["params"]["train.dense_optimizer.lr"] * 10 for t in report["trials"]}
    assert {t["number"]: t["value"] for t in report["trials"]} == pytest.approx(values)
    assert report["best"]["number"] == min(values, key=values.get) and report["objective"]["direction"] == "minimize"

    _stand_in(monkeypatch, lambda cfg: {"auc": 0.5})
    with pytest.raises(ConfigError, match="'logloss' is not a validation metric.*it has auc"):
        run_tune(tiny, space, 1, tmp_path / "out2", storage=str(tmp_path / "b.journal"), log=lambda *_: None)


def test_trials_without_a_finite_value_stop_the_study(tiny, tmp_path, monkeypatch):
    _stand_in(monkeypatch, lambda cfg: {"auc": math.nan})
    with pytest.raises(TuneError, match="3 trials in a row"):
        run_tune(tiny, load_space(space_file(tmp_path)), 10, tmp_path / "out", storage=str(tmp_path / "study.journal"),
                 log=lambda *_: None)
    report = json.loads((tmp_path / "out" / "tune.json").read_text())
    assert report["states"] == {"FAIL": 3} and report["best"] is None


# "killed" waits out the heartbeat's grace period (5 s of wall time): slow; ctrl-c stays by default.
@pytest.mark.parametrize("how", [pytest.param("killed", marks=pytest.mark.slow), "ctrl-c"])
def test_a_cut_short_trial_runs_again_with_its_values_and_resumes(how, tiny, tmp_path, monkeypatch):
    out, logs = tmp_path / "out", []
    space = load_space(space_file(tmp_path))

    def cut(self):  # after the last checkpoint, before metrics.json
        raise SystemExit("killed") if how == "killed" else KeyboardInterrupt()

    with monkeypatch.context() as m:
        m.setattr(Trainer, "finish", cut)
        with pytest.raises(SystemExit if how == "killed" else KeyboardInterrupt):
            run_tune(tiny, space, 2, out, heartbeat_s=1, log=logs.append)
    # A killed process told the storage nothing: its trial still looks RUNNING until the
    # heartbeat is older than the grace period (two intervals).
    study = optuna.load_study(study_name="tune", storage=f"sqlite:///{out / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["RUNNING" if how == "killed" else "FAIL"]
    if how == "killed":
        # Well past the grace period (2 s): a loaded machine runs the last heartbeat late.
        time.sleep(5.0)

    report = run_tune(tiny, space, 2, out, heartbeat_s=1, log=logs.append)
    trials = report["trials"]
    assert [(t["number"], t["state"], t["retry_of"]) for t in trials] == \
        [(0, "FAIL", None), (1, "COMPLETE", 0), (2, "COMPLETE", None)]
    assert trials[1]["params"] == trials[0]["params"] and trials[1]["run_dirs"] == ["trials/0-s42"]
    assert ("trial 0 was interrupted" in "\n".join(logs)) == (how == "ctrl-c")
    run = out / "trials" / "0-s42"
    assert "resumed from" in (run / "train.log").read_text()
    assert trials[1]["value"] == json.loads((run / "metrics.json").read_text())["valid"]["auc"]


def test_a_journal_file_storage_holds_a_study_across_commands(tiny, tmp_path):
    space = load_space(space_file(tmp_path))
    journal = tmp_path / "study.journal"
    run_tune(tiny, space, 1, tmp_path / "out", storage=str(journal), log=lambda *_: None)
    report = run_tune(tiny, space, 2, tmp_path / "out", storage=str(journal), log=lambda *_: None)
    assert [t["state"] for t in report["trials"]] == ["COMPLETE"] * 2 and report["storage"] == str(journal)
    assert journal.is_file() and not (tmp_path / "out" / "study.db").exists()


def test_a_study_continues_only_with_its_own_space_config_and_folder(tiny, tmp_path, monkeypatch):
    _stand_in(monkeypatch, lambda cfg: {"auc": 0.5})
    out = tmp_path / "out"
    run_tune(tiny, load_space(space_file(tmp_path)), 1, out, log=lambda *_: None)
    wider = load_space(space_file(tmp_path, **{"model.dropout": {"float": [0.0, 0.9], "step": 0.1}}))
    with pytest.raises(SpaceError, match=r"another search space: model\.dropout\.float differ"):
        run_tune(tiny, wider, 2, out, log=lambda *_: None)
    with pytest.raises(SpaceError, match=r"another config.*train\.epochs differ"):
        run_tune(tiny, load_space(space_file(tmp_path)), 2, out, ["train.epochs=3"], log=lambda *_: None)
    # Another sampler seed continues the same study.
    reseeded = load_space(space_file(tmp_path, sampler={"name": "random", "seed": 1}))
    assert len(run_tune(tiny, reseeded, 2, out, log=lambda *_: None)["trials"]) == 2

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="notes.txt"):
        run_tune(tiny, load_space(space_file(tmp_path)), 1, foreign, log=lambda *_: None)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


def test_the_command_prints_the_trials_and_the_best_overrides(tiny, tmp_path):
    from rankmixer.cli import app

    space, out = space_file(tmp_path), tmp_path / "out"
    res = CliRunner().invoke(app, ["tune", "-c", str(tiny), "--space", str(space), "--trials", "2", "--out", str(out)],
                             terminal_width=200)
    assert res.exit_code == 0, res.output
    report = json.loads((out / "tune.json").read_text())
    assert f"best: trial {report['best']['number']}, valid auc {report['best']['value']:.5f}" in res.output
    assert "rankmixer train -c" in res.output and "COMPLETE" in res.output
    res = CliRunner().invoke(app, ["tune", "-c", str(tiny), "--space", str(space), "--trials", "2", "--out", str(out),
                                   "--print-best-overrides"])
    assert res.exit_code == 0 and res.output.splitlines() == report["best_overrides"]
    bad = space_file(tmp_path, objective={"metric": "auc", "split": "test"})
    res = CliRunner().invoke(app, ["tune", "-c", str(tiny), "--space", str(bad), "--trials", "1", "--out", str(out)],
                             terminal_width=200)
    assert res.exit_code == 2 and res.output.startswith("error:") and "validation split only" in res.output
