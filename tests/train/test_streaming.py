"""Streaming training (train.streaming): progressive validation against an independent scoring
of each day by the previous day's model (scikit-learn metrics), exact resume inside a day, and
the day plan's errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss, roc_auc_score

from rankmixer import experiment
from rankmixer.config import ConfigError
from rankmixer.core.weights import load_weights
from rankmixer.data.feature_map import DayInfo, FeatureMap
from rankmixer.data.loader import ParquetBatches, make_loader
from rankmixer.models import registry
from rankmixer.train.config import StreamingConfig
from rankmixer.train.streaming import stream_days
from rankmixer.train.trainer import seed_everything
from tests.factories import tiny_config

# 3 days of 400 rows in batches of 64: 7 steps a day; checkpoints every 2 steps, all kept.
STREAM = ["data.preset_options.days=3", "data.preset_options.drift=0.5", "data.preset_options.timestamps=true",
          "data.preset_options.rows_train=1200", "train.max_steps=null", "train.epochs=1", "train.streaming={}",
          "train.keep_checkpoints=50", "train.measured_auto=false"]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("streaming")


@pytest.fixture(scope="module")
def streamed(root):
    cfg = tiny_config(root, "stream", *STREAM, "train.streaming={keep_day_weights: true}")
    return cfg, experiment.train(cfg, log=lambda *_: None)


def _scores(model, fm: FeatureMap, day: int) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    ys, ps = [], []
    with torch.no_grad():
        for batch in make_loader(ParquetBatches(fm, "train", 97, day=day)):
            ys.append(batch.labels[:, 0].numpy())
            ps.append(torch.sigmoid(model(batch).logits[:, 0].float()).numpy())  # float32, as served
    return np.concatenate(ys), np.concatenate(ps)


def test_each_day_is_scored_by_the_model_of_the_days_before(streamed, root):
    cfg, result = streamed
    fm = FeatureMap.load(Path(cfg.data.prepared_path()) / "feature_map.json")
    records = result["streaming"]["days"]
    assert [r["day"] for r in records] == [0, 1, 2] and [r["rows"] for r in records] == [400, 400, 400]
    for rec in records:
        seed_everything(cfg.seed)  # day 0: the freshly initialised model, as train() builds it
        model = registry.build_model(cfg.model_name, fm, cfg.model_params)
        if rec["day"] > 0:
            load_weights(root / "stream" / "day_weights" / f"day-{rec['day'] - 1}.safetensors", model)
        y, p = _scores(model, fm, rec["day"])
        assert rec["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-6)
        assert rec["logloss"] == pytest.approx(log_loss(y, p), abs=1e-5)
    mean = result["streaming"]["mean"]
    assert mean["auc"] == pytest.approx(np.mean([r["auc"] for r in records]), abs=1e-12)
    assert result["streaming"]["mean_after_first"]["logloss"] == pytest.approx(
        np.mean([r["logloss"] for r in records[1:]]), abs=1e-12)
    # The result is the model after the last day, not a best-on-valid one.
    last = registry.build_model(cfg.model_name, fm, cfg.model_params)
    load_weights(root / "stream" / "day_weights" / "day-2.safetensors", last)
    final = registry.build_model(cfg.model_name, fm, cfg.model_params)
    load_weights(root / "stream" / "best.safetensors", final)
    for (n, a), (_, b) in zip(last.state_dict().items(), final.state_dict().items()):
        assert torch.equal(a, b), n
    assert result["steps"] == 3 * 7 and result["best_step"] == 21


def test_a_run_killed_inside_a_day_resumes_to_the_same_days(root):
    reference = experiment.train(tiny_config(root, "resume", *STREAM), log=lambda *_: None)
    run = root / "resume"
    (run / "metrics.json").unlink()
    for ckpt in (run / "checkpoints").glob("step_*"):
        if int(ckpt.name.split("_")[1]) > 10:  # killed after step 10: inside day 1 (steps 8..14)
            shutil.rmtree(ckpt)
    said: list[str] = []
    resumed = experiment.train(tiny_config(root, "resume", *STREAM), resume=True, log=said.append)
    assert any("resumed from" in m and "step_00000010" in m for m in said)
    assert not any("day 1 " in m and "before training" in m for m in said)  # day 1 was scored before the kill
    assert resumed["streaming"] == reference["streaming"]
    for split in ("valid", "test"):
        assert resumed[split]["auc"] == reference[split]["auc"]
        assert resumed[split]["logloss"] == reference[split]["logloss"]


def _fm(days: list[int]) -> FeatureMap:
    return FeatureMap(dataset="toy", schema_hash="", labels=["click"], features=[],
                      days=[DayInfo(day=d, files=[], rows=10, label_means=[0.1]) for d in days])


def test_day_plan_names_missing_days_or_skips_them():
    with pytest.raises(ValueError, match=r"day\(s\) 2, 4 between 0 and 5 have no training rows"):
        stream_days(_fm([0, 1, 3, 5]), StreamingConfig())
    days, skipped = stream_days(_fm([0, 1, 3, 5]), StreamingConfig(missing_days="skip"))
    assert [d.day for d in days] == [0, 1, 3, 5] and skipped == [2, 4]
    with pytest.raises(ValueError, match="day\\(s\\) 4"):
        stream_days(_fm([0, 1, 3, 5]), StreamingConfig(first_day=3))
    days, skipped = stream_days(_fm([0, 1, 3, 5]), StreamingConfig(first_day=0, last_day=1))
    assert [d.day for d in days] == [0, 1] and skipped == []
    with pytest.raises(ValueError, match="none of which is prepared"):
        stream_days(_fm([0, 1]), StreamingConfig(first_day=4))
    with pytest.raises(ValueError, match="no day partitions"):
        stream_days(_fm([]), StreamingConfig())
    with pytest.raises(ValueError, match="last_day 1 is before first_day 3"):
        StreamingConfig(first_day=3, last_day=1)


def test_streaming_config_errors(root):
    with pytest.raises(ConfigError, match="train.epochs must be 1"):
        tiny_config(root, "bad", "train.streaming={}", "train.epochs=3")
    cfg = tiny_config(root, "plain-data", "train.streaming={}", "train.epochs=1")
    with pytest.raises(ValueError, match="needs the training split prepared by day"):
        experiment.train(cfg, log=lambda *_: None)


def test_train_day_trains_every_epoch_on_that_day_alone(root):
    """``train.day``: every pass reads one day's partition (400 of the 1200 rows: 7 steps of 64
    a pass, not 19)."""
    plain = [o for o in STREAM if not o.startswith("train.streaming")]
    one = tiny_config(root, "day-1", *plain, "train.day=1", "train.epochs=2")
    result = experiment.train(one, log=lambda *_: None)  # prepares the 3 days (the folder is shared)
    fm = FeatureMap.load(Path(one.data.prepared_path()) / "feature_map.json")
    assert fm.day(1).rows == 400 and fm.splits["train"].rows == 1200
    assert result["steps"] == 2 * 7
    with pytest.raises(ValueError, match=r"train.day: day 5 is not in the prepared training split; it has days 0 .. 2"):
        experiment.train(tiny_config(root, "day-5", *plain, "train.day=5"), log=lambda *_: None)
    with pytest.raises(ConfigError, match="give one of them"):
        tiny_config(root, "both", *STREAM, "train.day=1")
    with pytest.raises(ValueError, match="no day partitions"):
        experiment.train(tiny_config(root, "no-days", "train.day=0"), log=lambda *_: None)
