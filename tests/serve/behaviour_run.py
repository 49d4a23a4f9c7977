"""A tiny DIN trained on the synthetic behaviour set, its artifacts, its raw test rows as
requests and the offline model's scores of them: what the behaviour serving and load-generator
tests share (built once per test session, under the session's temporary WORK folder)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import polars as pl

from tests.factories import WORK

# Histories up to 12 behaviours, of which the model keeps the last 8: raw rows longer than
# max_len reach the server, as the "keep the most recent positions" needs.
OPTIONS = {"rows_train": 300, "rows_valid": 100, "rows_test": 100, "n_users": 50, "n_items": 120,
           "n_categories": 8, "seq_len_max": 12, "hist_max_len": 8, "return_period": 6, "attention_window": 4}
MAX_LEN = OPTIONS["hist_max_len"]
FIELDS = ("item", "cat", "type", "dt")
HIST = [f"hist_{f}" for f in FIELDS]
ROOT = WORK / "din"


@functools.cache
def din_run() -> Path:
    from rankmixer import experiment
    from rankmixer.config import load_config

    cfg = load_config("behaviour_din", [
        f"data.preset_options={json.dumps(OPTIONS)}", f"data.prepared_dir={ROOT / 'prep'}",
        f"run_dir={ROOT / 'run'}", "model.embedding_dim=4", "model.attention_hidden=[8]",
        "model.dnn_hidden=[16]", "train.max_steps=3", "train.batch_size=64", "train.tensorboard=false",
        "train.progress=false", "train.early_stopping=null", "train.threads=1",
    ])
    experiment.train(cfg, log=lambda m: None)
    return ROOT / "run"


def prepared() -> Path:
    din_run()
    return ROOT / "prep"


@functools.cache
def din_artifact(fmt: str) -> Path:
    from rankmixer.serve.export import export_run

    return export_run(din_run(), fmt, ROOT / f"art-{fmt}", log=lambda m: None)


@functools.cache
def raw_test_rows() -> tuple[dict, ...]:
    """The raw test file's rows as a client sends them: categories as strings, each history
    field an array (oldest first, the full raw length), gaps as integers, an empty history as []."""
    din_run()
    out = []
    for r in pl.read_parquet(ROOT / "prep-raw" / "test.parquet").to_dicts():
        row = {k: r[k] for k in ("user", "item", "cat")}
        for f, c in zip(FIELDS, HIST):
            values = r[c].split("|") if r[c] else []
            row[c] = [int(v) for v in values] if f == "dt" else values
        out.append(row)
    return tuple(out)


@functools.cache
def offline_scores() -> np.ndarray:
    """The run's PyTorch model (eval mode) on the prepared test split, through the training
    loader: the reference every served score is compared with. Same row order as the raw file."""
    import torch

    from rankmixer.data.loader import ParquetBatches, make_loader
    from rankmixer.runs import load_run

    loaded = load_run(din_run())
    batch = next(iter(make_loader(ParquetBatches(loaded.feature_map, "test", 10_000, shuffle=False))))
    assert batch.labels.shape[0] == len(raw_test_rows())
    with torch.no_grad():
        return torch.sigmoid(loaded.model(batch).logits.float()).numpy()[:, 0]


@functools.cache
def empty_history_scores() -> np.ndarray:
    """The same model on the same prepared rows with every history emptied (all pad ids): the
    reference for requests that send no history."""
    import torch

    from rankmixer.data.loader import ParquetBatches, make_loader
    from rankmixer.runs import load_run

    loaded = load_run(din_run())
    batch = next(iter(make_loader(ParquetBatches(loaded.feature_map, "test", 10_000, shuffle=False))))
    batch.behaviours["hist"] = torch.zeros_like(batch.behaviours["hist"])
    with torch.no_grad():
        return torch.sigmoid(loaded.model(batch).logits.float()).numpy()[:, 0]
