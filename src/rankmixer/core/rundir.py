"""The run directory: its layout and a reader for what training left in it.

A run directory holds everything needed to understand and reuse a run::

    config.yaml          the resolved experiment config (parts merged, overrides applied)
    feature_map.json     the prepared data's feature map (vocab sizes, stats)
    checkpoints/         periodic checkpoints (safetensors) for --resume
    best.safetensors     weights with the best validation metric
    metrics.jsonl        training / validation log; metrics.json: final valid + test metrics
    train.log            the console log
    tensorboard/         TensorBoard event files

Training writes it; evaluation, prediction, export and serving only read it, through here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rankmixer.core.yamlio import read_yaml_mapping

__all__ = [
    "BEST_WEIGHTS", "CHECKPOINTS_DIR", "CONFIG_FILE", "FEATURE_MAP_FILE", "METRICS_FILE", "METRICS_LOG",
    "RunDirError", "TRAIN_LOG", "read_run_config",
]

CONFIG_FILE = "config.yaml"
FEATURE_MAP_FILE = "feature_map.json"
BEST_WEIGHTS = "best.safetensors"
METRICS_FILE = "metrics.json"
METRICS_LOG = "metrics.jsonl"
TRAIN_LOG = "train.log"
CHECKPOINTS_DIR = "checkpoints"


class RunDirError(ValueError):
    """A directory is not a (complete) run directory; the message says what is missing."""


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """The raw config mapping a run was trained with (validated by whoever uses it)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"run directory not found: {run_dir}")
    if not (run_dir / CONFIG_FILE).is_file():
        raise RunDirError(f"{run_dir} is not a run directory (no {CONFIG_FILE})")
    return read_yaml_mapping(run_dir / CONFIG_FILE, "run config")
