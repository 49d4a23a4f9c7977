"""The trainer and the CLI end to end: configs, kill-and-resume, evaluate, predict, real data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from sklearn.metrics import log_loss, roc_auc_score
from typer.testing import CliRunner

from rankmixer.cli import app
from rankmixer.config import ConfigError, load_config

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SMALL_SYNTHETIC = {"rows_train": 6000, "rows_valid": 1500, "rows_test": 1500, "n_users": 300, "n_items": 400,
                   "vocab_max": 500, "n_tags": 50, "seq_len": 8}


def _config(tmp: Path, data: dict | None = None, **train) -> Path:
    cfg = {
        "seed": 7,
        "run_dir": str(tmp / "run"),
        "data": data or {"dataset": "synthetic", "preset_options": SMALL_SYNTHETIC,
                         "prepared_dir": str(tmp.parent / "prepared_small")},
        "model": {"name": "dcnv2", "embedding_dim": 8, "dnn_hidden": [64, 64], "dropout": 0.1},
        "train": {"epochs": 2, "batch_size": 64, "eval_batch_size": 1024, "checkpoint_every_steps": 20,
                  "log_every_steps": 10, "threads": 1, "progress": False, "tensorboard": False,
                  "sparse_gradients": True, **train},
    }
    path = tmp / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "rankmixer", *args], cwd=cwd, env=env, capture_output=True, text=True)


# ---- config -----------------------------------------------------------------------------------
def test_config_typos_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.bach_size"):
        load_config(None, ["train.bach_size=3"])
    with pytest.raises(ConfigError, match="dnn_hiden"):
        load_config(None, ["model.name=dcnv2", "model.dnn_hiden=[3]"])
    with pytest.raises(ConfigError, match="unknown model 'dcn3'"):
        load_config(None, ["model.name=dcn3"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.epochs"])
    cfg = load_config(None, ["train.epochs=3", "model.name=deepfm", "model.dnn_hidden=[8, 4]"])
    assert cfg.train.epochs == 3 and cfg.model_params == {"dnn_hidden": [8, 4]}


def test_cli_reports_config_error_without_traceback(tmp_path):
    path = _config(tmp_path)
    r = _cli("train", "-c", str(path), "train.learning_rate=1", cwd=tmp_path)
    assert r.returncode == 2 and "train.learning_rate" in r.stdout + r.stderr and "Traceback" not in r.stderr


# ---- kill and resume --------------------------------------------------------------------------
def _stream_config(tmp: Path) -> Path:
    """Streaming over 3 days of the small synthetic set (progressive validation each day)."""
    data = {"dataset": "synthetic", "preset_options": {**SMALL_SYNTHETIC, "days": 3, "drift": 0.3, "timestamps": True},
            "prepared_dir": str(tmp.parent / "prepared_stream")}
    return _config(tmp, data, epochs=1, early_stopping=None, streaming={})


# Slow: ~20 s each (three CLI trainings); by default tests/train/test_checkpoint.py::test_resume_is_bit_identical
# and tests/train/test_streaming.py (checkpoints removed after a step inside a day) cover resume.
@pytest.mark.slow
@pytest.mark.parametrize("make_config", [_config, _stream_config], ids=["epochs", "streaming"])
def test_kill_mid_run_then_resume_gives_same_final_metrics(tmp_path, make_config):
    ref_dir, killed_dir = tmp_path / "ref", tmp_path / "killed"
    ref_dir.mkdir(), killed_dir.mkdir()
    r = _cli("train", "-c", str(make_config(ref_dir)), cwd=ref_dir)
    assert r.returncode == 0, r.stderr[-3000:]
    reference = json.loads((ref_dir / "run" / "metrics.json").read_text())

    cfg = make_config(killed_dir)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "rankmixer", "train", "-c", str(cfg)], cwd=killed_dir, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpts = killed_dir / "run" / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if ckpts.exists() and any(p.name.startswith("step_") for p in ckpts.iterdir()):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed"
    assert not (killed_dir / "run" / "metrics.json").exists()

    r = _cli("train", "-c", str(cfg), "--resume", cwd=killed_dir)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from" in r.stdout
    resumed = json.loads((killed_dir / "run" / "metrics.json").read_text())
    assert resumed["steps"] == reference["steps"] and resumed["best_step"] == reference["best_step"]
    for split in ("valid", "test"):
        for key in ("auc", "logloss", "gauc"):
            assert resumed[split][key] == pytest.approx(reference[split][key], abs=1e-9), (split, key)
    assert resumed.get("streaming") == reference.get("streaming")  # the same days, scored the same


@pytest.mark.slow  # ~11 s; tests/faults/ check corrupted checkpoints by default
def test_resume_from_corrupted_checkpoint_fails_clearly(tmp_path):
    cfg = _config(tmp_path, max_steps=20, epochs=1)
    assert _cli("train", "-c", str(cfg), cwd=tmp_path).returncode == 0
    step = sorted((tmp_path / "run" / "checkpoints").glob("step_*"))[-1]
    blob = step / "model.safetensors"
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    r = _cli("train", "-c", str(cfg), "--resume", cwd=tmp_path)
    assert r.returncode != 0
    assert "model.safetensors" in r.stdout + r.stderr


# ---- quickstart, evaluate, predict ------------------------------------------------------------
def test_quickstart_evaluate_predict(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    r = runner.invoke(app, ["quickstart", "--rows", "4000", "--epochs", "1", "--model", "deepfm", "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert "Bayes AUC" in r.output and "valid" in r.output
    metrics = json.loads((tmp_path / "runs/quickstart/metrics.json").read_text())
    assert 0.0 < metrics["bayes"]["test"]["auc"] <= 1.0

    r = runner.invoke(app, ["evaluate", "--run", "runs/quickstart", "--split", "test"])
    assert r.exit_code == 0, r.output
    evaluated = json.loads(r.output.strip().splitlines()[-1])["test"]
    assert evaluated["auc"] == pytest.approx(metrics["test"]["auc"], abs=1e-9)

    test_file = sorted((tmp_path / "data_cache/synthetic-4000/test").glob("*.parquet"))[0]
    r = runner.invoke(app, ["predict", "--run", "runs/quickstart", "--input", str(test_file), "--output", "scores.csv"])
    assert r.exit_code == 0, r.output
    scores = pl.read_csv(tmp_path / "scores.csv")
    # The tool's metrics agree with scikit-learn on the tool's own predictions.
    y, p = scores["click"].to_numpy(), scores["click_prob"].to_numpy()
    assert scores.height == 1000  # rows_test of a 4000-row quickstart
    assert roc_auc_score(y, p) == pytest.approx(evaluated["auc"], abs=1e-6)
    assert log_loss(y, np.clip(p, 1e-7, 1 - 1e-7)) == pytest.approx(evaluated["logloss"], abs=1e-5)

    # Raw rows (the generator's own file, strings and all) encode with the training vocabularies
    # to exactly the prepared rows: same scores, row for row.
    raw_test = tmp_path / "data_cache/synthetic-4000-raw/test.parquet"
    r = runner.invoke(app, ["predict", "--run", "runs/quickstart", "--input", str(raw_test), "--output", "raw.parquet"])
    assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(pl.read_parquet(tmp_path / "raw.parquet")["click_prob"].to_numpy(), p.astype(np.float32))


# ---- real data ----------------------------------------------------------------------------------
@pytest.mark.slow  # a full MovieLens training; learning is covered by the planted-problem tests
@pytest.mark.skipif(not (SHARED / "movielens-latest-small").exists(), reason="../shared/data/movielens-latest-small absent")
def test_movielens_dcnv2_learns(tmp_path):
    r = _cli("train", "-c", "movielens_dcnv2", f"data.raw={SHARED / 'movielens-latest-small'}",
             f"data.prepared_dir={tmp_path / 'prep'}", f"run_dir={tmp_path / 'run'}", "train.epochs=1",
             "train.progress=false", "train.tensorboard=false", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    # A like/dislike task on a time split: far above chance after one epoch (0.5 = chance).
    assert m["test"]["auc"] > 0.6 and m["test"]["gauc"] > 0.55


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_train_on_cuda_counts_flops_and_scores(tmp_path):
    """A run on CUDA end to end: training, the FLOP count on the trained model (its batch must
    reach the model's device) and the test metrics."""
    from rankmixer import experiment
    from tests.factories import tiny_config

    cfg = tiny_config(tmp_path, "run", "train.device=cuda")
    result = experiment.train(cfg, log=lambda m: None)
    assert result["flops_per_sample"] > 0
    assert 0.0 <= result["test"]["auc"] <= 1.0
