"""External distillation's jobs: the teacher log against an independent scoring of each day's
prepared rows by the snapshot that served it, the augmentation join against a hand-made case,
teacher columns through preparation, and their errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from rankmixer import experiment
from rankmixer.core.files import OutputError
from rankmixer.core.weights import load_weights
from rankmixer.data.datasets.base import RawFiles
from rankmixer.data.feature_map import FeatureMap
from rankmixer.data.loader import ParquetBatches, make_loader
from rankmixer.data.prepare import prepare
from rankmixer.data.reader import BadInputError
from rankmixer.data.schema import Schema
from rankmixer.distill.augment import augment
from rankmixer.distill.teacher_log import day_snapshots, log_teacher
from rankmixer.models import registry
from tests.factories import tiny_config

STREAM = ["data.preset_options.days=3", "data.preset_options.timestamps=true", "data.preset_options.rows_train=600",
          "train.max_steps=null", "train.epochs=1", "train.streaming={keep_day_weights: true}",
          "train.measured_auto=false"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    root = tmp_path_factory.mktemp("teacher")
    cfg = tiny_config(root, "teacher", *STREAM)
    experiment.train(cfg, log=lambda *_: None)
    raw = experiment.data_source(cfg.data).raw.by_split
    return cfg, raw


def _probs_of_prepared_day(cfg, snapshot: Path, day: int) -> np.ndarray:
    fm = FeatureMap.load(Path(cfg.data.prepared_path()) / "feature_map.json")
    model = registry.build_model(cfg.model_name, fm, cfg.model_params)
    load_weights(snapshot, model)
    model.eval()
    with torch.no_grad():
        return np.concatenate([torch.sigmoid(model(b).logits[:, 0].float()).numpy()
                               for b in make_loader(ParquetBatches(fm, "train", 64, day=day))])


@pytest.mark.parametrize("staleness", [0, 1])
def test_each_row_is_scored_by_the_snapshot_that_served_it(teacher, tmp_path, staleness):
    cfg, raw = teacher
    run = cfg.resolved_run_dir()
    snaps = day_snapshots(run)
    assert sorted(snaps) == [0, 1, 2]
    out = tmp_path / "log.parquet"
    rep = log_teacher(run, raw["train"], out, staleness=staleness, log=lambda *_: None)
    logged = pl.read_parquet(out)
    rows = pl.read_parquet(raw["train"])
    day = rows["ts"] // 86_400
    served = [d for d in range(3) if d - 1 - staleness >= 0]
    assert rep["rows"] == rows.height and rep["logged"] == sum(int((day == d).sum()) for d in served)
    assert sorted(logged["day"].unique().to_list()) == served
    assert (logged["teacher_day"] == logged["day"] - 1 - staleness).all()
    for d in served:  # the raw rows re-encoded by predict's path vs the prepared rows, same snapshot
        ours = np.sort(logged.filter(pl.col("day") == d)["click_prob"].to_numpy())
        ref = np.sort(_probs_of_prepared_day(cfg, snaps[d - 1 - staleness], d))
        np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(OutputError, match="pass --overwrite"):
        log_teacher(run, raw["train"], out, staleness=staleness, log=lambda *_: None)
    with pytest.raises(OutputError):
        log_teacher(run, raw["train"], raw["train"][0].with_suffix(".parquet"), log=lambda *_: None)


def test_log_teacher_needs_day_snapshots(tmp_path):
    cfg = tiny_config(tmp_path, "plain")
    experiment.train(cfg, log=lambda *_: None)
    raw = experiment.data_source(cfg.data).raw.by_split
    with pytest.raises(ValueError, match="not trained on data prepared by day"):
        log_teacher(cfg.resolved_run_dir(), raw["train"], tmp_path / "log.parquet", log=lambda *_: None)


def _hand_made(tmp_path: Path) -> tuple[Path, Path]:
    rows = tmp_path / "rows.parquet"
    pl.DataFrame({"request_id": [5, 3, 9, 1], "x": ["a", "b", "c", "d"]}).write_parquet(rows)
    log = tmp_path / "log.parquet"
    pl.DataFrame({"request_id": [1, 5, 7], "click_prob": [0.25, 0.5, 0.9], "day": [1, 1, 1]}).write_parquet(log)
    return rows, log


def test_augment_is_a_left_join_in_row_order(tmp_path):
    rows, log = _hand_made(tmp_path)
    rep = augment([rows], log, tmp_path / "out.parquet")
    out = pl.read_parquet(tmp_path / "out.parquet")
    assert out["request_id"].to_list() == [5, 3, 9, 1] and out["x"].to_list() == ["a", "b", "c", "d"]
    assert out["teacher_click"].to_list() == [0.5, None, None, 0.25]
    assert rep["with_teacher"] == 2 and rep["without_teacher"] == 2 and rep["teacher_columns"] == {"click": "teacher_click"}
    with pytest.raises(OutputError, match="pass --overwrite"):
        augment([rows], log, tmp_path / "out.parquet")
    augment([rows], log, tmp_path / "out.parquet", overwrite=True)
    with pytest.raises(OutputError, match="is also an input"):
        augment([rows], log, rows)  # never over an input


def test_augment_refuses_bad_logs_and_foreign_outputs(tmp_path):
    rows, _ = _hand_made(tmp_path)
    dup = tmp_path / "dup.parquet"
    pl.DataFrame({"request_id": [1, 1], "click_prob": [0.2, 0.3]}).write_parquet(dup)
    with pytest.raises(BadInputError, match="request_id=1 is logged more than once"):
        augment([rows], dup, tmp_path / "o1.parquet")
    bad = tmp_path / "bad.parquet"
    pl.DataFrame({"request_id": [1], "click_prob": [1.5]}).write_parquet(bad)
    with pytest.raises(BadInputError, match="outside \\[0, 1\\]"):
        augment([rows], bad, tmp_path / "o2.parquet")
    keyless = tmp_path / "keyless.parquet"
    pl.DataFrame({"x": ["a"]}).write_parquet(keyless)
    with pytest.raises(BadInputError, match="no column 'request_id'"):
        augment([keyless], tmp_path / "log.parquet", tmp_path / "o3.parquet")
    foreign = tmp_path / "foreign.parquet"
    pl.DataFrame({"y": [1]}).write_parquet(foreign)
    with pytest.raises(OutputError, match="not written by rankmixer as a 'augmented rows'"):
        augment([rows], tmp_path / "log.parquet", foreign)


def _schema() -> Schema:
    return Schema.model_validate({
        "name": "t", "source": {"format": "csv", "columns": [
            {"name": "click", "type": "int", "required": True}, {"name": "u", "type": "str"},
            {"name": "teacher_click", "type": "float"}]},
        "labels": [{"name": "click"}], "features": [{"name": "u", "type": "categorical"}],
        "teacher_columns": {"click": "teacher_click"}, "split": {"method": "files"}})


def test_teacher_columns_reach_the_batch_with_nan_where_missing(tmp_path):
    raw = tmp_path / "rows.csv"
    raw.write_text("click,u,teacher_click\n1,a,0.9\n0,b,\n1,a,0.4\n0,c,\n")
    fm = prepare(_schema(), RawFiles(by_split={s: [raw] for s in ("train", "valid", "test")}), tmp_path / "p",
                 log=lambda *_: None)
    assert fm.teacher_labels == ["click"] and fm.report["teacher_missing"]["train"] == {"click": 2}
    batch = next(iter(make_loader(ParquetBatches(fm, "train", 8))))
    t = batch.teacher[:, 0].numpy()
    np.testing.assert_allclose(t[[0, 2]], [0.9, 0.4], rtol=1e-6)
    assert np.isnan(t[[1, 3]]).all()
    bad = tmp_path / "bad.csv"
    bad.write_text("click,u,teacher_click\n1,a,1.2\n0,b,0.1\n")
    with pytest.raises(BadInputError, match="bad.csv: line/row 2: teacher predictions .* not probabilities"):
        prepare(_schema(), RawFiles(by_split={s: [bad] for s in ("train", "valid", "test")}), tmp_path / "q",
                log=lambda *_: None)
    with pytest.raises(ValueError, match="teacher_columns: \\['buy'\\] are not labels"):
        Schema.model_validate({**_schema().model_dump(), "teacher_columns": {"buy": "teacher_click"}})
