"""A training run's saved test predictions, positives and pooled metrics, against the prepared
split files read directly and against ``rankmixer predict`` of the same rows."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from rankmixer import experiment
from rankmixer.core.predictions import load_predictions, save_predictions
from rankmixer.data.feature_map import GROUP_COLUMN, FeatureMap
from tests.factories import tiny_config


def _split(fm: FeatureMap, split: str, cols: list[str]) -> dict[str, np.ndarray]:
    """Columns of a prepared split, its files read in order."""
    tables = [pq.read_table(fm.root / f, columns=cols) for f in fm.splits[split].files]
    return {c: np.concatenate([t.column(c).to_numpy() for t in tables]) for c in cols}


def _predicted(run, fm: FeatureMap, split: str, tmp) -> np.ndarray:
    """Probabilities of the split's rows in file order, through ``predict`` (one file at a time)."""
    probs = []
    for i, f in enumerate(fm.splits[split].files):
        out = tmp / f"{split}{i}.parquet"
        experiment.predict(run, fm.root / f, out)
        t = pq.read_table(out)
        probs.append(np.stack([t.column(f"{task}_prob").to_numpy() for task in fm.labels], axis=1))
    return np.concatenate(probs)


def test_run_saves_test_predictions_positives_and_pooled_metrics(tmp_path):
    logs: list[str] = []
    cfg = tiny_config(tmp_path, "run", "train.eval_batch_size=64")  # several eval batches
    result = experiment.train(cfg, log=logs.append)
    run = tmp_path / "run"
    fm = FeatureMap.load(tmp_path / "prep")
    assert fm.has_group

    saved = load_predictions(run / "test_predictions.npz")
    test = _split(fm, "test", [*fm.labels, GROUP_COLUMN])
    labels = np.stack([test[t] for t in fm.labels], axis=1)
    np.testing.assert_array_equal(saved.labels, labels)  # the split's own order
    np.testing.assert_array_equal(saved.group, test[GROUP_COLUMN])
    assert saved.labels.dtype == saved.probs.dtype == np.float32 and saved.group.dtype == np.int64
    np.testing.assert_allclose(saved.probs, _predicted(run, fm, "test", tmp_path), atol=1e-6)

    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["auc"] == pytest.approx(roc_auc_score(labels[:, 0], saved.probs[:, 0]), abs=1e-9)
    assert metrics["positives"]["test"] == {t: int(test[t].sum()) for t in fm.labels}
    valid = _split(fm, "valid", list(fm.labels))
    assert metrics["positives"]["valid"] == {t: int(valid[t].sum()) for t in fm.labels}
    # 200 test rows: far under 500 positives, so the run says so.
    assert any(m.startswith("warning: the test split has") for m in logs)

    pooled_y = np.concatenate([np.stack([valid[t] for t in fm.labels], axis=1), labels])
    pooled_p = np.concatenate([_predicted(run, fm, "valid", tmp_path), saved.probs])
    assert metrics["pooled"]["auc"] == pytest.approx(roc_auc_score(pooled_y[:, 0], pooled_p[:, 0]), abs=1e-6)
    assert result["pooled"] == metrics["pooled"]


def test_prediction_archive_round_trip_and_bad_files(tmp_path):
    y = np.array([1, 0, 1], dtype=np.float64)
    save_predictions(tmp_path / "a.npz", y, [0.9, 0.2, 0.4])
    back = load_predictions(tmp_path / "a.npz")
    assert back.labels.shape == (3, 1) and back.labels.dtype == np.float32 and back.group is None
    np.testing.assert_array_equal(back.probs[:, 0], np.float32([0.9, 0.2, 0.4]))
    with pytest.raises(ValueError, match="differ"):
        save_predictions(tmp_path / "b.npz", y, [0.5, 0.5])
    np.savez(tmp_path / "c.npz", labels=y)
    with pytest.raises(ValueError, match="no probs"):
        load_predictions(tmp_path / "c.npz")
