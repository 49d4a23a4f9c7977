"""DistDNAS end to end on the tiny synthetic set over days: one supernet run per day on that day's
shard, the weights aggregated (checked against each run's saved alpha, softmaxed here in
float64), the derived architecture retrained, a second call reading the finished days, and the
refusals (data without days, a model override, an output that is someone else's folder)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.numpy import load_file
from typer.testing import CliRunner

from rankmixer import experiment
from rankmixer.cli import app
from rankmixer.config import ConfigError, load_config
from rankmixer.core.files import OutputError
from rankmixer.data.feature_map import FeatureMap
from rankmixer.models.supernet import SupernetConfig, selection
from rankmixer.search.distdnas import run_distdnas
from rankmixer.search.space import parse_architecture_space
from rankmixer.tune.space import SpaceError, format_override
from tests.factories import tiny_config_file

SPACE = {
    "model": {"embedding_dim": 4},
    "blocks": {"int": [1, 2]},
    "types": {"mlp": {"width": {"int": [4, 16]}}, "cross": {"depth": {"int": [1, 2]}}, "fm": {}, "dot": {}},
    "supernet": {"choice_blocks": 2, "set_size": 3, "cost_weight": 0.5, "arch_lr_multiplier": 100.0},
}


def days_config(folder: Path, days: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = tiny_config_file(folder)
    cfg = yaml.safe_load(path.read_text())
    cfg["data"]["preset_options"].update(days=days, drift=0.5)
    path.write_text(yaml.safe_dump(cfg))
    return path


def space_file(folder: Path, **changes) -> Path:
    path = folder / "space.yaml"
    path.write_text(yaml.safe_dump({**SPACE, **changes}))
    return path


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_one_search_per_day_aggregated_and_derived(tmp_path):
    config, out = days_config(tmp_path), tmp_path / "out"
    report = run_distdnas(config, space_file(tmp_path), out, log=lambda *_: None)
    assert [d["day"] for d in report["days"]] == [0, 1]
    per_day = []
    for d in report["days"]:
        run = Path(d["run_dir"])
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        assert cfg["data"]["preset_options"]["train_day"] == d["day"] and cfg["model"]["name"] == "supernet"
        assert Path(cfg["data"]["prepared_dir"]).parent == out / "data"
        stored = load_file(str(run / "best.safetensors"))["alpha_stored"].astype(np.float64)
        w = softmax(100.0 * stored)
        w[1, -1] = 0.0  # zero is unavailable in the last block
        w[1] /= w[1].sum()
        per_day.append(w)
        assert np.allclose(d["weights"], w, atol=1e-6)
    mean = np.mean(per_day, axis=0)
    assert np.allclose(report["weights"], mean, atol=1e-6)
    net = SupernetConfig.model_validate({k: v for k, v in report["context"]["supernet"].items() if k != "name"})
    assert report["kept"] == selection(net, mean)
    derived = report["derived"]["model"]
    assert json.loads((out / "distdnas.json").read_text())["derived"]["model"] == derived
    # the derived architecture trains from scratch on the whole data (all days)
    cfg = load_config(config, [format_override("model", derived), f"run_dir={tmp_path / 'retrain'}"])
    assert experiment.train(cfg, log=lambda *_: None)["test"]["auc"] > 0

    # a second call finds every day searched and gives the same report
    again = run_distdnas(config, space_file(tmp_path), out, log=lambda *_: None)
    assert again["weights"] == report["weights"]
    assert again["context"]["search_seconds"] - report["context"]["search_seconds"] < 5  # nothing trained again


def test_data_prepared_by_day_is_searched_one_partition_per_day(tmp_path):
    """Data whose training split is prepared by day (here the synthetic set with timestamps;
    Taobao's ``days: true`` on real data): one prepared folder, each day's supernet run reading
    its own partition (``train.day``) for the set number of passes."""
    config = days_config(tmp_path, days=3)
    cfg = yaml.safe_load(config.read_text())
    cfg["data"]["preset_options"].update(timestamps=True, rows_train=600)
    cfg["train"].update(max_steps=None, batch_size=64)
    config.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    report = run_distdnas(config, space_file(tmp_path), out, epochs=2, log=lambda *_: None)
    fm = FeatureMap.load(Path(cfg["data"]["prepared_dir"]) / "feature_map.json")
    assert [d.rows for d in fm.days] == [200, 200, 200]
    assert [d["day"] for d in report["days"]] == report["context"]["day_ids"] == [0, 1, 2]
    for d in report["days"]:
        run = Path(d["run_dir"])
        saved = yaml.safe_load((run / "config.yaml").read_text())
        assert saved["train"]["day"] == d["day"] and saved["data"]["prepared_dir"] == cfg["data"]["prepared_dir"]
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["steps"] == d["steps"] == 2 * 4  # 2 passes of 200 rows in 64s
        assert d["best_step"] == metrics["best_step"] and d["best_step"] in (4, 8)  # read at a pass's end
    assert not (out / "data").exists()  # no per-day data of its own


def test_distdnas_needs_days_and_its_own_folder(tmp_path):
    plain = tiny_config_file(tmp_path)  # the synthetic set of one day
    with pytest.raises(ConfigError, match="several days"):
        run_distdnas(plain, space_file(tmp_path), tmp_path / "a", log=lambda *_: None)
    config = days_config(tmp_path / "d")
    with pytest.raises(ConfigError, match="sets the model"):
        run_distdnas(config, space_file(tmp_path), tmp_path / "b", ["model.embedding_dim=8"], log=lambda *_: None)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="did not write"):
        run_distdnas(config, space_file(tmp_path), foreign, log=lambda *_: None)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_the_command_prints_the_weights_and_the_derived_model(tmp_path):
    config, out = days_config(tmp_path), tmp_path / "out"
    result = CliRunner().invoke(app, ["search", "-c", str(config), "--space", str(space_file(tmp_path)),
                                      "--strategy", "distdnas", "--out", str(out), "--cost-weight", "0"])
    assert result.exit_code == 0, result.output
    assert "| candidate | block 0 | block 1 |" in result.output and "derived: c" in result.output
    assert json.loads((out / "distdnas.json").read_text())["context"]["supernet"]["cost_weight"] == 0
    no_budget = CliRunner().invoke(app, ["search", "-c", str(config), "--strategy", "tpe", "--out", str(tmp_path / "t")])
    assert no_budget.exit_code != 0 and "--budget" in no_budget.output


@pytest.mark.parametrize("supernet, message", [
    ({"candidates": {"mlp": [{"width": 64}]}}, r"candidates.mlp\[0\].width: 64 lies outside"),
    ({"candidates": {"attention": [{}]}}, "not a type of this space"),
    ({"candidates": {"mlp": [{"depth": 1}]}}, "draw no depth"),
    ({"candidates": {"mlp": [{}]}}, "needs width"),
    ({"choice_blocks": 0}, "choice_blocks"),
    ({"cost": 1}, "unknown key"),
])
def test_bad_supernet_sections_are_named(supernet, message):
    with pytest.raises(SpaceError, match=message):
        parse_architecture_space({**SPACE, "supernet": supernet})


def test_default_candidates_are_each_type_at_its_bounds():
    space = parse_architecture_space({**SPACE, "supernet": {}})
    assert space.supernet["candidates"] == [
        {"type": "mlp", "width": 4}, {"type": "mlp", "width": 16}, {"type": "cross", "depth": 1},
        {"type": "cross", "depth": 2}, {"type": "fm"}, {"type": "dot"}, {"type": "zero"}]
    assert parse_architecture_space({**SPACE, "supernet": {"zero": False}}).supernet["candidates"][-1] == {"type": "dot"}
