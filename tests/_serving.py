"""Shared material of test_export.py and test_serve.py, built once per test session.

Real data: MovieLens latest (small) prepared from ``../shared/data``, a RankMixer-tiny trained
for a few steps on it, the *canonical* rows of its test split (the raw feature values before
any vocabulary, as preparation saw them), and exported artifacts. Cached with functools so
both test files share one copy; removed at exit.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import polars as pl
import pytest

ROOT = Path(__file__).resolve().parents[1]
RAW = ROOT.parent / "shared" / "data" / "movielens-latest-small"
WORK = Path(tempfile.mkdtemp(prefix="rankmixer-serving-"))
atexit.register(shutil.rmtree, WORK, ignore_errors=True)


def need_raw() -> None:
    if not (RAW / "ratings.csv").exists():
        pytest.skip(f"MovieLens raw files not found at {RAW}")


def _train(model: str, run: str, steps: int, extra: list[str] = ()) -> Path:
    from rankmixer import experiment
    from rankmixer.config import load_config

    need_raw()
    cfg = load_config(ROOT / "configs" / "movielens_rankmixer_tiny.yaml", [
        f"data.raw={RAW}", f"data.prepared_dir={WORK / 'ml'}", f"run_dir={WORK / run}",
        f"model.name={model}", f"train.max_steps={steps}", "train.epochs=1", "train.tensorboard=false",
        "train.progress=false", "train.batch_size=512", "train.early_stopping=null", *extra,
    ])
    experiment.train(cfg, log=lambda m: None)
    return WORK / run


@functools.cache
def movielens_run() -> Path:
    """A RankMixer-tiny run on MovieLens (a few steps: parity needs trained-looking weights, not
    a good model)."""
    return _train("rankmixer-tiny", "run-tiny", 8)


@functools.cache
def moe_run() -> Path:
    return _train("rankmixer-tiny-moe", "run-moe", 4)


@functools.cache
def canonical_test_rows(n: int = 600) -> tuple[list[dict], "pl.DataFrame"]:
    """(first n canonical rows of the test split as request dicts, the prepared test rows they
    became). The canonical frame comes from the preprocessing code itself (read + preset
    transform); the time split is recomputed as preparation does and checked row by row."""
    from rankmixer.data.datasets.base import get_preset
    from rankmixer.data.feature_map import FeatureMap
    from rankmixer.data.prepare import _canonical

    movielens_run()
    preset = get_preset("movielens-latest")
    lf, _, _ = _canonical(preset.schema(), preset.raw_files(RAW), WORK / "canon", preset, RAW, "fail")
    canon = lf.collect()
    cut = canon.select(pl.col("timestamp").quantile(0.9, "lower")).item()
    test = canon.filter(pl.col("timestamp") >= cut)
    prepared = pl.read_parquet(FeatureMap.load(WORK / "ml").split_files("test"))
    assert test.height == prepared.height
    assert (test["timestamp"].to_numpy() == prepared["__ts"].to_numpy()).all()
    rows = test.head(n).drop("__file", "__row", "like", "timestamp").to_dicts()
    return rows, prepared.head(n)


@functools.cache
def artifact(fmt: str, run: str = "tiny") -> Path:
    from rankmixer.serve.export import export_run

    src = movielens_run() if run == "tiny" else moe_run()
    return export_run(src, fmt, WORK / f"art-{run}-{fmt}", log=lambda m: None)


def prepared_dir() -> Path:
    movielens_run()
    return WORK / "ml"


@functools.cache
def synthetic_run() -> tuple[Path, list[dict]]:
    """A RankMixer-tiny run on a small synthetic set (it has dense numerical features, which
    MovieLens lacks), and the canonical rows of its test file."""
    from rankmixer import experiment
    from rankmixer.config import load_config
    from rankmixer.data.datasets.base import RawFiles, get_preset
    from rankmixer.data.prepare import _canonical

    opts = {"rows_train": 3000, "rows_valid": 500, "rows_test": 500, "n_users": 300, "n_items": 400,
            "vocab_max": 1000, "n_categorical": 6, "n_dense": 4}
    cfg = load_config(None, [
        "data.dataset=synthetic", f"data.preset_options={opts}", f"data.prepared_dir={WORK / 'syn'}",
        f"run_dir={WORK / 'run-syn'}", "model.name=rankmixer-tiny", "train.max_steps=3", "train.batch_size=512",
        "train.tensorboard=false", "train.progress=false", "train.early_stopping=null",
    ])
    experiment.train(cfg, log=lambda m: None)
    preset = get_preset("synthetic", **opts)
    raw_dir = Path(f"{WORK / 'syn'}-raw")
    test_files = preset.raw_files(raw_dir).by_split["test"]
    lf, _, _ = _canonical(preset.schema(), RawFiles(all=test_files), WORK / "syn-canon", preset, raw_dir, "fail")
    rows = lf.collect().drop("__file", "__row", "click").to_dicts()
    return WORK / "run-syn", rows
